"""HTTP health for load balancers and probes that cannot speak gRPC: ``/healthz`` and ``/readyz``.

``/healthz`` (live) answers 200 whenever the gateway's event loop answers at all.
``/readyz`` (ready) asks the gRPC server's ``grpc.health.v1.Health/Check`` for the
server as a whole and answers 200 only when it is SERVING, 503 otherwise: before any
model serves, while the server drains, and when the server cannot be reached.  Inside
``regserve serve`` the gateway asks its own server, so both faces leave a load
balancer's pool at the same moment; the standalone ``regserve gateway`` asks the
server it fronts.  Like gRPC health, both routes are open to callers without a token.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["HEALTH_PATHS", "ReadinessProbe", "add_health_paths", "health_routes"]

logger = logging.getLogger(__name__)

HEALTH_PATHS = ("/healthz", "/readyz")
CHECK_TIMEOUT_SECONDS = 5.0
"""How long ``/readyz`` waits for the gRPC health answer; a probe that waits longer reads a hung server as ready."""

_CHECK = "/grpc.health.v1.Health/Check"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_STATUS_NAMES = health_pb2.HealthCheckResponse.ServingStatus


class ReadinessProbe:
    """Asks ``target``'s gRPC health for the server as a whole, on a channel of its own opened on first use.

    The channel is its own so that a probe never waits behind a large body on the API's channels.
    """

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.target = target
        self.credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._callable: grpc.aio.UnaryUnaryMultiCallable | None = None

    def _check(self) -> grpc.aio.UnaryUnaryMultiCallable:
        if self._channel is None or self._callable is None:
            if self.credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target)
            else:
                self._channel = grpc.aio.secure_channel(self.target, self.credentials)
            self._callable = self._channel.unary_unary(
                _CHECK,
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
        return self._callable

    async def status(self) -> tuple[str, str | None]:
        """The server's health status by name, and the gRPC code of the failed check when it could not be asked."""
        try:
            answer = await self._check()(health_pb2.HealthCheckRequest(service=""), timeout=CHECK_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            return _STATUS_NAMES.Name(health_pb2.HealthCheckResponse.UNKNOWN), error.code().name
        return _STATUS_NAMES.Name(answer.status), None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._callable = None


def health_routes(probe: ReadinessProbe) -> list[Route]:
    """The ``/healthz`` and ``/readyz`` routes, ``/readyz`` answered from ``probe``."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "live"})

    async def readyz(request: Request) -> JSONResponse:
        status, error = await probe.status()
        body: dict[str, Any] = {"status": status}
        if error is not None:
            body["error"] = error
        return JSONResponse(body, status_code=200 if status == _STATUS_NAMES.Name(_SERVING) else 503)

    return [Route(HEALTH_PATHS[0], healthz, methods=["GET"]), Route(HEALTH_PATHS[1], readyz, methods=["GET"])]


def _answer(description: str, example: dict[str, str], schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema, "example": example}}}


def add_health_paths(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the two health routes and their tag added, in place; returns it."""
    schema = {
        "type": "object",
        "properties": {
            "status": {
                "type": "string",
                "description": "live for /healthz; for /readyz the grpc.health.v1 status of the server as a whole.",
                "enum": ["live", *_STATUS_NAMES.keys()],
            },
            "error": {"type": "string", "description": "The gRPC code of the health check that failed, if one did."},
        },
    }
    document.setdefault("tags", []).append(
        {"name": "Health", "description": "Liveness and readiness over HTTP, open to callers without a token."}
    )
    document["paths"][HEALTH_PATHS[0]] = {
        "get": {
            "operationId": "Health_Live",
            "tags": ["Health"],
            "summary": "Liveness: 200 while the process runs and answers.",
            "responses": {"200": _answer("The process answers.", {"status": "live"}, schema)},
        }
    }
    document["paths"][HEALTH_PATHS[1]] = {
        "get": {
            "operationId": "Health_Ready",
            "tags": ["Health"],
            "summary": "Readiness: 200 only while grpc.health.v1 reports the server SERVING.",
            "description": "503 before any model serves, while the server drains, and when it cannot be reached.",
            "responses": {
                "200": _answer("The server is SERVING.", {"status": "SERVING"}, schema),
                "503": _answer("The server is not ready.", {"status": "NOT_SERVING"}, schema),
            },
        }
    }
    return document
