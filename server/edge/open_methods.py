"""The thin part of the edge for methods open to every caller: health and reflection.

They are never authenticated, rate-limited, counted or logged: a probe must answer
whatever the caller holds.  They still refuse undecodable messages like every other
method (INVALID_ARGUMENT, counted, logged once per peer per interval), and
reflection's bidi stream, which any caller may open, is ended when it waits on its
client too long; it does not count towards the per-peer stream cap.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

import grpc

from regserve.server.edge.decoding import UNDECODABLE, MalformedMessages, tolerant_handler
from regserve.server.edge.request_ids import peer_host
from regserve.server.edge.streams import StreamGuard
from regserve.server.errors import RegserveError
from regserve.server.rpc.status import abort, status_for

__all__ = ["wrap_open"]


class _NonBlocking(Protocol):
    """A behavior grpcio calls with a callback for its answers, releasing the thread at once."""

    experimental_non_blocking: bool


def wrap_open(
    method: str, handler: grpc.RpcMethodHandler, guard: StreamGuard, malformed: MalformedMessages
) -> grpc.RpcMethodHandler:
    """``handler`` of the full method name ``method`` with undecodable messages refused and idle streams ended.

    Open methods take one request (health's Check and Watch) or are bidi streams (reflection).
    """
    service, _, name = method[1:].partition("/")
    unary = handler.unary_unary or handler.unary_stream
    if unary is not None:
        return tolerant_handler(handler, _unary_request(unary, service, name, malformed))
    if handler.stream_stream is None:
        raise TypeError(f"{method}: an open method takes one request or is a bidi stream")
    return tolerant_handler(handler, _bidi_stream(handler.stream_stream, service, name, guard, malformed))


def _unary_request(
    behavior: Callable[..., Any], service: str, name: str, malformed: MalformedMessages
) -> Callable[..., Any]:
    def unary_request(request, context, *callback):
        if request is UNDECODABLE:
            abort(context, status_for(malformed.refusal(service, name, peer_host(context.peer()))))
        return behavior(request, context, *callback)

    if getattr(behavior, "experimental_non_blocking", False):
        # Health's Watch answers through a callback and holds no thread: it must keep doing so.
        cast(_NonBlocking, unary_request).experimental_non_blocking = True
    return unary_request


def _bidi_stream(
    behavior: Callable[..., Iterator[Any]], service: str, name: str, guard: StreamGuard, malformed: MalformedMessages
) -> Callable[..., Iterator[Any]]:
    def bidi_stream(request_iterator, context):
        stream = guard.open(service, name, peer_host(context.peer()), context, capped=False)
        refusal = functools.partial(malformed.refusal, service, name, stream.host)
        try:
            yield from guard.responses(behavior(guard.requests(request_iterator, stream, refusal), context), stream)
        except RegserveError as error:
            abort(context, status_for(error))
        finally:
            guard.close(stream)

    return bidi_stream
