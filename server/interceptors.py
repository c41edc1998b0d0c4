"""The edge: one interceptor for request ids, authentication, rate limits, row limits, metrics and the access log.

grpcio runs a server interceptor on every call, so this one does its work once per
method: the first call of a method wraps the servicer's handler (with that method's
role check, metric children and limits resolved) and caches it; later calls find it
by name.  Per call it reads the metadata once, takes a token from the caller's
bucket, and records one counter, one histogram observation and one log line.

Health and reflection pass through untouched: probes are never authenticated,
limited, counted or logged.  Refusals are domain errors turned into status by
``regserve.server.status.status_for``, like every other error.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_string

import grpc

from regserve.server import auth, observability
from regserve.server.errors import InvalidInput, RegserveError, ResourceExhausted
from regserve.server.observability import ACCESS_LOGGER, Metrics
from regserve.server.ratelimit import TokenBuckets
from regserve.server.status import abort, status_for

__all__ = ["EdgeInterceptor", "EdgePolicy", "REQUEST_ID"]

REQUEST_ID = "x-request-id"
"""Metadata key of the request id: taken from the caller when sent, echoed in the response metadata.

Unary calls echo it in the trailing metadata, which travels with the status at no
extra cost; streaming calls echo it in the initial metadata, before their first message.
"""

_GUARDED_PREFIX = "/regserve."
_ROW_LIMITED = frozenset({"/regserve.v1.RegressionService/Predict", "/regserve.v1.RegressionService/BatchPredict"})
_TRAIN = "/regserve.v1.RegressionService/Train"
_EVENTS = {
    "/regserve.v1.ModelService/PromoteVersion": "promote",
    "/regserve.v1.ModelService/RollbackModel": "rollback",
    "/regserve.v1.ModelService/FreezeVersion": "freeze",
    "/regserve.v1.ModelService/UnfreezeVersion": "unfreeze",
    "/regserve.v1.ModelService/SetTrafficSplit": "split",
    "/regserve.v1.ModelService/DeleteVersion": "delete",
}
_OK = grpc.StatusCode.OK


class _RequestIds:
    """Generated request ids: 32 hex digits, a random per-process prefix and a counter.

    Unique within a process, and across processes as long as their random 64-bit
    prefixes differ; much cheaper on the request path than ``uuid.uuid4()``, which
    builds an object and reads the OS entropy pool on every call.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_request_ids = _RequestIds()
_access_log = logging.getLogger(ACCESS_LOGGER)


@dataclass(frozen=True)
class EdgePolicy:
    """What the edge enforces.  ``tokens`` None turns authentication off; ``limiter`` None, rate limits."""

    tokens: auth.TokenTable | None = None
    limiter: TokenBuckets | None = None
    max_predict_rows: int = 0
    echo_request_id: bool = True
    """Send the request id back in the response metadata."""
    log_peer: bool = False
    """Write the caller's address in the access log.

    Reading it (``context.peer()``) makes grpcio release and retake the GIL twice;
    under load each handover costs tens of microseconds of CPU, so it is read only
    when the log line or the rate limiter (without tokens) needs it.
    """

    @property
    def needs_peer(self) -> bool:
        return self.log_peer or (self.limiter is not None and self.tokens is None)


def _count_value(counter: itertools.count) -> int:
    """How many times ``next`` was called on a count started at 0 (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])


def _peer_host(peer: str) -> str:
    # "ipv4:127.0.0.1:5678" and "ipv6:[::1]:5678" share a bucket with every other port of the same host.
    return peer.rpartition(":")[0] or peer


def _matrix_rows(matrix) -> int:
    columns = matrix.num_columns
    if columns <= 0:
        return 0
    values = len(matrix.values)
    # Each read of a bytes field copies it (upb): the raw bytes are read once, and only
    # when there are no typed values.
    return (values or len(matrix.raw) // 8) // columns


def _request_rows(request) -> int:
    return len(request.named_inputs) if getattr(request, "named_inputs", None) else _matrix_rows(request.inputs)


class _Call:
    """One call's facts for the log line."""

    __slots__ = ("authorization", "code", "peer", "principal", "request_id", "started")


