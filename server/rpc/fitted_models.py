"""CreateVersion's parameters: from the request to the estimator and metadata a trained version stores.

Every check a trained version passes is made here on parameters that arrive ready-made:
shapes consistent with the kind, the classes and the features, finite values, valid and
unique names, metrics that are numbers (within the values the metrics regserve computes
can take), row counts that fit the metrics.  Every problem found is collected, so one
refusal (INVALID_ARGUMENT ``INVALID_PARAMETERS``) names every field at fault; the answers
of the model on probe rows are then computed, and refused when they are not finite,
before anything is stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from regserve.server.errors import FieldViolation, InvalidInput, RegserveError
from regserve.server.models.estimator import LinearModel
from regserve.server.models.training.spec import MAX_CLASSES, MAX_FEATURES
from regserve.server.registry.probe import probe_arrays
from regserve.server.registry.text_limits import CLASS_LABEL_MAX, FEATURE_NAME_MAX, SOURCE_MAX
from regserve.server.rpc.convert import (
    KIND_NAMES,
    KIND_VALUES,
    SOLVER_NAMES,
    SOLVER_VALUES,
    read_matrix,
    spec_from_proto,
)
from regserve.v1 import model_service_pb2 as pb
from regserve.v1 import types_pb2

__all__ = ["FINGERPRINT_MAX", "METRIC_NAME_MAX", "ROWS_MAX", "fitted_version"]

FINGERPRINT_MAX = 128
"""The lineage's data fingerprint: room for any hex digest in common use."""
ROWS_MAX = 2**63 - 1
"""The most rows a version's counts record: a signed 64-bit integer wherever the metadata is read."""
METRIC_NAME_MAX = 64
"""A metric's name in a CreateVersion's evaluations."""
_MAX_METRICS = 64
"""Most scalar metrics per evaluation: the metadata keeps them all."""
_METRIC_RANGES = {
    **dict.fromkeys(("mse", "rmse", "mae", "log_loss"), (0.0, math.inf, "must be >= 0")),
    **dict.fromkeys(("accuracy", "precision", "recall", "f1"), (0.0, 1.0, "must lie in [0, 1]")),
    "r2": (-math.inf, 1.0, "must be <= 1"),
}
"""The values each metric regserve computes (``server/models/scoring.py``) can take; other names need only be finite."""


