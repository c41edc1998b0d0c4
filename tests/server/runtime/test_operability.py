"""Operating a real server: rate limits, request ids and the access log, row limits, deadlines, SIGTERM."""

from __future__ import annotations

import contextlib
import http.client as http_client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from regserve.client import DeadlineExceeded, RegressionClient, RegserveError, ResourceExhausted
from regserve.server.edge.ratelimit import TokenBuckets
from regserve.server.registry.disk import ModelRegistry
from regserve.v1 import model_service_pb2 as mpb
from regserve.v1 import model_service_pb2_grpc as mpb_grpc
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2
from tests.conftest import start_server
from tests.server.edge.helpers import details_of
from tests.server.gateway.helpers import running_gateway

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def limited(tmp_path):
    app = start_server(tmp_path / "models", rate_limit=2.0, rate_burst=3)
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield channel
    app.stop(0)


def test_a_burst_over_the_rate_limit_is_refused_with_retry_info_then_served_again(limited):
    models = mpb_grpc.ModelServiceStub(limited)
    for _ in range(3):
        models.ListModels(mpb.ListModelsRequest(), timeout=5)
    with pytest.raises(grpc.RpcError) as caught:
        models.ListModels(mpb.ListModelsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, delay = details_of(caught.value)
    assert reason == "RATE_LIMITED" and 0 < delay <= 0.5
    health = health_pb2_grpc.HealthStub(limited)
    for _ in range(10):  # probes are never limited
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    time.sleep(delay)
    models.ListModels(mpb.ListModelsRequest(), timeout=5)


def test_the_in_process_gateway_applies_rate_and_row_limits(tmp_path, linear_data):
    """The gateway inside ``regserve serve`` calls the servicers in process: the limits still apply."""
    X, y = linear_data
    app = start_server(tmp_path / "models", rate_limit=2.0, rate_burst=3, max_predict_rows=10)
    try:
        with RegressionClient(f"127.0.0.1:{app.port}") as client:
            client.train("house", X, y)
        with running_gateway(f"127.0.0.1:{app.port}", app.local) as http:
            body = {"inputs": {"numColumns": 5, "values": X[:11].ravel().tolist()}}
            refused = http.post("/v1/models/house:predict", json=body)
            assert refused.status_code == 400 and "TOO_MANY_ROWS" in refused.text
            body = {"inputs": {"numColumns": 5, "values": X[:1].ravel().tolist()}}
            answers = [http.post("/v1/models/house:predict", json=body) for _ in range(5)]
            # The bucket of 127.0.0.1 (burst 3) also paid for the gRPC Train and the refused call.
            codes = [a.status_code for a in answers]
            served = codes.count(200)
            assert 1 <= served <= 3 and codes == [200] * served + [429] * (5 - served)
            assert "RATE_LIMITED" in answers[-1].text and "retryDelay" in answers[-1].text
    finally:
        app.stop(0)


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    buckets = TokenBuckets(rate=4.0, burst=2, clock=lambda: now[0])
    assert buckets.acquire("a") == 0 and buckets.acquire("a") == 0
    assert buckets.acquire("a") == pytest.approx(0.25)
    assert buckets.acquire("b") == 0  # another client has its own bucket
    now[0] = 0.25
    assert buckets.acquire("a") == 0


def _access_lines_by_id(caplog, request_ids: set[str], timeout: float = 5.0) -> dict[str, dict]:
    """The access-log lines captured so far, by request id, once all of ``request_ids`` are there."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "regserve.access"]
        by_id = {line["request_id"]: line for line in lines}
        if request_ids <= by_id.keys() or time.monotonic() > deadline:
            return by_id
        time.sleep(0.02)


def test_request_id_is_echoed_or_generated_and_logged(channel, caplog):
    caplog.set_level(logging.INFO, logger="regserve.access")
    began = time.time()
    models = mpb_grpc.ModelServiceStub(channel)
    _, call = models.ListModels.with_call(mpb.ListModelsRequest(), metadata=(("x-request-id", "abc-123"),), timeout=5)
    # Unary calls echo the id in the trailing metadata, which travels with the status.
    assert dict(call.trailing_metadata())["x-request-id"] == "abc-123"
    with pytest.raises(grpc.RpcError) as caught:
        pb_grpc.RegressionServiceStub(channel).ModelInfo(pb.ModelInfoRequest(model="nowhere"), timeout=5)
    trailing = dict(caught.value.trailing_metadata())
    generated = trailing["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert "grpc-status-details-bin" in trailing  # the rich status survives beside the id
    # Streaming calls echo it in the initial metadata, before their first message.
    stream = pb_grpc.RegressionServiceStub(channel).BatchPredict(
        iter([pb.BatchPredictRequest(model="nowhere")]), metadata=(("x-request-id", "stream-7"),), timeout=5
    )
    with pytest.raises(grpc.RpcError):
        list(stream)
    assert dict(stream.initial_metadata())["x-request-id"] == "stream-7"

    # Lines are written in batches, at most about 0.1 s after their call ended.
    by_id = _access_lines_by_id(caplog, {"abc-123", generated, "stream-7"})
    given, failed = by_id["abc-123"], by_id[generated]
    assert given["method"] == "/regserve.v1.ModelService/ListModels" and given["code"] == "OK"
    assert failed["method"] == "/regserve.v1.RegressionService/ModelInfo" and failed["code"] == "NOT_FOUND"
    ended = time.time()
    for line in (given, failed):
        assert line["duration_ms"] >= 0 and line["principal"] == "anonymous:-"
        # The timestamp is the wall-clock second the call ended, to the microsecond.
        assert began - 1e-6 <= line["ts"] <= ended
        assert line["duration_ms"] <= (ended - began) * 1e3 + 1e-3
        assert "peer" not in line  # read only on request: see the next test


def test_the_access_log_names_the_peer_when_asked(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="regserve.access")
    app = start_server(tmp_path / "models", access_log_peer=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            mpb_grpc.ModelServiceStub(channel).ListModels(
                mpb.ListModelsRequest(), metadata=(("x-request-id", 'odd "id" \\ here'),), timeout=5
            )
    finally:
        app.stop(0)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "regserve.access"]
    (line,) = [line for line in lines if line["request_id"] == 'odd "id" \\ here']
    assert line["peer"].startswith("ipv4:127.0.0.1:") and line["code"] == "OK"


def test_the_gateway_inside_the_server_names_the_http_client_of_its_streams_and_nobody_else_can(
    tmp_path, caplog, linear_data
):
    """Streaming REST calls reach the server over gRPC from loopback: the access log and rate limits see the client."""
    caplog.set_level(logging.INFO, logger="regserve.access")
    X, y = linear_data
    app = start_server(tmp_path / "models", access_log_peer=True)
    spoof = "guess ipv4:10.1.2.3:4"
    try:
        target = f"127.0.0.1:{app.port}"
        with RegressionClient(target) as client:
            client.train("house", X, y)
        with grpc.insecure_channel(target) as channel:
            pb_grpc.RegressionServiceStub(channel).Predict(
                pb.PredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=5, values=X[0])),
                metadata=(("x-request-id", "fwd-grpc"), ("x-regserve-forwarded-peer", spoof)),
                timeout=5,
            )
        with running_gateway(target, app.local) as http:
            source_port = _free_port()
            connection = http_client.HTTPConnection(
                "127.0.0.1", http.base_url.port, timeout=10, source_address=("127.0.0.1", source_port)
            )
            body = json.dumps({"inputs": {"numColumns": 5, "values": X[:3].ravel().tolist()}}) + "\n"
            headers = {"Content-Type": "application/x-ndjson", "X-Request-Id": "fwd-rest"}
            connection.request(
                "POST",
                "/v1/models/house:batchPredict",
                body,
                headers | {"Grpc-Metadata-X-Regserve-Forwarded-Peer": spoof},
            )
            answer = connection.getresponse()
            assert answer.status == 200 and len(json.loads(answer.read().splitlines()[0])["result"]["predictions"]) > 0
            connection.close()
    finally:
        app.stop(0)
    by_id = _access_lines_by_id(caplog, {"fwd-grpc", "fwd-rest"})
    assert by_id["fwd-rest"]["method"].endswith("/BatchPredict")
    assert by_id["fwd-rest"]["peer"] == f"ipv4:127.0.0.1:{source_port}"
    assert by_id["fwd-grpc"]["peer"].startswith("ipv4:127.0.0.1:")


def test_request_id_echo_can_be_turned_off_and_is_still_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="regserve.access")
    app = start_server(tmp_path / "models", echo_request_id=False)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            _, call = mpb_grpc.ModelServiceStub(channel).ListModels.with_call(
                mpb.ListModelsRequest(), metadata=(("x-request-id", "quiet-1"),), timeout=5
            )
        assert "x-request-id" not in dict(call.initial_metadata())
        assert "x-request-id" not in dict(call.trailing_metadata())
    finally:
        app.stop(0)
    assert any(
        json.loads(r.getMessage())["request_id"] == "quiet-1" for r in caplog.records if r.name == "regserve.access"
    )


def test_rows_over_the_limit_are_refused_in_predict_and_batch_predict(tmp_path):
    app = start_server(tmp_path / "models", max_predict_rows=10)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.RegressionServiceStub(channel)
            many = types_pb2.Matrix(num_columns=2, raw=np.zeros((11, 2)).tobytes())
            for request in (
                pb.PredictRequest(model="m", inputs=many),
                pb.PredictRequest(model="m", inputs=types_pb2.Matrix(num_columns=1, values=[0.0] * 11)),
                pb.PredictRequest(model="m", named_inputs=[types_pb2.NamedRow(features={"a": 1.0})] * 11),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.Predict(request, timeout=5)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert details_of(caught.value)[0] == "TOO_MANY_ROWS"
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.BatchPredict(iter([pb.BatchPredictRequest(model="m", inputs=many)]), timeout=5))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert details_of(caught.value)[0] == "TOO_MANY_ROWS"
            # Ten rows pass the edge and reach the servicer, which knows no model "m".
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(pb.PredictRequest(model="m", inputs=types_pb2.Matrix(num_columns=1, values=[0.0] * 10)))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        app.stop(0)


def test_a_train_past_its_deadline_ends_deadline_exceeded_and_stores_nothing(app, model_dir, linear_data):
    X, y = linear_data

    def slow_chunks():
        for start in range(0, 400, 50):
            time.sleep(0.1)
            yield X[start : start + 50], y[start : start + 50]

    with RegressionClient(f"127.0.0.1:{app.port}", timeout=0.35) as client, pytest.raises(DeadlineExceeded):
        client.train("house", chunks=slow_chunks())
    in_flight = {"service": "regserve.v1.RegressionService", "method": "Train"}
    for _ in range(100):  # the server's side of the call ends soon after the client's
        if app.metrics.registry.get_sample_value("regserve_requests_in_flight", in_flight) == 0:
            break
        time.sleep(0.05)
    assert app.metrics.registry.get_sample_value("regserve_requests_in_flight", in_flight) == 0
    assert ModelRegistry(model_dir).list_models() == []
    assert app.store.model_names() == []


@contextlib.contextmanager
def _stream_held_open(model_dir, data, **settings):
    """A server of ``settings`` with model "house", and one BatchPredict stream on it answered once and held open.

    Yields the server's target; the stream is released and drained on the way out.
    """
    X, y = data
    app = start_server(model_dir, **settings)
    release = threading.Event()

    def held_chunks():
        yield X[:2]
        release.wait(10)

    try:
        target = f"127.0.0.1:{app.port}"
        with RegressionClient(target, timeout=30) as client:
            client.train("house", X, y)
            stream = client.iter_batch_predict("house", held_chunks())
            next(stream)
            yield target
            release.set()
            list(stream)
    finally:
        release.set()
        app.stop(0)


def test_max_concurrent_rpcs_refuses_the_call_over_the_limit(tmp_path, linear_data):
    X, _ = linear_data
    with (
        _stream_held_open(tmp_path / "models", linear_data, max_concurrent_rpcs=1) as target,
        RegressionClient(target, timeout=5) as other,
    ):
        with pytest.raises(ResourceExhausted):
            other.predict("house", X[:1])


@pytest.mark.parametrize("predict_threads", [1, 0])
def test_predict_has_threads_of_its_own_that_streams_cannot_take(tmp_path, linear_data, predict_threads):
    """A stream holds the server's only thread: Predict and ModelInfo still answer, on threads of their own."""
    X, _ = linear_data
    # Waiting 1 s proves the call cannot be answered; 5 s is ample for one that can.
    timeout = 5 if predict_threads else 1
    with (
        _stream_held_open(tmp_path / "models", linear_data, max_workers=1, predict_threads=predict_threads) as target,
        RegressionClient(target, timeout=timeout) as other,
    ):
        if predict_threads:
            assert other.predict("house", X[:3]).values.shape == (3,)
            assert other.model_info("house").model == "house"
        else:
            with pytest.raises(DeadlineExceeded):
                other.predict("house", X[:3])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sigterm_without_a_drain_refuses_new_calls_at_once_and_lets_calls_in_flight_finish(tmp_path, linear_data):
    """--drain-seconds 0: the listener closes as the signal comes (test_drain.py has the drain itself)."""
    X, y = linear_data
    port = _free_port()
    target = f"127.0.0.1:{port}"
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", str(port)]
    command += ["--model-dir", str(tmp_path / "models"), "--no-demo-models", "--drain-seconds", "0"]
    command += ["--grace-seconds", "20"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        with RegressionClient(target, timeout=30) as client:
            for _ in range(200):
                try:
                    client.health()
                    break
                except RegserveError:
                    time.sleep(0.05)
            client.train("house", X, y)
            opened = threading.Barrier(5)
            results: dict[int, object] = {}

            def stream(index: int) -> None:
                # In flight means begun on the server: its first answer has come back before the signal.
                answered = threading.Event()

                def chunks():
                    yield X[:4]
                    answered.wait(10)
                    opened.wait(10)
                    for _ in range(8):
                        time.sleep(0.25)
                        yield X[:4]

                answers = 0
                try:
                    for _ in client.iter_batch_predict("house", chunks()):
                        answers += 1
                        answered.set()
                    results[index] = answers
                except RegserveError as exc:  # reported below
                    results[index] = exc

            workers = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
            for worker in workers:
                worker.start()
            opened.wait(10)
            server.send_signal(signal.SIGTERM)
            refused = None
            deadline = time.monotonic() + 1.5
            while refused is None and time.monotonic() < deadline:
                with RegressionClient(target, timeout=2) as late:
                    try:
                        late.predict("house", X[:1])
                    except RegserveError as exc:
                        refused = exc
                time.sleep(0.05)
            for worker in workers:
                worker.join(30)
        assert results == {i: 9 for i in range(4)}
        # grpc core refuses a call that reaches a stopping server with UNAVAILABLE, or with
        # CANCELLED when the call was already matched to the server as shutdown began.
        assert refused is not None and refused.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
        _, log = server.communicate(timeout=10)
    assert "draining" in log and "regserve stopped" in log
    # The access log is written in batches; the lines of every call are on stderr by the exit.
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert [a["code"] for a in access if a["method"].endswith("/BatchPredict")] == ["OK"] * 4
    assert [a["code"] for a in access if a["method"].endswith("/Train")] == ["OK"]


def test_sigterm_with_the_gateway_and_a_slow_http_upload_still_stops_and_exits_zero(tmp_path, linear_data):
    """An HTTP call that never finishes must not hold the server past its grace period."""
    X, y = linear_data
    port, http_port = _free_port(), _free_port()
    target = f"127.0.0.1:{port}"
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", str(port), "--gateway-port"]
    command += [str(http_port), "--model-dir", str(tmp_path / "models"), "--no-demo-models", "--drain-seconds", "1"]
    command += ["--grace-seconds", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    upload = None
    try:
        with RegressionClient(target, timeout=30) as client:
            for _ in range(200):
                try:
                    client.health()
                    break
                except RegserveError:
                    time.sleep(0.05)
        for _ in range(200):  # the gateway starts beside the server
            try:
                upload = socket.create_connection(("127.0.0.1", http_port), timeout=5)
                break
            except OSError:
                time.sleep(0.05)
        assert upload is not None, "the gateway did not start"
        listed = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/models", headers={"x-request-id": "via-rest"})
        assert json.loads(urllib.request.urlopen(listed, timeout=10).read()) == {}
        spec = json.dumps({"spec": {"model": "slow", "kind": "MODEL_KIND_LINEAR"}}) + "\n"
        upload.sendall(
            b"POST /v1/models:train HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(spec):x}\r\n{spec}\r\n".encode()
        )
        time.sleep(0.5)  # the Train call is open upstream and waits for more chunks
        server.send_signal(signal.SIGTERM)
        # The signal is handled between two bytecodes of the main thread: a probe may come first.
        with grpc.insecure_channel(target) as channel:
            deadline = time.monotonic() + 10
            while True:
                try:
                    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                except grpc.RpcError as exc:  # the port may already refuse new calls: not serving either
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
                    break
                if answer.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                assert answer.status == health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline
                time.sleep(0.02)
        assert server.wait(30) == 0
    finally:
        if upload is not None:
            upload.close()
        if server.poll() is None:
            server.kill()
        _, log = server.communicate(timeout=10)
    assert "regserve stopped" in log
    # The gateway in the process leaves the access log alone: the REST call has its line.
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert [(a["method"], a["code"]) for a in access if a["request_id"] == "via-rest"] == [
        ("/regserve.v1.ModelService/ListModels", "OK")
    ]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", http_port), timeout=2).close()
    assert "slow" not in ModelRegistry(tmp_path / "models").list_models()
