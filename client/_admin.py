"""ModelAdminClient: versions, promotion, rollback, freezing, traffic splits and status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from regserve.client import _calls
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

    def list_models(self) -> list[pb.ModelState]:
        """The routing state of every model, by name.

        A model whose state cannot be read is listed too, with ``problem`` set (reason
        ``CORRUPT_STATE``); ``serving_problem`` says why a serving version is not served.
        """
        return self._send(self._stub, _calls.list_models())

    def list_versions(self, model: str) -> list[types_pb2.ModelVersion]:
        """The stored versions of ``model``, oldest first (without their coefficients).

        A version whose files are damaged is listed with ``problem`` set (``CORRUPT_METADATA``, ...).
        """
        return self._send(self._stub, _calls.list_versions(model))

    def get_version(self, model: str, version: str) -> types_pb2.ModelVersion:
        """The full description of one version, coefficients included."""
        return self._send(self._stub, _calls.get_version(model, version))

    def create_version(
        self,
        model: str,
        kind: str,
        coefficients,
        intercepts,
        *,
        feature_names: Sequence[str] = (),
        classes: Sequence[str] = (),
        means=None,
        scales=None,
        training: Mapping[str, float] | None = None,
        validation: Mapping[str, float] | None = None,
        source: str = "",
        data_fingerprint: str = "",
        promote: bool = True,
        promotion_gate: bool = False,
        solver_report: types_pb2.SolverReport | None = None,
        feature_statistics: Sequence[Mapping[str, Any]] = (),
        num_train: int | None = None,
        num_validation: int | None = None,
        spec: Mapping[str, Any] | None = None,
        warnings: Sequence[Mapping[str, str]] = (),
    ) -> pb.CreateVersionResponse:
        """Store a new version of ``model`` from fitted parameters; the answer says whether it was promoted.

        ``kind`` is ``"linear"``, ``"ridge"`` or ``"logistic"``; ``coefficients`` has one row per
        output (one, or one per class for three classes or more) and one column per feature, on the
        standardized features when ``means`` and ``scales`` are given.  ``training`` and
        ``validation`` are scalar metrics by name (the promotion gate compares the validation
        ``mse`` or ``accuracy``); ``source`` and ``data_fingerprint`` are the version's lineage;
        ``solver_report`` and ``feature_statistics`` (dicts of name, mean, std, min, max) describe the fit;
        ``num_train`` and ``num_validation`` are the rows it was fitted and validated on (None: not recorded);
        ``spec`` the settings of the fit by TrainSpec field name (``alpha`` or ``c``, ``standardize``,
        ``validation_fraction``, ``seed``, ``solver``, ...), stored as the version's spec;
        ``warnings`` what deserves doubt about the fit (dicts of ``reason``, ``message``), shown as a
        trained version's.  Parameters the server refuses raise ``InvalidArgument`` (reason ``INVALID_PARAMETERS``)
        with a field violation for each problem.
        """
        call = _calls.create_version(
            model,
            kind,
            coefficients,
            intercepts,
            feature_names=feature_names,
            classes=classes,
            means=means,
            scales=scales,
            training=training,
            validation=validation,
            source=source,
            data_fingerprint=data_fingerprint,
            promote=promote,
            promotion_gate=promotion_gate,
            solver_report=solver_report,
            feature_statistics=feature_statistics,
            num_train=num_train,
            num_validation=num_validation,
            spec=spec,
            warnings=warnings,
        )
        return self._send(self._stub, call)

    def promote(self, model: str, version: str, reason: str = "") -> pb.ModelState:
        """Make ``version`` serve requests naming no version, once it passed its checks; ends any split."""
        return self._send(self._stub, _calls.promote(model, version, reason))

    def rollback(self, model: str, reason: str = "") -> pb.ModelState:
        """Serve the version that served before the current one again."""
        return self._send(self._stub, _calls.rollback(model, reason))

    def freeze(self, model: str, version: str, reason: str = "") -> pb.ModelState:
        """Exclude ``version`` from routing and refuse requests naming it."""
        return self._send(self._stub, _calls.freeze(model, version, reason))

    def unfreeze(self, model: str, version: str, reason: str = "") -> pb.ModelState:
        """Make a frozen version usable again."""
        return self._send(self._stub, _calls.unfreeze(model, version, reason))

    def set_split(self, model: str, weights: Mapping[str, float], reason: str = "") -> pb.ModelState:
        """Route requests between versions by relative weight, e.g. ``{"v1": 90, "v2": 10}``; ``{}`` ends the split."""
        return self._send(self._stub, _calls.set_split(model, weights, reason))

    def delete_version(self, model: str, version: str, reason: str = "") -> pb.ModelState:
        """Delete a version that is neither serving nor in the split."""
        return self._send(self._stub, _calls.delete_version(model, version, reason))

    def status(self, model: str = "") -> list[pb.ModelStatus]:
        """State, per-version traffic, errors and latency, and switch history of ``model`` (every model when "").

        Problems are reported as in ``list_models`` and ``list_versions``.
        """
        return self._send(self._stub, _calls.status(model))

    def status_response(self, model: str = "") -> pb.GetStatusResponse:
        """The whole GetStatus answer: the ``models`` of ``status`` and the ``replica`` (host:pid) that answered."""
        return self._send(self._stub, _calls.status_response(model))
