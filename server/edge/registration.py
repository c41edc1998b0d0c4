"""Registering methods behind the edge, each on the thread pool the method table names."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent import futures
from typing import Protocol, cast

import grpc

from regserve.server.edge.edge import Edge
from regserve.server.rpc.methods import METHODS, OPEN_METHODS, Pool

__all__ = ["EdgeServer"]


class _PooledBehavior(Protocol):
    """A handler's behavior as grpcio reads it: a function that may carry the pool to run on."""

    experimental_thread_pool: futures.ThreadPoolExecutor


class EdgeServer:
    """Stands in for a ``grpc.Server`` in the generated ``add_*_to_server`` functions: methods go behind the edge.

    Every method must have an entry in ``METHODS`` or ``OPEN_METHODS`` (health and
    reflection, which pass only the edge's thin part); a method in neither stops the
    registration.  A method runs on the pool its entry names when ``thread_pools``
    has that pool, else on the server's (grpcio's ``experimental_thread_pool``
    attribute of a handler's behavior).

    The generated functions register each method by name
    (``add_registered_method_handlers``) and again through a generic handler, the
    lookup of servers that predate named registration.  This one registers the
    wrapped handlers both ways and drops the generated generic handler, which holds
    the unwrapped ones.  ``handlers`` keeps the wrapped handlers of ``METHODS`` by
    full method name, for in-process calls (``regserve.server.gateway.local``).
    """

    def __init__(
        self, server: grpc.Server, edge: Edge, thread_pools: Mapping[Pool, futures.ThreadPoolExecutor] | None = None
    ) -> None:
        self._server = server
        self._edge = edge
        self._thread_pools = thread_pools or {}
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, generic_rpc_handlers) -> None:
        """Ignored: see the class docstring."""

    def add_registered_method_handlers(self, service_name: str, method_handlers: Mapping) -> None:
        wrapped = {}
        for name, handler in method_handlers.items():
            full_name = f"/{service_name}/{name}"
            wrapped[name] = self._edge.wrap(full_name, handler)  # RuntimeError for a method of neither table
            entry = METHODS.get(full_name)
            pool = self._thread_pools.get(entry.pool if entry is not None else OPEN_METHODS[full_name])
            if pool is not None:
                # grpcio runs a handler whose behavior names a pool on that pool, not the server's.
                h = wrapped[name]
                behavior = h.unary_unary or h.unary_stream or h.stream_unary or h.stream_stream
                cast(_PooledBehavior, behavior).experimental_thread_pool = pool
            if entry is not None:
                self.handlers[full_name] = wrapped[name]
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, wrapped),))
        self._server.add_registered_method_handlers(service_name, wrapped)
