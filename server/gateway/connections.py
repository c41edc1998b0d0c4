"""The gateway's HTTP connections: timeouts, a bound on their number, and a quiet accept loop.

uvicorn's httptools protocol closes a keep-alive connection left idle between requests
(``timeout_keep_alive``), but a client that never finishes its headers, or stops in
the middle of its body, holds its connection and a file descriptor for ever.
``GuardedHttpProtocol`` adds what nginx calls ``client_header_timeout``,
``client_body_timeout``, ``large_client_header_buffers`` and ``limit_conn``:

- the request head must be complete within the header timeout, counted from the
  connection's start or from the first byte of a later request, and within
  ``MAX_HEAD_BYTES`` (431 past it);
- while the gateway waits for body bytes, they must come within the body timeout
  (not while the gateway reads no more because its upstream is busy), and once the
  gateway has waited on a body for longer than the body timeout, the body must have come
  at ``MIN_BODY_RATE`` on average over that wait (an NDJSON stream, whose lines come as
  its client makes them, excepted: upload slots bound those);
- past the connection bound, or past one client host's share of it, a new connection
  is answered 503 and closed at once;
- an answer given before the body was read (413, 401) is followed by reading and
  dropping the rest of the body, for at most the body timeout, before the connection
  closes: the client then reads the answer instead of a reset.

``quiet_accept_errors`` turns the accept loop's running out of file descriptors
into one log line per interval instead of a traceback per attempt, and
``connection_bound`` raises the soft limit of open files to the hard one.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, cast

from google.rpc import code_pb2
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from regserve.server.gateway.errors import status_json
from regserve.server.gateway.limits import GatewayLimits
from regserve.server.rpc.status import rich_status
from regserve.server.runtime.files import share_of_open_files

__all__ = ["MAX_HEAD_BYTES", "GuardedHttpProtocol", "connection_bound", "protocol_for", "quiet_accept_errors"]

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
"""The most bytes of request line and headers one request may send."""
LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same kind of refused connection."""
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Throttled:
    """Logs one warning per interval, with the count of those it kept back."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.last: float | None = None
        self.held_back = 0

    def warn(self, *args) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last < LOG_INTERVAL:
            self.held_back += 1
            return
        if self.held_back:
            logger.warning(self.message + " (and %d more since the last report)", *args, self.held_back)
        else:
            logger.warning(self.message, *args)
        self.last, self.held_back = now, 0


def _raw_answer(http_status: int, code: int, message: str, reason: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer with a google.rpc.Status body, written before any request was read."""
    status = rich_status(code, message, reason, retry_after=retry_after)
    body = json.dumps(status_json(status), separators=(",", ":")).encode()
    head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body)
    if retry_after is not None:
        head += b"retry-after: %d\r\n" % retry_after
    return STATUS_LINE[http_status] + head + b"\r\n" + body


_TOO_MANY_CONNECTIONS = _raw_answer(
    503,
    code_pb2.UNAVAILABLE,
    "the gateway holds as many connections as it takes; retry later",
    "TOO_MANY_CONNECTIONS",
    retry_after=1,
)
_HEAD_TOO_LARGE = _raw_answer(
    431,
    code_pb2.RESOURCE_EXHAUSTED,
    f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes",
    "HEADERS_TOO_LARGE",
)
_TOO_MANY_FROM_PEER = _raw_answer(
    503,
    code_pb2.UNAVAILABLE,
    "this client host holds as many connections as the gateway gives one host; reuse them, or retry later",
    "TOO_MANY_CONNECTIONS_FROM_PEER",
    retry_after=1,
)
_refused_connections = _Throttled("refused HTTP connections past the bound of %d open connections")
_refused_peer_connections = _Throttled("refused HTTP connections of a host past its bound of %d open connections")
MIN_BODY_RATE = 1024
"""Bytes a second a request body must average once it has taken the body timeout: a body trickled a byte
at a time within each timeout would otherwise hold its connection for as long as its client likes."""


class _HeadTooLarge(Exception):
    """Raised in a parser callback: httptools turns it into a parser error, which ends the connection."""


