"""The series stock gRPC dashboards read (go-grpc-prometheus's names and labels), process_* and python_*,
scraped from a real server; promtool accepts the page."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from concurrent import futures

import grpc
import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from regserve.client import NotFound, RegressionClient
from regserve.server.edge.edge import Edge, EdgePolicy
from regserve.server.observability.metrics import GRPC_CODES, Metrics
from regserve.v1 import regression_service_pb2 as pb
from tests.conftest import start_server

R = "regserve.v1.RegressionService"


@pytest.fixture
def served(tmp_path):
    app = start_server(tmp_path / "models", metrics_port=0)
    yield app
    app.stop(0)


def page(app) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{app.metrics_port}/metrics", timeout=5) as response:
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def grpc_value(found, name, method, grpc_type, **more) -> float:
    labels = {"grpc_service": R, "grpc_method": method, "grpc_type": grpc_type, **more}
    return found.get((name, frozenset(labels.items())), 0.0)


def test_standard_series_move_with_unary_bidi_client_stream_and_errors(served, linear_data):
    X, y = linear_data
    before = samples(page(served))
    # Every method and every code is there at zero before any call, as go-grpc-prometheus initializes them.
    assert (
        "grpc_server_started_total",
        frozenset({"grpc_service": R, "grpc_method": "Predict", "grpc_type": "unary"}.items()),
    ) in before
    for code in GRPC_CODES.values():
        assert grpc_value(before, "grpc_server_handled_total", "Predict", "unary", grpc_code=code) == 0
    with RegressionClient(f"127.0.0.1:{served.port}", timeout=30) as client:
        client.train("house", X, y)
        for rows in (1, 3, 7):
            client.predict("house", X[:rows])
        with pytest.raises(NotFound):
            client.predict("nowhere", X[:1])
        answers = list(client.iter_batch_predict("house", [X[:3], X[3:5], X[5:9]]))
    found = samples(page(served))

    assert grpc_value(found, "grpc_server_started_total", "Predict", "unary") == 4
    assert grpc_value(found, "grpc_server_handled_total", "Predict", "unary", grpc_code="OK") == 3
    assert grpc_value(found, "grpc_server_handled_total", "Predict", "unary", grpc_code="NotFound") == 1
    assert grpc_value(found, "grpc_server_msg_received_total", "Predict", "unary") == 4
    assert grpc_value(found, "grpc_server_msg_sent_total", "Predict", "unary") == 3
    assert grpc_value(found, "grpc_server_handling_seconds_count", "Predict", "unary") == 4
    assert grpc_value(found, "grpc_server_handling_seconds_bucket", "Predict", "unary", le="+Inf") == 4
    # Go's default bucket bounds are all there.
    for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0"):
        assert (
            "grpc_server_handling_seconds_bucket",
            frozenset({"grpc_service": R, "grpc_method": "Predict", "grpc_type": "unary", "le": le}.items()),
        ) in found

    assert grpc_value(found, "grpc_server_started_total", "BatchPredict", "bidi_stream") == 1
    assert grpc_value(found, "grpc_server_handled_total", "BatchPredict", "bidi_stream", grpc_code="OK") == 1
    assert grpc_value(found, "grpc_server_msg_received_total", "BatchPredict", "bidi_stream") == 3
    assert grpc_value(found, "grpc_server_msg_sent_total", "BatchPredict", "bidi_stream") == len(answers) == 3

    assert grpc_value(found, "grpc_server_started_total", "Train", "client_stream") == 1
    assert grpc_value(found, "grpc_server_handled_total", "Train", "client_stream", grpc_code="OK") == 1
    assert grpc_value(found, "grpc_server_msg_received_total", "Train", "client_stream") >= 1
    assert grpc_value(found, "grpc_server_msg_sent_total", "Train", "client_stream") == 1

    # regserve's own series are still there, beside the standard ones.
    own = frozenset({"service": R, "method": "Predict", "code": "NOT_FOUND"}.items())
    assert found[("regserve_requests_total", own)] == 1


def test_an_error_of_a_stream_is_handled_with_its_code(served):
    with RegressionClient(f"127.0.0.1:{served.port}", timeout=30) as client, pytest.raises(NotFound):
        list(client.iter_batch_predict("nowhere", [np.ones((2, 3))]))
    found = samples(page(served))
    assert grpc_value(found, "grpc_server_handled_total", "BatchPredict", "bidi_stream", grpc_code="NotFound") == 1
    assert grpc_value(found, "grpc_server_msg_sent_total", "BatchPredict", "bidi_stream") == 0


def test_process_and_python_collectors_are_on_the_servers_registry(served):
    names = {family.name for family in text_string_to_metric_families(page(served))}
    expected = {"python_info", "python_gc_objects_collected", "process_cpu_seconds", "process_resident_memory_bytes"}
    assert expected <= names


def test_server_streaming_counts_each_message_sent():
    # regserve has no server-streaming method: a method of the table is served with one, on a real server.
    metrics = Metrics()
    edge = Edge(metrics, EdgePolicy())

    def answers(request, context):
        for _ in range(5):
            yield pb.ModelInfoResponse()

    handler = edge.wrap(
        f"/{R}/ModelInfo",
        grpc.unary_stream_rpc_method_handler(
            answers,
            request_deserializer=pb.ModelInfoRequest.FromString,
            response_serializer=pb.ModelInfoResponse.SerializeToString,
        ),
    )
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(R, {"ModelInfo": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream(
                f"/{R}/ModelInfo",
                request_serializer=pb.ModelInfoRequest.SerializeToString,
                response_deserializer=pb.ModelInfoResponse.FromString,
            )
            assert len(list(call(pb.ModelInfoRequest(model="m"), timeout=10))) == 5
    finally:
        server.stop(0)
        edge.close()
    found = samples(generate_latest(metrics.registry).decode())
    assert grpc_value(found, "grpc_server_started_total", "ModelInfo", "server_stream") == 1
    assert grpc_value(found, "grpc_server_msg_received_total", "ModelInfo", "server_stream") == 1
    assert grpc_value(found, "grpc_server_msg_sent_total", "ModelInfo", "server_stream") == 5
    assert grpc_value(found, "grpc_server_handled_total", "ModelInfo", "server_stream", grpc_code="OK") == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (make test installs it)")
def test_promtool_accepts_the_metrics_page(served, linear_data):
    X, y = linear_data
    with RegressionClient(f"127.0.0.1:{served.port}", timeout=30) as client:
        client.train("house", X, y)
        client.predict("house", X[:2])
        with pytest.raises(NotFound):
            client.predict("nowhere", X[:1])
    text = page(served)
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""
