"""Undecodable request messages: INVALID_ARGUMENT with MALFORMED_MESSAGE, counted, logged once per peer."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry, Counter

from regserve.server.edge.decoding import UNDECODABLE, MalformedMessages, tolerant
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import types_pb2
from tests.conftest import start_server
from tests.server.edge.helpers import details_of

GARBAGE = b"\xff\xff\xff"
"""Not a valid protobuf encoding of any message: a field tag cut short."""
R = "regserve.v1.RegressionService"
DECODING_LOGGER = "regserve.server.edge.decoding"


@pytest.fixture
def served(tmp_path):
    app = start_server(tmp_path / "models")
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield app, channel
    app.stop(0)


def _malformed(app, service: str, method: str) -> float:
    labels = {"service": service, "method": method}
    return app.metrics.registry.get_sample_value("regserve_malformed_messages_total", labels) or 0.0


def _refused_as_malformed(call) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert details_of(caught.value)[0] == "MALFORMED_MESSAGE"


def test_the_garbage_is_undecodable():
    for message in (pb.PredictRequest, pb.BatchPredictRequest, pb.TrainRequest, health_pb2.HealthCheckRequest):
        assert tolerant(message.FromString)(GARBAGE) is UNDECODABLE


def test_an_undecodable_predict_is_refused_counted_and_logged_once(served, caplog):
    app, channel = served
    predict = channel.unary_unary(f"/{R}/Predict")  # no serializers: the bytes go as they are
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            _refused_as_malformed(lambda: predict(GARBAGE, timeout=10))
    assert _malformed(app, R, "Predict") == 5
    labels = {"service": R, "method": "Predict", "code": "INVALID_ARGUMENT"}
    assert app.metrics.registry.get_sample_value("regserve_requests_total", labels) == 5
    lines = [record for record in caplog.records if record.name == DECODING_LOGGER]
    assert len(lines) == 1 and "ipv4:127.0.0.1" in lines[0].getMessage()
    assert not [record for record in caplog.records if "deserializ" in record.getMessage()]  # grpcio's traceback


def test_an_undecodable_message_in_a_stream_is_refused(served):
    app, channel = served
    batch_predict = channel.stream_stream(f"/{R}/BatchPredict")
    inputs = types_pb2.Matrix(num_columns=1, values=[1.0])
    good = pb.BatchPredictRequest(model="nowhere", inputs=inputs).SerializeToString()
    _refused_as_malformed(lambda: list(batch_predict(iter([GARBAGE]), timeout=10)))
    train = channel.stream_unary(f"/{R}/Train")
    spec = pb.TrainRequest(spec=types_pb2.TrainSpec(model="m", kind=types_pb2.MODEL_KIND_LINEAR))
    _refused_as_malformed(lambda: train(iter([spec.SerializeToString(), GARBAGE]), timeout=10))
    assert _malformed(app, R, "BatchPredict") == 1 and _malformed(app, R, "Train") == 1
    # A good message first: the stream is refused at the bad one, not before.
    with pytest.raises(grpc.RpcError) as caught:
        list(batch_predict(iter([good]), timeout=10))
    assert details_of(caught.value)[0] == "UNKNOWN_MODEL"


def test_health_refuses_undecodable_probes_without_counting_them_as_calls(served):
    app, channel = served
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    _refused_as_malformed(lambda: check(GARBAGE, timeout=10))
    assert _malformed(app, "grpc.health.v1.Health", "Check") == 1
    answer = health_pb2.HealthCheckResponse.FromString(check(b"", timeout=10))
    assert answer.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
    labels = {"service": "grpc.health.v1.Health", "method": "Check", "code": "INVALID_ARGUMENT"}
    assert app.metrics.registry.get_sample_value("regserve_requests_total", labels) is None


def test_undecodable_messages_are_logged_once_per_peer_per_interval(caplog):
    now = [1000.0]
    registry = CollectorRegistry()
    counter = Counter("malformed", "", ["service", "method"], registry=registry)
    messages = MalformedMessages(counter, interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=DECODING_LOGGER):
        for _ in range(3):
            error = messages.refusal("S", "M", "ipv4:10.0.0.1")
        messages.refusal("S", "M", "ipv4:10.0.0.2")
        assert len(caplog.records) == 2  # one line per peer
        now[0] += 59.0
        messages.refusal("S", "M", "ipv4:10.0.0.1")
        assert len(caplog.records) == 2
        now[0] += 1.0
        messages.refusal("S", "M", "ipv4:10.0.0.1")
        assert len(caplog.records) == 3
        assert "(4 from this peer" in caplog.records[-1].getMessage()  # every message since the last line
    assert error.reason == "MALFORMED_MESSAGE"
    assert registry.get_sample_value("malformed_total", {"service": "S", "method": "M"}) == 6
