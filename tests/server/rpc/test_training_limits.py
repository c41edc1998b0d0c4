"""Train over gRPC under abuse: runaway work stops with its deadline or the server's shutdown, and work or
memory past the limits is refused up front; in every case nothing is stored."""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from regserve.client import DeadlineExceeded, RegressionClient, RegserveError, ResourceExhausted
from regserve.server.models.training import MAX_FEATURES, TrainingLimits
from regserve.server.observability.serving_stats import ServingStats
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.store import ModelStore
from regserve.server.rpc.regression_servicer import RegressionServicer
from regserve.v1 import regression_service_pb2_grpc as pb_grpc

RUNAWAY_GD = dict(solver="gd", epochs=500_000, tolerance=0.0)
"""Gradient descent that never converges, within the default work limit: it runs for minutes."""
IN_FLIGHT = {"service": "regserve.v1.RegressionService", "method": "Train"}


def _trains_in_flight(app) -> float:
    return app.metrics.registry.get_sample_value("regserve_requests_in_flight", IN_FLIGHT) or 0.0


def test_a_runaway_gd_ends_deadline_exceeded_and_the_server_stops_it_within_a_second(
    app, target, model_dir, linear_data, caplog
):
    caplog.set_level(logging.INFO, logger="regserve.server.rpc.regression_servicer")
    X, y = linear_data
    with RegressionClient(target, timeout=1.0) as client, pytest.raises(DeadlineExceeded):
        client.train("runaway", X, y, **RUNAWAY_GD)
    deadline = time.monotonic()  # the client gives up at the call's deadline
    while _trains_in_flight(app) and time.monotonic() < deadline + 1.0:
        time.sleep(0.02)
    assert _trains_in_flight(app) == 0, "the server's training thread still runs"
    stopped = [r.getMessage() for r in caplog.records if "stopped training model runaway" in r.getMessage()]
    assert stopped and "deadline" in stopped[0]
    cpu = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu < 0.5  # no core kept busy
    assert ModelRegistry(model_dir).list_models() == [] and app.store.model_names() == []


def _expect_too_large(call, limit: str, field: str) -> ResourceExhausted:
    started = time.monotonic()
    with pytest.raises(ResourceExhausted) as info:
        call()
    assert time.monotonic() - started < 10.0  # refused, not computed
    error = info.value
    assert error.reason == "TRAINING_TOO_LARGE" and error.metadata["limit"] == limit
    assert error.field_violations[0][0] == field
    assert int(error.metadata["estimate"]) > int(error.metadata["allowed"])
    return error


def test_each_training_past_the_default_limits_is_refused_up_front_and_stores_nothing(client, model_dir):
    rng = np.random.default_rng(40)
    X, y = rng.normal(size=(400, 5)), rng.normal(size=400)
    _expect_too_large(
        lambda: client.train("epochs", X, y, solver="gd", epochs=2**32 - 1, tolerance=0.0),
        "max_train_gflop",
        "spec.epochs",
    )
    wide = rng.normal(size=(200, 1024))
    _expect_too_large(
        lambda: client.train("folds", wide, rng.normal(size=200), kind="ridge", alpha=1.0, cv_folds=100),
        "max_train_gflop",
        "spec.cv_folds",
    )
    labels = [f"label{i % 600}" for i in range(1000)]
    _expect_too_large(
        lambda: client.train(
            "classes", rng.normal(size=(1000, 10)), labels, kind="logistic", solver="newton", max_iterations=1
        ),
        "max_train_gflop",
        "spec.solver",
    )
    names = [f"x{j}" for j in range(MAX_FEATURES)]
    _expect_too_large(
        lambda: client.train(
            "memory",
            rng.normal(size=(3, MAX_FEATURES)),
            ["a", "b", "c"],
            kind="logistic",
            feature_names=names,
            class_labels=["a", "b", "c"],
        ),
        "max_train_memory_mb",
        "spec.solver",
    )
    assert ModelRegistry(model_dir).list_models() == []


def _serve_regression(model_dir, **servicer_options):
    """A bare RegressionService on a loopback port with ``servicer_options``; returns the server and target."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    store = ModelStore(ModelRegistry(model_dir))
    pb_grpc.add_RegressionServiceServicer_to_server(
        RegressionServicer(store, ServingStats(), **servicer_options), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_the_servers_limits_and_spool_directory_are_its_own(model_dir, tmp_path, linear_data):
    spool = tmp_path / "spool"
    server, target = _serve_regression(model_dir, training_limits=TrainingLimits(gflop=1), spool_dir=spool)
    try:
        with RegressionClient(target, timeout=30) as client:
            client.train("small", *linear_data, solver="gd", epochs=100)
            error = _expect_too_large(
                lambda: client.train("large", *linear_data, solver="gd", epochs=10_000),
                "max_train_gflop",
                "spec.epochs",
            )
            assert error.metadata["allowed"] == "1"
    finally:
        server.stop(0)
    claimed = [p for p in spool.iterdir() if p.is_dir()]
    assert len(claimed) == 1 and [p.name for p in claimed[0].iterdir()] == ["owner.lock"]
    assert ModelRegistry(model_dir).list_models() == ["small"]


def test_a_shutdown_stops_a_running_train_at_once_with_unavailable(model_dir, linear_data):
    shutting_down = threading.Event()
    server, target = _serve_regression(model_dir, shutting_down=shutting_down)
    outcome: list[BaseException] = []

    def train() -> None:
        with RegressionClient(target, timeout=60) as client:
            try:
                client.train("runaway", *linear_data, **RUNAWAY_GD)
            except RegserveError as exc:
                outcome.append(exc)

    caller = threading.Thread(target=train)
    try:
        caller.start()
        time.sleep(0.5)  # the data is sent; the server runs gradient descent
        assert caller.is_alive()
        shutting_down.set()
        caller.join(5.0)
        assert not caller.is_alive(), "the training did not stop when the server began to shut down"
    finally:
        server.stop(0)
        caller.join(10)
    assert outcome[0].code == grpc.StatusCode.UNAVAILABLE and outcome[0].reason == "SHUTTING_DOWN"
    assert ModelRegistry(model_dir).list_models() == []
