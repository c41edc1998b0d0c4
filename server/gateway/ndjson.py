"""NDJSON request bodies: one request message per line, parsed line by line as the body arrives.

``ndjson_lines`` splits a body in linear time (each byte is scanned once, a line cut
across chunks is joined once) and refuses a line longer than the limit (413) as soon
as it passes it.  ``NdjsonRequests`` turns the lines into request messages for a
client stream, from the event loop or from the thread of grpcio's sync client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator

from starlette.requests import Request

from regserve.server.gateway.codec import build_request
from regserve.server.gateway.errors import GatewayError
from regserve.server.gateway.limits import body_too_large
from regserve.server.gateway.rules import HttpRoute

__all__ = ["NdjsonRequests", "ndjson_lines"]


async def ndjson_lines(chunks: AsyncIterable[bytes], max_line_bytes: int) -> AsyncIterator[bytes]:
    """The lines of a body that arrives in ``chunks``, without their newline; 413 for a line over ``max_line_bytes``."""
    pieces: list[bytes] = []  # the unfinished line, in the pieces it came in
    held = 0
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if held + end - start > max_line_bytes:
                raise body_too_large("an NDJSON line", held + end - start, max_line_bytes)
            if pieces:
                pieces.append(chunk[start:end])
                line = b"".join(pieces)
                pieces, held = [], 0
            else:
                line = chunk[start:end]
            yield line
            start = end + 1
        if start < len(chunk):
            held += len(chunk) - start
            if held > max_line_bytes:
                raise body_too_large("an NDJSON line", held, max_line_bytes)
            pieces.append(chunk[start:])
    if pieces:
        yield b"".join(pieces)


class NdjsonRequests:
    """The request messages of a client stream, parsed from the body line by line as it arrives.

    A line that is not a request message, or is too long, cancels the call and is kept
    in ``error``, so the answer reports it rather than the cancellation.
    """

    def __init__(
        self, request: Request, route: HttpRoute, request_class, path_values: dict[str, str], max_line_bytes: int
    ) -> None:
        self.request, self.route, self.request_class, self.path_values = request, route, request_class, path_values
        self.max_line_bytes = max_line_bytes
        self.error: GatewayError | None = None
        self.call = None
        """The upstream call, cancelled when the body turns out bad."""
        self.body_read = asyncio.Event()

    async def __aiter__(self) -> AsyncGenerator:
        number = 0
        try:
            async for line in ndjson_lines(self.request.stream(), self.max_line_bytes):
                number += 1
                if not line.strip():
                    continue
                try:
                    yield build_request(self.route, self.request_class, self.path_values, [], line)
                except GatewayError as exc:
                    self._fail(exc, number)
                    return
        except GatewayError as exc:  # a line over the limit
            self._fail(exc, number + 1)
        finally:
            self.body_read.set()

    def pull(self, loop: asyncio.AbstractEventLoop) -> Iterator:
        """The messages for grpcio's sync client, whose thread takes each from ``loop`` once it is parsed.

        A body that ends badly (a bad line, the client gone, the gateway stopping)
        cancels the call: the server must never take a cut stream for a whole one.
        """
        messages = self.__aiter__()
        while True:
            try:
                message = asyncio.run_coroutine_threadsafe(anext(messages), loop).result()
            except StopAsyncIteration:
                if self.error is not None:
                    self._cancel()
                return
            except Exception:  # noqa: BLE001 - any failure to read the body ends the call, never a stream
                self._cancel()
                return
            yield message

    def _fail(self, error: GatewayError, line_number: int) -> None:
        error.status.message = f"line {line_number}: {error.status.message}"
        self.error = error
        self._cancel()

    def _cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()
