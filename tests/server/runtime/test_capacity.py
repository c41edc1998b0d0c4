"""Capacity no client can take: health, the registry and Predict answer while streams hold every other thread."""

from __future__ import annotations

import contextlib
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from regserve.client import RegressionClient
from regserve.server.config import Settings
from regserve.v1 import model_service_pb2 as mpb
from regserve.v1 import model_service_pb2_grpc as mpb_grpc
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2
from tests.conftest import start_server

IDLE_STREAMS = 64
CHANNELS = 4
PROBE_DEADLINE = 2.0
"""Seconds a probe or an admin call may take while the server is under attack: a kubelet's usual timeout."""


def _own_connection(target: str) -> grpc.Channel:
    # A channel of its own connection: channels to one target share one by default.
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def _in_flight(app, method: str) -> float:
    labels = {"service": "regserve.v1.RegressionService", "method": method}
    return app.metrics.registry.get_sample_value("regserve_requests_in_flight", labels) or 0.0


def _wait_until(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _one_message_then_quiet(release: threading.Event, X):
    """A BatchPredict request stream that sends one message, then nothing until ``release`` is set."""
    yield pb.BatchPredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=X.shape[1], raw=X[:2].tobytes()))
    release.wait(60)


def _assert_health_registry_and_predict_answer(target: str, X) -> None:
    with _own_connection(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_DEADLINE)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        models = mpb_grpc.ModelServiceStub(channel).ListModels(mpb.ListModelsRequest(), timeout=PROBE_DEADLINE)
        assert [model.model for model in models.models] == ["house"]
    with RegressionClient(target, timeout=PROBE_DEADLINE) as client:
        assert client.predict("house", X[:3]).values.shape == (3,)


@contextlib.contextmanager
def _server_with_house(tmp_path, linear_data, **settings):
    X, y = linear_data
    app = start_server(tmp_path / "models", **settings)
    try:
        target = f"127.0.0.1:{app.port}"
        with RegressionClient(target, timeout=30) as client:
            client.train("house", X, y)
        yield app, target
    finally:
        app.stop(0)


def test_health_registry_and_predict_answer_with_64_idle_batch_predict_streams_open(tmp_path, linear_data):
    """Defect 1: idle BatchPredict streams took every thread; now they take only the data plane's."""
    X, _ = linear_data
    release = threading.Event()
    # Every stream comes from 127.0.0.1, one peer host: no per-peer cap, so the streams reach the pools.
    with _server_with_house(tmp_path, linear_data, max_streams_per_peer=0) as (app, target):
        channels = [_own_connection(target) for _ in range(CHANNELS)]
        calls = []
        try:
            for index in range(IDLE_STREAMS):
                stub = pb_grpc.RegressionServiceStub(channels[index % CHANNELS])
                calls.append(stub.BatchPredict(_one_message_then_quiet(release, X), timeout=60))
            # Every thread of the server's pool holds a stream; the other streams wait for one.
            workers = Settings().max_workers
            assert _wait_until(lambda: _in_flight(app, "BatchPredict") == workers)
            with _own_connection(target) as other:
                stub = pb_grpc.RegressionServiceStub(other)
                with pytest.raises(grpc.RpcError) as caught:
                    list(stub.BatchPredict(_one_message_then_quiet(threading.Event(), X), timeout=1))
                assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

            _assert_health_registry_and_predict_answer(target, X)
        finally:
            release.set()
            for call in calls:
                call.cancel()
            for channel in channels:
                channel.close()


def test_slow_training_uploads_hold_only_the_training_threads(tmp_path, linear_data):
    """Defect 1: Train uploads that go quiet take Train's threads, never health's, the registry's or Predict's."""
    X, _ = linear_data
    release = threading.Event()

    def spec_then_quiet():
        yield pb.TrainRequest(spec=types_pb2.TrainSpec(model="slow", kind=types_pb2.MODEL_KIND_LINEAR))
        release.wait(60)

    with _server_with_house(tmp_path, linear_data, max_streams_per_peer=0, train_threads=2) as (app, target):
        channel = _own_connection(target)
        stub = pb_grpc.RegressionServiceStub(channel)
        uploads = [stub.Train.future(spec_then_quiet(), timeout=60) for _ in range(3)]
        try:
            assert _wait_until(lambda: _in_flight(app, "Train") == 2)
            _assert_health_registry_and_predict_answer(target, X)
            # The third upload waits for a Train thread: Train's pool is what the uploads hold.
            time.sleep(0.5)
            assert _in_flight(app, "Train") == 2
        finally:
            release.set()
            for upload in uploads:
                upload.cancel()
            channel.close()


def test_health_watch_streams_hold_no_thread(tmp_path, linear_data):
    """Watch answers through a callback: many watchers leave health's one thread to Check."""
    with _server_with_house(tmp_path, linear_data, health_threads=1) as (_, target):
        channel = _own_connection(target)
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(8)]
        try:
            for watch in watches:
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_DEADLINE)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            for watch in watches:
                watch.cancel()
            channel.close()