class _Checks:
    """The violations found so far; ``refuse`` raises them all at once."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def require(self, ok: bool, field: str, description: str) -> bool:
        if not ok:
            self.violations.append((field, description))
        return ok

    def names(self, values: Sequence[str], field: str, limit: int, most: int, what: str) -> None:
        self.require(len(values) <= most, field, f"at most {most} {what}s")
        self.require(all(values), field, f"every {what} must be non-empty")
        self.require(all(len(v) <= limit for v in values), field, f"a {what} has at most {limit} characters")
        self.require(len(set(values)) == len(values), field, f"{what}s must be unique")

    def finite(self, values: np.ndarray, field: str) -> bool:
        return self.require(bool(np.isfinite(values).all()), field, "every value must be finite (no NaN or infinity)")

    def refuse(self) -> None:
        if self.violations:
            fields = ", ".join(dict.fromkeys(field for field, _ in self.violations))
            raise InvalidInput(
                f"The fitted parameters are refused: {fields}.",
                reason="INVALID_PARAMETERS",
                # The first few are enough to fix the request; all of them could outgrow the status.
                violations=self.violations[:32],
            )


def _vector(values: Sequence[float]) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def _outputs(kind: str, classes: Sequence[str]) -> int:
    """The number of coefficient rows a model of ``kind`` with ``classes`` has."""
    if kind != "logistic":
        return 1
    return 1 if len(classes) == 2 else len(classes)


def _coefficients(request: pb.CreateVersionRequest, kind: str, checks: _Checks) -> np.ndarray | None:
    try:
        coef, _ = read_matrix(request.coefficients, "coefficients")
    except InvalidInput as exc:
        checks.violations.extend(exc.violations)
        return None
    if not checks.require(coef.size > 0, "coefficients", "give one row per output and one column per feature"):
        return None
    checks.require(
        coef.shape[1] <= MAX_FEATURES, "coefficients.num_columns", f"a model has at most {MAX_FEATURES} features"
    )
    if kind == "logistic" and len(request.classes) >= 2:
        expected = _outputs(kind, request.classes)
        rows = "one row" if expected == 1 else f"{expected} rows, one per class"
        checks.require(
            coef.shape[0] == expected,
            "coefficients",
            f"{len(request.classes)} classes need {rows}; got {coef.shape[0]} rows",
        )
    elif kind != "logistic":
        checks.require(coef.shape[0] == 1, "coefficients", f"a {kind} model has one row; got {coef.shape[0]}")
    checks.finite(coef, "coefficients")
    return np.array(coef)


def _scaler(
    standardization: types_pb2.Standardization, d: int, checks: _Checks
) -> tuple[np.ndarray | None, np.ndarray | None]:
    means, scales = _vector(standardization.means), _vector(standardization.scales)
    if not standardization.enabled:
        checks.require(
            not means.size and not scales.size,
            "standardization.enabled",
            "means and scales are given only when enabled",
        )
        return None, None
    # An array missing or of the wrong length is named for that alone: its values are beside the point.
    means_ok = checks.require(means.shape == (d,), "standardization.means", f"one mean per feature ({d})")
    means_ok = means_ok and checks.finite(means, "standardization.means")
    scales_ok = checks.require(scales.shape == (d,), "standardization.scales", f"one scale per feature ({d})")
    scales_ok = scales_ok and checks.finite(scales, "standardization.scales")
    scales_ok = scales_ok and checks.require(
        bool((scales > 0).all()), "standardization.scales", "every scale must be positive"
    )
    ok = means_ok and scales_ok
    return (means, scales) if ok else (None, None)


def _evaluation(
    evaluation: types_pb2.Evaluation, field: str, classes: Sequence[str], checks: _Checks
) -> dict[str, Any] | None:
    metrics: dict[str, Any] = {}
    checks.require(len(evaluation.metrics) <= _MAX_METRICS, f"{field}.metrics", f"at most {_MAX_METRICS} metrics")
    for name, value in sorted(evaluation.metrics.items()):
        checks.require(
            0 < len(name) <= METRIC_NAME_MAX and name not in ("per_class", "confusion_matrix"),
            f"{field}.metrics",
            f"a metric name has 1 to {METRIC_NAME_MAX} characters and is not per_class or confusion_matrix",
        )
        where = f"{field}.metrics[{name[:METRIC_NAME_MAX]}]"
        if checks.require(math.isfinite(value), where, "must be finite") and _in_range(name, value, where, checks):
            metrics[name] = value
    per_class, confusion = evaluation.per_class, evaluation.confusion_matrix
    if not classes:
        checks.require(not per_class, f"{field}.per_class", "only a classifier has per-class scores")
        checks.require(
            not confusion.ByteSize(), f"{field}.confusion_matrix", "only a classifier has a confusion matrix"
        )
    else:
        rows = []
        for i, row in enumerate(per_class):
            scores = (row.precision, row.recall, row.f1)
            checks.require(row.label in classes, f"{field}.per_class[{i}].label", "must be one of the classes")
            checks.require(
                all(math.isfinite(s) and 0 <= s <= 1 for s in scores), f"{field}.per_class[{i}]", "scores lie in [0, 1]"
            )
            rows.append(
                dict(label=row.label, precision=row.precision, recall=row.recall, f1=row.f1, support=row.support)
            )
        if rows:
            metrics["per_class"] = rows
        if confusion.ByteSize():
            try:
                matrix, _ = read_matrix(confusion, f"{field}.confusion_matrix")
            except InvalidInput as exc:
                checks.violations.extend(exc.violations)
            else:
                k = len(classes)
                checks.require(
                    matrix.shape == (k, k), f"{field}.confusion_matrix", f"{k} classes need a {k} x {k} matrix"
                )
                checks.require(
                    bool(np.isfinite(matrix).all() and (matrix >= 0).all()),
                    f"{field}.confusion_matrix",
                    "counts are finite and not negative",
                )
                metrics["confusion_matrix"] = matrix.tolist()
    return metrics or None


def _in_range(name: str, value: float, field: str, checks: _Checks) -> bool:
    """Check a finite metric against the values ``name`` can take, when it is one regserve computes."""
    if name not in _METRIC_RANGES:
        return True
    low, high, description = _METRIC_RANGES[name]
    return checks.require(low <= value <= high, field, description)


def _solver_info(report: types_pb2.SolverReport, checks: _Checks) -> tuple[str, dict[str, Any]]:
    solver = SOLVER_NAMES.get(report.solver)
    checks.require(solver is not None, "solver_report.solver", "must be a Solver")
    checks.require(
        not math.isnan(report.condition_number) and report.condition_number >= 0,
        "solver_report.condition_number",
        "must be a number >= 0 (infinite for a singular system)",
    )
    checks.require(math.isfinite(report.final_loss), "solver_report.final_loss", "must be finite")
    condition = report.condition_number
    info = {
        "rank": report.rank or None,
        # JSON has no infinity: the stored form of a singular system's condition number is None.
        "condition_number": condition if math.isfinite(condition) and condition else None,
        "fallback": "lstsq" if report.least_squares_fallback else None,
        "iterations": report.iterations or None,
        "converged": report.converged if report.iterations else None,
        "final_loss": report.final_loss if report.final_loss else None,
    }
    return solver or "auto", info


def _feature_stats(
    statistics: Sequence[types_pb2.FeatureStatistics], names: Sequence[str], checks: _Checks
) -> list[dict[str, Any]]:
    if not statistics:
        return []
    if not checks.require(
        [s.name for s in statistics] == list(names),
        "feature_statistics",
        "one entry per feature, named as the features, in their order",
    ):
        return []
    stats = [dict(name=s.name, mean=s.mean, std=s.std, min=s.min, max=s.max) for s in statistics]
    values = np.array([[s["mean"], s["std"], s["min"], s["max"]] for s in stats])
    checks.finite(values, "feature_statistics")
    checks.require(
        bool((values[:, 1] >= 0).all() and (values[:, 2] <= values[:, 3]).all()),
        "feature_statistics",
        "std is not negative and min is at most max",
    )
    return stats


def _fit_spec(
    request: pb.CreateVersionRequest,
    kind: str,
    solver: str,
    names: tuple[str, ...],
    classes: tuple[str, ...],
    checks: _Checks,
) -> dict[str, Any]:
    """The spec stored with the version: the request's TrainSpec checked as Train checks it, with the request's
    own kind, names and classes; without one, the kind, the solver and the feature names."""
    if not request.HasField("spec"):
        return {"kind": kind, "solver": solver, "feature_names": list(names)}
    given = request.spec
    checks.require(given.model in ("", request.model), "spec.model", "empty, or the request's model")
    checks.require(
        given.kind in (types_pb2.MODEL_KIND_UNSPECIFIED, request.kind), "spec.kind", "unset, or the request's kind"
    )
    checks.require(
        not given.feature_names or tuple(given.feature_names) == names,
        "spec.feature_names",
        "empty, or the request's feature_names",
    )
    checks.require(
        not given.class_labels or tuple(given.class_labels) == classes,
        "spec.class_labels",
        "empty, or the request's classes",
    )
    message = types_pb2.TrainSpec()
    message.CopyFrom(given)
    message.kind = KIND_VALUES[kind]
    if message.solver == types_pb2.SOLVER_UNSPECIFIED and solver in SOLVER_VALUES:
        message.solver = SOLVER_VALUES[solver]
    del message.feature_names[:]
    message.feature_names.extend(names)
    del message.class_labels[:]
    message.class_labels.extend(classes)
    try:
        spec_from_proto(message).validate()
    except InvalidInput as error:
        for field, description in error.violations:
            checks.require(False, field, description)
        return {}
    # Only what the request states: a default filled in (c = 1 for a logistic model) would claim a penalty.
    stored: dict[str, Any] = {"kind": kind, "solver": SOLVER_NAMES[message.solver], "feature_names": list(names)}
    if classes:
        stored["class_labels"] = list(classes)
    own = {"model", "kind", "solver", "feature_names", "class_labels"}
    stored.update({field.name: value for field, value in given.ListFields() if field.name not in own})
    return stored


def _row_counts(request: pb.CreateVersionRequest, validation: dict[str, Any] | None, checks: _Checks) -> dict[str, int]:
    """The metadata's row counts, or none when the request gives none, so they read as not recorded."""
    if not request.HasField("num_train"):
        checks.require(not request.HasField("num_validation"), "num_validation", "give num_train with it")
        return {}
    n_train, n_validation = request.num_train, request.num_validation
    # A version's counts read 0 only when unrecorded, so a recorded fit needs a row.
    checks.require(n_train >= 1, "num_train", "a fit needs at least one training row")
    checks.require(n_train + n_validation <= ROWS_MAX, "num_train", f"num_train + num_validation is at most {ROWS_MAX}")
    checks.require(
        validation is None or n_validation >= 1,
        "num_validation",
        "validation metrics were given: give the number of held-out rows they were computed on",
    )
    return {"n_samples": n_train + n_validation, "n_train": n_train, "n_validation": n_validation}


