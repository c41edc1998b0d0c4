"""Streams: a cap per peer host, and an end for streams that wait on their client past the idle timeout."""

from __future__ import annotations

import contextlib
import threading
import time

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry, Counter

from regserve.client import RegressionClient
from regserve.server.edge.decoding import UNDECODABLE
from regserve.server.edge.streams import StreamGuard
from regserve.server.errors import DeadlineExceeded, InvalidInput, ResourceExhausted
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2
from tests.conftest import start_server
from tests.server.edge.helpers import details_of

R = "regserve.v1.RegressionService"
IDLE_TIMEOUT = 1.0
ENDED_WITHIN = 10.0
"""Seconds by which an idle stream must have been ended: the timeout and a watchdog tick, with room to spare."""


@contextlib.contextmanager
def _server(tmp_path, linear_data, **settings):
    X, y = linear_data
    app = start_server(tmp_path / "models", **settings)
    try:
        target = f"127.0.0.1:{app.port}"
        with RegressionClient(target, timeout=30) as client:
            client.train("house", X, y)
        with grpc.insecure_channel(target) as channel:
            yield app, channel
    finally:
        app.stop(0)


def _chunk(X, rows=slice(0, 2)):
    return pb.BatchPredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=X.shape[1], raw=X[rows].tobytes()))


def _one_message_then_quiet(release: threading.Event, message):
    yield message
    release.wait(60)


def _sample(app, name: str, **labels) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


# ------------------------------------------------------------ the per-peer cap


def test_a_peer_host_over_its_stream_cap_is_refused_too_many_streams(tmp_path, linear_data):
    X, _ = linear_data
    release = [threading.Event(), threading.Event()]
    with _server(tmp_path, linear_data, max_streams_per_peer=2) as (app, channel):
        stub = pb_grpc.RegressionServiceStub(channel)
        held = [stub.BatchPredict(_one_message_then_quiet(event, _chunk(X)), timeout=30) for event in release]
        try:
            for call in held:
                assert next(call).chunk_index == 0
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.BatchPredict(iter([_chunk(X)]), timeout=10))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert details_of(caught.value)[0] == "TOO_MANY_STREAMS"
            with pytest.raises(grpc.RpcError) as caught:
                stub.Train(iter([pb.TrainRequest()]), timeout=10)
            assert details_of(caught.value)[0] == "TOO_MANY_STREAMS"
            # Unary calls are not streams: the cap leaves them alone.
            inputs = types_pb2.Matrix(num_columns=X.shape[1], values=X[0].tolist())
            answer = stub.Predict(pb.PredictRequest(model="house", inputs=inputs), timeout=10)
            assert len(answer.predictions.values) == 1
            assert (
                _sample(
                    app, "regserve_streams_limited_total", service=R, method="BatchPredict", reason="TOO_MANY_STREAMS"
                )
                == 1
            )
            assert (
                _sample(app, "regserve_streams_limited_total", service=R, method="Train", reason="TOO_MANY_STREAMS")
                == 1
            )

            # The cap counts streams open now: once one ends, another may open.
            release[0].set()
            assert len(list(held[0])) == 0
            assert len(list(stub.BatchPredict(iter([_chunk(X)]), timeout=10))) == 1
        finally:
            for event in release:
                event.set()
            for call in held:
                call.cancel()


# ------------------------------------------------------------ the idle timeout


def test_a_batch_predict_stream_idle_past_the_timeout_is_ended_and_its_thread_freed(tmp_path, linear_data):
    X, _ = linear_data
    release = threading.Event()
    with _server(tmp_path, linear_data, max_workers=1, stream_idle_timeout=IDLE_TIMEOUT) as (app, channel):
        stub = pb_grpc.RegressionServiceStub(channel)
        call = stub.BatchPredict(_one_message_then_quiet(release, _chunk(X)), timeout=30)
        try:
            assert next(call).chunk_index == 0
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                next(call)
            assert time.monotonic() - started < ENDED_WITHIN
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "--stream-idle-timeout" in caught.value.details()
        finally:
            release.set()
        # The server's only thread is free again.
        assert len(list(stub.BatchPredict(iter([_chunk(X)]), timeout=10))) == 1
        labels = {"service": R, "method": "BatchPredict"}
        assert _sample(app, "regserve_streams_limited_total", **labels, reason="STREAM_IDLE") == 1
        assert _sample(app, "regserve_requests_total", **labels, code="DEADLINE_EXCEEDED") == 1
        assert _sample(app, "regserve_requests_in_flight", **labels) == 0


def test_a_train_upload_idle_past_the_timeout_is_ended(tmp_path, linear_data):
    release = threading.Event()
    spec = pb.TrainRequest(spec=types_pb2.TrainSpec(model="slow", kind=types_pb2.MODEL_KIND_LINEAR))
    with _server(tmp_path, linear_data, stream_idle_timeout=IDLE_TIMEOUT) as (app, channel):
        started = time.monotonic()
        try:
            with pytest.raises(grpc.RpcError) as caught:
                pb_grpc.RegressionServiceStub(channel).Train(_one_message_then_quiet(release, spec), timeout=30)
        finally:
            release.set()
        assert time.monotonic() - started < ENDED_WITHIN
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert _sample(app, "regserve_streams_limited_total", service=R, method="Train", reason="STREAM_IDLE") == 1
        # The client hears of the end at once; the server's side of the call ends soon after.
        for _ in range(100):
            if _sample(app, "regserve_requests_in_flight", service=R, method="Train") == 0:
                break
            time.sleep(0.05)
        assert _sample(app, "regserve_training_runs_total", model="", code="DEADLINE_EXCEEDED") == 1
        assert "slow" not in app.store.model_names()


