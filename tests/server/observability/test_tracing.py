"""OpenTelemetry traces of a real server: a span per RPC and per REST request, W3C traceparent carried
from REST into the in-process call and from the client library; exported over OTLP/HTTP to a
stand-in collector on loopback."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from regserve.client import NotFound, RegressionClient
from regserve.server.config import Settings
from regserve.server.gateway.app import EmbeddedGateway
from regserve.server.observability.tracing import Tracing, tracing_configured
from regserve.server.runtime.application import create_server
from tests.conftest import start_server

R = "regserve.v1.RegressionService"


def traced_server(model_dir, tracing=None, **overrides):
    settings = Settings(host="127.0.0.1", port=0, model_dir=model_dir, demo_models=False, **overrides)
    app = create_server(settings, tracing=tracing)
    app.start()
    return app


@pytest.fixture
def exported():
    return InMemorySpanExporter()


@pytest.fixture
def traced(tmp_path, exported, linear_data):
    app = traced_server(tmp_path / "models", Tracing.with_processor(SimpleSpanProcessor(exported)))
    X, y = linear_data
    with RegressionClient(f"127.0.0.1:{app.port}", timeout=30) as client:
        client.train("house", X, y)
    exported.clear()
    yield app
    app.stop(0)


@pytest.fixture
def gateway(traced):
    sock = socket.create_server(("127.0.0.1", 0))
    gateway = EmbeddedGateway(sock, f"127.0.0.1:{traced.port}", traced.local, tracing=traced.tracing)
    gateway.start()
    yield f"http://127.0.0.1:{gateway.port}"
    gateway.stop()


def spans_named(exported, name):
    return [span for span in exported.get_finished_spans() if span.name == name]


def rest_spans(exported, count):
    """The REST requests' spans, once ``count`` have ended: a span ends just after its answer is sent."""
    deadline = time.monotonic() + 10
    while True:
        found = [span for span in exported.get_finished_spans() if span.name.startswith("POST")]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_a_span_per_rpc_with_model_version_rows_and_status(traced, exported, linear_data):
    X, _ = linear_data
    with RegressionClient(f"127.0.0.1:{traced.port}", timeout=30) as client:
        client.predict("house", X[:3])
        with pytest.raises(NotFound):
            client.predict("nowhere", X[:1])
        list(client.iter_batch_predict("house", [X[:2], X[2:6]]))
    ok, missing = spans_named(exported, f"{R}/Predict")
    assert ok.kind is SpanKind.SERVER
    assert dict(ok.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": R,
        "rpc.method": "Predict",
        "rpc.grpc.status_code": 0,
        "regserve.model": "house",
        "regserve.version": "v1",
        "regserve.rows": 3,
    }
    assert ok.status.status_code is StatusCode.UNSET
    assert missing.attributes["rpc.grpc.status_code"] == 5 and missing.attributes["regserve.model"] == "nowhere"
    assert missing.status.status_code is StatusCode.ERROR
    (batch,) = spans_named(exported, f"{R}/BatchPredict")
    assert batch.attributes["regserve.version"] == "v1" and batch.attributes["regserve.messages_sent"] == 2
    assert batch.attributes["rpc.grpc.status_code"] == 0


def test_a_training_span_names_the_version_stored(traced, exported, linear_data):
    X, y = linear_data
    with RegressionClient(f"127.0.0.1:{traced.port}", timeout=30) as client:
        client.train("house", X, y)
    (train,) = spans_named(exported, f"{R}/Train")
    assert train.attributes["regserve.model"] == "house" and train.attributes["regserve.version"] == "v2"


def test_the_client_library_sends_the_current_span_as_parent(traced, exported, linear_data):
    X, _ = linear_data
    caller = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(caller))
    with RegressionClient(f"127.0.0.1:{traced.port}", timeout=30) as client:
        with provider.get_tracer("test").start_as_current_span("caller"):
            client.predict("house", X[:1])
        client.predict("house", X[:1])  # no span current: the server's span is a root
    (caller_span,) = caller.get_finished_spans()
    child, root = spans_named(exported, f"{R}/Predict")
    assert child.parent is not None and child.parent.span_id == caller_span.context.span_id
    assert child.context.trace_id == caller_span.context.trace_id
    assert root.parent is None


