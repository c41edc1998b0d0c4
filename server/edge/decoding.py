"""Undecodable request messages: refused INVALID_ARGUMENT, counted, and logged once per peer per interval.

grpcio answers a request its deserializer cannot parse with INTERNAL and logs a
traceback per message, before any of the server's code runs.  The edge registers each
method with ``tolerant`` deserializers instead: a message that is not a valid protobuf
encoding becomes ``UNDECODABLE``, which the edge's wrapper refuses (for streams, its
request iterator) with MALFORMED_MESSAGE.  The deserializer itself only returns the
sentinel: it runs on grpcio's polling thread, which every call waits on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import Counter

from regserve.server.errors import InvalidInput

__all__ = ["UNDECODABLE", "MalformedMessages", "tolerant", "tolerant_handler"]

logger = logging.getLogger(__name__)


class _Undecodable:
    """The type of ``UNDECODABLE``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDECODABLE"


UNDECODABLE: Final = _Undecodable()
"""What a ``tolerant`` deserializer returns for bytes that are not a valid encoding of its message."""

LOG_INTERVAL = 60.0
"""Seconds between two log lines about the undecodable messages of one peer."""

_MAX_PEERS = 10_000
"""Peers remembered before the ones not logged about within ``LOG_INTERVAL`` are forgotten."""


def tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``parse`` (a message class's ``FromString``), returning ``UNDECODABLE`` where it raises DecodeError."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return UNDECODABLE

    return deserialize


def tolerant_handler(handler: grpc.RpcMethodHandler, behavior: Callable[..., Any]) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind that runs ``behavior`` and deserializes requests with ``tolerant``."""
    parse = handler.request_deserializer
    options: dict[str, Any] = {
        "request_deserializer": tolerant(parse) if parse is not None else None,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(behavior, **options)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(behavior, **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(behavior, **options)
    return grpc.stream_stream_rpc_method_handler(behavior, **options)


class MalformedMessages:
    """Counts undecodable messages by service and method, and logs them once per peer per ``interval`` seconds.

    Parameters
    ----------
    counter : prometheus_client.Counter
        Labelled (service, method).
    """

    def __init__(self, counter: Counter, *, interval: float = LOG_INTERVAL, clock=time.monotonic) -> None:
        self._counter = counter
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # peer -> [when it was last logged about, messages since then]
        self._peers: dict[str, list[float]] = {}

    def refusal(self, service: str, method: str, peer: str) -> InvalidInput:
        """Count and perhaps log one undecodable message of ``/service/method`` from ``peer``; the error to raise.

        ``peer`` is the caller's host, without the port: every connection has a port of its own.
        """
        self._counter.labels(service, method).inc()
        now = self._clock()
        with self._lock:
            seen = self._peers.get(peer)
            if seen is None:
                if len(self._peers) >= _MAX_PEERS:
                    self._forget(now)
                seen = self._peers[peer] = [now - self._interval, 0]
            seen[1] += 1
            due = now - seen[0] >= self._interval
            if due:
                count, seen[0], seen[1] = int(seen[1]), now, 0
        if due:
            logger.warning(
                "undecodable request message for /%s/%s from %s (%d from this peer since the last such line; "
                "the next in %g s at the earliest)",
                service,
                method,
                peer,
                count,
                self._interval,
            )
        return InvalidInput(
            f"The request message is not a valid encoding of /{service}/{method}'s request type.",
            reason="MALFORMED_MESSAGE",
        )

    def _forget(self, now: float) -> None:
        for peer, (logged, _) in list(self._peers.items()):
            if now - logged >= self._interval:
                del self._peers[peer]
        if len(self._peers) >= _MAX_PEERS:
            self._peers.clear()  # a bound on memory matters more than a few more log lines
