"""Streamed calls report the server's own refusal, every time, never 500 "Internal error from Core"."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from google.rpc import code_pb2

from regserve.client import RegressionClient
from tests.conftest import start_server
from tests.server.gateway.helpers import MODES, running_gateway

TOKENS = "admin:stream-admin-token,predict:stream-predict-token"
ADMIN = {"Authorization": "Bearer stream-admin-token"}
NDJSON = {"content-type": "application/x-ndjson"}
RUNS = 100


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("models"), tokens=TOKENS)
    with RegressionClient(f"127.0.0.1:{server.port}", token="stream-admin-token", timeout=30) as client:
        X = np.random.default_rng(16).normal(size=(60, 3))
        client.train("house", X, X @ np.array([1.0, 2.0, 3.0]))
    yield server
    server.stop(0)


@pytest.fixture(params=MODES)
def http(request, secured_server):
    local = secured_server.local if request.param == "in_process" else None  # it checks tokens before bodies
    with running_gateway(f"127.0.0.1:{secured_server.port}", local) as client:
        yield client


def _lines(*bodies: dict) -> str:
    return "".join(json.dumps(body) + "\n" for body in bodies)


ROW = {"inputs": {"numColumns": 3, "values": [1.0, 2.0, 3.0]}}


@pytest.mark.parametrize(
    ("headers", "model", "row", "status", "reason"),
    [
        ({}, "house", ROW, 401, "MISSING_TOKEN"),
        ({"Authorization": "Bearer wrong"}, "house", ROW, 401, "UNKNOWN_TOKEN"),
        (ADMIN, "nosuch", ROW, 404, "UNKNOWN_MODEL"),
        (ADMIN, "house", {"inputs": {"numColumns": 2, "values": [1.0, 2.0]}}, 400, "FEATURE_COUNT_MISMATCH"),
    ],
    ids=["no-token", "unknown-token", "unknown-model", "bad-chunk"],
)
def test_batch_predict_refusals_keep_their_status_every_time(http, headers, model, row, status, reason):
    body = _lines(row, row, row)  # more lines than the server reads before it refuses
    seen: Counter = Counter()
    for _ in range(RUNS):
        answer = http.post(f"/v1/models/{model}:batchPredict", content=body, headers={**NDJSON, **headers})
        reasons = [d.get("reason") for d in answer.json().get("details", [])] if answer.status_code != 200 else []
        seen[(answer.status_code, reason in reasons)] += 1
    assert seen == {(status, True): RUNS}


def test_train_refusals_keep_their_status(http):
    spec = {"spec": {"model": "m", "kind": "MODEL_KIND_LINEAR"}}
    chunk = {"chunk": {"features": {"numColumns": 1, "values": [1, 2, 3]}, "targets": {"values": [1, 2, 3]}}}
    predictor = {"Authorization": "Bearer stream-predict-token"}
    for headers, status in (({}, 401), (predictor, 403)):
        for _ in range(20):
            answer = http.post("/v1/models:train", content=_lines(spec, chunk, chunk), headers={**NDJSON, **headers})
            assert answer.status_code == status, answer.text
    bad_spec = {"spec": {"model": "m", "kind": "MODEL_KIND_LINEAR", "validationFraction": 5}}
    answer = http.post("/v1/models:train", content=_lines(bad_spec, chunk), headers={**NDJSON, **ADMIN})
    assert answer.status_code == 400 and answer.json()["code"] == code_pb2.INVALID_ARGUMENT


def test_batch_predict_still_streams_its_answers(http):
    rows = [{"inputs": {"numColumns": 3, "values": [float(i), 1.0, 0.0]}} for i in range(5)]
    answer = http.post("/v1/models/house:batchPredict", content=_lines(*rows), headers={**NDJSON, **ADMIN})
    assert answer.status_code == 200
    results = [json.loads(line)["result"] for line in answer.text.splitlines()]
    assert [int(r.get("chunkIndex", 0)) for r in results] == list(range(5))
