"""The metadata and deadline of an upstream call, from the headers of the HTTP request.

The ``authorization`` and ``x-request-id`` headers, and every ``Grpc-Metadata-<key>``
header as ``<key>``, travel as call metadata; ``X-Timeout-Seconds`` sets the deadline.
A header gRPC cannot carry is the client's error and answers 400, as grpc-gateway
does: a text value must be printable ASCII, a key lowercase letters, digits and
``-_.``, and the value of a ``-bin`` key base64 (standard or URL-safe, padded or not),
sent to the server decoded.
"""

from __future__ import annotations

import base64
import binascii
import math
import re

from google.rpc import code_pb2
from starlette.requests import Request

from regserve.server.edge.request_ids import FORWARDED_PEER
from regserve.server.gateway.errors import GatewayError
from regserve.server.gateway.local import peer_of

__all__ = ["MAX_TIMEOUT_SECONDS", "call_options"]

_FORWARDED = ("authorization", "x-request-id")
_METADATA_PREFIX = "grpc-metadata-"
_KEY = re.compile(r"[0-9a-z_.\-]+")
_TEXT_VALUE = re.compile(r"[\x20-\x7e]*")
MAX_TIMEOUT_SECONDS = 99_999_999
"""The longest deadline a call may ask for: the largest a ``grpc-timeout`` header can say in seconds."""


def _bad_header(name: str, why: str) -> GatewayError:
    return GatewayError(
        code_pb2.INVALID_ARGUMENT, f"bad {name} header: {why}", "INVALID_HEADER", violations=((name, why),)
    )


def _text(name: str, value: str) -> str:
    if _TEXT_VALUE.fullmatch(value) is None:
        raise _bad_header(name, "gRPC metadata values must be printable ASCII")
    return value


def _binary(name: str, value: str) -> bytes:
    text = value.strip()
    url_safe = "-" in text or "_" in text
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if url_safe else None, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_header(name, "the value of a -bin key must be base64") from None


def _metadata(request: Request) -> list[tuple[str, str | bytes]]:
    metadata: list[tuple[str, str | bytes]] = []
    for name, value in request.headers.items():
        if name in _FORWARDED:
            metadata.append((name, _text(name, value)))
        elif name.startswith(_METADATA_PREFIX) and len(name) > len(_METADATA_PREFIX):
            key = name[len(_METADATA_PREFIX) :]
            if key == FORWARDED_PEER:
                continue  # only the gateway names the HTTP client (see FORWARDED_PEER)
            if _KEY.fullmatch(key) is None or key.startswith("grpc-"):
                raise _bad_header(name, f"{key!r} is not a metadata key a client may send")
            metadata.append((key, _binary(name, value) if key.endswith("-bin") else _text(name, value)))
    return metadata


def _timeout(request: Request) -> float | None:
    raw = request.headers.get("x-timeout-seconds")
    if raw is None:
        return None
    try:
        timeout = float(raw)
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_SECONDS):
        raise GatewayError(
            code_pb2.INVALID_ARGUMENT,
            f"X-Timeout-Seconds must be a positive number of seconds up to {MAX_TIMEOUT_SECONDS}, got {raw!r}",
            "INVALID_TIMEOUT",
        )
    return timeout


def call_options(request: Request, forwarding_key: str = "") -> dict:
    """The ``metadata`` and ``timeout`` of the upstream call; GatewayError 400 for a header gRPC cannot carry.

    With ``forwarding_key`` (the gateway runs inside the server), the call also names
    the HTTP client, for the server's per-address rate limits and access log; a
    client's own ``Grpc-Metadata-X-Regserve-Forwarded-Peer`` is dropped either way.
    """
    metadata = _metadata(request)
    if forwarding_key:
        metadata.append((FORWARDED_PEER, f"{forwarding_key} {peer_of(request.client)}"))
    return {"metadata": tuple(metadata), "timeout": _timeout(request)}
