"""Calls without a valid token spend their peer host's rate-limit tokens: a flood of them is refused RATE_LIMITED."""

from __future__ import annotations

import collections

import grpc
import pytest

from regserve.server.edge.auth import TokenTable
from regserve.server.edge.edge import Edge, EdgePolicy
from regserve.server.edge.ratelimit import TokenBuckets
from regserve.server.observability.metrics import Metrics
from regserve.v1 import model_service_pb2 as mpb
from regserve.v1 import model_service_pb2_grpc as mpb_grpc
from tests.conftest import start_server
from tests.server.edge.helpers import details_of

ADMIN_TOKEN = "admin-secret-0123"
FLOOD = 300


@pytest.fixture
def limited_with_tokens(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"admin:{ADMIN_TOKEN}\n", encoding="utf-8")
    app = start_server(tmp_path / "models", tokens_file=str(tokens), rate_limit=2.0, rate_burst=3)
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield app, channel
    app.stop(0)


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer not-a-token"),)], ids=["no-token", "bad-token"])
def test_a_flood_of_unauthenticated_calls_is_rate_limited(limited_with_tokens, metadata):
    app, channel = limited_with_tokens
    models = mpb_grpc.ModelServiceStub(channel)
    reasons: collections.Counter[str] = collections.Counter()
    delays = []
    for _ in range(FLOOD):
        with pytest.raises(grpc.RpcError) as caught:
            models.ListModels(mpb.ListModelsRequest(), metadata=metadata, timeout=5)
        reason, delay = details_of(caught.value)
        reasons[f"{caught.value.code().name} {reason}"] += 1
        if delay is not None:
            delays.append(delay)
    # The burst (3) and the refill (2 a second) are answered UNAUTHENTICATED; the rest is refused.
    limited = reasons["RESOURCE_EXHAUSTED RATE_LIMITED"]
    assert limited >= FLOOD * 0.8, reasons
    assert set(reasons) == {"RESOURCE_EXHAUSTED RATE_LIMITED", f"UNAUTHENTICATED {_reason(metadata)}"}
    assert len(delays) == limited and all(0 < delay <= 0.5 for delay in delays)
    assert app.metrics.registry.get_sample_value("regserve_rate_limited_total") == limited

    # A caller with a valid token has a bucket of its own, whoever shares its address.
    answer = models.ListModels(mpb.ListModelsRequest(), metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),))
    assert list(answer.models) == []


def _reason(metadata) -> str:
    return "UNKNOWN_TOKEN" if metadata else "MISSING_TOKEN"


def test_each_peer_host_has_a_bucket_for_its_unauthenticated_calls():
    tokens = TokenTable.parse(f"admin:{ADMIN_TOKEN}")
    edge = Edge(Metrics(), EdgePolicy(tokens=tokens, limiter=TokenBuckets(rate=1.0, burst=2)))
    try:
        assert edge.unauthenticated_wait("ipv4:10.0.0.1:5000") == 0
        assert edge.unauthenticated_wait("ipv4:10.0.0.1:5001") == 0  # another port of the same host
        assert edge.unauthenticated_wait("ipv4:10.0.0.1:5002") > 0
        assert edge.unauthenticated_wait("ipv4:10.0.0.2:5000") == 0
        assert edge.unauthenticated_wait("ipv6:[::1]:5000") == 0
        # The bucket of an authenticated caller is its token's, not its address's.
        assert edge.rate_limit_wait(tokens.authenticate(f"Bearer {ADMIN_TOKEN}"), "ipv4:10.0.0.1:5003") == 0
    finally:
        edge.close()


def test_the_rate_limit_wait_takes_no_token():
    buckets = TokenBuckets(rate=1.0, burst=1, clock=lambda: 0.0)
    assert buckets.wait("a") == 0 and buckets.wait("a") == 0
    assert buckets.acquire("a") == 0
    assert buckets.wait("a") == pytest.approx(1.0)


def test_the_gateway_inside_the_server_gets_the_edges_token_table_and_rate_limits(limited_with_tokens, tmp_path):
    app, _ = limited_with_tokens
    admission = app.local.admission
    assert admission is not None and admission.wait is not None
    assert admission.tokens.authenticate(f"Bearer {ADMIN_TOKEN}").role == "admin"
    open_app = start_server(tmp_path / "open")
    try:
        assert open_app.local.admission is None  # nothing to refuse before a body is read
    finally:
        open_app.stop(0)
