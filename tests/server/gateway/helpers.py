"""Serving the REST gateway in a test: uvicorn on 127.0.0.1:0 in a thread, and an httpx client on it."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn

from regserve.server.gateway.app import create_gateway_app

MODES = ("upstream", "in_process")
"""How the gateway reaches the servicers: over gRPC, or in process as inside ``regserve serve``."""


@contextmanager
def running_gateway(target: str, local=None):
    """Serve the gateway for ``target`` and yield an httpx client on it.

    With ``local`` (an ``Application.local``), unary routes call the server's handlers
    in process, as the gateway embedded in ``regserve serve`` does.
    """
    config = uvicorn.Config(
        create_gateway_app(target, local=local),
        host="127.0.0.1",
        port=0,
        loop="asyncio",
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
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
