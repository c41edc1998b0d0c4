"""Bodies over the limit are refused before they are read, and slow uploads cannot take the gateway.

Real HTTP to a gateway on 127.0.0.1:0 in front of a real server; raw sockets where the
test must control what the client has sent when the answer comes.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from regserve.server.config import MIB, Settings
from regserve.server.gateway.app import GatewayLimits
from regserve.server.gateway.limits import UploadSlots
from tests.server.gateway.helpers import MODES, chunk, closed_within, connect, head, read_answer, running_gateway

SMALL = GatewayLimits(max_body_bytes=1 * MIB)


@pytest.fixture(params=MODES)
def http(request, app, target):
    with running_gateway(target, app.local if request.param == "in_process" else None, limits=SMALL) as client:
        yield client


def _reason(body: bytes) -> str:
    status = json.loads(body)
    return next(d["reason"] for d in status["details"] if d["@type"].endswith("ErrorInfo"))


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(http):
    with connect(http) as conn:
        conn.sendall(
            head(
                "POST",
                "/v1/models/house:predict",
                {"Content-Type": "application/json", "Content-Length": str(100 * MIB)},
            )
        )
        status, headers, body = read_answer(conn)  # nothing of the body was sent
    assert status == 413 and _reason(body) == "BODY_TOO_LARGE"
    assert headers["connection"] == "close"
    assert json.loads(body)["code"] == 8  # RESOURCE_EXHAUSTED


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(http):
    piece = b" " * (256 * 1024)
    with connect(http) as conn:
        conn.sendall(
            head(
                "POST", "/v1/models/house:predict", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
            )
        )
        for _ in range(5):  # 1.25 MiB, then the client waits: the body is not finished
            conn.sendall(chunk(piece))
        started = time.monotonic()
        status, _, body = read_answer(conn)
    assert status == 413 and _reason(body) == "BODY_TOO_LARGE"
    assert time.monotonic() - started < 5


def test_a_client_that_sends_its_whole_oversized_body_still_reads_the_413(http):
    """The rest of a refused body is read and dropped, so the client gets the answer, not a reset."""
    size = 16 * MIB
    with connect(http) as conn:
        conn.sendall(
            head("POST", "/v1/models/house:predict", {"Content-Type": "application/json", "Content-Length": str(size)})
        )
        conn.sendall(b" " * size)  # a client that writes its whole request before it reads
        status, headers, body = read_answer(conn)
        assert status == 413 and _reason(body) == "BODY_TOO_LARGE"
        assert closed_within(conn, 5)  # and the connection closes once the body is drained
    assert http.get("/v1/models").status_code == 200


def test_a_body_within_the_limit_is_served(http, client, linear_data):
    X, y = linear_data
    client.train("house", X, y)
    rows = np.ones((20_000, 5))  # about 0.5 MiB of JSON
    answer = http.post("/v1/models/house:predict", json={"inputs": {"numColumns": 5, "values": rows.ravel().tolist()}})
    assert answer.status_code == 200 and len(answer.json()["predictions"]["values"]) == 20_000


def _slow_upload(http, path: str = "/v1/models:train"):
    """A Train upload that sends its spec line and then nothing: it holds an upload slot."""
    conn = connect(http)
    conn.sendall(head("POST", path, {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"}))
    conn.sendall(chunk(json.dumps({"spec": {"model": "slow", "kind": "MODEL_KIND_LINEAR"}}).encode() + b"\n"))
    return conn


@pytest.mark.parametrize("mode", MODES)
def test_slow_uploads_past_the_bound_are_refused_and_admin_routes_still_answer(app, target, linear_data, mode):
    limits = GatewayLimits(max_uploads=Settings.gateway_max_uploads)
    with running_gateway(target, app.local if mode == "in_process" else None, limits=limits) as http:
        uploads = [_slow_upload(http) for _ in range(limits.max_uploads)]
        try:
            deadline = time.monotonic() + 10
            # The slots are taken when each upload's headers are read.
            while True:
                refused = http.post(
                    "/v1/models:train",
                    content=json.dumps({"spec": {"model": "other", "kind": "MODEL_KIND_LINEAR"}}) + "\n",
                    headers={"content-type": "application/x-ndjson"},
                )
                if refused.status_code == 429 or time.monotonic() > deadline:
                    break
            assert refused.status_code == 429 and refused.json()["details"][0]["reason"] == "TOO_MANY_UPLOADS"
            assert refused.headers["retry-after"] == "1"
            for _ in range(3):  # admin routes answer while every upload slot is held by a silent client
                started = time.monotonic()
                listed = http.get("/v1/models", timeout=5)
                assert listed.status_code == 200 and time.monotonic() - started < 5
        finally:
            for conn in uploads:
                conn.close()
        X, y = linear_data
        lines = [{"spec": {"model": "after", "kind": "MODEL_KIND_LINEAR"}}]
        lines.append(
            {"chunk": {"features": {"numColumns": 5, "values": X.ravel().tolist()}, "targets": {"values": y.tolist()}}}
        )
        body = "".join(json.dumps(line) + "\n" for line in lines)
        deadline = time.monotonic() + 10
        while True:  # the slots come back once the gateway sees the silent clients leave
            trained = http.post("/v1/models:train", content=body, headers={"content-type": "application/x-ndjson"})
            if trained.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert trained.status_code == 200, trained.text
        assert [m["model"] for m in http.get("/v1/models").json()["models"]] == [
            "after"
        ]  # the cut uploads stored nothing


def test_upload_slots_are_given_back_once():
    slots = UploadSlots(1)
    give_back = slots.take()
    with pytest.raises(Exception, match="streaming uploads are in progress"):
        slots.take()
    give_back()
    give_back()
    assert slots.taken == 0
    slots.take()
    assert slots.taken == 1


def test_limits_from_settings_follow_the_flags():
    settings = Settings(max_message_mb=3, gateway_header_timeout=1.5, gateway_max_uploads=2)
    limits = GatewayLimits.from_settings(settings)
    assert limits.max_body_bytes == 3 * MIB and limits.header_timeout == 1.5 and limits.max_uploads == 2
    assert GatewayLimits().body_timeout == Settings().gateway_body_timeout
    with pytest.raises(ValueError, match="header timeout"):
        GatewayLimits(header_timeout=0)
    with pytest.raises(ValueError, match="gateway-max-uploads"):
        Settings(gateway_max_uploads=0).check()


def test_large_and_compressed_bodies_and_large_answers_are_handled_off_the_event_loop(http, client, monkeypatch):
    """The event loop serves every connection: a body or answer of megabytes is parsed and encoded on a
    JSON thread (the same request small, on the loop's own thread)."""
    import gzip
    import threading

    from regserve.server.gateway import proxy, v2

    rng = np.random.default_rng(31)
    X = rng.normal(size=(400, 3))
    client.train("house", X, X @ [1.0, 2.0, 3.0])
    seen: list[tuple[str, str]] = []

    def spied(module, name):
        original = getattr(module, name)

        def run(*args, **kwargs):
            seen.append((name, threading.current_thread().name))
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, run)

    spied(proxy, "build_request")
    spied(proxy, "json_answer")
    spied(v2, "fill_infer_request")
    small = json.dumps({"inputs": {"numColumns": 3, "values": X[:2].ravel().tolist()}}).encode()
    rows = np.tile(X, (40, 1))  # 16,000 rows: a body of about 1 MB, an answer of about 300 KB
    large = json.dumps({"inputs": {"numColumns": 3, "values": rows.ravel().tolist()}}).encode()
    headers = {"content-type": "application/json"}
    for body, extra in ((small, {}), (large, {}), (gzip.compress(small), {"content-encoding": "gzip"})):
        assert http.post("/v1/models/house:predict", content=body, headers={**headers, **extra}).status_code == 200
    infer = {"inputs": [{"name": "inputs", "shape": [2, 3], "datatype": "FP64", "data": X[:2].ravel().tolist()}]}
    assert http.post("/v2/models/house/infer", json=infer).status_code == 200
    infer["inputs"][0].update(shape=list(rows.shape), data=rows.ravel().tolist())
    assert http.post("/v2/models/house/infer", json=infer).status_code == 200
    on_threads = [name.startswith("regserve-gateway-json") for name in (thread for _, thread in seen)]
    called = [name for name, _ in seen]
    assert called == ["build_request", "json_answer"] * 3 + ["fill_infer_request"] * 2, seen
    # Small body and answer on the loop; large body and large answer off it; a compressed body off it.
    assert on_threads == [False, False, True, True, True, False, False, True], seen
