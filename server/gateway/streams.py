"""Streamed calls: NDJSON bodies to Train (one JSON answer) and BatchPredict, answers streamed as NDJSON.

Client streams are made with grpcio's sync client.  Its asyncio client turns a write
made as the server ends the call (a refusal before the stream is read, an unknown
model, an invalid chunk) into INTERNAL "Internal error from Core", hiding the
server's status (grpc/grpc#36066); the sync client reports that status.  Its thread
takes each request message from the event loop once its line is parsed, so the body
is read no faster than the server takes it.

No thread of the event loop's pool is held while a client sends its body: the
answer of a Train is awaited through a callback, and the answers of a BatchPredict
are taken by a thread of ``answer_threads``, the gateway's own, as many as the
uploads it takes at once.  A call with one request and streamed answers writes
nothing after its start and keeps the asyncio client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from concurrent import futures

import grpc
from google.rpc import code_pb2
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from regserve.server.gateway.answers import echoed_headers, failed_call_answer, json_answer
from regserve.server.gateway.codec import response_json
from regserve.server.gateway.errors import GatewayError, status_from_rpc_error, status_json
from regserve.server.gateway.ndjson import NdjsonRequests
from regserve.server.gateway.rules import HttpRoute

__all__ = ["NDJSON", "bidi_stream_answer", "client_stream_answer", "server_stream_answer"]

NDJSON = "application/x-ndjson"


def _line(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class _StreamingAnswer(StreamingResponse):
    """A streamed answer that leaves the request body to the client stream until it is read.

    Starlette's StreamingResponse listens for a disconnect by reading the request's
    ASGI messages while it streams, which would swallow the body chunks a client
    stream has not read yet; this one starts listening only once the body is read.
    ``on_close`` runs once the answer is over, however it ended.
    """

    def __init__(
        self, content, *, body_read: asyncio.Event | None, headers: dict[str, str], on_close: Callable
    ) -> None:
        super().__init__(content, media_type=NDJSON, headers=headers)
        self.body_read = body_read
        self.on_close = on_close

    async def listen_for_disconnect(self, receive) -> None:
        if self.body_read is not None:
            await self.body_read.wait()
        await super().listen_for_disconnect(receive)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def _failed(exc: grpc.RpcError, requests: NdjsonRequests) -> Response:
    """The answer when the call failed: a bad NDJSON line is the caller's fault first."""
    if requests.error is not None:
        raise requests.error from None
    return failed_call_answer(exc)


async def client_stream_answer(route: HttpRoute, callable_, requests: NdjsonRequests, options: dict) -> Response:
    """The answer of a client-streaming call made with the sync ``callable_``, fed from the body as it arrives."""
    loop = asyncio.get_running_loop()
    future = callable_.future(requests.pull(loop), **options)
    requests.call = future
    finished = loop.create_future()

    def wake() -> None:
        if not finished.done():
            finished.set_result(None)

    def on_done(_) -> None:
        # Runs on a grpcio thread, or at once when the call is already over.
        try:
            loop.call_soon_threadsafe(wake)
        except RuntimeError:  # the event loop is closed: nobody waits any more
            pass

    future.add_done_callback(on_done)
    try:
        await finished
    except asyncio.CancelledError:
        future.cancel()
        raise
    try:
        response = future.result()
    except grpc.FutureCancelledError:
        if requests.error is not None:  # the gateway cancelled the call over a bad line
            raise requests.error from None
        raise GatewayError(code_pb2.CANCELLED, "the call was cancelled", "CANCELLED") from None
    except grpc.RpcError as exc:
        return _failed(exc, requests)
    return json_answer(route, response, echoed_headers((*future.initial_metadata(), *future.trailing_metadata())))


async def bidi_stream_answer(
    route: HttpRoute,
    callable_,
    requests: NdjsonRequests,
    options: dict,
    answer_threads: futures.Executor,
    on_close: Callable[[], None],
) -> Response:
    """The NDJSON answer of a bidirectional call made with the sync ``callable_``, one line per response.

    A call that fails before its first response gets the status of a failed unary
    call; one that fails later ends the stream with a ``{"error": <Status>}`` line.
    ``on_close`` runs once the call is over, whatever the answer.
    """
    loop = asyncio.get_running_loop()
    call = None

    def wait_for_response():
        return next(call, None)  # type: ignore[call-overload]  # the call is an iterator once made

    async def next_response():
        """The next response, None at the end; raises the call's RpcError when it failed."""
        return await loop.run_in_executor(answer_threads, wait_for_response)

    def close() -> None:
        if call is not None:
            call.cancel()
        on_close()

    try:
        call = callable_(requests.pull(loop), **options)
        requests.call = call
        first = await next_response()
    except grpc.RpcError as exc:
        close()
        return _failed(exc, requests)
    except BaseException:
        close()
        raise
    headers = echoed_headers(call.initial_metadata())  # there: the first answer came, or the call is over

    async def lines() -> AsyncIterator[bytes]:
        try:
            message = first
            while message is not None:
                yield _line({"result": response_json(route, message)})
                message = await next_response()
        except grpc.RpcError as exc:
            status = requests.error.status if requests.error is not None else status_from_rpc_error(exc)
            yield _line({"error": status_json(status)})

    return _StreamingAnswer(lines(), body_read=requests.body_read, headers=headers, on_close=close)


async def server_stream_answer(route: HttpRoute, call) -> Response:
    """The NDJSON answer of a ``grpc.aio`` call with one request and a stream of responses.

    Its one request goes out with the call, so nothing is written as the server ends
    it and the asyncio client reports the server's status.
    """
    responses = call.__aiter__()
    try:
        first = await anext(responses, None)
    except grpc.aio.AioRpcError as exc:
        return failed_call_answer(exc)
    headers = echoed_headers(await call.initial_metadata())

    async def lines() -> AsyncIterator[bytes]:
        try:
            message = first
            while message is not None:
                yield _line({"result": response_json(route, message)})
                message = await anext(responses, None)
        except grpc.aio.AioRpcError as exc:
            yield _line({"error": status_json(status_from_rpc_error(exc))})

    return _StreamingAnswer(lines(), body_read=None, headers=headers, on_close=call.cancel)
