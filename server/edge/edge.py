"""The edge: request ids, authentication, rate limits, metrics and the access log.

The edge wraps each regserve method's handler once, when the servicers are
registered (``EdgeServer``), with that method's role check and metric children
resolved.  It is not a ``grpc.ServerInterceptor``: grpcio runs interceptors
for every call on the one thread that polls the completion queue, the thread every
other call waits on, while a wrapped handler runs only in the call's own thread.
Per call the edge reads the metadata once and takes a token from the caller's
bucket; the finished call goes to a ``BatchWorker``, whose thread counts it, observes
its latency and writes its access-log line, in batches every 0.1 s (and before every
scrape of the metrics).

Health and reflection are registered on the server directly: probes are never
authenticated, limited, counted or logged.  Refusals are domain errors turned into
status by ``regserve.server.rpc.status.status_for``, like every other error.  The row
limit of Predict and BatchPredict is the servicer's: it reads the rows anyway.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string
from typing import Protocol

import grpc

from regserve.server.edge import auth
from regserve.server.edge.ratelimit import TokenBuckets
from regserve.server.edge.request_ids import FORWARDED_PEER, ID_COUNTER, ID_PREFIX, REQUEST_ID
from regserve.server.errors import RegserveError, ResourceExhausted
from regserve.server.observability.access_log import ACCESS_LOGGER, access_writer
from regserve.server.observability.batching import BatchWorker
from regserve.server.observability.metrics import Metrics
from regserve.server.rpc.methods import METHODS, Method
from regserve.server.rpc.status import abort, status_for

__all__ = ["Edge", "EdgePolicy"]

_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN
_CODE_NAMES = {code: code.name for code in grpc.StatusCode}  # a dict lookup, not the enum's name property


_access_log = logging.getLogger(ACCESS_LOGGER)
_ANONYMOUS_JSON = _json_string(str(auth.ANONYMOUS))


@dataclass(frozen=True)
class EdgePolicy:
    """What the edge enforces.  ``tokens`` None turns authentication off; ``limiter`` None, rate limits."""

    tokens: auth.TokenTable | None = None
    limiter: TokenBuckets | None = None
    echo_request_id: bool = True
    """Send the request id back in the response metadata."""
    forwarding_key: str = field(default="", repr=False)
    """The secret that makes a ``FORWARDED_PEER`` entry count; empty: such entries never count."""
    log_peer: bool = False
    """Write the caller's address in the access log.

    Reading it (``context.peer()``) makes grpcio release and retake the GIL twice,
    a thread handover each under load, so it is read only when the log line or the
    rate limiter (without tokens) needs it.
    """

    @property
    def needs_peer(self) -> bool:
        return self.log_peer or (self.limiter is not None and self.tokens is None)

    @property
    def checks_calls(self) -> bool:
        """True when a call can be refused here: authentication or rate limits are on."""
        return self.tokens is not None or self.limiter is not None


class _CallContext(Protocol):
    """The part of ``grpc.ServicerContext`` that ``Edge._start`` and ``Edge._peer`` use.

    Values are typed ``str``: the edge reads only text keys, and grpcio gives bytes for ``-bin`` keys alone.
    """

    def invocation_metadata(self) -> Sequence[tuple[str, str]]: ...

    def set_trailing_metadata(self, trailing_metadata: tuple[tuple[str, str], ...]) -> None: ...

    def send_initial_metadata(self, initial_metadata: tuple[tuple[str, str], ...]) -> None: ...

    def peer(self) -> str: ...


def _count_value(counter: itertools.count) -> int:
    """How many times ``next`` was called on a count started at 0 (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])


def _peer_host(peer: str) -> str:
    # "ipv4:127.0.0.1:5678" and "ipv6:[::1]:5678" share a bucket with every other port of the same host.
    return peer.rpartition(":")[0] or peer


class _Route:
    """One method's precomputed part: names, metric series and what to count on success."""

    def __init__(self, method: Method, metrics: Metrics) -> None:
        self.method = method.full_name
        self.service, self.name = method.service, method.name
        metrics.calls.add_method(self.service, self.name)
        # Calls begun and ended, as atomic counters (``next`` holds the GIL): the gauge of
        # calls in flight is their difference, taken when Prometheus scrapes, so a call
        # pays two counter steps instead of two locked gauge updates.
        self.begun = itertools.count()
        self.ended = itertools.count()
        metrics.in_flight.labels(self.service, self.name).set_function(
            lambda: _count_value(self.begun) - _count_value(self.ended)
        )
        self.is_train = method.trains
        self.unary_response = False
        self.log_prefix = f'"method":{_json_string(self.method)},"code":"'