class _Route:
    """One method's precomputed part: names, metric children and limits."""

    def __init__(self, method: str, metrics: Metrics, policy: EdgePolicy) -> None:
        self.method = method
        self.service, _, self.name = method[1:].partition("/")
        self.metrics = metrics
        self.latency = metrics.latency.labels(self.service, self.name)
        # Calls begun and ended, as atomic counters (``next`` holds the GIL): the gauge of
        # calls in flight is their difference, taken when Prometheus scrapes, so a call
        # pays two counter steps instead of two locked gauge updates.
        self.begun = itertools.count()
        self.ended = itertools.count()
        metrics.in_flight.labels(self.service, self.name).set_function(
            lambda: _count_value(self.begun) - _count_value(self.ended)
        )
        self._counts: dict[grpc.StatusCode, object] = {}
        self.row_limit = policy.max_predict_rows if method in _ROW_LIMITED else 0
        self.event = _EVENTS.get(method)
        self.is_train = method == _TRAIN
        self.unary_response = False
        self.log_prefix = f'"method":{_json_string(method)},"code":"'

    def count(self, code: grpc.StatusCode) -> None:
        child = self._counts.get(code)
        if child is None:
            child = self._counts.setdefault(code, self.metrics.requests.labels(self.service, self.name, code.name))
        child.inc()

    def check_rows(self, request) -> None:
        rows = _request_rows(request)
        if rows > self.row_limit:
            raise InvalidInput(
                f"The request has {rows} rows; this server takes at most {self.row_limit} per message.",
                reason="TOO_MANY_ROWS",
                violations=[("inputs", f"send at most {self.row_limit} rows per message")],
                metadata={"rows": rows, "limit": self.row_limit},
            )


