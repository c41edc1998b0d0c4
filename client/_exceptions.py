"""Typed exceptions of the regserve client, mapped from gRPC status in one place.

Exception tree::

    RegserveError
    ├── InvalidArgument       INVALID_ARGUMENT, OUT_OF_RANGE
    ├── NotFound              NOT_FOUND
    ├── AlreadyExists         ALREADY_EXISTS
    ├── FailedPrecondition    FAILED_PRECONDITION, ABORTED
    ├── Unauthenticated       UNAUTHENTICATED
    ├── PermissionDenied      PERMISSION_DENIED
    ├── ResourceExhausted     RESOURCE_EXHAUSTED (``retry_after`` from RetryInfo)
    ├── DeadlineExceeded      DEADLINE_EXCEEDED
    ├── Cancelled             CANCELLED
    ├── Unavailable           UNAVAILABLE
    └── ServerError           INTERNAL, UNKNOWN and anything else
"""

from __future__ import annotations

from typing import cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RegserveError",
    "ResourceExhausted",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]


class RegserveError(Exception):
    """A call to regserve failed.

    Attributes
    ----------
    code : grpc.StatusCode
    message : str
        The server's sentence for a human.
    reason : str
        The ``google.rpc.ErrorInfo`` reason (UPPER_SNAKE), or "" when the server sent none.
    metadata : dict of str to str
        The ``ErrorInfo`` metadata (row index, model name, ...).
    field_violations : list of (field, description)
        The ``google.rpc.BadRequest`` violations, for bad input.
    retry_after : float or None
        Seconds to wait before trying again, from ``google.rpc.RetryInfo``.
    request_id : str
        The ``x-request-id`` the call was sent with, also when it reached no server;
        the server logs its calls under it.
    """

    def __init__(self, code, message, reason="", metadata=None, field_violations=(), retry_after=None, request_id=""):
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.retry_after = retry_after
        self.request_id = request_id


class InvalidArgument(RegserveError):
    """The request was malformed (wrong feature count, NaN, unknown feature, ...)."""


class NotFound(RegserveError):
    """The model or version does not exist."""


class AlreadyExists(RegserveError):
    """The thing to create exists already."""


class FailedPrecondition(RegserveError):
    """The registry's state forbids the call (frozen version, failed checksum, ...)."""


class Unauthenticated(RegserveError):
    """No valid credentials were sent."""


class PermissionDenied(RegserveError):
    """The credentials do not allow this call."""


class ResourceExhausted(RegserveError):
    """A rate or size limit was hit; ``retry_after`` says how long to wait, in seconds."""


class DeadlineExceeded(RegserveError):
    """The call did not finish within its deadline."""


class Cancelled(RegserveError):
    """The call was cancelled."""


class Unavailable(RegserveError):
    """The server cannot answer now (not started, draining, no model loaded)."""


class ServerError(RegserveError):
    """The server failed (INTERNAL, UNKNOWN or an unexpected code)."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def from_rpc_error(error: grpc.RpcError, request_id: str = "") -> RegserveError:
    """The typed exception for a failed call sent with ``request_id``, with the rich details the server attached."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    reason, metadata, violations, retry_after = "", {}, [], None
    try:
        # grpcio's failed calls carry their status like a ``grpc.Call``, without being typed as one.
        status = rpc_status.from_call(cast(grpc.Call, error)) if hasattr(error, "trailing_metadata") else None
    except ValueError:
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    cls = _BY_CODE.get(code, ServerError)
    return cls(code, message or "", reason, metadata, violations, retry_after, request_id)