class Edge:
    """Wraps each regserve method's handler, once, with the edge's per-call work (see the module docstring)."""

    def __init__(self, metrics: Metrics, policy: EdgePolicy) -> None:
        self._metrics = metrics
        self._policy = policy
        self._needs_peer = policy.needs_peer
        self._log_peer = policy.log_peer
        self._echo = policy.echo_request_id
        self._recorder = BatchWorker(
            self._record, name="regserve-edge", failure="finished calls could not be counted or logged"
        )
        # A scrape counts every call finished before it, unless the recorder is stuck (say, on
        # a log stream that stopped draining): then it answers after 1 s with what it has.
        metrics.before_collect(lambda: self._recorder.flush(timeout=1.0))

    def close(self) -> None:
        """Count and log the calls finished so far; later calls are counted and logged as they finish."""
        self._recorder.close()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` of the full method name ``method`` behind the edge; methods outside the table unchanged."""
        entry = METHODS.get(method)
        if entry is None:
            return handler
        return self._wrap(handler, _Route(entry, self._metrics))

    # ------------------------------------------------------------ per call
    #
    # A finished call is handed to the recorder as one tuple, built once:
    # (route, code, started, finished, request id, principal, peer), the times from
    # ``time.perf_counter``.

    def _start(self, route: _Route, context: _CallContext) -> tuple[str, str | None, str]:
        """Read the metadata, echo the request id, count the call begun: (request id, authorization, peer)."""
        request_id = authorization = None
        for key, value in context.invocation_metadata():
            if key == REQUEST_ID:
                request_id = value[:128]
            elif key == "authorization":
                authorization = value
        if not request_id:
            request_id = ID_PREFIX + hex(next(ID_COUNTER))[2:]
        if self._echo:
            if route.unary_response:
                context.set_trailing_metadata(((REQUEST_ID, request_id),))
            else:
                context.send_initial_metadata(((REQUEST_ID, request_id),))
        next(route.begun)
        return request_id, authorization, (self._peer(context) if self._needs_peer else "")

    def _peer(self, context: _CallContext) -> str:
        """The caller's address: the HTTP client's when the gateway inside this process names it, else the call's."""
        expected = self._policy.forwarding_key
        if expected:
            for key, value in context.invocation_metadata():
                if key == FORWARDED_PEER:
                    secret, _, peer = value.partition(" ")
                    if peer and secrets.compare_digest(secret.encode(errors="replace"), expected.encode()):
                        return peer
        return context.peer()

    def _authenticate(self, authorization: str | None, context: grpc.ServicerContext) -> auth.Principal:
        """The caller named by its bearer token; a refusal ends the call (UNAUTHENTICATED)."""
        tokens = self._policy.tokens
        if tokens is None:
            return auth.ANONYMOUS
        try:
            return tokens.authenticate(authorization)
        except RegserveError as error:
            abort(context, status_for(error))

    def _admit(self, route: _Route, principal: auth.Principal, peer: str, context: grpc.ServicerContext) -> None:
        """Authorize and rate-limit the call; a refusal ends it (PERMISSION_DENIED, RESOURCE_EXHAUSTED)."""
        policy = self._policy
        try:
            if policy.tokens is not None:
                auth.authorize(principal, route.method)
            if policy.limiter is not None:
                identity = principal.id if policy.tokens is not None else _peer_host(peer)
                wait = policy.limiter.acquire(identity)
                if wait:
                    self._metrics.rate_limited.inc()
                    raise ResourceExhausted(
                        f"Rate limit of {policy.limiter.rate:g} calls/s reached; retry in {wait:.3f} s.",
                        reason="RATE_LIMITED",
                        retry_after=wait,
                    )
        except RegserveError as error:
            abort(context, status_for(error))

    def _finish(self, route: _Route, code, started: float, request_id: str, principal, peer: str) -> None:
        """Count the call ended and hand its record to the recorder."""
        next(route.ended)
        self._recorder.add((route, code, started, time.perf_counter(), request_id, principal, peer))

    def _record(self, calls: list[tuple]) -> None:
        """Count finished calls, observe their latency and write their access-log lines (the recorder's thread)."""
        log = _access_log.isEnabledFor(logging.INFO)
        log_peer = self._log_peer
        wall = time.time() - time.perf_counter()  # turns the calls' perf_counter ends into timestamps
        codes: dict[tuple[_Route, grpc.StatusCode], int] = {}
        durations: dict[_Route, list[float]] = {}
        lines = []
        for route, code, started, finished, request_id, principal, peer in calls:
            key = (route, code)
            codes[key] = codes.get(key, 0) + 1
            elapsed = finished - started
            seconds = durations.get(route)
            if seconds is None:
                seconds = durations[route] = []
            seconds.append(elapsed)
            if not log:
                continue
            # One JSON object per call, formatted by hand: the keys and codes need no escaping,
            # and the caller's strings go through json's C string encoder.
            # The numbers are written from integers (microseconds): formatting a float
            # with a fixed number of decimals costs more.
            ts = str(int((finished + wall) * 1e6))
            ms = str(round(elapsed * 1e6)).zfill(4)
            peer_field = f'"peer":{_json_string(peer)},' if log_peer else ""
            who = _ANONYMOUS_JSON if principal is auth.ANONYMOUS else _json_string(str(principal))
            line = (
                f'{{"ts":{ts[:-6]}.{ts[-6:]},{route.log_prefix}{_CODE_NAMES[code]}",'
                f'"duration_ms":{ms[:-3]}.{ms[-3:]},{peer_field}"principal":{who},'
                f'"request_id":{_json_string(request_id)}}}'
            )
            lines.append(line)
        self._metrics.calls.add(
            {(route.service, route.name, code.name): count for (route, code), count in codes.items()},
            {(route.service, route.name): seconds for route, seconds in durations.items()},
        )
        if not lines:
            return
        writer = access_writer()
        if writer is not None:
            writer.write_lines(lines)  # written by this thread: the lines need no second queue
        else:
            for line in lines:
                _access_log.info(line)

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
                self._streaming(handler.unary_stream, route),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(handler.stream_stream, route),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary_unary(self, behavior, route: _Route):
        # Predict's path: its steps are bound to local names, and a call that succeeds does
        # ``_finish``'s two steps in place, a Python frame less per call.
        start, authenticate, admit, finish = self._start, self._authenticate, self._admit, self._finish
        checks = self._policy.checks_calls
        perf_counter, ended, add = time.perf_counter, route.ended, self._recorder.add
        anonymous = auth.ANONYMOUS

        def unary_unary(request, context):
            started = perf_counter()
            request_id, authorization, peer = start(route, context)
            principal = anonymous
            try:
                if checks:
                    principal = authenticate(authorization, context)
                    admit(route, principal, peer, context)
                response = behavior(request, context)
            except BaseException:
                finish(route, context.code() or _UNKNOWN, started, request_id, principal, peer)
                raise
            next(ended)
            add((route, _OK, started, perf_counter(), request_id, principal, peer))
            return response

        return unary_unary

    def _stream_unary(self, behavior, route: _Route):
        start, authenticate, admit, finish = self._start, self._authenticate, self._admit, self._finish
        metrics = self._metrics

        def stream_unary(request_iterator, context):
            started = time.perf_counter()
            request_id, authorization, peer = start(route, context)
            principal = auth.ANONYMOUS
            admitted = False
            try:
                principal = authenticate(authorization, context)
                admit(route, principal, peer, context)
                admitted = True
                response = behavior(request_iterator, context)
            except BaseException:
                code = context.code() or _UNKNOWN
                finish(route, code, started, request_id, principal, peer)
                if admitted and route.is_train:
                    # A Train that succeeds is counted by the servicer's ``on_trained``, which knows the model.
                    metrics.training_runs.labels("", code.name).inc()
                raise
            finish(route, _OK, started, request_id, principal, peer)
            return response

        return stream_unary

    def _streaming(self, behavior, route: _Route):
        start, authenticate, admit, finish = self._start, self._authenticate, self._admit, self._finish

        def streaming(request, context):
            started = time.perf_counter()
            request_id, authorization, peer = start(route, context)
            principal = auth.ANONYMOUS
            try:
                principal = authenticate(authorization, context)
                admit(route, principal, peer, context)
                yield from behavior(request, context)
            except GeneratorExit:
                finish(route, grpc.StatusCode.CANCELLED, started, request_id, principal, peer)
                raise
            except BaseException:
                finish(route, context.code() or _UNKNOWN, started, request_id, principal, peer)
                raise
            finish(route, _OK, started, request_id, principal, peer)

        return streaming
