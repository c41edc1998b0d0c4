"""ModelAdminClient: versions, promotion, rollback, freezing, traffic splits and status."""

from __future__ import annotations

from collections.abc import Mapping

from regserve.client._channel import Connection
from regserve.v1 import model_service_pb2 as pb
from regserve.v1 import model_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2

__all__ = ["ModelAdminClient"]


class ModelAdminClient(Connection):
    """A client of regserve's ModelService.

    Parameters are those of ``Connection``: ``target`` (``host:port``, ``dns:///host:port``,
    ``ipv4:addr:port,addr:port``), ``timeout`` (seconds per call, retries included, ``None``
    waits forever), ``credentials`` (TLS; plaintext when omitted), ``metadata`` (sent with
    every call), ``max_message_mb``, ``tls_ca``/``tls_cert``/``tls_key`` (PEM files, used
    when ``credentials`` is not given), ``token`` (sent as ``authorization: Bearer
    <token>``; the server's lifecycle calls need the ``admin`` role when it checks
    tokens), ``options`` (gRPC channel options) and ``service_config`` (replaces the
    default: ``round_robin``, and the reads retried on UNAVAILABLE; the changes are never
    retried).  Failed calls raise the typed exceptions of ``regserve.client``
    (``NotFound``, ``FailedPrecondition``, ...), whose ``reason`` is the server's
    ``ErrorInfo`` reason and ``request_id`` the call's ``x-request-id``.

    The methods that change a model return its ``ModelState`` after the change.
    """

    def __init__(self, target: str = "127.0.0.1:50051", **connection) -> None:
        super().__init__(target, **connection)
        self._stub = pb_grpc.ModelServiceStub(self._channel)

    def _call(self, method: str, request):
        return self._unary(getattr(self._stub, method), request)

    def list_models(self) -> list[pb.ModelState]:
        """The routing state of every model, by name.

        A model whose state cannot be read is listed too, with ``problem`` set (reason
        ``CORRUPT_STATE``); ``serving_problem`` says why a serving version is not served.
        """
        return list(self._call("ListModels", pb.ListModelsRequest()).models)

    def list_versions(self, model: str) -> list[types_pb2.ModelVersion]:
        """The stored versions of ``model``, oldest first (without their coefficients).

        A version whose files are damaged is listed with ``problem`` set (``CORRUPT_METADATA``, ...).
        """
        return list(self._call("ListVersions", pb.ListVersionsRequest(model=model)).versions)

    def get_version(self, model: str, version: str) -> types_pb2.ModelVersion:
        """The full description of one version, coefficients included."""
        return self._call("GetVersion", pb.GetVersionRequest(model=model, version=version)).model_version

    def promote(self, model: str, version: str, reason: str = "") -> pb.ModelState:
        """Make ``version`` serve requests naming no version, once it passed its checks; ends any split."""
        request = pb.PromoteVersionRequest(model=model, version=version, reason=reason)
        return self._call("PromoteVersion", request).state

    def rollback(self, model: str, reason: str = "") -> pb.ModelState:
        """Serve the version that served before the current one again."""
        return self._call("RollbackModel", pb.RollbackModelRequest(model=model, reason=reason)).state

    def freeze(self, model: str, version: str, reason: str = "") -> pb.ModelState:
        """Exclude ``version`` from routing and refuse requests naming it."""
        request = pb.FreezeVersionRequest(model=model, version=version, reason=reason)
        return self._call("FreezeVersion", request).state

    def unfreeze(self, model: str, version: str, reason: str = "") -> pb.ModelState:
        """Make a frozen version usable again."""
        request = pb.UnfreezeVersionRequest(model=model, version=version, reason=reason)
        return self._call("UnfreezeVersion", request).state

    def set_split(self, model: str, weights: Mapping[str, float], reason: str = "") -> pb.ModelState:
        """Route requests between versions by relative weight, e.g. ``{"v1": 90, "v2": 10}``; ``{}`` ends the split."""
        request = pb.SetTrafficSplitRequest(model=model, weights=dict(weights), reason=reason)
        return self._call("SetTrafficSplit", request).state

    def delete_version(self, model: str, version: str, reason: str = "") -> pb.ModelState:
        """Delete a version that is neither serving nor in the split."""
        request = pb.DeleteVersionRequest(model=model, version=version, reason=reason)
        return self._call("DeleteVersion", request).state

    def status(self, model: str = "") -> list[pb.ModelStatus]:
        """State, per-version traffic, errors and latency, and switch history of ``model`` (every model when "").

        Problems are reported as in ``list_models`` and ``list_versions``.
        """
        return list(self._call("GetStatus", pb.GetStatusRequest(model=model)).models)
