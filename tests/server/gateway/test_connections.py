"""HTTP connections time out, are bounded in number, and running out of descriptors logs one line.

Raw sockets to a real gateway on 127.0.0.1:0, with short timeouts; each wait is bounded.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import time

import numpy as np
import pytest

from regserve.server.gateway.app import EmbeddedGateway, GatewayLimits
from regserve.server.gateway.connections import (
    MAX_HEAD_BYTES,
    MIN_BODY_RATE,
    connection_bound,
    quiet_accept_errors,
)
from tests.server.gateway.helpers import chunk, closed_within, connect, head, read_answer, running_gateway

SHORT = GatewayLimits(header_timeout=0.5, body_timeout=0.5, idle_timeout=0.5)
"""Timeouts short enough for a test; each test waits at most a few seconds past them."""


@pytest.fixture
def http(target):
    with running_gateway(target, limits=SHORT) as client:
        yield client


def test_a_connection_that_sends_no_headers_is_closed_after_the_header_timeout(http):
    with connect(http) as conn:
        assert closed_within(conn, 5)


def test_headers_sent_a_byte_at_a_time_do_not_keep_the_connection(http):
    """A slowloris client: each byte arrives within the timeout, the whole head does not."""
    request = head("GET", "/v1/models", {"X-Padding": "p" * 200})
    with connect(http) as conn:
        started = time.monotonic()
        try:
            for byte in request[:-4]:
                conn.sendall(bytes([byte]))
                time.sleep(0.05)
                assert time.monotonic() - started < 5, "the connection outlived its header timeout"
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_within(conn, 5)


def test_a_body_that_stalls_is_closed_after_the_body_timeout(http):
    headers = {"Content-Type": "application/json", "Content-Length": "1000"}
    with connect(http) as conn:
        conn.sendall(head("POST", "/v1/models/house:predict", headers) + b'{"inputs": ')
        assert closed_within(conn, 5)


def test_a_body_answered_before_it_was_read_that_stalls_is_closed(http):
    """A wrong route or content type is answered at once; the rest of the body is still bounded in time."""
    for path, content_type in (("/v2/nothing", "application/json"), ("/v1/models/house:predict", "text/plain")):
        with connect(http) as conn:
            conn.sendall(head("POST", path, {"Content-Type": content_type, "Content-Length": "100000"}) + b"{")
            status, _, _ = read_answer(conn)
            assert status in (404, 415)
            conn.sendall(b"more of the body, then nothing")
            assert closed_within(conn, 5)


def test_a_streaming_upload_that_stalls_is_closed_and_stores_nothing(http):
    headers = {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"}
    with connect(http) as conn:
        conn.sendall(head("POST", "/v1/models:train", headers))
        conn.sendall(chunk(json.dumps({"spec": {"model": "stalled", "kind": "MODEL_KIND_LINEAR"}}).encode() + b"\n"))
        assert closed_within(conn, 5)
    assert http.get("/v1/models").json().get("models", []) == []


def test_a_slow_body_that_keeps_sending_is_served(http, client, linear_data):
    """Bytes that keep coming within the body timeout, at more than the least rate, are not a stall,
    however long the body takes."""
    X, y = linear_data
    client.train("house", X, y)
    body = json.dumps({"inputs": {"numColumns": 5, "values": X[:100].ravel().tolist()}}).encode()
    assert len(body) / 0.8 > MIN_BODY_RATE
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    with connect(http) as conn:
        conn.sendall(head("POST", "/v1/models/house:predict", headers))
        pieces = [body[i : i + len(body) // 8 + 1] for i in range(0, len(body), len(body) // 8 + 1)]
        for piece in pieces:  # about 0.8 s in all, more than the body timeout, 0.1 s apart
            time.sleep(0.1)
            conn.sendall(piece)
        status, _, answer = read_answer(conn)
    assert status == 200 and len(json.loads(answer)["predictions"]["values"]) == 100


def test_a_body_trickled_below_the_least_rate_is_closed(http):
    """Each byte within the body timeout, but a few bytes a second: closed once the wait outlasts the timeout."""
    headers = {"Content-Type": "application/json", "Content-Length": "100000"}
    with connect(http) as conn:
        conn.sendall(head("POST", "/v1/models/house:predict", headers))
        started = time.monotonic()
        try:
            while time.monotonic() - started < 5:
                conn.sendall(b" ")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - started < 5, "the trickled body kept its connection"
        assert closed_within(conn, 5)


def test_an_ndjson_stream_of_slow_lines_is_not_held_to_the_least_rate(http):
    """Lines of a stream come as their client makes them: each within the body timeout is enough."""
    rng = np.random.default_rng(9)
    headers = {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"}
    spec = {"spec": {"model": "slow", "kind": "MODEL_KIND_LINEAR"}}
    with connect(http) as conn:
        conn.sendall(head("POST", "/v1/models:train", headers) + chunk(json.dumps(spec).encode() + b"\n"))
        for _ in range(8):  # 1.6 s of 0.2 s pauses, past the 0.5 s body timeout, at some 500 bytes/s
            time.sleep(0.2)
            X = rng.normal(size=(1, 2))
            line = {
                "chunk": {
                    "features": {"numColumns": 2, "values": X.ravel().tolist()},
                    "targets": {"values": X.sum(axis=1).tolist()},
                }
            }
            conn.sendall(chunk(json.dumps(line).encode() + b"\n"))
        conn.sendall(b"0\r\n\r\n")
        status, _, answer = read_answer(conn)
    assert status == 200, answer


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(http):
    with connect(http) as conn:
        conn.sendall(head("GET", "/v1/models", {}))
        status, headers, _ = read_answer(conn)
        assert status == 200 and headers.get("connection") != "close"
        assert closed_within(conn, 5)


def test_headers_past_the_size_bound_are_431(http):
    with connect(http) as conn:
        conn.sendall(head("GET", "/v1/models", {f"X-Big-{i}": "v" * 1000 for i in range(MAX_HEAD_BYTES // 1000 + 2)}))
        status, _, body = read_answer(conn)
    assert status == 431 and json.loads(body)["details"][0]["reason"] == "HEADERS_TOO_LARGE"


@pytest.mark.parametrize(
    ("limits", "held_count", "reason"),
    [
        (GatewayLimits(max_connections=3), 3, "TOO_MANY_CONNECTIONS"),
        (GatewayLimits(max_connections=10, max_connections_per_peer=2), 2, "TOO_MANY_CONNECTIONS_FROM_PEER"),
    ],
    ids=["in-all", "from-one-host"],
)
def test_connections_past_the_bound_are_answered_503_and_closed(target, limits, held_count, reason):
    with running_gateway(target, limits=limits) as http:
        held = [connect(http) for _ in range(held_count)]
        try:
            time.sleep(0.2)  # the gateway has accepted them
            with connect(http) as extra:
                status, headers, body = read_answer(extra)
                assert status == 503 and json.loads(body)["details"][0]["reason"] == reason
                assert headers["retry-after"] == "1"
                assert closed_within(extra, 5)
        finally:
            for conn in held:
                conn.close()
        deadline = time.monotonic() + 5
        while http.get("/v1/models", headers={"Connection": "close"}).status_code != 200:
            assert time.monotonic() < deadline, "closed connections were not given back"


def test_the_embedded_gateway_applies_its_limits(app):
    sock = socket.create_server(("127.0.0.1", 0))
    gateway = EmbeddedGateway(sock, f"127.0.0.1:{app.port}", app.local, limits=SHORT)
    gateway.start()
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
            assert closed_within(conn, 5)
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
            conn.sendall(head("POST", "/v1/models/m:predict", {"Content-Length": str(10**9)}))
            assert read_answer(conn)[0] == 413  # bodies over --max-message-mb
    finally:
        gateway.stop()


def test_running_out_of_descriptors_logs_one_line_per_interval(caplog):
    loop = asyncio.new_event_loop()
    try:
        quiet_accept_errors(loop)
        with caplog.at_level(logging.WARNING):
            for _ in range(50):  # what asyncio reports on every accept that fails with EMFILE
                error = OSError(errno.EMFILE, "Too many open files")
                loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": error})
            loop.call_exception_handler({"message": "something else", "exception": ValueError("other")})
    finally:
        loop.close()
    accept_lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(accept_lines) == 1 and accept_lines[0].exc_info is None
    assert any("something else" in r.getMessage() for r in caplog.records)  # other errors are logged as before


def test_requests_that_do_not_parse_are_answered_400_and_logged_once_per_interval(http, caplog, monkeypatch):
    from regserve.server.gateway import connections

    monkeypatch.setattr(connections._INVALID_REQUESTS, "last", None)  # another test's report may be recent
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        for _ in range(20):
            with connect(http) as conn:
                conn.sendall(b"\x16\x03\x01 not HTTP at all\r\n\r\n")
                status, _, _ = read_answer(conn)
                assert status == 400
    lines = [r for r in caplog.records if r.getMessage().startswith("Invalid HTTP request")]
    assert len(lines) == 1, [r.getMessage() for r in lines]


def test_the_connection_bound_fits_the_open_file_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    bound = connection_bound(GatewayLimits(max_connections=10**9))
    now_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert now_soft == (hard if hard != resource.RLIM_INFINITY else now_soft) and now_soft >= soft
    assert bound == now_soft // 2
    assert connection_bound(GatewayLimits(max_connections=10)) == 10


def test_the_gateway_command_takes_its_limits_from_its_flags(target):
    """`regserve gateway` as its own process: the header timeout and the body limit come from its flags."""
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flags = ["--header-timeout", "0.5", "--max-message-mb", "1", "--max-uploads", "2", "--max-connections", "50"]
    command = [
        sys.executable,
        "-m",
        "regserve.server.cli",
        "gateway",
        "--upstream",
        target,
        "--port",
        str(port),
        *flags,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        with conn:
            assert closed_within(conn, 5)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(head("POST", "/v1/models/m:predict", {"Content-Length": str(2 * 1024 * 1024)}))
            status, _, body = read_answer(conn)
            assert status == 413 and json.loads(body)["details"][0]["reason"] == "BODY_TOO_LARGE"
    finally:
        process.terminate()
        process.wait(10)
