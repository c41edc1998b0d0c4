"""Calls from HTTP to the upstream gRPC server, one generic handler per call shape.

Each route's RPC is called through a generic multi-callable, with serializers taken
from the method's message classes: unary calls answer JSON; client-streaming calls
read an NDJSON body (one request message per line, see ``streams``); calls that
stream answers reply NDJSON, one ``{"result": ...}`` per response message, and, if the
stream fails after it started, a last ``{"error": <Status>}`` line (grpc-gateway's
stream format).  A stream that fails before its first message gets the same status
code and body as a failed unary call.

Headers become the call's metadata and deadline (``call_options``); the server's
``x-request-id`` comes back as a response header.  Before a body is read, its size
is checked (``limits``) and, inside the server, the caller's token (``admission``).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from concurrent import futures

import grpc
from google.protobuf import message_factory
from google.rpc import code_pb2
from starlette.requests import Request
from starlette.responses import Response

from regserve.server.edge.request_ids import REQUEST_ID
from regserve.server.gateway.answers import echoed_headers, failed_call_answer, json_answer
from regserve.server.gateway.call_options import call_options
from regserve.server.gateway.codec import build_request
from regserve.server.gateway.errors import GatewayError
from regserve.server.gateway.limits import (
    GatewayLimits,
    UploadSlots,
    answer_of,
    content_encoding,
    parse_body,
    read_body,
)
from regserve.server.gateway.local import LocalCallError, LocalDispatch, peer_of
from regserve.server.gateway.ndjson import NdjsonRequests
from regserve.server.gateway.rules import HttpRoute
from regserve.server.gateway.streams import NDJSON, bidi_stream_answer, client_stream_answer, server_stream_answer

__all__ = ["Upstream", "endpoint_for"]

_JSON_TYPES = ("application/json",)
_STREAM_TYPES = (NDJSON, "application/jsonl", "application/json-seq", "application/json")


class Upstream:
    """The channels to the gRPC server, opened on first use by the event loop that serves requests.

    With ``channels`` above 1, each channel has its own connection (a local subchannel
    pool) and calls take them in turn: a server of several processes sharing one port
    (``regserve serve --workers N``) spreads connections, not calls, over its workers.
    Streaming calls take grpcio's sync API (see ``streams``), whose answers
    ``answer_threads`` threads wait for.
    """

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        max_message_bytes: int,
        channels: int = 1,
        *,
        answer_threads: int = 1,
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
        self._answer_threads = answer_threads
        self._answer_pool: futures.ThreadPoolExecutor | None = None

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
        """The stream-unary or stream-stream multi-callable of ``route``'s method, on a channel of grpcio's sync API."""
        if self._sync is None:
            self._sync = self._new_channel(grpc)
        found = self._sync_callables.get(route.grpc_path)
        if found is None:
            kind = self._sync.stream_stream if route.server_streaming else self._sync.stream_unary
            found = kind(
                route.grpc_path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            self._sync_callables[route.grpc_path] = found
        return found

    @property
    def answer_pool(self) -> futures.ThreadPoolExecutor:
        """The threads that wait for the answers of streaming calls, one per upload at most."""
        if self._answer_pool is None:
            self._answer_pool = futures.ThreadPoolExecutor(self._answer_threads, "regserve-gateway-stream")
        return self._answer_pool

    async def close(self) -> None:
        opened, self._open = self._open, []
        for channel, _ in opened:
            await channel.close()
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        if self._answer_pool is not None:
            self._answer_pool.shutdown(wait=False)
            self._answer_pool = None


def _check_identity_encoding(request: Request) -> None:
    """415 for a compressed NDJSON stream: its lines are parsed as they arrive, so they come as they are."""
    encoding = content_encoding(request)
    if encoding != "identity":
        raise GatewayError(
            code_pb2.INVALID_ARGUMENT,
            f"a streamed body is read line by line as it arrives; send it without {encoding!r} encoding",
            "UNSUPPORTED_MEDIA_TYPE",
            http_status=415,
        )


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


def endpoint_for(
    route: HttpRoute,
    upstream: Upstream,
    local: LocalDispatch | None = None,
    *,
    limits: GatewayLimits | None = None,
    uploads: UploadSlots | None = None,
) -> Callable[[Request, dict[str, str]], Awaitable[Response]]:
    """The handler of ``route``: check the caller and the body's size, build the request, call, answer.

    With ``local`` (the gateway runs inside the server), unary methods are called in
    process and its admission refuses callers before their body is read; everything
    else goes to ``upstream`` over gRPC.  ``uploads`` bounds the client streams in progress.
    """
    limits = limits or GatewayLimits()
    uploads = uploads or UploadSlots(limits.max_uploads)
    request_class = message_factory.GetMessageClass(route.method.input_type)
    response_class = message_factory.GetMessageClass(route.method.output_type)
    # The dispatch that answers this route in process; None: the route goes over gRPC.
    in_process = local if local is not None and not route.server_streaming and local.serves(route.grpc_path) else None
    forwarding_key = local.forwarding_key if local is not None and in_process is None else ""
    admission = local.admission if local is not None and (route.body or route.client_streaming) else None

    async def handle(request: Request, path_values: dict[str, str]) -> Response:
        options = call_options(request, forwarding_key)
        if admission is not None:
            headers = request.headers
            admission.check(
                route.grpc_path, headers.get("authorization"), peer_of(request.client), headers.get(REQUEST_ID)
            )
        if route.client_streaming:
            _check_content_type(request, _STREAM_TYPES)
            _check_identity_encoding(request)
            if request.query_params:
                raise GatewayError(
                    code_pb2.INVALID_ARGUMENT, "streaming routes take no query parameters", "UNEXPECTED_QUERY_PARAMETER"
                )
            return await _upload_answer(request, path_values, options)
        query = request.query_params.multi_items()
        if route.body:
            _check_content_type(request, _JSON_TYPES)
            raw = await read_body(request, limits.max_body_bytes)
            message = await parse_body(
                request,
                raw,
                limits.max_body_bytes,
                lambda body: build_request(route, request_class, path_values, query, body),
            )
        else:
            message = build_request(route, request_class, path_values, query, None)
        if in_process is not None:
            return await _local_answer(route, in_process, message, options, peer_of(request.client))
        call = upstream.callable_for(route, request_class, response_class)(message, **options)
        if route.server_streaming:
            return await server_stream_answer(route, call)
        return await _unary_answer(route, call)

    async def _upload_answer(request: Request, path_values: dict[str, str], options: dict) -> Response:
        requests = NdjsonRequests(request, route, request_class, path_values, limits.max_body_bytes)
        callable_ = upstream.client_stream_callable_for(route, request_class, response_class)
        give_back = uploads.take()
        if route.server_streaming:  # the slot is given back when the streamed answer ends
            return await bidi_stream_answer(route, callable_, requests, options, upstream.answer_pool, give_back)
        try:
            return await client_stream_answer(route, callable_, requests, options)
        finally:
            give_back()

    return handle


async def _local_answer(route: HttpRoute, local: LocalDispatch, message, options: dict, peer: str) -> Response:
    try:
        response, sent = await local.call(route.grpc_path, message, peer=peer, **options)
    except LocalCallError as exc:
        return failed_call_answer(exc)
    headers = echoed_headers(sent)
    return await answer_of(response, lambda: json_answer(route, response, headers))


async def _unary_answer(route: HttpRoute, call) -> Response:
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        return failed_call_answer(exc)
    # regserve echoes the request id of a unary call in its trailing metadata.
    headers = echoed_headers((*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ())))
    return await answer_of(response, lambda: json_answer(route, response, headers))
