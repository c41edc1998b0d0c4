"""The REST/JSON gateway: HTTP routes read from the contract's ``google.api.http`` rules.

``create_gateway_app(target)`` builds a Starlette app that serves every HTTP binding
of every regserve.v1 RPC by calling the gRPC server at ``target`` (inside the server,
``EmbeddedGateway`` answers the unary ones in process instead); ``run_gateway``
serves it with uvicorn.  Besides the API routes the app serves ``/openapi.json``
(generated from the same descriptors and the proto comments), ``/docs`` (Swagger
UI from the local assets of the ``swagger-ui-bundle`` package), and ``/healthz`` and
``/readyz`` (``health``: liveness, and readiness as the server's gRPC health reports it).

The modules behind it, each with one job:

- ``rules``: the route table and path templates, from the descriptors;
- ``codec``: JSON, path variables and query parameters to and from messages;
- ``proxy``: the generic handler of a route, unary calls on one ``grpc.aio`` channel;
- ``call_options``: headers to call metadata and deadline;
- ``streams`` and ``ndjson``: NDJSON bodies streamed to Train and BatchPredict;
- ``local``: unary calls answered in process, through the edge, by the embedded gateway;
- ``admission``: the edge's token and rate-limit refusals, before a body is read;
- ``limits`` and ``connections``: body sizes, uploads, timeouts and connections;
- ``errors`` and ``answers``: gRPC status to HTTP status, error bodies as ``google.rpc.Status`` JSON;
- ``openapi``: the OpenAPI 3 document;
- ``health``: ``/healthz`` and ``/readyz``, open to every caller;
- ``v2``, ``v2_codec`` and ``v2_openapi``: the Open Inference Protocol's REST API (``/v2/...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import threading
import time
from collections.abc import Iterable
from importlib import metadata
from typing import NoReturn

import grpc
import uvicorn
from google.protobuf.descriptor import ServiceDescriptor
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Match, Mount, NoMatchFound, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from regserve.server.gateway.answers import RequestIdOnErrors
from regserve.server.gateway.connections import protocol_for, quiet_accept_errors
from regserve.server.gateway.errors import EXCEPTION_HANDLERS
from regserve.server.gateway.health import ReadinessProbe, add_health_paths, health_routes
from regserve.server.gateway.limits import GatewayLimits, UploadSlots
from regserve.server.gateway.local import LocalDispatch
from regserve.server.gateway.openapi import load_comments, openapi_document
from regserve.server.gateway.proxy import Upstream, endpoint_for
from regserve.server.gateway.rules import HttpRoute, contract_services, http_routes, sent_path
from regserve.server.gateway.v2 import v2_http_routes, v2_routes
from regserve.server.gateway.v2_openapi import add_v2_paths
from regserve.server.observability.tracing import Tracing, TracingMiddleware

__all__ = [
    "EmbeddedGateway",
    "GatewayLimits",
    "HttpRoute",
    "create_gateway_app",
    "gateway_routes",
    "run_gateway",
    "uvicorn_config",
]

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
DOCS_STATIC = "/docs/static"


def gateway_routes(services: Iterable[ServiceDescriptor] | None = None) -> list[HttpRoute]:
    """The HTTP routes the gateway serves: every binding of every method of ``services`` (default: regserve.v1)."""
    return http_routes(contract_services() if services is None else services)


class _RuleRoute(BaseRoute):
    """A Starlette route for one HTTP binding; a path match with another method is a 405."""

    def __init__(
        self,
        route: HttpRoute,
        upstream: Upstream,
        siblings: list[_RuleRoute],
        local: LocalDispatch | None,
        limits: GatewayLimits,
        uploads: UploadSlots,
    ) -> None:
        self.route = route
        self.endpoint = endpoint_for(route, upstream, local, limits=limits, uploads=uploads)
        self.siblings = siblings

    @property
    def path(self) -> str:
        """The path template, as Starlette's routes name theirs (a trace's span name reads it)."""
        return self.route.path.template

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        values = self.route.path.match(sent_path(scope))
        if values is None:
            return Match.NONE, {}
        child = {"endpoint": self.endpoint, "path_params": values, "route": self}
        return (Match.FULL if self.route.answers(scope["method"]) else Match.PARTIAL), child

    def url_path_for(self, name: str, /, **path_params) -> NoReturn:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.route.answers(scope["method"]):
            path = sent_path(scope)
            allowed = sorted(
                {m for r in self.siblings if r.route.path.match(path) is not None for m in r.route.allowed}
            )
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(allowed)})
        request = Request(scope, receive, send)
        response = await self.endpoint(request, scope["path_params"])
        await response(scope, receive, send)


def _docs_page(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    static = html.escape(root + DOCS_STATIC)
    spec = json.dumps(root + "/openapi.json")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>regserve REST API</title>
<link rel="stylesheet" href="{static}/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script src="{static}/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: {spec},
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  validatorUrl: null
}});
</script>
</body>
</html>
"""
    return HTMLResponse(page)


def _version() -> str:
    try:
        return metadata.version("regserve")
    except metadata.PackageNotFoundError:
        return "0"