def fitted_version(request: pb.CreateVersionRequest) -> tuple[LinearModel, dict[str, Any]]:
    """The estimator and the metadata to store for ``request``'s fitted parameters.

    Raises InvalidInput ``INVALID_PARAMETERS`` with a field violation per problem found, and
    ``UNUSABLE_PARAMETERS`` when the model's answers around the features' centre are not finite.
    """
    checks = _Checks()
    kind = KIND_NAMES.get(request.kind)
    checks.require(kind is not None, "kind", "must be MODEL_KIND_LINEAR, MODEL_KIND_RIDGE or MODEL_KIND_LOGISTIC")
    kind = kind or "linear"
    classes = tuple(request.classes)
    if kind == "logistic":
        checks.require(len(classes) >= 2, "classes", "a logistic model has at least two classes")
        checks.names(classes, "classes", CLASS_LABEL_MAX, MAX_CLASSES, "class label")
    else:
        checks.require(not classes, "classes", f"a {kind} model has no classes")
    coef = _coefficients(request, kind, checks)
    intercepts = _vector(request.intercepts)
    d = 0 if coef is None else coef.shape[1]
    # The outputs the kind and classes call for, else (when those are refused) as many as the coefficients have.
    known = kind != "logistic" or len(classes) >= 2
    outputs = _outputs(kind, classes) if known else None if coef is None else coef.shape[0]
    if outputs is not None:
        checks.require(intercepts.shape == (outputs,), "intercepts", f"one intercept per output ({outputs})")
    checks.finite(intercepts, "intercepts")
    names = tuple(request.feature_names) or tuple(f"x{j}" for j in range(d))
    checks.names(names, "feature_names", FEATURE_NAME_MAX, MAX_FEATURES, "feature name")
    if coef is not None:
        checks.require(len(names) == d, "feature_names", f"one name per coefficient column ({d})")
    mean, scale = _scaler(request.standardization, d, checks) if d else (None, None)
    reported = classes if kind == "logistic" else ()
    training = _evaluation(request.training, "training", reported, checks)
    validation = _evaluation(request.validation, "validation", reported, checks)
    solver, solver_info = _solver_info(request.solver_report, checks)
    feature_stats = _feature_stats(request.feature_statistics, names, checks)
    counts = _row_counts(request, validation, checks)
    spec = _fit_spec(request, kind, solver, names, classes if kind == "logistic" else (), checks)
    warnings = _warnings(request.warnings, checks)
    lineage = request.lineage
    checks.require(len(lineage.source) <= SOURCE_MAX, "lineage.source", f"at most {SOURCE_MAX} characters")
    checks.require(
        len(lineage.data_fingerprint) <= FINGERPRINT_MAX,
        "lineage.data_fingerprint",
        f"at most {FINGERPRINT_MAX} characters",
    )
    checks.refuse()
    assert coef is not None  # checks.refuse raised otherwise
    # Overflow while folding the scaler in is what _check_answers refuses, not an error of its own.
    with np.errstate(over="ignore", invalid="ignore"):
        estimator = LinearModel(
            kind, coef, intercepts, mean=mean, scale=scale, classes=classes if kind == "logistic" else None
        )
    metadata: dict[str, Any] = {
        "kind": kind,
        "solver": solver,
        "spec": spec,
        "n_features": d,
        "feature_names": list(names),
        "classes": list(classes) if kind == "logistic" else None,
        "fingerprint": lineage.data_fingerprint,
        "feature_stats": feature_stats,
        "training_metrics": training,
        "validation_metrics": validation,
        "cv_metrics": None,
        "solver_info": solver_info,
        "validation_sample_rows": 0,
        "source": lineage.source,
        **counts,
    }
    if warnings:
        metadata["warnings"] = warnings
    _check_answers(metadata, estimator)
    return estimator, metadata