def test_the_rest_span_is_the_parent_of_the_in_process_grpc_span(gateway, exported, linear_data):
    X, _ = linear_data
    body = {"inputs": {"numColumns": 5, "values": X[:4].ravel().tolist()}}
    # A client's own Grpc-Metadata-Traceparent does not choose the gRPC span's parent: the gateway's span does.
    forged = {"Grpc-Metadata-Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    answer = httpx.post(f"{gateway}/v1/models/house:predict", json=body, headers=forged, timeout=30)
    assert answer.status_code == 200
    missing = httpx.post(f"{gateway}/v1/models/nowhere:predict", json=body, timeout=30)
    assert missing.status_code == 404
    rest_ok, rest_missing = rest_spans(exported, 2)
    grpc_ok, grpc_missing = spans_named(exported, f"{R}/Predict")
    assert rest_ok.name == "POST /v1/models/{model}:predict"
    assert rest_ok.kind is SpanKind.SERVER and rest_ok.parent is None
    assert grpc_ok.parent.span_id == rest_ok.context.span_id
    assert grpc_ok.context.trace_id == rest_ok.context.trace_id
    assert rest_ok.attributes["http.response.status_code"] == 200
    assert rest_ok.attributes["regserve.model"] == "house"
    assert rest_ok.attributes["regserve.version"] == "v1" and rest_ok.attributes["regserve.rows"] == 4
    assert grpc_missing.parent.span_id == rest_missing.context.span_id
    assert rest_missing.attributes["http.response.status_code"] == 404
    assert grpc_missing.status.status_code is StatusCode.ERROR


def test_a_streaming_rest_call_carries_the_rest_span_over_grpc(gateway, exported, linear_data):
    X, _ = linear_data
    body = "".join(
        json.dumps({"inputs": {"numColumns": 5, "values": X[i : i + 2].ravel().tolist()}}) + "\n" for i in (0, 2)
    )
    answer = httpx.post(
        f"{gateway}/v1/models/house:batchPredict",
        content=body,
        headers={"content-type": "application/x-ndjson"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    (rest,) = rest_spans(exported, 1)
    (batch,) = spans_named(exported, f"{R}/BatchPredict")
    assert rest.name == "POST /v1/models/{model}:batchPredict" and rest.attributes["regserve.model"] == "house"
    assert batch.parent.span_id == rest.context.span_id and batch.parent.is_remote
    assert batch.attributes["regserve.messages_sent"] == 2


def test_sampling_follows_otel_traces_sampler(tmp_path, monkeypatch, linear_data):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exported = InMemorySpanExporter()
    app = traced_server(tmp_path / "models", Tracing.with_processor(SimpleSpanProcessor(exported)))
    X, y = linear_data
    try:
        with RegressionClient(f"127.0.0.1:{app.port}", timeout=30) as client:
            client.train("house", X, y)
            assert len(client.predict("house", X[:2]).values) == 2
            with pytest.raises(NotFound):
                client.predict("nowhere", X[:1])
    finally:
        app.stop(0)
    assert exported.get_finished_spans() == ()


def test_without_tracing_the_handlers_are_the_edges_own(tmp_path, exported):
    plain = start_server(tmp_path / "plain")
    traced = traced_server(tmp_path / "traced", Tracing.with_processor(SimpleSpanProcessor(exported)))
    try:
        predict = "/regserve.v1.RegressionService/Predict"
        assert plain.local.handler(predict).__qualname__ == "Edge._unary_unary.<locals>.unary_unary"
        assert traced.local.handler(predict).__qualname__ == "Tracing.wrap.<locals>.unary_unary"
    finally:
        plain.stop(0)
        traced.stop(0)


def test_the_client_library_does_not_import_opentelemetry(app, linear_data):
    # A fresh interpreter: this one has loaded opentelemetry for the tests above.
    script = (
        "import sys, numpy as np\n"
        "from regserve.client import RegressionClient, NotFound\n"
        f"with RegressionClient('127.0.0.1:{app.port}', timeout=30) as client:\n"
        "    try:\n"
        "        client.predict('nowhere', np.ones((1, 2)))\n"
        "    except NotFound:\n"
        "        pass\n"
        "print(sorted(name for name in sys.modules if name.startswith('opentelemetry')))\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert ran.stdout.strip() == "[]"


def test_a_rest_clients_traceparent_is_the_parent_of_the_rest_span(gateway, exported, linear_data):
    X, _ = linear_data
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    answer = httpx.post(
        f"{gateway}/v1/models/house:predict",
        json={"inputs": {"numColumns": 5, "values": X[:1].ravel().tolist()}},
        headers={"traceparent": f"00-{trace_id}-{span_id}-01"},
        timeout=30,
    )
    assert answer.status_code == 200
    (rest,) = rest_spans(exported, 1)
    assert rest.parent.span_id == int(span_id, 16) and rest.context.trace_id == int(trace_id, 16)


def test_tracing_is_off_unless_an_endpoint_is_named(tmp_path):
    assert not tracing_configured("", {})
    assert tracing_configured("http://127.0.0.1:4318", {})
    assert tracing_configured("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing_configured("", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not tracing_configured("http://127.0.0.1:4318", {"OTEL_SDK_DISABLED": "true"})
    app = start_server(tmp_path / "models")
    try:
        assert app.tracing is None
    finally:
        app.stop(0)


class _Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP collector stand-in: keeps every protobuf export POSTed to /v1/traces."""

    def __init__(self) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        self.received = threading.Condition()
        super().__init__(("127.0.0.1", 0), _CollectorHandler)


class _CollectorHandler(http.server.BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
            self.send_error(404)
            return
        export = ExportTraceServiceRequest.FromString(body)
        with self.server.received:
            self.server.exports.append(export)
            self.server.received.notify_all()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def collector():
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_rest_predict_exported_over_otlp_http_shows_the_gateway_span_as_parent(tmp_path, collector):
    app = traced_server(tmp_path / "models", otlp_endpoint=f"http://127.0.0.1:{collector.server_port}")
    sock = socket.create_server(("127.0.0.1", 0))
    gateway = EmbeddedGateway(sock, f"127.0.0.1:{app.port}", app.local, tracing=app.tracing)
    gateway.start()
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 2))
    try:
        with RegressionClient(f"127.0.0.1:{app.port}", timeout=30) as client:
            client.train("line", X, X @ [2.0, -1.0] + 0.5)
        answer = httpx.post(
            f"http://127.0.0.1:{gateway.port}/v1/models/line:predict",
            json={"inputs": {"numColumns": 2, "values": X[:2].ravel().tolist()}},
            timeout=30,
        )
        assert answer.status_code == 200
    finally:
        gateway.stop()
        app.stop(0)  # shuts the tracer down, which exports what its batch still holds
    spans = [
        (resource_spans.resource, span)
        for export in collector.exports
        for resource_spans in export.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    by_name = {span.name: (resource, span) for resource, span in spans}
    resource, rest = by_name["POST /v1/models/{model}:predict"]
    _, predict = by_name[f"{R}/Predict"]
    assert predict.parent_span_id == rest.span_id and predict.trace_id == rest.trace_id
    assert rest.parent_span_id == b""
    attributes = {a.key: a.value for a in predict.attributes}
    assert attributes["regserve.model"].string_value == "line"
    assert attributes["regserve.rows"].int_value == 2
    assert attributes["rpc.grpc.status_code"].int_value == 0
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    assert service == "regserve"


def test_the_standard_otel_variables_name_the_collector_and_the_service(tmp_path, collector, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "regserve-canary")
    app = traced_server(tmp_path / "models")
    try:
        with RegressionClient(f"127.0.0.1:{app.port}", timeout=30) as client, pytest.raises(NotFound):
            client.model_info("nowhere")
    finally:
        app.stop(0)
    (export,) = collector.exports
    (resource_spans,) = export.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    (span,) = (span for scope_spans in resource_spans.scope_spans for span in scope_spans.spans)
    assert service == "regserve-canary"
    assert span.name == f"{R}/ModelInfo" and span.status.code == span.status.STATUS_CODE_ERROR
