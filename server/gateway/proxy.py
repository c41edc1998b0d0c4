"""Calls from HTTP to the upstream gRPC server, one generic handler per call shape.

Each route's RPC is called through a generic multi-callable on one ``grpc.aio``
channel, with serializers taken from the method's message classes: unary calls
answer JSON; client-streaming calls read an NDJSON body (one request message per
line); server-streaming calls answer NDJSON, one ``{"result": ...}`` per response
message, and, if the stream fails after it started, a last ``{"error": <Status>}``
line (grpc-gateway's stream format).  A stream that fails before its first message
gets the same status code and body as a failed unary call.

The ``authorization`` and ``x-request-id`` headers, and every ``Grpc-Metadata-<key>``
header as ``<key>``, travel as call metadata; ``X-Timeout-Seconds`` sets the deadline;
the server's ``x-request-id`` comes back as a response header.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import message_factory
from google.rpc import code_pb2
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from regserve.server.edge.request_ids import FORWARDED_PEER
from regserve.server.gateway.codec import build_request, response_json
from regserve.server.gateway.errors import GatewayError, status_from_rpc_error, status_json, status_response
from regserve.server.gateway.local import LocalCallError, LocalDispatch, peer_of
from regserve.server.gateway.rules import HttpRoute

__all__ = ["Upstream", "endpoint_for"]

NDJSON = "application/x-ndjson"
_JSON_TYPES = ("application/json",)
_STREAM_TYPES = (NDJSON, "application/jsonl", "application/json-seq", "application/json")
_FORWARDED = ("authorization", "x-request-id")
_METADATA_PREFIX = "grpc-metadata-"
_ECHOED = ("x-request-id",)


class Upstream:
    """The channels to the gRPC server, opened on first use by the event loop that serves requests.

    With ``channels`` above 1, each channel has its own connection (a local subchannel
    pool) and calls take them in turn: a server of several processes sharing one port
    (``regserve serve --workers N``) spreads connections, not calls, over its workers.
    """

    def __init__(
        self, target: str, credentials: grpc.ChannelCredentials | None, max_message_bytes: int, channels: int = 1
    ) -> None:
        self.target = target
        self.credentials = credentials
        self.options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if channels > 1:
            self.options.append(("grpc.use_local_subchannel_pool", 1))
        self.channels = max(1, channels)
        self._open: list[tuple[grpc.aio.Channel, dict[str, object]]] = []
        self._turn = itertools.count()
        self._sync: grpc.Channel | None = None
        self._sync_callables: dict[str, object] = {}

    def _new_channel(self, api):
        """A channel of ``api`` (``grpc`` or ``grpc.aio``) to the target, with TLS when there are credentials."""
        if self.credentials is None:
            return api.insecure_channel(self.target, options=self.options)
        return api.secure_channel(self.target, self.credentials, options=self.options)

    def _channel(self) -> tuple[grpc.aio.Channel, dict[str, object]]:
        if not self._open:
            self._open = [(self._new_channel(grpc.aio), {}) for _ in range(self.channels)]
        if self.channels == 1:
            return self._open[0]
        return self._open[next(self._turn) % self.channels]

    def callable_for(self, route: HttpRoute, request_class, response_class):
        """The generic multi-callable of ``route``'s method on the next channel, made once per channel."""
        channel, callables = self._channel()
        found = callables.get(route.grpc_path)
        if found is None:
            kind = (
                ("unary" if not route.client_streaming else "stream")
                + "_"
                + ("unary" if not route.server_streaming else "stream")
            )
            found = getattr(channel, kind)(
                route.grpc_path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            callables[route.grpc_path] = found
        return found

    def client_stream_callable_for(self, route: HttpRoute, request_class, response_class):
        """The blocking stream-unary multi-callable of ``route``'s method, on a channel of grpcio's sync API.

        Client-streaming calls take the sync API: its asyncio client turns a write made
        as the server ends the call (a refusal before the stream is read, an invalid
        spec) into INTERNAL "Internal error from Core", hiding the server's status
        (grpc/grpc#36066), while the sync client reports that status.
        """
        if self._sync is None:
            self._sync = self._new_channel(grpc)
        found = self._sync_callables.get(route.grpc_path)
        if found is None:
            found = self._sync.stream_unary(
                route.grpc_path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            self._sync_callables[route.grpc_path] = found
        return found

    async def close(self) -> None:
        opened, self._open = self._open, []
        for channel, _ in opened:
            await channel.close()
        if self._sync is not None:
            self._sync.close()
            self._sync = None


def _check_content_type(request: Request, accepted: tuple[str, ...]) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in accepted and not (accepted == _JSON_TYPES and media.endswith("+json")):
        raise GatewayError(
            code_pb2.INVALID_ARGUMENT,
            f"unsupported content type {media!r}; send {' or '.join(accepted)}",
            "UNSUPPORTED_MEDIA_TYPE",
            http_status=415,
        )


def _call_options(request: Request, forwarding_key: str = "") -> dict:
    """The metadata and deadline of the upstream call, from the HTTP request headers.

    With ``forwarding_key`` (the gateway runs inside the server), the call also names
    the HTTP client, for the server's per-address rate limits and access log; a
    client's own ``Grpc-Metadata-X-Regserve-Forwarded-Peer`` is dropped either way.
    """
    metadata = []
    for name, value in request.headers.items():
        if name in _FORWARDED:
            metadata.append((name, value))
        elif name.startswith(_METADATA_PREFIX) and len(name) > len(_METADATA_PREFIX):
            key = name[len(_METADATA_PREFIX) :]
            if key != FORWARDED_PEER:
                metadata.append((key, value))
    if forwarding_key:
        metadata.append((FORWARDED_PEER, f"{forwarding_key} {peer_of(request.client)}"))
    timeout = None
    raw = request.headers.get("x-timeout-seconds")
    if raw is not None:
        try:
            timeout = float(raw)
            if not timeout > 0:
                raise ValueError
        except ValueError:
            raise GatewayError(
                code_pb2.INVALID_ARGUMENT,
                f"X-Timeout-Seconds must be a positive number of seconds, got {raw!r}",
                "INVALID_TIMEOUT",
            ) from None
    return {"metadata": tuple(metadata), "timeout": timeout}


def _echoed_headers(metadata) -> dict[str, str]:
    if not metadata:
        return {}
    return {key: value for key, value in metadata if key in _ECHOED and isinstance(value, str)}


async def _upstream_error(call_or_error) -> Response:
    """The HTTP answer to a failed call (an ``AioRpcError``)."""
    headers = _echoed_headers((*(call_or_error.initial_metadata() or ()), *(call_or_error.trailing_metadata() or ())))
    return status_response(status_from_rpc_error(call_or_error), headers=headers)


def _line(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class _StreamingAnswer(StreamingResponse):
    """A streamed answer that leaves the request body to the client stream until it is read.

    Starlette's StreamingResponse listens for a disconnect by reading the request's
    ASGI messages while it streams, which would swallow the body chunks a client
    stream has not read yet; this one starts listening only once the body is read.
    """

    def __init__(self, content, *, body_read: asyncio.Event | None, headers: dict[str, str]) -> None:
        super().__init__(content, media_type=NDJSON, headers=headers)
        self.body_read = body_read

    async def listen_for_disconnect(self, receive) -> None:
        if self.body_read is not None:
            await self.body_read.wait()
        await super().listen_for_disconnect(receive)


class _NdjsonRequests:
    """The request messages of a client stream, parsed from the body line by line as it arrives.

    A line that is not a request message cancels the call and is kept in ``error``,
    so the answer reports it rather than the cancellation.
    """

    def __init__(self, request: Request, route: HttpRoute, request_class, path_values: dict[str, str]) -> None:
        self.request, self.route, self.request_class, self.path_values = request, route, request_class, path_values
        self.error: GatewayError | None = None
        self.call = None
        self.body_read = asyncio.Event()

    async def __aiter__(self) -> AsyncGenerator:
        try:
            buffer = b""
            line_number = 0
            async for chunk in self.request.stream():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    line_number += 1
                    message = self._parse(line, line_number)
                    if message is not None:
                        yield message
                    elif self.error is not None:
                        return
            message = self._parse(buffer, line_number + 1)
            if message is not None:
                yield message
        finally:
            self.body_read.set()

    def _parse(self, line: bytes, line_number: int):
        if not line.strip():
            return None
        try:
            return build_request(self.route, self.request_class, self.path_values, [], line)
        except GatewayError as exc:
            exc.status.message = f"line {line_number}: {exc.status.message}"
            self.error = exc
            if self.call is not None:
                self.call.cancel()
            return None


def endpoint_for(
    route: HttpRoute, upstream: Upstream, local: LocalDispatch | None = None
) -> Callable[[Request, dict[str, str]], Awaitable[Response]]:
    """The handler of ``route``: build the request, call the method, render the answer.

    With ``local`` (the gateway runs inside the server), unary methods are called in
    process; everything else goes to ``upstream`` over gRPC.
    """
    request_class = message_factory.GetMessageClass(route.method.input_type)
    response_class = message_factory.GetMessageClass(route.method.output_type)
    # The dispatch that answers this route in process; None: the route goes over gRPC.
    in_process = local if local is not None and not route.server_streaming and local.serves(route.grpc_path) else None
    forwarding_key = local.forwarding_key if local is not None and in_process is None else ""

    async def handle(request: Request, path_values: dict[str, str]) -> Response:
        options = _call_options(request, forwarding_key)
        if route.client_streaming:
            _check_content_type(request, _STREAM_TYPES)
            if request.query_params:
                raise GatewayError(
                    code_pb2.INVALID_ARGUMENT, "streaming routes take no query parameters", "UNEXPECTED_QUERY_PARAMETER"
                )
            requests = _NdjsonRequests(request, route, request_class, path_values)
            if not route.server_streaming:
                callable_ = upstream.client_stream_callable_for(route, request_class, response_class)
                return await _client_stream_answer(route, callable_, requests, options)
            call = upstream.callable_for(route, request_class, response_class)(requests.__aiter__(), **options)
            requests.call = call
        else:
            body = None
            if route.body:
                _check_content_type(request, _JSON_TYPES)
                body = await request.body()
            message = build_request(route, request_class, path_values, request.query_params.multi_items(), body)
            if in_process is not None:
                return await _local_answer(route, in_process, message, options, peer_of(request.client))
            requests = None
            call = upstream.callable_for(route, request_class, response_class)(message, **options)
        if route.server_streaming:
            return await _stream_answer(route, call, requests)
        return await _unary_answer(route, call)

    return handle


async def _local_answer(route: HttpRoute, local: LocalDispatch, message, options: dict, peer: str) -> Response:
    try:
        response, sent = await local.call(route.grpc_path, message, peer=peer, **options)
    except LocalCallError as exc:
        return await _upstream_error(exc)
    return _json_answer(route, response, _echoed_headers(sent))


def _json_answer(route: HttpRoute, response, headers: dict[str, str]) -> Response:
    body = json.dumps(response_json(route, response), separators=(",", ":"), ensure_ascii=False)
    return Response(body, media_type="application/json", headers=headers)


def _bad_line(requests: _NdjsonRequests | None) -> GatewayError | None:
    """The parse error that made the gateway cancel a client stream, if that is why it ended."""
    return requests.error if requests is not None else None


async def _call_failed(exc: BaseException, requests: _NdjsonRequests | None) -> Response:
    """The answer when the upstream call failed: a bad NDJSON line is the caller's fault first."""
    bad_line = _bad_line(requests)
    if bad_line is not None:
        raise bad_line from None
    if isinstance(exc, asyncio.CancelledError):
        raise exc
    return await _upstream_error(exc)


async def _unary_answer(route: HttpRoute, call) -> Response:
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        return await _upstream_error(exc)
    # regserve echoes the request id of a unary call in its trailing metadata.
    headers = _echoed_headers((*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ())))
    return _json_answer(route, response, headers)


async def _client_stream_answer(route: HttpRoute, callable_, requests: _NdjsonRequests, options: dict) -> Response:
    """A client-streaming call made with grpcio's sync client in its own thread, fed from the body as it arrives.

    The client's thread pulls each request message from the event loop, so the body
    is read no faster than the server takes it.
    """
    loop = asyncio.get_running_loop()
    messages = requests.__aiter__()

    def pull():
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(anext(messages), loop).result()
            except StopAsyncIteration:
                return

    future = callable_.future(pull(), **options)
    requests.call = future  # a line that is not a request message cancels the call
    try:
        response = await asyncio.to_thread(future.result)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except grpc.FutureCancelledError:
        if requests.error is not None:  # the gateway cancelled the call over a bad line
            raise requests.error from None
        raise GatewayError(code_pb2.CANCELLED, "the call was cancelled", "CANCELLED") from None
    except grpc.RpcError as exc:
        return await _call_failed(exc, requests)
    headers = _echoed_headers((*(future.initial_metadata() or ()), *(future.trailing_metadata() or ())))
    return _json_answer(route, response, headers)


async def _stream_answer(route: HttpRoute, call, requests: _NdjsonRequests | None) -> Response:
    responses = call.__aiter__()
    try:
        first = await anext(responses, None)
    except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
        return await _call_failed(exc, requests)
    headers = _echoed_headers(await call.initial_metadata())

    async def lines() -> AsyncIterator[bytes]:
        try:
            if first is None:
                return
            yield _line({"result": response_json(route, first)})
            async for message in responses:
                yield _line({"result": response_json(route, message)})
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            if (bad_line := _bad_line(requests)) is not None:
                yield _line({"error": status_json(bad_line.status)})
            elif isinstance(exc, asyncio.CancelledError):
                raise
            else:
                yield _line({"error": status_json(status_from_rpc_error(exc))})
        finally:
            call.cancel()

    return _StreamingAnswer(lines(), body_read=requests.body_read if requests else None, headers=headers)