class _LingeringTransport:
    """The transport as a request's cycle sees it: closed before the body is all in, it lingers instead."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        if self._protocol.in_body and not self._transport.is_closing():
            self._protocol.close_when_drained = True
            self._protocol.linger()
        else:
            self._transport.close()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the timeouts and bounds of the module docstring.

    ``protocol_for`` makes the subclass that carries a gateway's ``limits``.
    """

    limits: ClassVar[GatewayLimits] = GatewayLimits()
    max_connections: ClassVar[int] = GatewayLimits().max_connections
    peers: ClassVar[dict[str, int]] = {}
    """Open connections by client host, of this class's gateway (``protocol_for`` gives each its own)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._linger_end: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_too_large = False
        self.in_body = False
        """True from the end of a request's headers to the end of its body."""
        self.close_when_drained = False
        """The answer was given before the body was all in, and said the connection closes."""
        self._peer: str | None = None
        self._body_waited = 0.0
        self._body_bytes = 0
        self._least_rate = True
        """Whether this request's body must come at ``MIN_BODY_RATE``: all but NDJSON streams."""

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn types it
        if len(self.connections) >= self.max_connections:
            self.transport = transport
            _refused_connections.warn(self.max_connections)
            transport.write(_TOO_MANY_CONNECTIONS)
            transport.close()
            return
        per_peer = self.limits.max_connections_per_peer
        if per_peer:
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            if self.peers.get(host, 0) >= per_peer:
                self.transport = transport
                _refused_peer_connections.warn(per_peer)
                transport.write(_TOO_MANY_FROM_PEER)
                transport.close()
                return
            self.peers[host] = self.peers.get(host, 0) + 1
            self._peer = host
        super().connection_made(transport)
        self._head_deadline = self.loop.call_later(self.limits.header_timeout, self._expire, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_deadline, self._linger_end):
            if timer is not None:
                timer.cancel()
        if self._peer is not None:
            left = self.peers.get(self._peer, 1) - 1
            if left > 0:
                self.peers[self._peer] = left
            else:
                self.peers.pop(self._peer, None)
            self._peer = None
        super().connection_lost(exc)

    def _expire(self, what: str) -> None:
        logger.debug("closing an HTTP connection whose %s did not come in time", what)
        self.transport.close()

    def _timed(self, receive: Callable[[], Coroutine[Any, Any, Any]]) -> Callable[[], Coroutine[Any, Any, Any]]:
        """``receive`` of a request's cycle, closing the connection when the body it waits for stalls."""

        async def timed_receive():
            if not self.in_body:
                return await receive()
            started = self.loop.time()
            deadline = self.loop.call_later(self.limits.body_timeout, self._expire, "body")
            try:
                message = await receive()
            finally:
                deadline.cancel()
            # Only the time spent waiting on the client counts, not the time the route took between reads.
            self._body_waited += self.loop.time() - started
            self._body_bytes += len(message.get("body", b""))
            waited = self._body_waited
            if (
                self._least_rate
                and waited > self.limits.body_timeout
                and self._body_bytes < MIN_BODY_RATE * waited
                and self.in_body
            ):
                self._expire("body, trickled below the least rate,")
            return message

        return timed_receive

    def linger(self) -> None:
        """Drop the rest of an answered request's body, for at most the body timeout (see the module docstring)."""
        if self._linger_end is None:
            self._linger_end = self.loop.call_later(self.limits.body_timeout, self._expire, "body")
        self.flow.resume_reading()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.in_body and not self.transport.is_closing():
            self.linger()

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._head_deadline is None:  # a later request on a kept-alive connection
            self._head_deadline = self.loop.call_later(self.limits.header_timeout, self._expire, "headers")

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise _HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        self.transport.write(_HEAD_TOO_LARGE)
        self.transport.close()

    def on_headers_complete(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().on_headers_complete()
        self._body_waited, self._body_bytes = 0.0, 0
        # A stream of NDJSON lines may come as slowly as its client makes them (an upload slot bounds those).
        content_type = next((v for k, v in self.scope["headers"] if k == b"content-type"), b"")
        self._least_rate = not content_type.lower().startswith(b"application/x-ndjson")
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # the cycle of this request, its app not started yet
            cycle.transport = cast(asyncio.Transport, _LingeringTransport(self.transport, self))
            cycle.receive = self._timed(cycle.receive)  # type: ignore[method-assign]
        self.in_body = True

    def on_message_complete(self) -> None:
        self.in_body = False
        answered = self.cycle is not None and self.cycle.response_complete
        if self._linger_end is not None:
            self._linger_end.cancel()
            self._linger_end = None
        super().on_message_complete()
        if self.close_when_drained:
            self.transport.close()
        elif answered and self.timeout_keep_alive_task is None:
            # Answered before its body was all in: uvicorn's idle timer, stopped by the body's
            # bytes, would not start again.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )


def connection_bound(limits: GatewayLimits) -> int:
    """The connections a gateway may hold: ``limits.max_connections``, at most half the open-file limit.

    Raises the soft limit of open files to the hard limit first: the gRPC server and
    the gateway of one process share it.
    """
    return share_of_open_files(limits.max_connections, 2, "the gateway")


class _InvalidRequests(logging.Filter):
    """Lets uvicorn's warning about an unparsable request through once per interval, with a count of the others:
    a client sending garbage would otherwise write a log line per request."""

    MESSAGE = "Invalid HTTP request received."

    def __init__(self) -> None:
        super().__init__()
        self.last: float | None = None
        self.held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE:
            return True
        now = time.monotonic()
        if self.last is not None and now - self.last < LOG_INTERVAL:
            self.held_back += 1
            return False
        if self.held_back:
            record.msg = f"{self.MESSAGE} (and %d more since the last report)"
            record.args = (self.held_back,)
        self.last, self.held_back = now, 0
        return True


_INVALID_REQUESTS = _InvalidRequests()


def protocol_for(limits: GatewayLimits) -> type[GuardedHttpProtocol]:
    """The protocol class, for uvicorn's ``http`` setting, of a gateway with ``limits``."""

    class GatewayHttpProtocol(GuardedHttpProtocol):
        pass

    uvicorn_log = logging.getLogger("uvicorn.error")
    if _INVALID_REQUESTS not in uvicorn_log.filters:
        uvicorn_log.addFilter(_INVALID_REQUESTS)
    GatewayHttpProtocol.limits = limits
    GatewayHttpProtocol.max_connections = connection_bound(limits)
    GatewayHttpProtocol.peers = {}
    return GatewayHttpProtocol


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log the accept loop's running out of file descriptors once per interval, without a traceback.

    asyncio stops accepting for a second and tries again; every other error goes to
    the handler that was there before.
    """
    previous = loop.get_exception_handler()
    out_of_files = _Throttled("cannot accept HTTP connections: %s; retrying")

    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in _ACCEPT_ERRNOS:
            out_of_files.warn(error.strerror)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
