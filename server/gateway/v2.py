"""The Open Inference Protocol's REST API (KServe v2): ``/v2/...`` routes over ``inference.GRPCInferenceService``.

Each route calls one method of the protocol's gRPC service, as the regserve.v1 routes
call theirs: inside the server in process through the edge (``LocalDispatch``), else
over gRPC, so authentication, rate limits, request ids, metrics, the access log and
the error model are the gRPC service's own.  What differs is the protocol's JSON:
bodies are read and answers written by ``v2_codec`` (tensors, the binary tensor data
extension), health answers carry their verdict in the status code (200, or 400 for
false, as the protocol says), and errors are ``{"error": message, "reason": REASON}``
with the HTTP status of the gRPC code (400, 404, 429, 503, ...).

    GET  /v2                                     ServerMetadata
    GET  /v2/health/live | /v2/health/ready      ServerLive | ServerReady
    GET  /v2/models/{name}[/versions/{version}]  ModelMetadata
    GET  .../ready                               ModelReady
    POST .../infer                               ModelInfer
    POST /v2/repository/index                    RepositoryIndex (Triton's model repository extension)
    POST /v2/repository/models/{name}/load       RepositoryModelLoad
    POST /v2/repository/models/{name}/unload     RepositoryModelUnload
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.rpc import code_pb2, error_details_pb2, status_pb2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from regserve.inference import grpc_service_pb2
from regserve.server.edge.request_ids import REQUEST_ID
from regserve.server.errors import RegserveError
from regserve.server.gateway.answers import echoed_headers
from regserve.server.gateway.call_options import call_options
from regserve.server.gateway.errors import GatewayError, error_headers, http_status_for, status_from_rpc_error
from regserve.server.gateway.limits import GatewayLimits, answer_of, parse_body, read_body
from regserve.server.gateway.local import LocalDispatch, peer_of
from regserve.server.gateway.proxy import Upstream
from regserve.server.gateway.rules import HttpRoute, PathTemplate, sent_path
from regserve.server.gateway.v2_codec import (
    HEADER_LENGTH,
    OutputChoice,
    answer_body,
    fill_infer_request,
    fill_repository_request,
    metadata_json,
)
from regserve.server.rpc.status import rich_status, status_for

__all__ = ["INFERENCE_SERVICE", "V2_ROUTES", "v2_http_routes", "v2_routes"]

INFERENCE_SERVICE: ServiceDescriptor = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]

V2_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/v2", "ServerMetadata"),
    ("GET", "/v2/health/live", "ServerLive"),
    ("GET", "/v2/health/ready", "ServerReady"),
    ("GET", "/v2/models/{name}", "ModelMetadata"),
    ("GET", "/v2/models/{name}/versions/{version}", "ModelMetadata"),
    ("GET", "/v2/models/{name}/ready", "ModelReady"),
    ("GET", "/v2/models/{name}/versions/{version}/ready", "ModelReady"),
    ("POST", "/v2/models/{model_name}/infer", "ModelInfer"),
    ("POST", "/v2/models/{model_name}/versions/{model_version}/infer", "ModelInfer"),
    ("POST", "/v2/repository/index", "RepositoryIndex"),
    ("POST", "/v2/repository/models/{model_name}/load", "RepositoryModelLoad"),
    ("POST", "/v2/repository/models/{model_name}/unload", "RepositoryModelUnload"),
)
"""(HTTP method, path template, RPC): the protocol's REST API; path variables name the request's fields."""

_JSON = "application/json"
_BINARY = "application/octet-stream"
_BODY_TYPES = (_JSON, _BINARY)


def v2_http_routes() -> list[HttpRoute]:
    """The routes of ``V2_ROUTES`` as ``HttpRoute`` values of the inference service's methods."""
    routes = []
    for verb, template, rpc in V2_ROUTES:
        method = INFERENCE_SERVICE.methods_by_name[rpc]
        routes.append(HttpRoute(verb, PathTemplate.parse(template), "*" if verb == "POST" else "", "", method))
    return routes


# ------------------------------------------------------------------ answers


