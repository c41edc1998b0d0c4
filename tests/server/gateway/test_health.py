"""/healthz and /readyz over real HTTP, in front of a real gRPC server: embedded, upstream and standalone."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from regserve.server.gateway.health import HEALTH_PATHS
from tests.conftest import start_server
from tests.server.gateway.helpers import MODES, running_gateway

ROOT = Path(__file__).resolve().parents[3]
LIVE, READY = HEALTH_PATHS


def _answer(http: httpx.Client, path: str) -> tuple[int, dict]:
    response = http.get(path)
    return response.status_code, response.json()


@pytest.fixture(params=MODES)
def http(request, app, target):
    with running_gateway(target, app.local if request.param == "in_process" else None) as client:
        yield client


def test_ready_follows_grpc_health_from_no_model_to_serving_to_drain(http, app, client, linear_data):
    assert _answer(http, LIVE) == (200, {"status": "live"})
    assert _answer(http, READY) == (503, {"status": "NOT_SERVING"})
    client.train("house", *linear_data)
    assert client.health() == "SERVING"
    assert _answer(http, READY) == (200, {"status": "SERVING"})
    app.drain()
    assert client.health() == "NOT_SERVING"
    assert _answer(http, READY) == (503, {"status": "NOT_SERVING"})
    assert _answer(http, LIVE) == (200, {"status": "live"})


def test_an_unreachable_server_is_not_ready_but_the_gateway_is_live():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with running_gateway(f"127.0.0.1:{port}") as http:
        assert _answer(http, LIVE) == (200, {"status": "live"})
        assert _answer(http, READY) == (503, {"status": "UNKNOWN", "error": "UNAVAILABLE"})


def test_health_routes_need_no_token(tmp_path, linear_data):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("admin:s3cret-admin-token\n", encoding="utf-8")
    app = start_server(tmp_path / "models", tokens_file=str(tokens))
    try:
        with running_gateway(f"127.0.0.1:{app.port}", app.local) as http:
            assert http.get("/v1/models").status_code == 401  # the API itself wants the token
            assert _answer(http, LIVE) == (200, {"status": "live"})
            assert _answer(http, READY) == (503, {"status": "NOT_SERVING"})
    finally:
        app.stop(0)


def test_health_routes_are_in_the_openapi_document(http):
    paths = http.get("/openapi.json").json()["paths"]
    assert paths[LIVE]["get"]["responses"].keys() == {"200"}
    assert paths[READY]["get"]["responses"].keys() == {"200", "503"}
    assert "Health" in paths[READY]["get"]["tags"]


def test_the_standalone_gateway_asks_its_upstream(app, target, client, linear_data):
    """`regserve gateway --upstream` as its own process: ready only while the server it fronts is SERVING."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "regserve.server.cli", "gateway", "--upstream", target, "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    live = _answer(http, LIVE)
                    break
                except httpx.TransportError:
                    assert process.poll() is None and time.monotonic() < deadline, "the gateway did not start"
                    time.sleep(0.1)
            assert live == (200, {"status": "live"})
            assert _answer(http, READY) == (503, {"status": "NOT_SERVING"})
            client.train("house", *linear_data)
            assert _answer(http, READY) == (200, {"status": "SERVING"})
            app.drain()
            assert _answer(http, READY) == (503, {"status": "NOT_SERVING"})
            assert _answer(http, LIVE) == (200, {"status": "live"})
    finally:
        process.terminate()
        process.wait(30)
