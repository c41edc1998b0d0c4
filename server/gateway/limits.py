"""What one gateway takes from its clients: body sizes, time to send them, connections and uploads.

``GatewayLimits`` gathers the settings; ``read_body`` reads a unary route's body and
refuses it (413) as soon as its declared or counted size passes the limit, before it
is buffered or parsed; ``UploadSlots`` bounds the streaming uploads (NDJSON Train and
BatchPredict bodies) in progress, so slow uploads cannot hold every upstream stream.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import TypeVar

from google.rpc import code_pb2
from starlette.requests import Request

from regserve.server.config import MIB, Settings
from regserve.server.gateway.errors import GatewayError

__all__ = ["GatewayLimits", "UploadSlots", "body_too_large", "content_encoding", "decoded_body", "read_body"]

CLOSE = {"Connection": "close"}
"""Headers of an answer given before the request body was read: the rest of the body is discarded."""


@dataclass(frozen=True)
class GatewayLimits:
    """The limits of one gateway; the defaults are those of ``Settings``.

    Times are in seconds.  ``max_body_bytes`` bounds a unary route's body and each
    line of an NDJSON body.
    """

    max_body_bytes: int = Settings.max_message_mb * MIB
    header_timeout: float = Settings.gateway_header_timeout
    body_timeout: float = Settings.gateway_body_timeout
    idle_timeout: float = Settings.gateway_idle_timeout
    max_connections: int = Settings.gateway_max_connections
    max_connections_per_peer: int = Settings.gateway_max_connections_per_peer
    """Connections one client host may hold; 0: no limit."""
    max_uploads: int = Settings.gateway_max_uploads

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"the gateway's {name.replace('_', ' ')} must be above 0 seconds")
        for name in ("max_body_bytes", "max_connections", "max_uploads"):
            if getattr(self, name) < 1:
                raise ValueError(f"the gateway's {name.replace('_', ' ')} must be at least 1")
        if self.max_connections_per_peer < 0:
            raise ValueError("the gateway's max connections per peer must be 0 (no limit) or more")

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayLimits:
        """The limits of the gateway that ``regserve serve --gateway-port`` runs inside the server."""
        return cls(
            max_body_bytes=settings.max_message_bytes,
            header_timeout=settings.gateway_header_timeout,
            body_timeout=settings.gateway_body_timeout,
            idle_timeout=settings.gateway_idle_timeout,
            max_connections=settings.gateway_max_connections,
            max_connections_per_peer=settings.gateway_max_connections_per_peer,
            max_uploads=settings.gateway_max_uploads,
        )


def body_too_large(what: str, size: int, limit: int) -> GatewayError:
    """The 413 that refuses ``what`` (a body, an NDJSON line) of at least ``size`` bytes."""
    return GatewayError(
        code_pb2.RESOURCE_EXHAUSTED,
        f"{what} is larger than the limit of {limit} bytes (at least {size} bytes)",
        "BODY_TOO_LARGE",
        http_status=413,
        headers=CLOSE,
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body of ``request``, refused with 413 once its declared length or the bytes received pass ``limit``.

    A declared Content-Length over the limit is refused before a byte of the body
    is read; a chunked body is counted as it arrives.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large("the request body", int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large("the request body", size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


class UploadSlots:
    """At most ``size`` streaming uploads at once; taken and given back on the event loop only."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0

    def take(self) -> Callable[[], None]:
        """Take a slot and return the function that gives it back (once, however often it is called).

        GatewayError 429 (with Retry-After) when every slot is taken.
        """
        if self.taken >= self.size:
            raise GatewayError(
                code_pb2.RESOURCE_EXHAUSTED,
                f"{self.taken} streaming uploads are in progress, the most this gateway takes at once; retry later",
                "TOO_MANY_UPLOADS",
                retry_after=1.0,
                headers=CLOSE,
            )
        self.taken += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self.taken -= 1

        return give_back


_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""zlib's window bits for each request ``Content-Encoding``: a gzip member, or a zlib stream (HTTP's deflate)."""


OFF_LOOP_BYTES = 256 * 1024
"""Bodies and answers from this size on are decoded, parsed and encoded on ``_JSON_THREADS``, not on the
event loop, which every connection of the gateway waits on: a few megabytes of JSON take it for seconds."""
_JSON_THREADS = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="regserve-gateway-json")
"""Two: large bodies queue here rather than each taking a core and its memory at once."""
_T = TypeVar("_T")


def is_large(size: int, request: Request | None = None) -> bool:
    """Whether ``size`` bytes (of ``request``'s body, any compression counting as large) go off the loop."""
    return size >= OFF_LOOP_BYTES or (request is not None and content_encoding(request) != "identity")


def is_large_answer(message) -> bool:
    """Whether the JSON of the protobuf ``message`` goes off the loop: about three times its binary size,
    as a double takes 8 bytes in protobuf and up to 24 characters in JSON."""
    return 3 * message.ByteSize() >= OFF_LOOP_BYTES


async def off_loop(large: bool, work: Callable[[], _T]) -> _T:
    """``work()``: here when not ``large``, else on a JSON thread, the loop serving other connections meanwhile."""
    if not large:
        return work()
    return await asyncio.get_running_loop().run_in_executor(_JSON_THREADS, work)


async def parse_body(request: Request, raw: bytes, limit: int, parse: Callable[[bytes], _T]) -> _T:
    """``parse`` of the body ``raw`` of ``request`` without its Content-Encoding (``decoded_body``, within
    ``limit``), on a JSON thread when the body is large or compressed."""
    return await off_loop(is_large(len(raw), request), lambda: parse(decoded_body(request, raw, limit)))


async def answer_of(response, make: Callable[[], _T]) -> _T:
    """``make()``, the HTTP answer carrying the protobuf ``response``: on a JSON thread when its JSON is large."""
    return await off_loop(is_large_answer(response), make)


def content_encoding(request: Request) -> str:
    """The request's ``Content-Encoding``, lower case; ``identity`` when it names none."""
    return request.headers.get("content-encoding", "identity").strip().lower()


def decoded_body(request: Request, body: bytes, limit: int) -> bytes:
    """``body`` without its ``Content-Encoding`` (gzip or deflate, as tritonclient compresses), within ``limit``;
    415 for another encoding."""
    encoding = content_encoding(request)
    if encoding == "identity":
        return body
    if encoding not in _ENCODINGS:
        raise GatewayError(
            code_pb2.INVALID_ARGUMENT,
            f"unsupported content encoding {encoding!r}; send gzip, deflate or identity",
            "UNSUPPORTED_MEDIA_TYPE",
            http_status=415,
        )
    inflater = zlib.decompressobj(_ENCODINGS[encoding])
    try:
        # Inflating at most one byte past the limit bounds the memory a small compressed body can claim.
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise GatewayError(
            code_pb2.INVALID_ARGUMENT, f"the {encoding} body does not decompress: {exc}", "MALFORMED_BODY"
        ) from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise body_too_large("the decompressed request body", len(plain), limit)
    if not inflater.eof:
        raise GatewayError(code_pb2.INVALID_ARGUMENT, f"the {encoding} body is cut short", "MALFORMED_BODY")
    return plain
