"""The ModelService servicer: the lifecycle of stored models, thin over ``ModelStore``.

Reads (listings, status) come from the registry on disk through the store, so they show
changes made through any replica at once; changes go through the store too, which
verifies a version before routing to it and swaps its in-memory routing in the same step.
Listings and status report a model or version whose files are damaged with its problem,
beside the others, instead of failing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import grpc

from regserve.server import __version__
from regserve.server.errors import InvalidInput
from regserve.server.observability.drift import DriftMonitor
from regserve.server.observability.serving_stats import ServingStats
from regserve.server.registry.problems import ModelReport
from regserve.server.registry.state import ModelState
from regserve.server.registry.store import ModelStore
from regserve.server.rpc import convert, registry_messages
from regserve.server.rpc.fitted_models import fitted_version
from regserve.server.rpc.status import maps_errors
from regserve.v1 import model_service_pb2 as pb
from regserve.v1 import model_service_pb2_grpc as pb_grpc

__all__ = ["ModelServicer"]


def _required(value: str, field: str) -> str:
    return convert.require_name(value, field, f"MISSING_{field.upper()}")


@maps_errors("regserve.v1.ModelService")
class ModelServicer(pb_grpc.ModelServiceServicer):
    """Answers ModelService calls for the models of ``store``, with statistics from ``stats`` and ``drift``.

    ``on_change`` is called after CreateVersion stores a version, so the server can update
    its health status.
    """

    def __init__(
        self,
        store: ModelStore,
        stats: ServingStats,
        on_change: Callable[[], None] = lambda: None,
        drift: DriftMonitor | None = None,
    ) -> None:
        self._store = store
        self._stats = stats
        self._drift = drift or DriftMonitor(0)
        self._on_change = on_change

    def _state(self, model: str, state: ModelState) -> pb.ModelState:
        return registry_messages.model_state_to_proto(model, state, self._store.report(model).version_names)

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[registry_messages.report_to_state(r) for r in self._store.reports()])

    def ListVersions(self, request: pb.ListVersionsRequest, context: grpc.ServicerContext) -> pb.ListVersionsResponse:
        report = self._store.report(_required(request.model, "model"))
        return pb.ListVersionsResponse(versions=registry_messages.report_to_versions(report))

    def GetVersion(self, request: pb.GetVersionRequest, context: grpc.ServicerContext) -> pb.GetVersionResponse:
        model, version = _required(request.model, "model"), _required(request.version, "version")
        if request.view not in pb.VersionView.values():
            raise InvalidInput(
                f"Unknown view {request.view}.",
                reason="INVALID_VIEW",
                violations=[("view", "must be a VersionView")],
            )
        served = self._store.describe(model, version)
        role = self._store.read_state(model).role_of(version)
        response = pb.GetVersionResponse(
            model_version=registry_messages.model_version_to_proto(served.metadata, served.estimator, role)
        )
        if request.view == pb.VERSION_VIEW_VALIDATION_SAMPLE:
            inputs, targets = self._store.validation_sample(model, version)
            response.validation_sample.inputs.CopyFrom(convert.ndarray_to_matrix(inputs, raw=True))
            response.validation_sample.targets.CopyFrom(convert.ndarray_to_vector(targets, raw=True))
        return response

    def CreateVersion(
        self, request: pb.CreateVersionRequest, context: grpc.ServicerContext
    ) -> pb.CreateVersionResponse:
        model = self._store.check_model_name(_required(request.model, "model"))
        estimator, metadata = fitted_version(request)
        promote = request.promote if request.HasField("promote") else True
        stored, promoted, reason = self._store.add_version(
            model,
            estimator,
            {**metadata, "regserve_version": __version__},
            promote=promote,
            gate=request.promotion_gate,
        )
        self._on_change()
        role = self._store.serving_state(model, stored.version)
        return pb.CreateVersionResponse(
            model_version=registry_messages.model_version_to_proto(stored, estimator, role),
            promoted=promoted,
            promotion_reason=reason,
        )

    def PromoteVersion(
        self, request: pb.PromoteVersionRequest, context: grpc.ServicerContext
    ) -> pb.PromoteVersionResponse:
        model, version = _required(request.model, "model"), _required(request.version, "version")
        state = self._store.promote(model, version, request.reason)
        return pb.PromoteVersionResponse(state=self._state(model, state))

    def RollbackModel(
        self, request: pb.RollbackModelRequest, context: grpc.ServicerContext
    ) -> pb.RollbackModelResponse:
        model = _required(request.model, "model")
        state = self._store.rollback(model, request.reason)
        return pb.RollbackModelResponse(state=self._state(model, state))

    def FreezeVersion(
        self, request: pb.FreezeVersionRequest, context: grpc.ServicerContext
    ) -> pb.FreezeVersionResponse:
        model, version = _required(request.model, "model"), _required(request.version, "version")
        state = self._store.freeze(model, version, request.reason)
        return pb.FreezeVersionResponse(state=self._state(model, state))

    def UnfreezeVersion(
        self, request: pb.UnfreezeVersionRequest, context: grpc.ServicerContext
    ) -> pb.UnfreezeVersionResponse:
        model, version = _required(request.model, "model"), _required(request.version, "version")
        state = self._store.unfreeze(model, version, request.reason)
        return pb.UnfreezeVersionResponse(state=self._state(model, state))

    def SetTrafficSplit(
        self, request: pb.SetTrafficSplitRequest, context: grpc.ServicerContext
    ) -> pb.SetTrafficSplitResponse:
        model = _required(request.model, "model")
        state = self._store.set_split(model, dict(request.weights), request.reason)
        return pb.SetTrafficSplitResponse(state=self._state(model, state))

    def DeleteVersion(
        self, request: pb.DeleteVersionRequest, context: grpc.ServicerContext
    ) -> pb.DeleteVersionResponse:
        model, version = _required(request.model, "model"), _required(request.version, "version")
        state = self._store.delete_version(model, version, request.reason)
        return pb.DeleteVersionResponse(state=self._state(model, state))

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.GetStatusResponse:
        reports = [self._store.report(request.model)] if request.model else self._store.reports()
        # Read per call: a worker forked after start has a pid of its own.
        replica = f"{socket.gethostname()}:{os.getpid()}"
        return pb.GetStatusResponse(models=[self._status(report) for report in reports], replica=replica)

    def _status(self, report: ModelReport) -> pb.ModelStatus:
        summaries = {v: self._stats.summary(report.model, v) for v in report.version_names}
        message = registry_messages.report_to_status(report, summaries)
        for entry in message.versions:
            drift = self._drift.summary(report.model, entry.version)
            if drift is not None:
                entry.drift.CopyFrom(registry_messages.drift_to_proto(drift))
        return message