def _json(document: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def _reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        if detail.Is(cast(Descriptor, error_details_pb2.ErrorInfo.DESCRIPTOR)):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def error_answer(status: status_pb2.Status, http_status: int | None = None, headers: dict | None = None) -> Response:
    """The protocol's error object for ``status``, with the HTTP status of its code (Retry-After when it has one)."""
    document = {"error": status.message}
    if reason := _reason(status):
        document["reason"] = reason
    http_status = http_status or http_status_for(status.code)
    return _json(document, http_status, error_headers(status, http_status, headers))


def _status_of(error: RegserveError) -> status_pb2.Status:
    found = status_for(error)
    for key, value in found.trailing_metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(code=found.code.value[0], message=found.details)


def _verdict(document: dict[str, Any], flag: bool, headers: dict[str, str]) -> Response:
    """A health answer: 200 when ``flag`` is true, 400 when false, the protocol's object in both."""
    return _json(document, 200 if flag else 400, headers)


Answer = Callable[[Any, Any, OutputChoice | None, dict[str, str]], Response]


def _infer_answer(request, response, choice: OutputChoice | None, headers: dict[str, str]) -> Response:
    answer = answer_body(response, choice or OutputChoice())
    if answer.header_length is None:
        return Response(answer.body, media_type=_JSON, headers=headers)
    headers = {**headers, "Inference-Header-Content-Length": str(answer.header_length)}
    return Response(answer.body, media_type=_BINARY, headers=headers)


def _index_entry(entry) -> dict[str, str]:
    """One model version of a repository index, as Triton's REST API lists it (empty fields left out)."""
    found = {"name": entry.name, "version": entry.version, "state": entry.state, "reason": entry.reason}
    return {key: value for key, value in found.items() if value}


_ANSWERS: dict[str, Answer] = {
    "ServerMetadata": lambda req, res, _, h: _json(
        {"name": res.name, "version": res.version, "extensions": list(res.extensions)}, headers=h
    ),
    "ServerLive": lambda req, res, _, h: _verdict({"live": res.live}, res.live, h),
    "ServerReady": lambda req, res, _, h: _verdict({"ready": res.ready}, res.ready, h),
    "ModelReady": lambda req, res, _, h: _verdict({"name": req.name, "ready": res.ready}, res.ready, h),
    "ModelMetadata": lambda req, res, _, h: _json(metadata_json(res), headers=h),
    "ModelInfer": _infer_answer,
    "RepositoryIndex": lambda req, res, _, h: _json([_index_entry(entry) for entry in res.models], headers=h),
    "RepositoryModelLoad": lambda req, res, _, h: Response(b"", headers=h),
    "RepositoryModelUnload": lambda req, res, _, h: Response(b"", headers=h),
}


# ------------------------------------------------------------------ calls


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise GatewayError(
            code_pb2.INVALID_ARGUMENT,
            "Inference-Header-Content-Length must be a number of bytes",
            "INVALID_HEADER_LENGTH",
            violations=(("Inference-Header-Content-Length", "give the length of the JSON part of the body"),),
        )
    return int(value)


def _check_body_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in _BODY_TYPES and not media.endswith("+json"):
        raise GatewayError(
            code_pb2.INVALID_ARGUMENT,
            f"unsupported content type {media!r}; send {_JSON} or, with binary tensor data, {_BINARY}",
            "UNSUPPORTED_MEDIA_TYPE",
            http_status=415,
        )


def _endpoint(
    route: HttpRoute, upstream: Upstream, local: LocalDispatch | None, limits: GatewayLimits
) -> Callable[[Request, dict[str, str]], Awaitable[Response]]:
    """The handler of one v2 route: check the caller, build the request message, call, answer as the protocol does."""
    request_class = message_factory.GetMessageClass(route.method.input_type)
    response_class = message_factory.GetMessageClass(route.method.output_type)
    in_process = local if local is not None and local.serves(route.grpc_path) else None
    forwarding_key = local.forwarding_key if local is not None and in_process is None else ""
    admission = local.admission if local is not None and route.body else None
    answer = _ANSWERS[route.method.name]

    async def handle(request: Request, path_values: dict[str, str]) -> Response:
        headers: dict[str, str] = {}
        try:
            options = call_options(request, forwarding_key)
            peer = peer_of(request.client)
            if admission is not None:
                admission.check(
                    route.grpc_path, request.headers.get("authorization"), peer, request.headers.get(REQUEST_ID)
                )
            message = request_class(**path_values)
            choice = None
            if route.body:
                _check_body_type(request)
                length = _header_length(request)
                raw = await read_body(request, limits.max_body_bytes)
                fill: Callable[[bytes], OutputChoice | None]
                if route.method.name == "ModelInfer":
                    fill = functools.partial(fill_infer_request, message, header_length=length)
                else:
                    fill = functools.partial(fill_repository_request, message)
                choice = await parse_body(request, raw, limits.max_body_bytes, fill)
            if in_process is not None:
                response, sent = await in_process.call(route.grpc_path, message, peer=peer, **options)
                headers = echoed_headers(sent)
            else:
                call = upstream.callable_for(route, request_class, response_class)(message, **options)
                response = await call
                headers = echoed_headers(
                    (*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ()))
                )
        except GatewayError as exc:
            return error_answer(exc.status, exc.http_status, exc.headers)
        except RegserveError as exc:
            return error_answer(_status_of(exc))
        except grpc.RpcError as exc:
            # grpcio's errors and LocalCallError carry their status and metadata like a ``grpc.Call``.
            failed = cast(grpc.Call, exc)
            sent = (*(failed.initial_metadata() or ()), *(failed.trailing_metadata() or ()))
            return error_answer(status_from_rpc_error(exc), headers=echoed_headers(sent))
        return await answer_of(response, lambda: answer(message, response, choice, headers))

    return handle


