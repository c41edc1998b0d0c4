"""The one place where domain errors become gRPC status.

Each ``RegserveError`` maps onto a status code, a ``google.rpc.ErrorInfo`` with
its reason, a ``google.rpc.BadRequest`` with its field violations and, for rate
limits, a ``google.rpc.RetryInfo``.  Any other exception is logged with its
traceback and reaches the caller as INTERNAL with a generic message.

Servicer classes opt in with the ``@maps_errors`` class decorator, which wraps
each RPC method once, when the class is defined, so the request path pays one
``try`` and nothing else.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from regserve.server import errors

__all__ = ["DOMAIN", "CallStatus", "abort", "maps_errors", "rich_status", "status_for"]

logger = logging.getLogger(__name__)

DOMAIN = "regserve.v1"
"""The ``ErrorInfo.domain`` of every error regserve reports."""

_CODES: tuple[tuple[type[errors.RegserveError], int], ...] = (
    (errors.InvalidInput, code_pb2.INVALID_ARGUMENT),
    (errors.NotFound, code_pb2.NOT_FOUND),
    (errors.AlreadyExists, code_pb2.ALREADY_EXISTS),
    (errors.FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (errors.ResourceExhausted, code_pb2.RESOURCE_EXHAUSTED),
    (errors.Unauthenticated, code_pb2.UNAUTHENTICATED),
    (errors.PermissionDenied, code_pb2.PERMISSION_DENIED),
    (errors.DeadlineExceeded, code_pb2.DEADLINE_EXCEEDED),
    (errors.Cancelled, code_pb2.CANCELLED),
    (errors.Unavailable, code_pb2.UNAVAILABLE),
)


def _pack(message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def rich_status(
    code: int,
    message: str,
    reason: str,
    *,
    violations: Sequence[errors.FieldViolation] = (),
    metadata: Mapping[str, str] | None = None,
    retry_after: float | None = None,
) -> status_pb2.Status:
    """A ``google.rpc.Status`` with an ``ErrorInfo``, a ``BadRequest`` when there are violations
    and a ``RetryInfo`` when a retry delay (seconds) is known: what gRPC and REST callers both get."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))]
    if violations:
        request = error_details_pb2.BadRequest()
        for field, description in violations:
            request.field_violations.add(field=field, description=description)
        details.append(_pack(request))
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code, message=message, details=details)


def status_for(error: errors.RegserveError) -> grpc.Status:
    """The gRPC status, with rich details, that reports ``error`` to a caller."""
    code = next((c for cls, c in _CODES if isinstance(error, cls)), code_pb2.INTERNAL)
    status = rich_status(
        code,
        error.message,
        error.reason,
        violations=error.violations,
        metadata=error.metadata,
        retry_after=getattr(error, "retry_after", None),
    )
    return rpc_status.to_status(status)


_INTERNAL = rpc_status.to_status(
    rich_status(code_pb2.INTERNAL, "internal error; the server logged the details", "INTERNAL")
)


class CallStatus(collections.namedtuple("CallStatus", ("code", "details", "trailing_metadata")), grpc.Status):
    """A ``grpc.Status`` value: code, details and trailing metadata."""


def abort(context: grpc.ServicerContext, status: grpc.Status) -> NoReturn:
    """End the call with ``status``, keeping trailing metadata set earlier (such as the request id)."""
    kept = context.trailing_metadata()
    if kept:
        status = CallStatus(status.code, status.details, (*kept, *status.trailing_metadata))
    context.abort_with_status(status)


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> NoReturn:
    if isinstance(exc, errors.RegserveError):
        abort(context, status_for(exc))
    if isinstance(exc, grpc.RpcError):
        # Reading the request stream failed: the caller cancelled or the stream was cut.
        abort(context, status_for(errors.Cancelled("the request stream ended abnormally")))
    logger.exception("unexpected error in %s", method)
    abort(context, _INTERNAL)


def _wrap_unary(method: Callable, name: str) -> Callable:
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - the single mapping point
            _abort(context, exc, name)

    return wrapper


def _wrap_stream(method: Callable, name: str) -> Callable:
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            yield from method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - the single mapping point
            _abort(context, exc, name)

    return wrapper


def maps_errors(service_name: str) -> Callable[[type], type]:
    """Class decorator: wrap every RPC method of ``service_name`` with the status mapping.

    ``service_name`` is the full protobuf name, e.g. ``"regserve.v1.RegressionService"``;
    its method names are read from the service descriptor.
    """
    from google.protobuf import descriptor_pool

    descriptor = descriptor_pool.Default().FindServiceByName(service_name)

    def decorate(cls: type) -> type:
        for method in descriptor.methods:
            impl = cls.__dict__.get(method.name)
            if impl is None:
                continue
            full = f"/{service_name}/{method.name}"
            wrap = _wrap_stream if inspect.isgeneratorfunction(impl) else _wrap_unary
            setattr(cls, method.name, wrap(impl, full))
        return cls

    return decorate
