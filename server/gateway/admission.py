"""The edge's refusals, made by the gateway inside the server before it reads a request body.

A body can be large; reading and parsing it costs memory and CPU that a caller the
edge refuses anyway should not get to spend.  ``Admission`` checks the bearer token
and its role against the edge's own token table, and the rate limit without taking
a token, and answers a refusal as the edge would (same status, reason and RetryInfo).
The edge still checks every call it runs: a call the admission lets in is counted,
limited and logged there, once.  A call refused here never reaches the edge, so the
admission spends what the edge would spend on it (a tokenless caller's token of its
host's bucket), hands the refusal to the edge to count and log (``Edge.refused``), and
echoes the request id, as the edge does for the calls it refuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from google.rpc import status_pb2

from regserve.server.edge import auth
from regserve.server.edge.edge import Edge
from regserve.server.edge.request_ids import REQUEST_ID, request_id_for
from regserve.server.errors import RegserveError
from regserve.server.gateway.errors import GatewayError
from regserve.server.gateway.limits import CLOSE
from regserve.server.rpc.status import status_for

__all__ = ["Admission", "RateLimitWait"]

_DETAILS_KEY = "grpc-status-details-bin"

RateLimitWait = Callable[[auth.Principal, str], float]
"""Seconds until the caller (its principal, its gRPC-style peer) may make a call; 0.0: now.  Takes nothing."""


def _status_of(error: RegserveError) -> status_pb2.Status:
    """The ``google.rpc.Status`` the server's mapping gives ``error``."""
    grpc_status = status_for(error)
    for key, value in grpc_status.trailing_metadata:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(code=grpc_status.code.value[0], message=grpc_status.details)


class Admission:
    """The checks of ``edge`` that need no request body.

    Parameters
    ----------
    edge : Edge
        The edge whose refusals these are: it builds the rate limit's refusal, and counts
        and logs the calls refused here.
    tokens : TokenTable or None
        The edge's token table; None when authentication is off.
    wait : RateLimitWait or None
        The edge's rate limiter, read without taking a token; None when there is no rate limit.
    unauthenticated_wait : callable or None
        What the edge does with a call without a valid token: takes a token of the bucket
        of the caller's host (its gRPC-style peer) and returns the seconds to wait, 0.0 when
        it had one.  The edge never sees a call refused here, so the admission spends it.
    """

    def __init__(
        self,
        edge: Edge,
        tokens: auth.TokenTable | None,
        wait: RateLimitWait | None = None,
        unauthenticated_wait: Callable[[str], float] | None = None,
    ) -> None:
        self.edge = edge
        self.tokens = tokens
        self.wait = wait
        self.unauthenticated_wait = unauthenticated_wait

    def check(self, method: str, authorization: str | None, peer: str, request_id: str | None = None) -> None:
        """Raise the GatewayError the edge's refusal of ``method`` would give (401, 403 or 429 with Retry-After).

        ``method`` is the full gRPC method name; ``peer`` the HTTP client as a gRPC-style peer;
        ``request_id`` the ``x-request-id`` the client sent, if any.
        """
        started, principal = time.perf_counter(), auth.ANONYMOUS
        try:
            principal = self._principal(authorization, peer)
            if self.tokens is not None:
                auth.authorize(principal, method)
            if self.wait is not None and (delay := self.wait(principal, peer)) > 0:
                raise self.edge.rate_limit_refusal(delay)
        except RegserveError as error:
            call_id = request_id_for(request_id)
            self.edge.refused(method, error, call_id, principal, peer, started)
            headers = {**CLOSE, REQUEST_ID: call_id} if self.edge.echoes_request_id else CLOSE
            raise GatewayError.reporting(_status_of(error), headers=headers) from None

    def _principal(self, authorization: str | None, peer: str) -> auth.Principal:
        if self.tokens is None:
            return auth.ANONYMOUS
        try:
            return self.tokens.authenticate(authorization)
        except RegserveError as refusal:
            if self.unauthenticated_wait is not None and (delay := self.unauthenticated_wait(peer)) > 0:
                raise self.edge.rate_limit_refusal(delay) from None
            raise refusal from None
