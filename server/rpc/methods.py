"""Every RPC regserve serves, and what the rest of the server must know about it, declared once.

Authentication reads a method's role, the server its thread pool, the in-process
gateway whether it may answer on its event loop, and the edge whether the call trains
a model.  ``check_methods`` runs at start-up: a method of the contract without an
entry here (or an entry the contract does not have) stops the server, so a new RPC
cannot be served with a policy nobody chose.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from google.protobuf.descriptor import ServiceDescriptor

from regserve.v1 import model_service_pb2, regression_service_pb2

__all__ = ["METHODS", "SERVICES", "SERVICE_NAMES", "Method", "Pool", "Role", "check_methods"]

SERVICES: tuple[ServiceDescriptor, ...] = (
    regression_service_pb2.DESCRIPTOR.services_by_name["RegressionService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
)
"""The services of the regserve.v1 contract, in the order they are registered."""
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)


class Role(enum.StrEnum):
    """The least role a caller needs; ``admin`` may call everything."""

    PREDICT = "predict"
    ADMIN = "admin"


class Pool(enum.StrEnum):
    """The threads that answer a method."""

    SERVER = "server"
    """The server's ``--max-workers`` threads."""
    PREDICT = "predict"
    """The ``--predict-threads`` threads (the server's when that is 0), which streams cannot hold up."""


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


_REGRESSION, _MODEL = SERVICE_NAMES
_PREDICT, _ADMIN = Role.PREDICT, Role.ADMIN

METHODS: Mapping[str, Method] = MappingProxyType(
    {
        method.full_name: method
        for method in (
            Method(_REGRESSION, "Train", _ADMIN, changes_registry=True, trains=True),
            Method(_REGRESSION, "Predict", _PREDICT, Pool.PREDICT, inline=True),
            Method(_REGRESSION, "BatchPredict", _PREDICT),
            Method(_REGRESSION, "ModelInfo", _PREDICT, Pool.PREDICT, inline=True),
            Method(_MODEL, "ListModels", _PREDICT),
            Method(_MODEL, "ListVersions", _PREDICT),
            Method(_MODEL, "GetVersion", _PREDICT),
            Method(_MODEL, "PromoteVersion", _ADMIN, changes_registry=True),
            Method(_MODEL, "RollbackModel", _ADMIN, changes_registry=True),
            Method(_MODEL, "FreezeVersion", _ADMIN, changes_registry=True),
            Method(_MODEL, "UnfreezeVersion", _ADMIN, changes_registry=True),
            Method(_MODEL, "SetTrafficSplit", _ADMIN, changes_registry=True),
            Method(_MODEL, "DeleteVersion", _ADMIN, changes_registry=True),
            Method(_MODEL, "GetStatus", _PREDICT),
        )
    }
)
"""Full method name -> its policy, for every method of ``SERVICES``."""


def check_methods(services: Iterable[ServiceDescriptor] = SERVICES) -> None:
    """Raise RuntimeError unless ``METHODS`` has exactly one entry per method of ``services``."""
    declared = {f"/{service.full_name}/{method.name}" for service in services for method in service.methods}
    missing, unknown = declared - METHODS.keys(), METHODS.keys() - declared
    if missing or unknown:
        raise RuntimeError(
            f"the method table does not match the contract: no entry for {sorted(missing)}, "
            f"entries for no method {sorted(unknown)}"
        )