class EdgeInterceptor(grpc.ServerInterceptor):
    """Wraps each regserve method once with the edge's per-call work (see the module docstring)."""

    def __init__(self, metrics: Metrics, policy: EdgePolicy) -> None:
        self._metrics = metrics
        self._policy = policy
        self._needs_peer = policy.needs_peer
        self._log_peer = policy.log_peer
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._wrapping = threading.Lock()

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or not method.startswith(_GUARDED_PREFIX):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        with self._wrapping:  # the first calls of a method may race: one route per method
            cached = self._wrapped.get(method)
            if cached is not None and cached[0] is handler:
                return cached[1]
            wrapped = self._wrap(handler, _Route(method, self._metrics, self._policy))
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    # ------------------------------------------------------------ per call

    def _enter(self, route: _Route, context: grpc.ServicerContext) -> _Call:
        call = _Call()
        call.started = time.perf_counter()
        call.code = _OK
        call.principal = auth.ANONYMOUS
        request_id = authorization = None
        for key, value in context.invocation_metadata():
            if key == REQUEST_ID:
                request_id = value[:128]
            elif key == "authorization":
                authorization = value
        call.request_id = request_id or _request_ids.next()
        call.authorization = authorization
        call.peer = context.peer() if self._needs_peer else ""
        if self._policy.echo_request_id:
            if route.unary_response:
                context.set_trailing_metadata(((REQUEST_ID, call.request_id),))
            else:
                context.send_initial_metadata(((REQUEST_ID, call.request_id),))
        next(route.begun)
        return call

    def _check(self, route: _Route, call: _Call) -> None:
        """Authenticate, authorize and rate-limit; raises the domain error that refuses the call."""
        policy = self._policy
        if policy.tokens is not None:
            call.principal = policy.tokens.authenticate(call.authorization)
            auth.authorize(call.principal, route.method)
        if policy.limiter is not None:
            identity = call.principal.id if policy.tokens is not None else _peer_host(call.peer)
            wait = policy.limiter.acquire(identity)
            if wait:
                self._metrics.rate_limited.inc()
                raise ResourceExhausted(
                    f"Rate limit of {policy.limiter.rate:g} calls/s reached; retry in {wait:.3f} s.",
                    reason="RATE_LIMITED",
                    retry_after=wait,
                )

    def _refuse(self, call: _Call, context: grpc.ServicerContext, error: RegserveError) -> None:
        status = status_for(error)
        call.code = status.code
        abort(context, status)

    def _exit(self, route: _Route, call: _Call, context: grpc.ServicerContext, failed: bool) -> None:
        if failed and call.code is _OK:
            call.code = context.code() or grpc.StatusCode.UNKNOWN
        elapsed = time.perf_counter() - call.started
        next(route.ended)
        route.count(call.code)
        route.latency.observe(elapsed)
        if _access_log.isEnabledFor(logging.INFO):
            # One JSON object per call, formatted by hand: the keys and codes need no escaping,
            # and the caller's strings go through json's C string encoder.
            peer = f'"peer":{_json_string(call.peer)},' if self._log_peer else ""
            line = (
                f'{{"ts":{time.time():.6f},{route.log_prefix}{call.code.name}","duration_ms":{elapsed * 1e3:.3f},'
                f'{peer}"principal":{_json_string(str(call.principal))},"request_id":{_json_string(call.request_id)}}}'
            )
            writer = observability.access_writer()
            if writer is not None:
                writer.write_line(line)
            else:
                _access_log.info(line)

    def _after_ok(self, route: _Route, call: _Call, request, response) -> None:
        """Counts the registry events and training runs of a call that succeeded (admin calls only)."""
        metrics = self._metrics
        if route.event is not None:
            metrics.registry_events.labels(request.model, route.event).inc()
        elif route.is_train:
            model = response.model_version.model
            metrics.training_runs.labels(model, "OK").inc()
            metrics.training_duration.labels(model).observe(time.perf_counter() - call.started)
            metrics.registry_events.labels(model, "create").inc()
            if response.promoted:
                metrics.registry_events.labels(model, "promote").inc()

    # ------------------------------------------------------------ wrapping

    def _wrap(self, handler: grpc.RpcMethodHandler, route: _Route) -> grpc.RpcMethodHandler:
        route.unary_response = handler.unary_unary is not None or handler.stream_unary is not None
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_unary(handler.unary_unary, route),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_unary(handler.stream_unary, route),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, route, rows_limited=False),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(handler.stream_stream, route, rows_limited=route.row_limit > 0),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary_unary(self, behavior, route: _Route):
        enter, check, refuse, leave, after_ok = self._enter, self._check, self._refuse, self._exit, self._after_ok
        row_limit, event = route.row_limit, route.event

        def unary_unary(request, context):
            call = enter(route, context)
            failed = True
            try:
                try:
                    check(route, call)
                    if row_limit:
                        route.check_rows(request)
                except RegserveError as error:
                    refuse(call, context, error)
                response = behavior(request, context)
                failed = False
                if event is not None:
                    after_ok(route, call, request, response)
                return response
            finally:
                leave(route, call, context, failed)

        return unary_unary

    def _stream_unary(self, behavior, route: _Route):
        enter, check, refuse, leave, after_ok = self._enter, self._check, self._refuse, self._exit, self._after_ok
        metrics = self._metrics

        def stream_unary(request_iterator, context):
            call = enter(route, context)
            failed = True
            admitted = False
            try:
                try:
                    check(route, call)
                except RegserveError as error:
                    refuse(call, context, error)
                admitted = True
                response = behavior(request_iterator, context)
                failed = False
                if route.is_train:
                    after_ok(route, call, None, response)
                return response
            finally:
                leave(route, call, context, failed)
                if failed and admitted and route.is_train:
                    metrics.training_runs.labels("", call.code.name).inc()

        return stream_unary

    def _streaming(self, behavior, route: _Route, *, rows_limited: bool):
        enter, check, refuse, leave = self._enter, self._check, self._refuse, self._exit

        def limited(request_iterator):
            for request in request_iterator:
                route.check_rows(request)
                yield request

        def streaming(request, context):
            call = enter(route, context)
            failed = True
            try:
                try:
                    check(route, call)
                except RegserveError as error:
                    refuse(call, context, error)
                yield from behavior(limited(request) if rows_limited else request, context)
                failed = False
            except GeneratorExit:
                call.code = grpc.StatusCode.CANCELLED
                raise
            finally:
                leave(route, call, context, failed)

        return streaming
