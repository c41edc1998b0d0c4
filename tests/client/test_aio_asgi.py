"""The asyncio client inside an ASGI service: a Starlette app under uvicorn that calls regserve per request.

The app opens its client in its lifespan, in uvicorn's event loop, as a service built on
Starlette or FastAPI would; the test talks to it over real HTTP.
"""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from regserve.client import RegserveError
from regserve.client.aio import AsyncRegressionClient


def pricing_app(target: str) -> Starlette:
    """A service that prices houses with regserve's "house" model."""

    async def price(request: Request) -> JSONResponse:
        rows = np.asarray((await request.json())["rows"], dtype=np.float64)
        prediction = await request.app.state.regserve.predict("house", rows)
        return JSONResponse({"version": prediction.version, "prices": prediction.values.tolist()})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"regserve": await request.app.state.regserve.health()})

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RegserveError)
        body = {"code": exc.code.name, "reason": exc.reason, "request_id": exc.request_id}
        return JSONResponse(body, status_code=502)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        async with AsyncRegressionClient(target, timeout=30) as client:
            app.state.regserve = client
            yield

    return Starlette(
        routes=[Route("/price", price, methods=["POST"]), Route("/health", health)],
        exception_handlers={RegserveError: refused},
        lifespan=lifespan,
    )


@contextlib.contextmanager
def serving(app: Starlette):
    """Serve ``app`` with uvicorn on 127.0.0.1:0 in a thread; yield an httpx client on it."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_starlette_service_answers_from_regserve_through_the_asyncio_client(target, client, linear_data):
    X, y = linear_data
    with serving(pricing_app(target)) as http:
        assert http.get("/health").json() == {"regserve": "NOT_SERVING"}
        refused = http.post("/price", json={"rows": X[:2].tolist()})
        assert refused.status_code == 502
        assert refused.json()["code"] == "NOT_FOUND" and refused.json()["reason"] == "UNKNOWN_MODEL"
        assert len(refused.json()["request_id"]) == 32

        client.train("house", X, y)
        answers = [http.post("/price", json={"rows": X[i : i + 5].tolist()}).json() for i in range(0, 50, 5)]
        assert http.get("/health").json() == {"regserve": "SERVING"}
    assert {answer["version"] for answer in answers} == {"v1"}
    np.testing.assert_array_equal(
        np.concatenate([answer["prices"] for answer in answers]), client.predict("house", X[:50]).values
    )
