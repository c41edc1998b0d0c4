"""Errors of the REST gateway: one table from gRPC status code to HTTP status, bodies as google.rpc.Status JSON.

Every error the gateway answers, whether the upstream server's or its own (bad JSON,
an unknown route), is a ``google.rpc.Status`` rendered in protobuf's JSON mapping:
``{"code": 3, "message": "...", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", ...}]}``.
The HTTP status follows grpc-gateway's ``HTTPStatusFromCode``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import cast

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from regserve.server.gateway.rules import sent_path
from regserve.server.rpc.status import DOMAIN, rich_status

__all__ = [
    "DOMAIN",
    "GatewayError",
    "error_headers",
    "http_status_for",
    "retry_delay",
    "status_from_rpc_error",
    "status_json",
    "status_response",
]

logger = logging.getLogger(__name__)

# grpc-gateway's runtime/errors.go HTTPStatusFromCode, plus CANCELLED as 499 (client closed request).
_HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}

# The gateway's own 4xx answers: the gRPC code and ErrorInfo reason each HTTP status reports.
_OWN_ERRORS = {
    404: (code_pb2.NOT_FOUND, "ROUTE_NOT_FOUND"),
    405: (code_pb2.UNIMPLEMENTED, "METHOD_NOT_ALLOWED"),
    413: (code_pb2.RESOURCE_EXHAUSTED, "BODY_TOO_LARGE"),
    415: (code_pb2.INVALID_ARGUMENT, "UNSUPPORTED_MEDIA_TYPE"),
}

# Statuses whose answer tells the client when to retry (Retry-After), from the status's RetryInfo.
_RETRY_AFTER_STATUSES = frozenset({429, 503})

# The descriptors of the rich error details must be in the default pool for their Any to print as JSON.
_DETAIL_TYPES = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo)


def http_status_for(code: int) -> int:
    """The HTTP status that reports a ``google.rpc.Code``; 500 for codes outside the table."""
    return _HTTP_STATUS.get(code, 500)


class GatewayError(Exception):
    """An error the gateway answers itself, before or instead of calling upstream."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str,
        *,
        http_status: int | None = None,
        violations: tuple[tuple[str, str], ...] = (),
        headers: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = rich_status(code, message, reason, violations=violations, retry_after=retry_after)
        self.http_status = http_status or http_status_for(code)
        self.headers = headers or {}

    @classmethod
    def reporting(cls, status: status_pb2.Status, headers: dict[str, str] | None = None) -> GatewayError:
        """The error that answers ``status`` as it is: a refusal made by the server's own status mapping."""
        error = cls(status.code, status.message, "", headers=headers)
        error.status = status
        return error


def status_from_rpc_error(error: grpc.RpcError) -> status_pb2.Status:
    """The rich status of a failed call: its ``grpc-status-details-bin``, else its code and details."""
    try:
        # grpcio's errors and LocalCallError carry their status like a ``grpc.Call``, without being typed as one.
        rich = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:  # the details disagree with the code or message; trust the call itself
        rich = None
    if rich is not None:
        return rich
    code, message = error.code(), error.details() or ""
    if code is grpc.StatusCode.UNAVAILABLE:
        # regserve's own UNAVAILABLE answers carry details; one without them is grpc's: the server could not be
        # reached, or was closing.  Said with a reason a program can branch on.
        return rich_status(code.value[0], message, "UPSTREAM_UNAVAILABLE")
    # Other statuses without details are grpc's own limits (message size, concurrent calls, deadlines), which the
    # in-process calls mirror: their code's name is the reason, so every error body has an ErrorInfo.
    return rich_status(code.value[0], message, code.name)


def status_json(status: status_pb2.Status) -> dict:
    """``status`` in protobuf's JSON mapping; details of types unknown to the gateway are dropped."""
    try:
        return json_format.MessageToDict(status, preserving_proto_field_name=False)
    except (TypeError, KeyError, json_format.Error):
        logger.warning("dropping error details of unknown types: %s", [d.type_url for d in status.details])
        return json_format.MessageToDict(status_pb2.Status(code=status.code, message=status.message))


def retry_delay(status: status_pb2.Status) -> float | None:
    """The seconds of the ``RetryInfo`` detail of ``status``; None when it has none."""
    for detail in status.details:
        if detail.Is(cast(Descriptor, error_details_pb2.RetryInfo.DESCRIPTOR)):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def error_headers(status: status_pb2.Status, http_status: int, headers: dict[str, str] | None) -> dict[str, str]:
    """``headers`` and those HTTP gives a refusal of ``http_status``: Retry-After for a 429 or 503 with a
    RetryInfo, WWW-Authenticate (the bearer scheme) for a 401."""
    headers = dict(headers or {})
    if http_status in _RETRY_AFTER_STATUSES and (delay := retry_delay(status)) is not None:
        # Retry-After takes whole seconds; rounding up never invites a retry that would be refused.
        headers["Retry-After"] = str(max(0, math.ceil(delay)))
    if http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="regserve"'
    return headers


def status_response(
    status: status_pb2.Status, *, http_status: int | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An HTTP response whose body is ``status`` as JSON, with the headers of ``error_headers``."""
    body = json.dumps(status_json(status), separators=(",", ":"), ensure_ascii=False)
    http_status = http_status or http_status_for(status.code)
    headers = error_headers(status, http_status, headers)
    return Response(body, status_code=http_status, media_type="application/json", headers=headers)


async def gateway_error_handler(request: Request, exc: GatewayError) -> Response:
    return status_response(exc.status, http_status=exc.http_status, headers=exc.headers)


async def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404 and 405 (and any other HTTPException) as google.rpc.Status JSON."""
    code, reason = _OWN_ERRORS.get(exc.status_code, (code_pb2.INVALID_ARGUMENT, "BAD_REQUEST"))
    if exc.status_code == 404:
        message = f"no route for {request.method} {sent_path(request.scope)}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {sent_path(request.scope)}; allowed: {allowed}"
    else:
        message = exc.detail
    error = GatewayError(code, message, reason, http_status=exc.status_code, headers=dict(exc.headers or {}))
    return await gateway_error_handler(request, error)


async def client_disconnect_handler(request: Request, exc: ClientDisconnect) -> Response:
    """The client left (or its connection was closed on a timeout) before its body was read: nothing to answer."""
    logger.debug("client left before its request to %s was read", request.url.path)
    return Response(status_code=499)


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """An unexpected failure: logged with its traceback, answered as INTERNAL with a generic message."""
    logger.exception("gateway failure on %s %s", request.method, request.url.path)
    error = GatewayError(code_pb2.INTERNAL, "internal error; the gateway logged the details", "INTERNAL")
    return await gateway_error_handler(request, error)


EXCEPTION_HANDLERS: dict[type[Exception], Callable[..., Awaitable[Response]]] = {
    GatewayError: gateway_error_handler,
    HTTPException: http_exception_handler,
    ClientDisconnect: client_disconnect_handler,
    Exception: internal_error_handler,
}
