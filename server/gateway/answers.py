"""The HTTP answers of finished calls: a response message as JSON, a failed call as its status."""

from __future__ import annotations

import json

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regserve.server.edge.request_ids import REQUEST_ID, request_id_for
from regserve.server.gateway.codec import response_json
from regserve.server.gateway.errors import status_from_rpc_error, status_response
from regserve.server.gateway.rules import HttpRoute

__all__ = ["ECHOED", "RequestIdOnErrors", "echoed_headers", "failed_call_answer", "json_answer"]

ECHOED = ("x-request-id",)
"""Response metadata sent back as HTTP headers."""


def echoed_headers(metadata) -> dict[str, str]:
    """The HTTP headers echoing ``metadata`` of the call (its request id)."""
    if not metadata:
        return {}
    return {key: value for key, value in metadata if key in ECHOED and isinstance(value, str)}


def failed_call_answer(error) -> Response:
    """The HTTP answer to a failed call (a grpcio ``RpcError`` that is also a ``Call``, or a ``LocalCallError``)."""
    headers = echoed_headers((*(error.initial_metadata() or ()), *(error.trailing_metadata() or ())))
    return status_response(status_from_rpc_error(error), headers=headers)


def json_answer(route: HttpRoute, response, headers: dict[str, str]) -> Response:
    """The 200 answer of ``route`` carrying ``response``."""
    body = json.dumps(response_json(route, response), separators=(",", ":"), ensure_ascii=False)
    return Response(body, media_type="application/json", headers=headers)


_REQUEST_ID = REQUEST_ID.encode()


class RequestIdOnErrors:
    """ASGI middleware: an error the gateway answers itself (a malformed body, an unknown route, a body too
    large, ...) carries the caller's ``x-request-id``, or a new one, as the server's own answers do."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                headers = list(message.get("headers", ()))
                if not any(key.lower() == _REQUEST_ID for key, _ in headers):
                    sent = next((value for key, value in scope["headers"] if key == _REQUEST_ID), b"")
                    request_id = request_id_for(sent.decode("latin-1")).encode("latin-1")
                    message = {**message, "headers": [*headers, (_REQUEST_ID, request_id)]}
            await send(message)

        await self.app(scope, receive, sending)
