"""Pure converters from the registry's typed values to regserve.v1 messages.

``ModelVersion`` from a ``VersionMetadata`` (and the loaded estimator, when at hand),
``ModelState`` and ``ModelStatus`` from a ``ModelState`` or a ``ModelReport`` (which
adds what is wrong with the model), ``Switch`` from one of its history entries,
``Problem`` from a ``Problem``.  No I/O and no gRPC: the servicers read the registry
through the store and hand what they read to these functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from regserve.server.models.estimator import LinearModel
from regserve.server.registry.problems import ModelReport, Problem
from regserve.server.registry.state import ModelState, Switch, VersionMetadata
from regserve.server.registry.text_limits import REASON_MAX
from regserve.server.rpc import statistics_messages
from regserve.server.rpc.convert import KIND_VALUES, SOLVER_VALUES, ndarray_to_matrix, spec_to_proto
from regserve.v1 import model_service_pb2, types_pb2

if TYPE_CHECKING:
    from regserve.server.observability.drift import VersionDrift
    from regserve.server.observability.serving_stats import VersionSummary

__all__ = [
    "SERVING_STATES",
    "model_state_to_proto",
    "model_status_to_proto",
    "model_version_to_proto",
    "problem_to_proto",
    "report_to_state",
    "report_to_status",
    "report_to_versions",
    "switch_to_proto",
    "version_status_to_proto",
]

SERVING_STATES = {
    "serving": types_pb2.SERVING_STATE_SERVING,
    "available": types_pb2.SERVING_STATE_AVAILABLE,
    "in_split": types_pb2.SERVING_STATE_IN_SPLIT,
    "frozen": types_pb2.SERVING_STATE_FROZEN,
}
"""``ModelState.role_of`` names -> the wire enum."""


def _evaluation(metrics: Mapping[str, Any] | None) -> types_pb2.Evaluation | None:
    if not metrics:
        return None
    evaluation = types_pb2.Evaluation(
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v is not None}
    )
    for row in metrics.get("per_class") or ():
        evaluation.per_class.add(
            label=str(row["label"]),
            precision=float(row["precision"] or 0.0),
            recall=float(row["recall"] or 0.0),
            f1=float(row["f1"] or 0.0),
            support=int(row["support"]),
        )
    confusion = metrics.get("confusion_matrix")
    if confusion:
        evaluation.confusion_matrix.CopyFrom(ndarray_to_matrix(np.asarray(confusion, dtype=np.float64), raw=False))
    return evaluation


def _solver_report(metadata: VersionMetadata, report: types_pb2.SolverReport) -> None:
    info = metadata.solver_info
    report.solver = SOLVER_VALUES.get(metadata.solver, types_pb2.SOLVER_UNSPECIFIED)
    report.rank = int(info.get("rank") or 0)
    condition = info.get("condition_number")
    # The closed form stores no number for a singular system (JSON has no infinity): it is infinite.
    report.condition_number = float(condition) if condition is not None else (math.inf if info.get("rank") else 0.0)
    report.least_squares_fallback = info.get("fallback") is not None
    report.iterations = int(info.get("iterations") or 0)
    report.converged = bool(info.get("converged"))
    report.final_loss = float(info.get("final_loss") or 0.0)


def model_version_to_proto(
    metadata: VersionMetadata, estimator: LinearModel | None, serving_state: str
) -> types_pb2.ModelVersion:
    """Describe a stored version: its ``metadata``, ``estimator`` its weights and statistics (None leaves them out).

    ``serving_state`` is a ``ModelState.role_of`` name.
    """
    message = types_pb2.ModelVersion(
        model=metadata.model,
        version=metadata.version,
        kind=KIND_VALUES.get(metadata.kind, types_pb2.MODEL_KIND_UNSPECIFIED),
        feature_names=list(metadata.feature_names),
        classes=list(metadata.classes),
        spec=spec_to_proto(metadata.spec, metadata.model),
        num_samples=metadata.n_samples,
        num_train=metadata.n_train,
        num_validation=metadata.n_validation,
        data_fingerprint=metadata.fingerprint,
        checksum=metadata.sha256,
        regserve_version=metadata.regserve_version,
        serving_state=SERVING_STATES.get(serving_state, types_pb2.SERVING_STATE_UNSPECIFIED),
        training_seconds=metadata.duration_seconds,
        source=str(metadata.raw.get("source") or ""),
    )
    if estimator is not None:
        message.coefficients.CopyFrom(ndarray_to_matrix(np.atleast_2d(estimator.coef_), raw=False))
        message.intercepts.extend(np.ravel(estimator.intercept_).tolist())
        if estimator.mean_ is not None and estimator.scale_ is not None:
            message.standardization.enabled = True
            message.standardization.means.extend(estimator.mean_.tolist())
            message.standardization.scales.extend(estimator.scale_.tolist())
        message.statistics.CopyFrom(statistics_messages.statistics_to_proto(estimator, metadata, 0.0))
    for stats in metadata.feature_stats:
        message.feature_statistics.add(**{k: stats[k] for k in ("name", "mean", "std", "min", "max") if k in stats})
    for metrics, target in (
        (metadata.training_metrics, message.training),
        (metadata.validation_metrics, message.validation),
    ):
        evaluation = _evaluation(metrics)
        if evaluation is not None:
            target.CopyFrom(evaluation)
    cv = metadata.cv_metrics
    if cv:
        message.cross_validation.folds = int(cv["folds"])
        message.cross_validation.mean.update({k: float(v) for k, v in cv["mean"].items() if v is not None})
        message.cross_validation.std.update({k: float(v) for k, v in cv["std"].items() if v is not None})
    _solver_report(metadata, message.solver_report)
    for warning in metadata.raw.get("warnings") or ():
        message.warnings.add(reason=str(warning["reason"]), message=str(warning["message"]))
    if metadata.created_at:
        message.create_time.FromDatetime(datetime.fromisoformat(metadata.created_at))
    return message


def problem_to_proto(problem: Problem | None) -> types_pb2.Problem | None:
    """A Problem message, or None for no problem (which leaves the field unset)."""
    return None if problem is None else types_pb2.Problem(reason=problem.reason, message=problem.message)


def model_state_to_proto(model: str, state: ModelState, versions: Sequence[str]) -> model_service_pb2.ModelState:
    """The routing state of ``model``: its stored ``state``, ``versions`` its stored versions."""
    return model_service_pb2.ModelState(
        model=model,
        serving_version=state.serving or "",
        previous_versions=list(state.previous),
        frozen_versions=list(state.frozen),
        traffic_split={str(v): float(w) for v, w in state.split.items()},
        generation=state.generation,
        versions=list(versions),
    )


def _split_text(split: Mapping[str, float]) -> str:
    return ",".join(f"{version}={weight:g}" for version, weight in split.items())


def switch_to_proto(entry: Switch) -> model_service_pb2.Switch:
    """One entry of a model's history as a Switch.

    A split entry concerns several versions, so its ``to_version`` lists the arms with
    their weights (``"v1=90,v2=10"``); it is empty when the split was cleared.
    """
    target = entry.to_version
    if target is None and entry.action == "split":
        target = _split_text(entry.split or {})
    message = model_service_pb2.Switch(
        action=str(entry.action or ""),
        from_version=str(entry.from_version or ""),
        to_version=str(target or ""),
        reason=str(entry.reason or ""),
    )
    if entry.at:
        message.time.FromJsonString(str(entry.at))
    return message


def _shorter_reason(entry: Switch) -> Switch:
    # A history written before reasons were limited may hold huge ones: show their start only.
    reason = entry.reason
    if reason is None or len(reason) <= REASON_MAX:
        return entry
    return replace(entry, reason=f"{reason[:REASON_MAX]}... ({len(reason)} characters)")


def version_status_to_proto(
    version: str, serving_state: str, summary: VersionSummary
) -> model_service_pb2.VersionStatus:
    """The serving statistics of one version; ``serving_state`` a ``ModelState.role_of`` name."""
    return model_service_pb2.VersionStatus(
        version=version,
        serving_state=SERVING_STATES.get(serving_state, types_pb2.SERVING_STATE_UNSPECIFIED),
        requests=summary.requests,
        errors=summary.errors,
        rows=summary.rows,
        latency_mean_ms=summary.latency_mean_ms,
        latency_p50_ms=summary.latency_p50_ms,
        latency_p99_ms=summary.latency_p99_ms,
    )


def model_status_to_proto(
    model: str,
    state: ModelState,
    versions: Sequence[str],
    summaries: Mapping[str, VersionSummary],
) -> model_service_pb2.ModelStatus:
    """State, per-version statistics (``summaries`` by version) and switch history of one model."""
    return model_service_pb2.ModelStatus(
        state=model_state_to_proto(model, state, versions),
        versions=[version_status_to_proto(v, state.role_of(v), summaries[v]) for v in versions],
        history=[switch_to_proto(_shorter_reason(entry)) for entry in state.history],
    )


def report_to_state(report: ModelReport) -> model_service_pb2.ModelState:
    """The routing state of a reported model, with its problems."""
    message = model_state_to_proto(report.model, report.state, report.version_names)
    _set_problem(message, "problem", report.problem)
    _set_problem(message, "serving_problem", report.serving_problem)
    return message


def report_to_versions(report: ModelReport) -> list[types_pb2.ModelVersion]:
    """Every stored version of a reported model, oldest first, each with its problem if it has one.

    A damaged version has no readable metadata: only its name, serving state and problem are set.
    """
    usable = {m.version: m for m in report.versions}
    messages = []
    for version in report.version_names:
        role = report.state.role_of(version)
        metadata = usable.get(version)
        if metadata is None:
            message = types_pb2.ModelVersion(model=report.model, version=version)
            message.serving_state = SERVING_STATES.get(role, types_pb2.SERVING_STATE_UNSPECIFIED)
        else:
            message = model_version_to_proto(metadata, None, role)
        _set_problem(message, "problem", report.version_problem(version))
        messages.append(message)
    return messages


def report_to_status(report: ModelReport, summaries: Mapping[str, VersionSummary]) -> model_service_pb2.ModelStatus:
    """The status of a reported model: ``model_status_to_proto`` with its problems and those of its versions."""
    versions = report.version_names
    message = model_status_to_proto(report.model, report.state, versions, summaries)
    message.state.CopyFrom(report_to_state(report))
    message.served_generation = report.served_generation
    for entry in message.versions:
        _set_problem(entry, "problem", report.version_problem(entry.version))
    return message


def drift_to_proto(drift: VersionDrift) -> model_service_pb2.VersionDrift:
    """The drift of one version over its window."""
    message = model_service_pb2.VersionDrift(
        window_rows=drift.rows,
        threshold=drift.threshold,
        features=[
            model_service_pb2.FeatureDrift(feature=f.name, psi=f.psi, mean_shift=f.mean_shift, flagged=f.flagged)
            for f in drift.features
        ],
        flagged_features=drift.flagged_features,
        class_flagged=drift.class_flagged,
    )
    if drift.class_psi is not None:
        message.class_psi = drift.class_psi
    return message


def _set_problem(message: Any, field: str, problem: Problem | None) -> None:
    converted = problem_to_proto(problem)
    if converted is not None:
        getattr(message, field).CopyFrom(converted)
