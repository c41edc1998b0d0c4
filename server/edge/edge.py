"""The edge: request ids, authentication, rate limits, stream limits, metrics and the access log.

The edge wraps each regserve method's handler once, when the servicers are
registered (``EdgeServer``), with that method's role check and metric children
resolved.  It is not a ``grpc.ServerInterceptor``: grpcio runs interceptors
for every call on the one thread that polls the completion queue, the thread every
other call waits on, while a wrapped handler runs only in the call's own thread.
Per call the edge reads the metadata once and takes a token from the caller's
bucket; the finished call goes to a ``BatchWorker``, whose thread counts it, observes
its latency and writes its access-log line, in batches every 0.1 s (and before every
scrape of the metrics).

Streams also pass the ``StreamGuard`` (a cap per peer host, an end for streams that
wait on their client too long), and every method refuses undecodable messages
(``regserve.server.edge.decoding``).  Health and reflection get only those two
(``wrap_open``): probes are never authenticated, limited, counted or logged.  Refusals
are domain errors turned into status by ``regserve.server.rpc.status.status_for``,
like every other error.  The row limit of Predict and BatchPredict is the servicer's:
it reads the rows anyway.  With tracing on, each wrapped handler is wrapped once more, in
a span (``regserve.server.observability.tracing``); with it off, nothing is.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count
from operator import itemgetter
from typing import NoReturn, Protocol, cast

import grpc

from regserve.server.edge import auth
from regserve.server.edge.call_records import Route, record_calls
from regserve.server.edge.decoding import UNDECODABLE, MalformedMessages, tolerant_handler
from regserve.server.edge.open_methods import wrap_open
from regserve.server.edge.ratelimit import TokenBuckets
from regserve.server.edge.request_ids import (
    FORWARDED_PEER,
    ID_COUNTER,
    ID_PREFIX,
    MAX_REQUEST_ID,
    REQUEST_ID,
    peer_host,
)
from regserve.server.edge.streams import OpenStream, StreamGuard
from regserve.server.errors import RegserveError, ResourceExhausted
from regserve.server.observability.batching import BatchWorker
from regserve.server.observability.metrics import Metrics
from regserve.server.observability.tracing import Tracing
from regserve.server.rpc.methods import METHODS, OPEN_METHODS
from regserve.server.rpc.status import abort, status_for

__all__ = ["Edge", "EdgePolicy"]

_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN
_CANCELLED = grpc.StatusCode.CANCELLED
_IDLE_ENDED = grpc.StatusCode.DEADLINE_EXCEEDED


@dataclass(frozen=True)
class EdgePolicy:
    """What the edge enforces.  ``tokens`` None turns authentication off; ``limiter`` None, rate limits."""

    tokens: auth.TokenTable | None = None
    limiter: TokenBuckets | None = None
    echo_request_id: bool = True
    """Send the request id back in the response metadata."""
    forwarding_key: str = field(default="", repr=False)
    """The secret that makes a ``FORWARDED_PEER`` entry count; empty: such entries never count."""
    streams_per_peer: int = 0
    """Streams one peer host may have open at once; 0: no cap."""
    stream_idle_timeout: float = 0.0
    """Seconds a stream may wait on its client before it is ended; 0: no limit."""
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


def _counted(messages, counter: count):
    """``messages``, stepping ``counter`` once for each; zip and map keep it in C, without a Python frame a message."""
    return map(_FIRST, zip(messages, counter, strict=False))


_FIRST = itemgetter(0)


def _ended(stream: OpenStream | None, code: grpc.StatusCode) -> grpc.StatusCode:
    """The code a stream ended with: what the watchdog sent when it ended the stream, else ``code``."""
    return _IDLE_ENDED if stream is not None and stream.ended_idle else code


def _rate_limit_refusal(limiter: TokenBuckets, wait: float) -> ResourceExhausted:
    """The error that refuses a call over the rate limit of ``limiter``, ``wait`` seconds the retry delay."""
    return ResourceExhausted(
        f"Rate limit of {limiter.rate:g} calls/s reached; retry in {wait:.3f} s.",
        reason="RATE_LIMITED",
        retry_after=wait,
    )


class Edge:
    """Wraps each regserve method's handler, once, with the edge's per-call work (see the module docstring)."""

    def __init__(self, metrics: Metrics, policy: EdgePolicy, tracing: Tracing | None = None) -> None:
        self._metrics = metrics
        self._policy = policy
        self._tracing = tracing
        self._needs_peer = policy.needs_peer
        self._echo = policy.echo_request_id
        self._guard = StreamGuard(policy.streams_per_peer, policy.stream_idle_timeout, metrics.streams_limited)
        self._malformed = MalformedMessages(metrics.malformed_messages)
        self._routes: dict[str, Route] = {}  # by full method name, for ``refused``
        self._recorder = BatchWorker(
            functools.partial(record_calls, metrics, policy.log_peer),
            name="regserve-edge",
            failure="finished calls could not be counted or logged",
        )
        # A scrape counts every call finished before it, unless the recorder is stuck (say, on
        # a log stream that stopped draining): then it answers after 1 s with what it has.
        metrics.before_collect(lambda: self._recorder.flush(timeout=1.0))

    def close(self) -> None:
        """Count and log the calls finished so far; later calls are counted and logged as they finish.

        Streams still open are no longer timed.
        """
        self._guard.stop()
        self._recorder.close()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` of the full method name ``method`` behind the edge (``OPEN_METHODS``: its thin part).

        Raises RuntimeError for a method in neither table: nothing is served with a policy nobody chose.
        """
        entry = METHODS.get(method)
        if entry is None:
            if method not in OPEN_METHODS:
                raise RuntimeError(f"{method} has no entry in the method table")
            return wrap_open(method, handler, self._guard, self._malformed)
        route = Route(entry, self._metrics, handler.request_streaming, handler.response_streaming)
        self._routes[method] = route
        return self._wrap(handler, route)

    @property
    def echoes_request_id(self) -> bool:
        """Whether an answer carries the call's request id back."""
        return self._echo

    def rate_limit_refusal(self, wait: float) -> ResourceExhausted:
        """The error that refuses a call over the rate limit, ``wait`` seconds the retry delay; counts nothing."""
        limiter = self._policy.limiter
        if limiter is None:
            raise RuntimeError("this edge has no rate limit")
        return _rate_limit_refusal(limiter, wait)

    def refused(
        self, method: str, error: RegserveError, request_id: str, principal: auth.Principal, peer: str, started: float
    ) -> None:
        """Count and log a call of ``method`` that the gateway inside the server refused for this edge with ``error``
        before reading its body (``gateway.admission``), begun at ``started`` (``time.perf_counter``): metrics and
        access log as for a refusal made here."""
        route = self._routes.get(method)
        if route is None:
            return
        if error.reason == "RATE_LIMITED":
            self._metrics.rate_limited.inc()
        next(route.begun)
        self._finish(route, status_for(error).code, started, request_id, principal, peer)

    def rate_limit_wait(self, principal: auth.Principal, peer: str) -> float:
        """Seconds until the caller (its principal, its gRPC-style peer) may make a call, taking no token.

        What the gateway inside the server asks before it reads a request body.
        """
        policy = self._policy
        if policy.limiter is None:
            return 0.0
        return policy.limiter.wait(principal.id if policy.tokens is not None else peer_host(peer))

    # ------------------------------------------------------------ per call
    #
    # A finished call is handed to the recorder as one tuple (see ``call_records``).

    def _start(self, route: Route, context: _CallContext) -> tuple[str, str | None, str]:
        """Read the metadata, echo the request id, count the call begun: (request id, authorization, peer)."""
        request_id = authorization = None
        for key, value in context.invocation_metadata():
            if key == REQUEST_ID:
                request_id = value[:MAX_REQUEST_ID]
            elif key == "authorization":
                # Two entries are refused, not resolved: a proxy and the server could each read another.
                authorization = value if authorization is None else auth.SENT_TWICE
        if not request_id:
            request_id = ID_PREFIX + hex(next(ID_COUNTER))[2:]  # ``request_id_for`` inline: a frame less per call
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

    def _host(self, peer: str, context: grpc.ServicerContext) -> str:
        """The caller's host: of ``peer`` when the call has read it already, else read now."""
        return peer_host(peer or self._peer(cast(_CallContext, context)))

    def _authenticate(self, authorization: str | None, peer: str, context: grpc.ServicerContext) -> auth.Principal:
        """The caller named by its bearer token; a refusal ends the call (UNAUTHENTICATED).

        A caller without a valid token spends a token of its peer host's bucket, so a flood
        of such calls is refused RESOURCE_EXHAUSTED like any other once the bucket is empty.
        """
        tokens = self._policy.tokens
        if tokens is None:
            return auth.ANONYMOUS
        try:
            return tokens.authenticate(authorization)
        except RegserveError as error:
            refusal: RegserveError = error
        limiter = self._policy.limiter
        if limiter is not None:
            wait = self.unauthenticated_wait(peer or self._peer(cast(_CallContext, context)))
            if wait:
                refusal = self._rate_limited(limiter, wait)
        abort(context, status_for(refusal))

    def unauthenticated_wait(self, peer: str) -> float:
        """Take a token of the bucket of ``peer``'s host for a call without a valid token.

        ``peer`` is gRPC-style, with its port (``ipv4:10.0.0.1:5678``).  Returns 0.0, or the
        seconds to wait: the call is then refused RATE_LIMITED.
        """
        limiter = self._policy.limiter
        return limiter.acquire(peer_host(peer)) if limiter is not None else 0.0

    def _rate_limited(self, limiter: TokenBuckets, wait: float) -> ResourceExhausted:
        """Count a call refused by the rate limit; the error that refuses it, ``wait`` seconds the retry delay."""
        self._metrics.rate_limited.inc()
        return _rate_limit_refusal(limiter, wait)

    def _admit(self, route: Route, principal: auth.Principal, peer: str, context: grpc.ServicerContext) -> None:
        """Authorize and rate-limit the call; a refusal ends it (PERMISSION_DENIED, RESOURCE_EXHAUSTED)."""
        policy = self._policy
        try:
            if policy.tokens is not None:
                auth.authorize(principal, route.method)
            if policy.limiter is not None:
                identity = principal.id if policy.tokens is not None else peer_host(peer)
                wait = policy.limiter.acquire(identity)
                if wait:
                    raise self._rate_limited(policy.limiter, wait)
        except RegserveError as error:
            abort(context, status_for(error))

    def _refuse_undecodable(self, route: Route, peer: str, context: grpc.ServicerContext) -> NoReturn:
        """End a call whose request could not be decoded (INVALID_ARGUMENT, MALFORMED_MESSAGE)."""
        host = self._host(peer, context)
        abort(context, status_for(self._malformed.refusal(route.service, route.name, host)))

    def _open_stream(self, route: Route, peer: str, context: grpc.ServicerContext) -> OpenStream:
        """Register a stream with the guard; a refusal ends the call (RESOURCE_EXHAUSTED, TOO_MANY_STREAMS)."""
        try:
            return self._guard.open(route.service, route.name, self._host(peer, context), context)
        except RegserveError as error:
            abort(context, status_for(error))

    def _requests(self, route: Route, request_iterator, stream: OpenStream):
        """The stream's request messages, timed by the guard and counted; an undecodable one raises
        InvalidInput, which the servicer maps like its own errors."""
        refusal = functools.partial(self._malformed.refusal, route.service, route.name, stream.host)
        return self._guard.requests(_counted(request_iterator, route.received), stream, refusal)

    def _finish(self, route: Route, code, started: float, request_id: str, principal, peer: str) -> None:
        """Count the call ended and hand its record to the recorder."""
        next(route.ended)
        self._recorder.add((route, code, started, time.perf_counter(), request_id, principal, peer))

    # ------------------------------------------------------------ wrapping

    def _wrap(self, handler: grpc.RpcMethodHandler, route: Route) -> grpc.RpcMethodHandler:
        route.unary_response = handler.unary_unary is not None or handler.stream_unary is not None
        route.request_streaming = handler.request_streaming
        if handler.unary_unary is not None:
            behavior = self._unary_unary(handler.unary_unary, route)
        elif handler.stream_unary is not None:
            behavior = self._stream_unary(handler.stream_unary, route)
        else:
            behavior = self._streaming(handler.unary_stream or handler.stream_stream, route)
        if self._tracing is not None:
            # Chosen here, once: without tracing the handler is the same as before, not a branch per call.
            kinds = {(False, False): "unary_unary", (True, False): "stream_unary", (False, True): "unary_stream"}
            kind = kinds.get((handler.request_streaming, handler.response_streaming), "stream_stream")
            behavior = self._tracing.wrap(route.service, route.name, kind, behavior)
        return tolerant_handler(handler, behavior)

    def _unary_unary(self, behavior, route: Route):
        # Predict's path: its steps are bound to local names, and a call that succeeds does
        # ``_finish``'s two steps in place, a Python frame less per call.
        start, authenticate, admit, finish = self._start, self._authenticate, self._admit, self._finish
        refuse_undecodable = self._refuse_undecodable
        checks = self._policy.checks_calls
        perf_counter, ended, add = time.perf_counter, route.ended, self._recorder.add
        anonymous, undecodable = auth.ANONYMOUS, UNDECODABLE

        def unary_unary(request, context):
            started = perf_counter()
            request_id, authorization, peer = start(route, context)
            principal = anonymous
            try:
                if checks:
                    principal = authenticate(authorization, peer, context)
                    admit(route, principal, peer, context)
                if request is undecodable:
                    refuse_undecodable(route, peer, context)
                response = behavior(request, context)
            except BaseException:
                finish(route, context.code() or _UNKNOWN, started, request_id, principal, peer)
                raise
            next(ended)
            add((route, _OK, started, perf_counter(), request_id, principal, peer))
            return response

        return unary_unary

    def _stream_unary(self, behavior, route: Route):
        start, authenticate, admit, finish = self._start, self._authenticate, self._admit, self._finish
        open_stream, requests, close_stream = self._open_stream, self._requests, self._guard.close
        metrics = self._metrics

        def stream_unary(request_iterator, context):
            started = time.perf_counter()
            request_id, authorization, peer = start(route, context)
            principal = auth.ANONYMOUS
            stream = None
            try:
                principal = authenticate(authorization, peer, context)
                admit(route, principal, peer, context)
                stream = open_stream(route, peer, context)
                response = behavior(requests(route, request_iterator, stream), context)
            except BaseException:
                code = _ended(stream, context.code() or _UNKNOWN)
                if stream is not None and route.is_train:
                    # A Train that succeeds is counted by the servicer's ``on_trained``, which knows the model.
                    metrics.training_runs.labels("", code.name).inc()
                finish(route, code, started, request_id, principal, peer)
                raise
            finally:
                if stream is not None:
                    close_stream(stream)
            finish(route, _OK, started, request_id, principal, peer)
            return response

        return stream_unary

    def _streaming(self, behavior, route: Route):
        start, authenticate, admit, finish = self._start, self._authenticate, self._admit, self._finish
        open_stream, requests, close_stream = self._open_stream, self._requests, self._guard.close
        responses, refuse_undecodable = self._guard.responses, self._refuse_undecodable

        def streaming(request, context):
            started = time.perf_counter()
            request_id, authorization, peer = start(route, context)
            principal = auth.ANONYMOUS
            stream = None
            try:
                principal = authenticate(authorization, peer, context)
                admit(route, principal, peer, context)
                stream = open_stream(route, peer, context)
                if route.request_streaming:
                    request = requests(route, request, stream)
                elif request is UNDECODABLE:
                    refuse_undecodable(route, peer, context)
                yield from responses(_counted(behavior(request, context), route.sent), stream)
            except GeneratorExit:
                finish(route, _ended(stream, _CANCELLED), started, request_id, principal, peer)
                raise
            except BaseException:
                finish(route, _ended(stream, context.code() or _UNKNOWN), started, request_id, principal, peer)
                raise
            finally:
                if stream is not None:
                    close_stream(stream)
            finish(route, _ended(stream, _OK), started, request_id, principal, peer)

        return streaming
