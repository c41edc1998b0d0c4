"""Serving the REST gateway in a test: uvicorn on 127.0.0.1:0 in a thread, httpx and raw sockets on it."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn

from regserve.server.gateway.app import create_gateway_app, uvicorn_config

MODES = ("upstream", "in_process")
"""How the gateway reaches the servicers: over gRPC, or in process as inside ``regserve serve``."""


@contextmanager
def serving(app):
    """Serve the gateway ``app`` on 127.0.0.1:0 and yield an httpx client on it."""
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def running_gateway(target: str, local=None, *, limits=None):
    """Serve the gateway for ``target`` and yield an httpx client on it.

    With ``local`` (an ``Application.local``), unary routes call the server's handlers
    in process, as the gateway embedded in ``regserve serve`` does.  ``limits`` is a
    ``GatewayLimits`` (default: the gateway's own).
    """
    with serving(create_gateway_app(target, local=local, limits=limits)) as client:
        yield client


def connect(http: httpx.Client, timeout: float = 10.0) -> socket.socket:
    """A raw TCP connection to the gateway behind the client ``http``."""
    return socket.create_connection((http.base_url.host, http.base_url.port), timeout=timeout)


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 request line and headers, ending with the empty line."""
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def read_answer(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body (by Content-Length) of the next answer on ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        assert more, f"the connection closed before an answer: {data!r}"
        data += more
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        more = conn.recv(65536)
        assert more, "the connection closed in the middle of an answer"
        body += more
    return int(status_line.split()[1]), headers, body[:length]


def closed_within(conn: socket.socket, seconds: float) -> bool:
    """True when the server closes ``conn`` (EOF or reset) within ``seconds``; what it sent first is skipped."""
    conn.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not conn.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False