# ------------------------------------------------------------------ routing


def _path(scope: Scope) -> str:
    path = sent_path(scope)
    # The protocol's own OpenAPI document writes the server metadata path as /v2/.
    return "/v2" if path == "/v2/" else path


def _not_allowed(scope: Scope, allowed: list[str]) -> Response:
    message = f"{scope['method']} is not allowed on {_path(scope)}; allowed: {', '.join(allowed)}"
    status = rich_status(code_pb2.UNIMPLEMENTED, message, "METHOD_NOT_ALLOWED")
    return error_answer(status, 405, {"Allow": ", ".join(allowed)})


@dataclass
class _Table:
    """The v2 routes, for the 405 and 404 answers that need all of them."""

    routes: list[V2Route]

    def methods_for(self, path: str) -> list[str]:
        return sorted({m for r in self.routes if r.route.path.match(path) is not None for m in r.route.allowed})


class V2Route(BaseRoute):
    """A Starlette route for one v2 path; a path match with another method is a 405 in the protocol's form."""

    def __init__(self, route: HttpRoute, endpoint, table: _Table) -> None:
        self.route = route
        self.endpoint = endpoint
        self.table = table

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        values = self.route.path.match(_path(scope))
        if values is None:
            return Match.NONE, {}
        child = {"endpoint": self.endpoint, "path_params": values}
        return (Match.FULL if self.route.answers(scope["method"]) else Match.PARTIAL), child

    def url_path_for(self, name: str, /, **path_params) -> NoReturn:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.route.answers(scope["method"]):
            response = _not_allowed(scope, self.table.methods_for(_path(scope)))
        else:
            response = await self.endpoint(Request(scope, receive, send), scope["path_params"])
        await response(scope, receive, send)


class _V2NotFound(BaseRoute):
    """Every other path under ``/v2/``: 404 in the protocol's form."""

    def __init__(self, table: _Table) -> None:
        self.table = table

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        path = _path(scope)
        if not path.startswith("/v2/") or self.table.methods_for(path):
            return Match.NONE, {}
        return Match.FULL, {}

    def url_path_for(self, name: str, /, **path_params) -> NoReturn:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = rich_status(code_pb2.NOT_FOUND, f"no route for {scope['method']} {_path(scope)}", "ROUTE_NOT_FOUND")
        await error_answer(status, 404)(scope, receive, send)


def v2_routes(upstream: Upstream, local: LocalDispatch | None, limits: GatewayLimits) -> list[BaseRoute]:
    """The Starlette routes of the REST API of the protocol, and a 404 for other paths under ``/v2/``."""
    table = _Table([])
    table.routes.extend(V2Route(r, _endpoint(r, upstream, local, limits), table) for r in v2_http_routes())
    return [*table.routes, _V2NotFound(table)]
