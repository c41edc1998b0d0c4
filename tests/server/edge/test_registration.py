"""Registration behind the edge: each method on the pool its table entry names; a method with no entry stops it."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from regserve.server.edge.edge import Edge, EdgePolicy
from regserve.server.edge.registration import EdgeServer
from regserve.server.observability.metrics import Metrics
from regserve.server.rpc.methods import Pool


class _Server:
    """Records what is registered on it."""

    def __init__(self) -> None:
        self.registered: dict[str, dict] = {}

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers) -> None:
        self.registered[service] = handlers


def _unary(request, context):
    return request


def _stream(request_iterator, context):
    yield from request_iterator


@pytest.fixture
def edge():
    edge = Edge(Metrics(), EdgePolicy())
    yield edge
    edge.close()


def test_each_method_runs_on_the_pool_of_its_entry(edge):
    pools = {pool: futures.ThreadPoolExecutor(1) for pool in (Pool.ADMIN, Pool.HEALTH, Pool.REFLECTION)}
    server = _Server()
    registration = EdgeServer(server, edge, pools)
    registration.add_registered_method_handlers(
        "regserve.v1.ModelService", {"ListModels": grpc.unary_unary_rpc_method_handler(_unary)}
    )
    registration.add_registered_method_handlers(
        "regserve.v1.RegressionService", {"BatchPredict": grpc.stream_stream_rpc_method_handler(_stream)}
    )
    registration.add_registered_method_handlers(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(_unary)}
    )
    registration.add_registered_method_handlers(
        "grpc.reflection.v1alpha.ServerReflection",
        {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(_stream)},
    )
    try:
        assert (
            server.registered["regserve.v1.ModelService"]["ListModels"].unary_unary.experimental_thread_pool
            is pools[Pool.ADMIN]
        )
        assert (
            server.registered["grpc.health.v1.Health"]["Check"].unary_unary.experimental_thread_pool
            is pools[Pool.HEALTH]
        )
        reflection = server.registered["grpc.reflection.v1alpha.ServerReflection"]["ServerReflectionInfo"]
        assert reflection.stream_stream.experimental_thread_pool is pools[Pool.REFLECTION]
        # No pool of its own given: the server's.
        batch = server.registered["regserve.v1.RegressionService"]["BatchPredict"].stream_stream
        assert not hasattr(batch, "experimental_thread_pool")
        # Only the regserve methods are kept for in-process calls.
        assert set(registration.handlers) == {
            "/regserve.v1.ModelService/ListModels",
            "/regserve.v1.RegressionService/BatchPredict",
        }
    finally:
        for pool in pools.values():
            pool.shutdown()


def test_a_method_in_no_table_stops_the_registration(edge):
    registration = EdgeServer(_Server(), edge)
    with pytest.raises(RuntimeError, match="/other.v1.Service/Method has no entry"):
        registration.add_registered_method_handlers(
            "other.v1.Service", {"Method": grpc.unary_unary_rpc_method_handler(_unary)}
        )


def test_health_watch_stays_non_blocking_behind_the_edge(edge):
    def watch(request, context, send_response_callback=None):
        return None

    watch.experimental_non_blocking = True  # type: ignore[attr-defined]
    server = _Server()
    EdgeServer(server, edge).add_registered_method_handlers(
        "grpc.health.v1.Health", {"Watch": grpc.unary_stream_rpc_method_handler(watch)}
    )
    assert server.registered["grpc.health.v1.Health"]["Watch"].unary_stream.experimental_non_blocking is True
