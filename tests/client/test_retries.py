"""Retries by the default service config, against a real server that refuses first attempts.

The reads are retried on UNAVAILABLE, within the policy's bound, with one request id
for every attempt; Train and the registry's changes never are.
"""

from __future__ import annotations

import re

import grpc
import numpy as np
import pytest

from regserve.client import Cancelled, ModelAdminClient, RegressionClient, RegserveError, ServerError, Unavailable
from tests.client.flaky_server import SERVICES, FlakyServer

X = np.arange(6, dtype=np.float64).reshape(2, 3)
Y = np.array([1.0, 2.0])

CALLS = {
    "regserve.v1.RegressionService/Train": lambda client, admin: client.train("m", X, Y),
    "regserve.v1.RegressionService/Predict": lambda client, admin: client.predict("m", X),
    "regserve.v1.RegressionService/BatchPredict": lambda client, admin: client.batch_predict("m", X),
    "regserve.v1.RegressionService/ModelInfo": lambda client, admin: client.model_info("m"),
    "regserve.v1.ModelService/ListModels": lambda client, admin: admin.list_models(),
    "regserve.v1.ModelService/ListVersions": lambda client, admin: admin.list_versions("m"),
    "regserve.v1.ModelService/GetVersion": lambda client, admin: admin.get_version("m", "v1"),
    "regserve.v1.ModelService/CreateVersion": lambda client, admin: admin.create_version("m", "linear", [[1.0]], [0.0]),
    "regserve.v1.ModelService/PromoteVersion": lambda client, admin: admin.promote("m", "v1"),
    "regserve.v1.ModelService/RollbackModel": lambda client, admin: admin.rollback("m"),
    "regserve.v1.ModelService/FreezeVersion": lambda client, admin: admin.freeze("m", "v1"),
    "regserve.v1.ModelService/UnfreezeVersion": lambda client, admin: admin.unfreeze("m", "v1"),
    "regserve.v1.ModelService/SetTrafficSplit": lambda client, admin: admin.set_split("m", {"v1": 1}),
    "regserve.v1.ModelService/DeleteVersion": lambda client, admin: admin.delete_version("m", "v1"),
    "regserve.v1.ModelService/GetStatus": lambda client, admin: admin.status("m"),
    "grpc.health.v1.Health/Check": lambda client, admin: client.health(),
}
"""One client call per method of the contract (and the health check the client makes)."""

NEVER_RETRIED = {
    "regserve.v1.RegressionService/Train",
    "regserve.v1.ModelService/CreateVersion",
    "regserve.v1.ModelService/PromoteVersion",
    "regserve.v1.ModelService/RollbackModel",
    "regserve.v1.ModelService/FreezeVersion",
    "regserve.v1.ModelService/UnfreezeVersion",
    "regserve.v1.ModelService/SetTrafficSplit",
    "regserve.v1.ModelService/DeleteVersion",
}

HEX_ID = re.compile(r"[0-9a-f]{32}")


def clients(target: str, **connection):
    return RegressionClient(target, timeout=30, **connection), ModelAdminClient(target, timeout=30, **connection)


def test_every_method_of_the_contract_has_a_call_here():
    contract = {f"{service.full_name}/{method.name}" for service in SERVICES[:2] for method in service.methods}
    assert contract | {"grpc.health.v1.Health/Check"} == CALLS.keys()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_reads_are_retried_on_unavailable_and_changes_never(name):
    method = name.rsplit("/", 1)[1]
    with FlakyServer(failures=1) as server:
        client, admin = clients(server.target)
        with client, admin:
            if name in NEVER_RETRIED:
                with pytest.raises(Unavailable) as info:
                    CALLS[name](client, admin)
                (attempt,) = server.attempts_of(method)
                assert info.value.request_id == attempt.request_id
            else:
                CALLS[name](client, admin)
                first, second = server.attempts_of(method)
                assert first.request_id == second.request_id
    assert HEX_ID.fullmatch(server.attempts_of(method)[0].request_id)


def test_retries_are_bounded_and_the_error_carries_the_request_id():
    with FlakyServer(failures=100) as server, RegressionClient(server.target, timeout=30) as client:
        with pytest.raises(Unavailable) as info:
            client.predict("m", X)
    attempts = server.attempts_of("Predict")
    assert len(attempts) == 4
    assert {attempt.request_id for attempt in attempts} == {info.value.request_id}
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_read_cancelled_by_a_closing_server_is_retried_and_a_change_is_not():
    # A replica closing its listener cancels the calls that reached it but had not started.
    with FlakyServer(failures=1, code=grpc.StatusCode.CANCELLED) as server:
        client, admin = clients(server.target)
        with client, admin:
            client.predict("m", X)
            with pytest.raises(Cancelled):
                admin.promote("m", "v1")
    assert len(server.attempts_of("Predict")) == 2
    assert len(server.attempts_of("PromoteVersion")) == 1


