"""Request ids: taken from the caller's ``x-request-id`` or generated, echoed back, logged.

Also the key by which the gateway inside the server names the HTTP client of the
calls it makes over gRPC, and the host of a caller's address, which the edge's
per-caller limits key on.
"""

from __future__ import annotations

import itertools
import os

__all__ = ["FORWARDED_PEER", "REQUEST_ID", "peer_host", "request_id_for"]

REQUEST_ID = "x-request-id"
"""Metadata key of the request id: taken from the caller when sent, echoed in the response metadata.

Unary calls echo it in the trailing metadata, which travels with the status at no
extra cost; streaming calls echo it in the initial metadata, before their first message.
"""
FORWARDED_PEER = "x-regserve-forwarded-peer"
"""Metadata key by which the gateway inside the server names the HTTP client of a streaming call.

Its value is ``"<key> <peer>"``: the edge takes ``peer`` as the caller's address (for
per-address rate limits and the access log) only when ``key`` is its own
``EdgePolicy.forwarding_key``, a secret of the server process; otherwise the call's
own peer counts, so no client can choose its bucket.
"""

# Generated request ids: 32 hex digits, a random per-process prefix and a counter.  Unique
# within a process, and across processes (workers are started, not forked) as long as
# their random 64-bit prefixes differ; much cheaper on the request path than
# ``uuid.uuid4()``, which builds an object and reads the OS entropy pool on every call.
# From 2**60 on, ``hex`` gives 16 digits without a format spec (which costs more to
# parse than to apply), for the next 15 * 2**60 ids.
ID_PREFIX = os.urandom(8).hex()
ID_COUNTER = itertools.count((1 << 60) | int.from_bytes(os.urandom(4), "big"))


MAX_REQUEST_ID = 128
"""Characters of a caller's request id that are kept (and logged, and echoed)."""


def request_id_for(sent: str | None) -> str:
    """The id of a call whose caller sent ``sent`` (its ``x-request-id``, or None): the caller's, cut to
    ``MAX_REQUEST_ID``, else a new one.  The edge's per-call path does the same inline."""
    return sent[:MAX_REQUEST_ID] if sent else ID_PREFIX + hex(next(ID_COUNTER))[2:]


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string: ``ipv4:127.0.0.1:5678`` -> ``ipv4:127.0.0.1``.

    Every port of one host shares a rate-limit bucket, a stream cap and a log interval.
    """
    return peer.rpartition(":")[0] or peer