MAX_WARNINGS = 16
WARNING_MESSAGE_MAX = 2000
_WARNING_REASON = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


def _warnings(warnings: Sequence[types_pb2.FitWarning], checks: _Checks) -> list[dict[str, str]]:
    """The caller's fit warnings as a trained version stores them."""
    checks.require(len(warnings) <= MAX_WARNINGS, "warnings", f"at most {MAX_WARNINGS} warnings")
    for i, warning in enumerate(warnings[:MAX_WARNINGS]):
        checks.require(
            len(warning.reason) <= 64 and _WARNING_REASON.fullmatch(warning.reason) is not None,
            f"warnings[{i}].reason",
            "an UPPER_SNAKE identifier of at most 64 characters, such as COMPLETE_SEPARATION",
        )
        checks.require(
            0 < len(warning.message) <= WARNING_MESSAGE_MAX,
            f"warnings[{i}].message",
            f"a sentence of 1 to {WARNING_MESSAGE_MAX} characters",
        )
    return [{"reason": w.reason, "message": w.message} for w in warnings]


def _check_answers(metadata: dict[str, Any], estimator: LinearModel) -> None:
    """Refuse a model whose answers on the probe rows overflow: it could never pass its probe when loaded."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            probe = probe_arrays(metadata, estimator)
        finite = all(np.isfinite(values).all() for key, values in probe.items() if key != "probe_inputs")
    except (RegserveError, FloatingPointError):
        finite = False
    if not finite:
        raise InvalidInput(
            "The model's answers on rows around the features' centre are not finite; the parameters are too large.",
            reason="UNUSABLE_PARAMETERS",
            violations=[("coefficients", "the answers on rows around the features' centre must be finite")],
        )