def test_other_failures_are_not_retried():
    with FlakyServer(failures=1, code=grpc.StatusCode.INTERNAL) as server:
        with RegressionClient(server.target, timeout=30) as client, pytest.raises(ServerError):
            client.predict("m", X)
    assert len(server.attempts_of("Predict")) == 1


def test_a_batch_predict_that_answered_is_not_replayed():
    with FlakyServer(failures=1, answers_before_failing=1) as server:
        with RegressionClient(server.target, timeout=30) as client:
            predictions = client.iter_batch_predict("m", [X, X, X])
            next(predictions)
            with pytest.raises(Unavailable):
                next(predictions)
    assert len(server.attempts_of("BatchPredict")) == 1


def test_a_batch_predict_larger_than_the_retry_buffer_is_not_replayed():
    # 3 chunks of 20,000 rows of 3 float64: 1.4 MB, past gRPC's 256 KiB per-call retry buffer.
    rng = np.random.default_rng(17)
    chunks = [rng.normal(size=(20_000, 3)) for _ in range(3)]
    with FlakyServer(failures=1, read_requests_first=True) as server:
        with RegressionClient(server.target, timeout=30) as client, pytest.raises(Unavailable):
            list(client.iter_batch_predict("m", chunks))
    assert len(server.attempts_of("BatchPredict")) == 1


def test_a_service_config_given_replaces_the_default():
    with FlakyServer(failures=2) as server:
        with RegressionClient(server.target, timeout=30, service_config={}) as client:
            with pytest.raises(Unavailable):
                client.predict("m", X)
        assert len(server.attempts_of("Predict")) == 1
        own = {
            "methodConfig": [
                {
                    "name": [{"service": "regserve.v1.RegressionService", "method": "Train"}],
                    "retryPolicy": {
                        "maxAttempts": 3,
                        "initialBackoff": "0.01s",
                        "maxBackoff": "0.01s",
                        "backoffMultiplier": 1,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
        with RegressionClient(server.target, timeout=30, service_config=own) as client:
            client.train("m", X, Y)
            assert len(server.attempts_of("Train")) == 3
            with pytest.raises(Unavailable):
                client.predict("m", X)
        assert len(server.attempts_of("Predict")) == 2


def test_options_apply_over_the_clients_own():
    with FlakyServer(failures=1) as server:
        options = [("grpc.enable_retries", 0), ("grpc.primary_user_agent", "pricing-service/2.1")]
        with RegressionClient(server.target, timeout=30, options=options) as client, pytest.raises(Unavailable):
            client.predict("m", X)
    (attempt,) = server.attempts_of("Predict")
    assert attempt.metadata["user-agent"].startswith("pricing-service/2.1")


def test_a_request_id_given_is_sent_with_every_attempt_and_carried_by_the_error():
    with FlakyServer(failures=100) as server:
        with ModelAdminClient(server.target, timeout=30, metadata=[("x-request-id", "order-4711")]) as admin:
            with pytest.raises(Unavailable) as info:
                admin.list_models()
            with pytest.raises(Unavailable):
                admin.promote("m", "v1")
    assert info.value.request_id == "order-4711"
    assert {attempt.request_id for attempt in server.attempts} == {"order-4711"}


def test_a_call_that_reached_no_server_carries_the_id_it_was_sent_with():
    # Port 1 on loopback: nothing listens, so every attempt is refused before it leaves the client.
    with RegressionClient("127.0.0.1:1", timeout=30) as client:
        errors = []
        for call in (lambda: client.predict("m", X), lambda: client.train("m", X, Y)):
            with pytest.raises(Unavailable) as info:
                call()
            errors.append(info.value)
    assert all(HEX_ID.fullmatch(error.request_id) for error in errors)
    assert errors[0].request_id != errors[1].request_id


def test_a_real_server_echoes_the_id_the_client_sent(client):
    with pytest.raises(RegserveError) as info:
        client.model_info("nothing")
    echoed = dict(info.value.__cause__.trailing_metadata())
    assert HEX_ID.fullmatch(info.value.request_id)
    assert echoed["x-request-id"] == info.value.request_id
