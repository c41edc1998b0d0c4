"""Inside the server, the gateway refuses a caller the edge would refuse before it reads the body."""

from __future__ import annotations

import json
import logging
import time

import pytest

from regserve.server.config import MIB
from regserve.server.edge.auth import TokenTable
from regserve.server.gateway.admission import Admission
from regserve.server.observability.access_log import ACCESS_LOGGER
from tests.conftest import start_server
from tests.server.gateway.helpers import connect, head, read_answer, running_gateway

TOKENS = "admin:early-admin-token,predict:early-predict-token"


@pytest.fixture
def secured_app(tmp_path):
    # A rate limit no test reaches by itself: each test's admission says when a caller must wait.
    app = start_server(tmp_path / "models", tokens=TOKENS, rate_limit=1000.0, rate_burst=1000)
    yield app
    app.stop(0)


def _answer_to_headers_only(http, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], dict, float]:
    """Send only the request's head, announcing a 10 MiB body, and read the answer."""
    with connect(http) as conn:
        started = time.monotonic()
        conn.sendall(head("POST", path, {"Content-Length": str(10 * MIB), **headers}))
        status, answer_headers, body = read_answer(conn)
    return status, answer_headers, json.loads(body), time.monotonic() - started


def _reason(body: dict) -> str:
    return next(d["reason"] for d in body["details"] if d["@type"].endswith("ErrorInfo"))


def test_the_server_gives_its_gateway_the_edges_checks(secured_app, app):
    assert secured_app.local.admission is not None  # tokens: the gateway checks them first
    assert app.local.admission is None  # no tokens, no rate limit: nothing to check early


def test_a_refusal_is_counted_logged_and_answered_as_the_edge_answers_it(secured_app, caplog):
    secured_app.local.admission = Admission(
        secured_app.edge, TokenTable.parse(TOKENS), wait=lambda principal, peer: 2.2
    )
    labels = {"service": "regserve.v1.RegressionService", "method": "Predict"}
    row = {"inputs": {"numColumns": 1, "values": [1.0]}}
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        with running_gateway(f"127.0.0.1:{secured_app.port}", secured_app.local) as http:
            missing = http.post("/v1/models/house:predict", json=row, headers={"x-request-id": "no-token-1"})
            limited = http.post(
                "/v1/models/house:predict", json=row, headers={"Authorization": "Bearer early-predict-token"}
            )
        secured_app.edge.close()  # writes what the recorder holds
    assert missing.status_code == 401 and missing.headers["x-request-id"] == "no-token-1"
    assert missing.headers["www-authenticate"] == 'Bearer realm="regserve"'  # RFC 6750's challenge
    assert limited.status_code == 429 and limited.headers["x-request-id"]
    assert limited.json()["message"] == "Rate limit of 1000 calls/s reached; retry in 2.200 s."
    registry = secured_app.metrics.registry
    assert registry.get_sample_value("regserve_requests_total", {**labels, "code": "UNAUTHENTICATED"}) == 1
    assert registry.get_sample_value("regserve_requests_total", {**labels, "code": "RESOURCE_EXHAUSTED"}) == 1
    assert registry.get_sample_value("regserve_rate_limited_total") == 1
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == ACCESS_LOGGER]
    assert [(line["code"], line["principal"]) for line in lines] == [
        ("UNAUTHENTICATED", "anonymous:-"),
        ("RESOURCE_EXHAUSTED", lines[1]["principal"]),
    ]
    assert lines[0]["request_id"] == "no-token-1" and lines[1]["request_id"] == limited.headers["x-request-id"]
    assert lines[1]["principal"] != "anonymous:-"


def test_a_big_body_without_a_token_gets_401_before_it_is_read(secured_app):
    with running_gateway(f"127.0.0.1:{secured_app.port}", secured_app.local) as http:
        json_head = {"Content-Type": "application/json"}
        for path in ("/v1/models/house:predict", "/v1/models/house/versions/v1:promote"):
            status, headers, body, seconds = _answer_to_headers_only(http, path, json_head)
            assert status == 401 and _reason(body) == "MISSING_TOKEN" and seconds < 5
            assert headers["connection"] == "close"
        ndjson = {"Content-Type": "application/x-ndjson", "Authorization": "Bearer not-a-token"}
        status, _, body, _ = _answer_to_headers_only(http, "/v1/models:train", ndjson)
        assert status == 401 and _reason(body) == "UNKNOWN_TOKEN"
        predictor = {**ndjson, "Authorization": "Bearer early-predict-token"}
        status, _, body, _ = _answer_to_headers_only(http, "/v1/models:train", predictor)
        assert status == 403 and _reason(body) == "ROLE_NOT_ALLOWED"