def test_a_reflection_stream_idle_past_the_timeout_is_ended(tmp_path, linear_data):
    release = threading.Event()
    question = reflection_pb2.ServerReflectionRequest(list_services="")
    with _server(tmp_path, linear_data, stream_idle_timeout=IDLE_TIMEOUT) as (app, channel):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(_one_message_then_quiet(release, question), timeout=30)
        try:
            assert R in {service.name for service in next(call).list_services_response.service}
            with pytest.raises(grpc.RpcError) as caught:
                next(call)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            release.set()
        labels = {"service": "grpc.reflection.v1alpha.ServerReflection", "method": "ServerReflectionInfo"}
        assert _sample(app, "regserve_streams_limited_total", **labels, reason="STREAM_IDLE") == 1


def test_a_stream_that_keeps_sending_is_not_ended(tmp_path, linear_data):
    X, _ = linear_data
    timeout = 2.0  # several times the gap between messages below

    def steady_chunks():
        for index in range(12):
            time.sleep(0.25)
            yield _chunk(X, slice(index, index + 1))

    with _server(tmp_path, linear_data, stream_idle_timeout=timeout) as (app, channel):
        answers = list(pb_grpc.RegressionServiceStub(channel).BatchPredict(steady_chunks(), timeout=30))
        assert [answer.chunk_index for answer in answers] == list(range(12))
        assert (
            _sample(app, "regserve_streams_limited_total", service=R, method="BatchPredict", reason="STREAM_IDLE") == 0
        )


# ------------------------------------------------------------ StreamGuard on its own


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Context:
    """A call context that records being cancelled (it has no grpcio call underneath)."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def _guard(per_peer=2, idle_timeout=0.0, clock=None):
    """A guard whose watchdog is stopped (the test calls ``end_idle``), and its counts by (method, reason)."""
    registry = CollectorRegistry()
    limited = Counter("limited", "", ["service", "method", "reason"], registry=registry)
    guard = StreamGuard(per_peer, idle_timeout, limited, clock=clock or _Clock())
    guard.stop()

    def count(reason):
        return registry.get_sample_value("limited_total", {"service": "S", "method": "M", "reason": reason}) or 0

    return guard, count


def test_the_cap_counts_open_streams_per_host():
    guard, count = _guard(per_peer=2)
    first = guard.open("S", "M", "ipv4:10.0.0.1", _Context())
    guard.open("S", "M", "ipv4:10.0.0.1", _Context())
    guard.open("S", "M", "ipv4:10.0.0.2", _Context())  # another host has a cap of its own
    guard.open("S", "M", "ipv4:10.0.0.1", _Context(), capped=False)  # reflection's streams are not counted
    with pytest.raises(ResourceExhausted) as caught:
        guard.open("S", "M", "ipv4:10.0.0.1", _Context())
    assert caught.value.reason == "TOO_MANY_STREAMS"
    assert count("TOO_MANY_STREAMS") == 1
    guard.close(first)
    guard.close(first)  # closing twice frees one place, not two
    guard.open("S", "M", "ipv4:10.0.0.1", _Context())
    with pytest.raises(ResourceExhausted):
        guard.open("S", "M", "ipv4:10.0.0.1", _Context())


def test_no_cap_when_per_peer_is_zero():
    guard, _ = _guard(per_peer=0)
    for _ in range(100):
        guard.open("S", "M", "ipv4:10.0.0.1", _Context())


def test_only_waiting_on_the_client_counts_as_idle():
    clock = _Clock()
    guard, count = _guard(idle_timeout=5.0, clock=clock)
    context = _Context()
    stream = guard.open("S", "M", "h", context)

    def slow_client():
        clock.now += 4.0  # waits on the client, under the timeout
        yield "first"
        clock.now += 4.0
        yield "second"

    requests = guard.requests(slow_client(), stream, lambda: InvalidInput("bad"))
    assert next(requests) == "first"
    clock.now += 60.0  # the server computing: not waiting on the client
    assert stream.waiting_since is None and guard.end_idle() == 0
    assert next(requests) == "second"

    answers = guard.responses(iter(["answer"]), stream)
    assert next(answers) == "answer"
    assert stream.waiting_since == clock.now  # waiting for the client to take the answer
    clock.now += 5.0
    assert guard.end_idle() == 1 and context.cancelled and stream.ended_idle
    assert guard.end_idle() == 0  # ended once
    assert count("STREAM_IDLE") == 1


def test_an_undecodable_message_in_a_stream_raises_the_refusal():
    guard, _ = _guard()
    stream = guard.open("S", "M", "h", _Context())
    requests = guard.requests(iter(["ok", UNDECODABLE, "never"]), stream, lambda: InvalidInput("bad", reason="X"))
    assert next(requests) == "ok"
    with pytest.raises(InvalidInput):
        next(requests)


def test_a_stream_ended_for_idleness_never_ends_its_requests_cleanly():
    # grpcio may end the request iterator of a cancelled call as if the client had closed the stream.
    guard, _ = _guard()
    stream = guard.open("S", "M", "h", _Context())
    stream.ended_idle = True
    with pytest.raises(DeadlineExceeded) as caught:
        list(guard.requests(iter([]), stream, lambda: InvalidInput("bad")))
    assert caught.value.reason == "STREAM_IDLE"
