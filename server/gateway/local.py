"""In-process calls for the gateway embedded in the server: unary RPCs without a second gRPC hop.

When ``regserve serve --gateway-port`` runs the REST gateway inside the server
process, a unary route hands its request message straight to the method handler
the gRPC server itself runs, wrapped by the same edge (``EdgeServer``): request ids,
authentication, rate limits (per HTTP client address), row limits, validation,
metrics and the access log all apply exactly as to a gRPC call.  What is skipped
is the serialization and the round trip through a gRPC client, the HTTP/2 stack
and the server's thread pool, which cost more CPU than the call itself.

Streaming routes (Train and BatchPredict as NDJSON) still go over gRPC to the
server's own port: they need flow control across the two ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import grpc
from google.rpc import code_pb2

from regserve.server.errors import ResourceExhausted
from regserve.server.gateway.admission import Admission
from regserve.server.gateway.errors import GatewayError
from regserve.server.rpc.methods import METHODS
from regserve.server.rpc.status import CallStatus, status_for

__all__ = ["LocalCallError", "LocalDispatch"]

_INLINE = frozenset(name for name, method in METHODS.items() if method.inline)
"""Methods answered on the event loop itself when the request names no version (see ``Method.inline``).

A named version may have to be loaded from disk first, and the other methods change
the registry (writes, fsync, a lock shared with other processes) or stream: those run
in a thread, so the event loop never waits on a disk or a lock.
"""


def _names_version(request) -> bool:
    """Whether ``request`` names a version (regserve.v1's ``version``, the inference protocol's ``model_version``)."""
    return bool(getattr(request, "version", "") or getattr(request, "model_version", ""))


class LocalCallError(grpc.RpcError):
    """A failed in-process call; reads like the ``AioRpcError`` of a call over gRPC."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def initial_metadata(self) -> tuple:
        return ()

    def trailing_metadata(self) -> tuple:
        return tuple(self._status.trailing_metadata or ())


class _Context:
    """The part of ``grpc.ServicerContext`` regserve's handlers use, for one in-process call."""

    __slots__ = ("_deadline", "_metadata", "_peer", "_trailing", "_code")

    def __init__(self, metadata: tuple, peer: str, timeout: float | None) -> None:
        self._metadata = metadata
        self._peer = peer
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._trailing: tuple = ()
        self._code: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def is_active(self) -> bool:
        return self._deadline is None or time.monotonic() < self._deadline

    def set_trailing_metadata(self, metadata) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple:
        return self._trailing

    def send_initial_metadata(self, metadata) -> None:
        self._trailing = (*self._trailing, *metadata)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def abort_with_status(self, status: grpc.Status):
        self._code = status.code
        raise LocalCallError(CallStatus(status.code, status.details, status.trailing_metadata))

    def abort(self, code: grpc.StatusCode, details: str):
        self.abort_with_status(CallStatus(code, details, self._trailing))


class LocalDispatch:
    """Calls unary methods in process, through the edge like the gRPC server does.

    ``handlers`` maps full method names to the server's handlers, already behind the
    edge (``regserve.server.edge.registration.EdgeServer``).
    The server's message size limit applies to requests and answers, its ``max_concurrent_rpcs``
    (0: none) to the in-process calls running at once, and the caller's deadline to
    the answer: a call that ends after it gets DEADLINE_EXCEEDED, as over gRPC.
    ``admission`` makes the edge's token and rate-limit refusals before a request
    body is read (see ``regserve.server.gateway.admission``); None: the edge alone checks.
    """

    def __init__(
        self,
        handlers: Mapping[str, grpc.RpcMethodHandler],
        max_message_bytes: int,
        max_concurrent_rpcs: int = 0,
        *,
        forwarding_key: str = "",
        admission: Admission | None = None,
    ) -> None:
        self._unary: dict[str, Callable] = {
            method: handler.unary_unary for method, handler in handlers.items() if handler.unary_unary is not None
        }
        self.forwarding_key = forwarding_key
        """The edge's ``forwarding_key``: sent with the calls the gateway makes over gRPC, to name their HTTP client."""
        self.admission = admission
        self._max_message_bytes = max_message_bytes
        self._max_concurrent = max_concurrent_rpcs
        self._running = 0  # changed on the event loop only

    def serves(self, method: str) -> bool:
        return method in self._unary

    def handler(self, method: str) -> Callable:
        """The unary behaviour of ``method`` behind the edge, as the gRPC server runs it."""
        return self._unary[method]

    async def call(self, method: str, request, *, metadata: tuple, timeout: float | None, peer: str):
        """The response to ``request``, and the metadata the call sent back; raises ``LocalCallError``."""
        size = request.ByteSize()
        if size > self._max_message_bytes:
            raise GatewayError(
                code_pb2.RESOURCE_EXHAUSTED,
                f"Received message larger than max ({size} vs. {self._max_message_bytes})",
                "MESSAGE_TOO_LARGE",
            )
        if self._max_concurrent and self._running >= self._max_concurrent:
            raise LocalCallError(CallStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!", ()))
        handler = self.handler(method)
        context = _Context(metadata, peer, timeout)
        self._running += 1
        try:
            if method in _INLINE and not _names_version(request):
                response = handler(request, context)
            else:
                response = await asyncio.wait_for(asyncio.to_thread(handler, request, context), timeout)
        except TimeoutError:
            response = None
        finally:
            self._running -= 1
        if response is None or not context.is_active():
            raise LocalCallError(
                CallStatus(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", context.trailing_metadata())
            )
        size = response.ByteSize()
        if size > self._max_message_bytes:
            # The answer the gRPC server would refuse to send (RESOURCE_EXHAUSTED); the edge
            # has counted and logged the call as answered, as it does for that call over gRPC.
            refused = status_for(
                ResourceExhausted(
                    f"Sent message larger than max ({size} vs. {self._max_message_bytes})",
                    reason="MESSAGE_TOO_LARGE",
                    metadata={"bytes": size, "limit": self._max_message_bytes},
                )
            )
            trailing = (*context.trailing_metadata(), *refused.trailing_metadata)
            raise LocalCallError(CallStatus(refused.code, refused.details, trailing))
        return response, context.trailing_metadata()


def peer_of(client) -> str:
    """A gRPC-style peer string (``ipv4:host:port``) for an HTTP client address, as rate limits key on it."""
    if client is None:
        return "unknown"
    host, port = client
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