def test_the_refusal_is_the_one_the_edge_gives(secured_app):
    """Without the admission the edge refuses the same call after the body is read: same status, same body."""
    row = {"inputs": {"numColumns": 1, "values": [1.0]}}
    secured_app.local.admission = None
    with running_gateway(f"127.0.0.1:{secured_app.port}", secured_app.local) as http:
        late = http.post("/v1/models/house:predict", json=row)
    secured_app.local.admission = Admission(secured_app.edge, TokenTable.parse(TOKENS))
    with running_gateway(f"127.0.0.1:{secured_app.port}", secured_app.local) as http:
        early = http.post("/v1/models/house:predict", json=row)
    assert late.status_code == early.status_code == 401
    assert late.json() == early.json()


def test_a_rate_limited_caller_gets_429_with_retry_after_before_its_body_is_read(secured_app):
    secured_app.local.admission = Admission(
        secured_app.edge, TokenTable.parse(TOKENS), wait=lambda principal, peer: 2.2
    )
    with running_gateway(f"127.0.0.1:{secured_app.port}", secured_app.local) as http:
        predictor = {"Content-Type": "application/json", "Authorization": "Bearer early-predict-token"}
        status, headers, body, seconds = _answer_to_headers_only(http, "/v1/models/house:predict", predictor)
    assert status == 429 and _reason(body) == "RATE_LIMITED" and seconds < 5
    assert headers["retry-after"] == "3"
    assert body["details"][-1]["retryDelay"] == "2.200s"


def test_callers_the_admission_lets_in_are_served(secured_app, linear_data):
    secured_app.local.admission = Admission(secured_app.edge, TokenTable.parse(TOKENS))
    X, y = linear_data
    admin = {"Authorization": "Bearer early-admin-token"}
    with running_gateway(f"127.0.0.1:{secured_app.port}", secured_app.local) as http:
        lines = [{"spec": {"model": "house", "kind": "MODEL_KIND_LINEAR"}}]
        lines.append(
            {"chunk": {"features": {"numColumns": 5, "values": X.ravel().tolist()}, "targets": {"values": y.tolist()}}}
        )
        body = "".join(json.dumps(line) + "\n" for line in lines)
        trained = http.post("/v1/models:train", content=body, headers={"content-type": "application/x-ndjson", **admin})
        assert trained.status_code == 200, trained.text
        row = {"inputs": {"numColumns": 5, "values": X[0].tolist()}}
        predicted = http.post(
            "/v1/models/house:predict", json=row, headers={"Authorization": "Bearer early-predict-token"}
        )
        assert predicted.status_code == 200


def test_a_caller_without_a_valid_token_spends_its_hosts_bucket_as_at_the_edge(secured_app):
    charged = []

    def unauthenticated_wait(peer: str) -> float:
        charged.append(peer)
        return 0.0 if len(charged) == 1 else 1.5

    secured_app.local.admission = Admission(
        secured_app.edge, TokenTable.parse(TOKENS), unauthenticated_wait=unauthenticated_wait
    )
    with running_gateway(f"127.0.0.1:{secured_app.port}", secured_app.local) as http:
        json_head = {"Content-Type": "application/json"}
        first = _answer_to_headers_only(http, "/v1/models/house:predict", json_head)
        second = _answer_to_headers_only(http, "/v1/models/house:predict", json_head)
        predictor = {**json_head, "Authorization": "Bearer early-predict-token"}
        http.post("/v1/models/house:predict", json={"inputs": {"values": [1.0]}}, headers=predictor)
    assert first[0] == 401 and _reason(first[2]) == "MISSING_TOKEN"
    assert second[0] == 429 and _reason(second[2]) == "RATE_LIMITED" and second[1]["retry-after"] == "2"
    assert len(charged) == 2 and charged[0].startswith("ipv4:127.0.0.1:")  # a caller with a token is not charged