def create_gateway_app(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    services: Iterable[ServiceDescriptor] | None = None,
    max_message_bytes: int = 64 * MIB,
    channels: int = 1,
    local: LocalDispatch | None = None,
    limits: GatewayLimits | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """The ASGI app serving the REST routes of ``services`` (default: every regserve.v1 service) from ``target``.

    ``target`` is the gRPC server's ``host:port``; with ``credentials`` the channel
    uses TLS.  The channel opens on the first request and closes at shutdown; with
    ``channels`` above 1, that many connections are opened and used in turn.  With
    ``local``, the gateway runs inside the server and calls unary methods in process.
    ``limits`` bound bodies and uploads (default: bodies of ``max_message_bytes``).
    With ``tracing``, each HTTP request has a span, the parent of its gRPC call's.
    """
    limits = limits or GatewayLimits(max_body_bytes=max_message_bytes)
    routes = gateway_routes(services)
    upstream = Upstream(target, credentials, max_message_bytes, channels, answer_threads=limits.max_uploads)
    uploads = UploadSlots(limits.max_uploads)
    document = add_v2_paths(openapi_document(routes, title="regserve", version=_version(), comments=load_comments()))
    add_health_paths(document)
    probe = ReadinessProbe(target, credentials)

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(document)

    health = health_routes(probe)
    v2_count = len(v2_http_routes())
    # The start-up line counts every route served, not only /v1's, so it agrees with /openapi.json and /docs.
    served = [f"{len(routes)} /v1", f"{v2_count} /v2", *(route.path for route in health), "/openapi.json", "/docs"]
    served_count = len(routes) + v2_count + len(health) + 2

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        logger.info("REST gateway to %s: %d routes (%s)", target, served_count, ", ".join(served))
        quiet_accept_errors(asyncio.get_running_loop())
        yield
        await upstream.close()
        await probe.close()

    rule_routes: list[_RuleRoute] = []
    rule_routes.extend(_RuleRoute(route, upstream, rule_routes, local, limits, uploads) for route in routes)
    app = Starlette(
        routes=[
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", _docs_page, methods=["GET"]),
            Mount(DOCS_STATIC, app=StaticFiles(directory=str(swagger_ui_path)), name="docs-static"),
            *health,
            *rule_routes,
            *v2_routes(upstream, local, limits),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.add_middleware(RequestIdOnErrors)
    if tracing is not None:
        app.add_middleware(TracingMiddleware, tracing=tracing)
    app.state.routes = routes
    app.state.upstream = upstream
    app.state.limits = limits
    return app


def uvicorn_config(app: Starlette, **options) -> uvicorn.Config:
    """uvicorn's settings for serving the gateway ``app``: its connection protocol, idle timeout and event loop.

    ``options`` are more ``uvicorn.Config`` arguments (host, port, log settings).
    """
    limits: GatewayLimits = app.state.limits
    # grpc.aio needs the standard asyncio loop; uvloop is not supported by it.
    # Each call is logged once, as JSON, by the gRPC server behind the gateway; uvicorn's
    # own access log would write a second line per request.
    return uvicorn.Config(
        app,
        loop="asyncio",
        http=protocol_for(limits),
        timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]  # uvicorn waits with call_later: a float works
        access_log=False,
        **options,
    )


def run_gateway(
    host: str,
    port: int,
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    log_level: str = "info",
    grace_seconds: float = 10.0,
    channels: int = 1,
    limits: GatewayLimits | None = None,
) -> None:
    """Serve the gateway on ``host:port`` with uvicorn until interrupted, proxying to ``target``.

    On SIGTERM or SIGINT, open HTTP calls get ``grace_seconds`` to finish.
    ``limits`` (default: ``GatewayLimits()``) also sets the largest message to and from ``target``.
    The OTEL_EXPORTER_OTLP_* variables turn tracing on, as for the server.
    """
    limits = limits or GatewayLimits()
    tracing = Tracing.from_settings("")
    app = create_gateway_app(
        target,
        credentials=credentials,
        channels=channels,
        max_message_bytes=limits.max_body_bytes,
        limits=limits,
        tracing=tracing,
    )
    config = uvicorn_config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        # uvicorn types the grace period as int, but waits with asyncio.timeout, which takes a float.
        timeout_graceful_shutdown=grace_seconds,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        if tracing is not None:
            tracing.shutdown()


class EmbeddedGateway:
    """The gateway served by uvicorn on a thread of the server process, on an already bound socket.

    Unary routes call the server's handlers in process (``local``); streaming routes
    call ``target`` over gRPC.  ``stop`` gives open HTTP calls ``grace_seconds`` to finish.
    ``limits`` (default: bodies of ``max_message_bytes``, the rest ``GatewayLimits()``)
    bound bodies, uploads, connections and their timeouts.
    """

    def __init__(
        self,
        sock,
        target: str,
        local: LocalDispatch | None,
        *,
        log_level: str = "info",
        grace_seconds: float = 10.0,
        max_message_bytes: int = 64 * MIB,
        limits: GatewayLimits | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        app = create_gateway_app(
            target, local=local, max_message_bytes=max_message_bytes, limits=limits, tracing=tracing
        )
        # log_config=None: uvicorn's own logging set-up (dictConfig) would close every
        # handler of this process, the access log's among them.  proxy_headers=False:
        # X-Forwarded-For from a local client must not choose its rate-limit bucket.
        config = uvicorn_config(
            app,
            log_config=None,
            log_level=log_level.lower(),
            proxy_headers=False,
            timeout_graceful_shutdown=grace_seconds,  # a float works (see run_gateway)
        )
        self._sock = sock
        self._grace_seconds = grace_seconds
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="regserve-gateway", daemon=True
        )
        self.port = sock.getsockname()[1]

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the REST gateway did not start")
            time.sleep(0.01)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(self._grace_seconds + 5)
        self._sock.close()