@pytest.mark.parametrize(
    "setting",
    [
        "health_threads",
        "admin_threads",
        "train_threads",
        "reflection_threads",
        "max_concurrent_streams",
        "max_streams_per_peer",
        "stream_idle_timeout",
    ],
)
def test_negative_capacity_settings_are_refused_at_start(tmp_path, setting):
    with pytest.raises(ValueError, match=f"--{setting.replace('_', '-')} must be 0"):
        Settings(model_dir=tmp_path, **{setting: -1}).check()


def test_pools_set_to_zero_run_on_the_servers_threads(tmp_path, linear_data):
    """A pool of size 0 is the server's: a stream holding the only server thread then holds up health too."""
    X, _ = linear_data
    release = threading.Event()
    with _server_with_house(tmp_path, linear_data, max_workers=1, health_threads=0) as (app, target):
        channel = _own_connection(target)
        call = pb_grpc.RegressionServiceStub(channel).BatchPredict(_one_message_then_quiet(release, X), timeout=30)
        try:
            assert next(call).chunk_index == 0
            with pytest.raises(grpc.RpcError) as caught:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            release.set()
            call.cancel()
            channel.close()


def _health(target: str) -> str:
    """ "answered" when a new connection's health check is answered, else the call's status code's name."""
    with _own_connection(target) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError as error:
            return error.code().name
        return "answered"


def _closed_by_server(sock, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(64) == b""
    except OSError:  # a timeout: still open
        return False


def test_silent_connections_are_capped_and_closed_after_the_handshake_timeout(tmp_path, monkeypatch):
    import socket

    from regserve.server.runtime import application

    monkeypatch.setattr(application, "HANDSHAKE_TIMEOUT_MS", 1500)
    app = start_server(tmp_path / "models", max_connections=4)
    target = f"127.0.0.1:{app.port}"
    try:
        # Connections that send nothing, the first the server sees: those past the cap are closed as they arrive.
        silent = [socket.create_connection(("127.0.0.1", app.port)) for _ in range(8)]
        time.sleep(0.5)
        assert sum(_closed_by_server(sock, 0.05) for sock in silent) == 4
        assert _health(target) == "UNAVAILABLE"  # the cap holds for every client
        # The others are closed once the handshake timeout has passed, and clients connect again.
        assert _wait_until(lambda: all(_closed_by_server(sock, 0.05) for sock in silent), 10.0)
        assert _health(target) == "answered"
        for sock in silent:
            sock.close()
    finally:
        app.stop(0)


def test_the_connection_cap_is_at_least_one_and_fits_the_open_file_limit():
    import resource

    from regserve.server.runtime.application import connection_cap

    with pytest.raises(ValueError, match="--max-connections"):
        Settings(max_connections=0).check()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_cap(10) == 10
    assert connection_cap(10**9) == max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4) >= soft // 4


def test_calls_past_the_stream_limit_wait_their_turn_on_the_connection(tmp_path, linear_data):
    """1,000 calls at once on one connection, as tritonclient's async_infer makes them, all answered.

    grpc's overload protection counted each stream until the server freed it, after the client
    had seen it end, so a client keeping to the limit had 20-40% of them refused (UNAVAILABLE).
    """
    X, _ = linear_data
    with _server_with_house(tmp_path, linear_data) as (_, target):  # the default limit, 100 streams
        channel = _own_connection(target)
        try:
            stub = pb_grpc.RegressionServiceStub(channel)
            request = pb.PredictRequest(
                model="house", inputs=types_pb2.Matrix(num_columns=X.shape[1], raw=X[:1].tobytes())
            )
            stub.Predict(request, timeout=30)
            for _ in range(2):
                calls = [stub.Predict.future(request, timeout=60) for _ in range(1000)]
                codes = [call.code() for call in calls]
                assert codes.count(grpc.StatusCode.OK) == 1000, {code: codes.count(code) for code in set(codes)}
        finally:
            channel.close()


def test_a_connection_runs_no_more_calls_than_the_stream_limit(tmp_path, linear_data):
    X, _ = linear_data
    release = threading.Event()
    with _server_with_house(tmp_path, linear_data, max_concurrent_streams=8) as (app, target):
        channel = _own_connection(target)
        try:
            stub = pb_grpc.RegressionServiceStub(channel)
            calls = [stub.BatchPredict(_one_message_then_quiet(release, X), timeout=60) for _ in range(12)]
            assert _wait_until(lambda: _in_flight(app, "BatchPredict") == 8)
            time.sleep(0.5)  # the other four wait in the client for a stream
            assert _in_flight(app, "BatchPredict") == 8
            release.set()
            for call in calls:
                assert [answer.chunk_index for answer in call] == [0]
        finally:
            release.set()
            channel.close()
