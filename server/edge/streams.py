"""Streams held open: a cap per peer host, and an end for streams that wait on their client too long.

A stream holds a thread of its pool for as long as it is open, so a client that opens
streams and goes quiet takes threads without doing work.  ``StreamGuard`` counts the
open streams of each peer host and refuses one over ``per_peer`` with
RESOURCE_EXHAUSTED (TOO_MANY_STREAMS), and times how long each stream waits on its
client, for its next message or to take an answer: a watchdog thread ends a stream
that has waited ``idle_timeout`` seconds with DEADLINE_EXCEEDED.  Time the server
spends computing between messages is not waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import Counter

from regserve.server.edge.decoding import UNDECODABLE
from regserve.server.errors import DeadlineExceeded, ResourceExhausted

__all__ = ["OpenStream", "StreamGuard"]

logger = logging.getLogger(__name__)

TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
STREAM_IDLE = "STREAM_IDLE"
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


class OpenStream:
    """One open stream: whose it is, whether it counts towards its host's cap, and since when it has
    waited on its client (``time.monotonic`` seconds; None: it is not waiting)."""

    __slots__ = ("context", "host", "service", "method", "capped", "waiting_since", "ended_idle")

    def __init__(self, context: grpc.ServicerContext, host: str, service: str, method: str, capped: bool) -> None:
        self.context = context
        self.host = host
        self.service = service
        self.method = method
        self.capped = capped
        self.waiting_since: float | None = None
        self.ended_idle = False
        """True once the watchdog has ended the stream for waiting too long."""


class StreamGuard:
    """The open streams of one server, their count per peer host and the watchdog that ends idle ones.

    Parameters
    ----------
    per_peer : int
        Streams one peer host may have open at once; 0: no cap.
    idle_timeout : float
        Seconds a stream may wait on its client; 0: no limit (and no watchdog thread).
    limited : prometheus_client.Counter
        Labelled (service, method, reason): counts refused and ended streams.
    """

    def __init__(self, per_peer: int, idle_timeout: float, limited: Counter, *, clock=time.monotonic) -> None:
        self.per_peer = per_peer
        self.idle_timeout = idle_timeout
        self._limited = limited
        self._clock = clock
        self._lock = threading.Lock()
        self._open: set[OpenStream] = set()
        self._per_host: dict[str, int] = {}
        self._stopped = threading.Event()
        self._watchdog: threading.Thread | None = None
        if idle_timeout > 0:
            self._watchdog = threading.Thread(target=self._watch, name="regserve-stream-watchdog", daemon=True)
            self._watchdog.start()

    def open(
        self, service: str, method: str, host: str, context: grpc.ServicerContext, *, capped: bool = True
    ) -> OpenStream:
        """Register a stream of ``host``; raises ResourceExhausted when ``capped`` and the host is at its cap."""
        counted = capped and self.per_peer > 0
        stream = OpenStream(context, host, service, method, counted)
        with self._lock:
            count = self._per_host.get(host, 0)
            refused = counted and count >= self.per_peer
            if not refused:
                self._open.add(stream)
                if counted:
                    self._per_host[host] = count + 1
        if refused:
            self._limited.labels(service, method, TOO_MANY_STREAMS).inc()
            raise ResourceExhausted(
                f"This peer has {self.per_peer} streams open, the most one peer host may have at once "
                "(--max-streams-per-peer); retry when one of them has ended.",
                reason=TOO_MANY_STREAMS,
                metadata={"limit": str(self.per_peer)},
            )
        return stream

    def close(self, stream: OpenStream) -> None:
        """Forget an ended stream (once)."""
        with self._lock:
            if stream not in self._open:
                return
            self._open.discard(stream)
            if stream.capped:
                left = self._per_host[stream.host] - 1
                if left:
                    self._per_host[stream.host] = left
                else:
                    del self._per_host[stream.host]

    def requests(self, iterator: Iterator[Any], stream: OpenStream, refusal: Callable[[], Exception]) -> Iterator[Any]:
        """The messages of ``iterator``, timing each wait for one; an undecodable message raises ``refusal()``.

        A stream the watchdog ended raises DeadlineExceeded: grpcio may end the iterator of a
        cancelled call as if the client had closed it, and a Train must not fit the rows it has.
        """
        clock = self._clock
        while True:
            stream.waiting_since = clock()
            try:
                request = next(iterator)
            except StopIteration:
                if stream.ended_idle:
                    raise DeadlineExceeded(self._idle_message(), reason=STREAM_IDLE) from None
                return
            finally:
                stream.waiting_since = None
            if request is UNDECODABLE:
                raise refusal()
            yield request

    def responses(self, responses: Iterator[Any], stream: OpenStream) -> Iterator[Any]:
        """The answers of ``responses``, timing each wait for the client to take one."""
        clock = self._clock
        for response in responses:
            # grpcio resumes this generator once the client's flow control has taken the answer.
            stream.waiting_since = clock()
            yield response
            stream.waiting_since = None

    def stop(self) -> None:
        """Stop the watchdog; streams still open are no longer timed."""
        self._stopped.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)

    def end_idle(self) -> int:
        """End every stream that has waited on its client for ``idle_timeout`` seconds or more; how many."""
        now = self._clock()
        with self._lock:
            idle = [
                stream
                for stream in self._open
                if stream.waiting_since is not None
                and not stream.ended_idle
                and now - stream.waiting_since >= self.idle_timeout
            ]
            for stream in idle:
                stream.ended_idle = True
        for stream in idle:
            self._limited.labels(stream.service, stream.method, STREAM_IDLE).inc()
            self._end(stream.context)
        return len(idle)

    def _watch(self) -> None:
        # A stream ends between idle_timeout and idle_timeout + tick seconds after it began to wait.
        tick = min(1.0, max(0.05, self.idle_timeout / 4))
        while not self._stopped.wait(tick):
            try:
                self.end_idle()
            except Exception:  # noqa: BLE001 - the watchdog must outlive one failure
                logger.exception("the stream watchdog failed to end idle streams")

    def _idle_message(self) -> str:
        return (
            f"The stream waited {self.idle_timeout:g} s on the client (no message sent, no answer taken); "
            "the server ended it (--stream-idle-timeout)."
        )

    def _end(self, context: grpc.ServicerContext) -> None:
        """End a call from this thread, which is not the call's own.

        grpcio's public ``cancel`` ends it CANCELLED, which tells the client nothing;
        the call object underneath can end it with a status and a message, so that
        is used where it is there.
        """
        details = self._idle_message()
        call: Any = getattr(getattr(context, "_rpc_event", None), "call", None)
        try:
            call.cancel(_DEADLINE_EXCEEDED, details)
        except (AttributeError, TypeError):  # not there, or not as this grpcio has it
            context.cancel()
