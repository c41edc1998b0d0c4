"""Every RPC regserve serves, and what the rest of the server must know about it, declared once.

Authentication reads a method's role, the server its thread pool, the in-process
gateway whether it may answer on its event loop, and the edge whether the call trains
a model.  ``OPEN_METHODS`` names the pools of the methods served outside the edge to
every caller (health and reflection).  ``check_methods`` runs at start-up: a method of
the contract without an entry here (or an entry the contract does not have) stops the
server, so a new RPC cannot be served with a policy nobody chose.

The pools keep the callers of one kind of method from taking the threads of another:
each stream holds a thread for as long as it is open, so the data plane's streams
(BatchPredict), training uploads and reflection's streams each have threads of their
own, apart from the threads that answer health probes and the registry's methods.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import cast

from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from regserve.inference import grpc_service_pb2 as inference_pb2
from regserve.reflection.v1 import reflection_pb2 as reflection_v1_pb2
from regserve.v1 import model_service_pb2, regression_service_pb2

__all__ = [
    "METHODS",
    "OPEN_METHODS",
    "OPEN_SERVICES",
    "SERVICES",
    "SERVICE_NAMES",
    "Method",
    "Pool",
    "Role",
    "check_methods",
]

SERVICES: tuple[ServiceDescriptor, ...] = (
    regression_service_pb2.DESCRIPTOR.services_by_name["RegressionService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
    inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
)
"""The services served behind the edge, in the order they are registered: the regserve.v1 contract
and the Open Inference Protocol's ``inference.GRPCInferenceService``."""
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)
OPEN_SERVICES = cast(
    "tuple[ServiceDescriptor, ...]",  # grpcio's packages type their descriptors as upb's own classes
    (
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_v1_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    ),
)
"""The services registered outside the edge: never authenticated, rate-limited or counted."""


class Role(enum.StrEnum):
    """The least role a caller needs; ``admin`` may call everything."""

    PREDICT = "predict"
    ADMIN = "admin"


class Pool(enum.StrEnum):
    """The threads that answer a method; a pool whose size is set to 0 is the server's."""

    SERVER = "server"
    """The server's ``--max-workers`` threads: the data plane's streams."""
    PREDICT = "predict"
    """The ``--predict-threads`` threads, which streams cannot hold up."""
    ADMIN = "admin"
    """The ``--admin-threads`` threads: the registry's reads and changes, which operators need under load."""
    TRAIN = "train"
    """The ``--train-threads`` threads: training uploads, which may be long and slow."""
    HEALTH = "health"
    """The ``--health-threads`` threads: probes, which must answer whatever else the server is doing."""
    REFLECTION = "reflection"
    """The ``--reflection-threads`` threads: reflection's streams, opened by any caller without a token."""


@dataclass(frozen=True)
class Method:
    """One RPC and its policy."""

    service: str
    name: str
    role: Role
    pool: Pool = Pool.SERVER
    inline: bool = False
    """The in-process gateway may answer it on its event loop when the request names no version:
    it is then pure computation on models held in memory."""
    changes_registry: bool = False
    trains: bool = False
    """The call trains a model: the edge counts its outcome as a training run."""

    @property
    def full_name(self) -> str:
        """``/package.Service/Method``, as gRPC names the call."""
        return f"/{self.service}/{self.name}"


_REGRESSION, _MODEL, _INFERENCE = SERVICE_NAMES
_PREDICT, _ADMIN = Role.PREDICT, Role.ADMIN

METHODS: Mapping[str, Method] = MappingProxyType(
    {
        method.full_name: method
        for method in (
            Method(_REGRESSION, "Train", _ADMIN, Pool.TRAIN, changes_registry=True, trains=True),
            Method(_REGRESSION, "Predict", _PREDICT, Pool.PREDICT, inline=True),
            Method(_REGRESSION, "BatchPredict", _PREDICT, Pool.SERVER),
            Method(_REGRESSION, "ModelInfo", _PREDICT, Pool.PREDICT, inline=True),
            Method(_MODEL, "ListModels", _PREDICT, Pool.ADMIN),
            Method(_MODEL, "ListVersions", _PREDICT, Pool.ADMIN),
            Method(_MODEL, "GetVersion", _PREDICT, Pool.ADMIN),
            Method(_MODEL, "CreateVersion", _ADMIN, Pool.ADMIN, changes_registry=True),
            Method(_MODEL, "PromoteVersion", _ADMIN, Pool.ADMIN, changes_registry=True),
            Method(_MODEL, "RollbackModel", _ADMIN, Pool.ADMIN, changes_registry=True),
            Method(_MODEL, "FreezeVersion", _ADMIN, Pool.ADMIN, changes_registry=True),
            Method(_MODEL, "UnfreezeVersion", _ADMIN, Pool.ADMIN, changes_registry=True),
            Method(_MODEL, "SetTrafficSplit", _ADMIN, Pool.ADMIN, changes_registry=True),
            Method(_MODEL, "DeleteVersion", _ADMIN, Pool.ADMIN, changes_registry=True),
            Method(_MODEL, "GetStatus", _PREDICT, Pool.ADMIN),
            # The Open Inference Protocol: its liveness and readiness are answered from memory on the
            # health threads; ModelInfer and the reads of one model are Predict's and ModelInfo's peers.
            Method(_INFERENCE, "ServerLive", _PREDICT, Pool.HEALTH, inline=True),
            Method(_INFERENCE, "ServerReady", _PREDICT, Pool.HEALTH, inline=True),
            Method(_INFERENCE, "ModelReady", _PREDICT, Pool.PREDICT, inline=True),
            Method(_INFERENCE, "ServerMetadata", _PREDICT, Pool.PREDICT, inline=True),
            Method(_INFERENCE, "ModelMetadata", _PREDICT, Pool.PREDICT),
            Method(_INFERENCE, "ModelInfer", _PREDICT, Pool.PREDICT, inline=True),
            Method(_INFERENCE, "RepositoryIndex", _PREDICT, Pool.ADMIN),
            Method(_INFERENCE, "RepositoryModelLoad", _ADMIN, Pool.ADMIN, changes_registry=True),
            Method(_INFERENCE, "RepositoryModelUnload", _ADMIN, Pool.ADMIN, changes_registry=True),
        )
    }
)
"""Full method name -> its policy, for every method of ``SERVICES``."""

OPEN_METHODS: Mapping[str, Pool] = MappingProxyType(
    {
        "/grpc.health.v1.Health/Check": Pool.HEALTH,
        "/grpc.health.v1.Health/List": Pool.HEALTH,
        # Watch returns as soon as it has registered its callback: it holds no thread.
        "/grpc.health.v1.Health/Watch": Pool.HEALTH,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Pool.REFLECTION,
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Pool.REFLECTION,
    }
)
"""Full method name -> pool, for every method of ``OPEN_SERVICES``."""


def check_methods(
    services: Iterable[ServiceDescriptor] = SERVICES, open_services: Iterable[ServiceDescriptor] = OPEN_SERVICES
) -> None:
    """Raise RuntimeError unless ``METHODS`` has exactly one entry per method of ``services``,
    and ``OPEN_METHODS`` one per method of ``open_services``."""
    for table, described in ((METHODS, services), (OPEN_METHODS, open_services)):
        declared = {f"/{service.full_name}/{method.name}" for service in described for method in service.methods}
        missing, unknown = declared - table.keys(), table.keys() - declared
        if missing or unknown:
            raise RuntimeError(
                f"the method table does not match the contract: no entry for {sorted(missing)}, "
                f"entries for no method {sorted(unknown)}"
            )
