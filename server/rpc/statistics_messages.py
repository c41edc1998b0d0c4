"""ModelStatistics and per-row intervals as messages, from a version's stored inference (``models.statistics``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from regserve.server.models.intervals import check_level, intervals
from regserve.server.models.statistics import DEFAULT_LEVEL, coefficient_statistics, unavailable_note
from regserve.server.rpc import convert
from regserve.v1 import types_pb2

__all__ = ["add_intervals", "missing_statistics_note", "penalised", "statistics_to_proto"]

_NO_STATISTICS = (
    "this version was stored from fitted parameters (CreateVersion, regserve import, regserve train --dask) or by "
    "a release without statistics, so it carries none; train it on this server's Train for them"
)

# ModelStatistics field -> the stored value's name (statsmodels' attribute name).
_MODEL_FIELDS = {
    "df_model": "df_model",
    "df_resid": "df_resid",
    "residual_variance": "scale",
    "r_squared": "rsquared",
    "adjusted_r_squared": "rsquared_adj",
    "f_statistic": "fvalue",
    "f_p_value": "f_pvalue",
    "log_likelihood": "llf",
    "null_log_likelihood": "llnull",
    "pseudo_r_squared": "prsquared",
    "llr": "llr",
    "llr_p_value": "llr_pvalue",
    "aic": "aic",
    "bic": "bic",
    "condition_number": "condition_number",
}


def penalised(spec: Mapping[str, Any]) -> float:
    """The L2 strength a stored spec asked for, positive when the fit was penalised (alpha or scikit-learn's C)."""
    if spec.get("c") is not None:
        return 1.0
    return float(spec.get("alpha") or 0.0)


def statistics_to_proto(estimator, metadata, level: float) -> types_pb2.ModelStatistics:
    """The ModelStatistics of a version at confidence ``level`` (0 for the default, 0.95)."""
    level = check_level(level, "confidence_level") if level else DEFAULT_LEVEL
    inference = estimator.inference
    if inference is None:
        return types_pb2.ModelStatistics(note=missing_statistics_note(estimator, metadata))
    names = list(metadata.feature_names)
    if len(names) != estimator.n_features_in_:
        names = [f"x{j}" for j in range(estimator.n_features_in_)]
    linear = inference.kind == "linear"
    message = types_pb2.ModelStatistics(
        confidence_level=level,
        covariance_type="nonrobust",
        robust_covariance_type="HC3" if linear else "",
        distribution="t" if linear else "normal",
        num_observations=int(inference.values["nobs"]),
    )
    for row in coefficient_statistics(estimator, inference, names, level):
        message.coefficients.add(
            name=row.name,
            estimate=row.estimate,
            std_error=row.std_error,
            statistic=row.statistic,
            p_value=row.p_value,
            ci_low=row.ci_low,
            ci_high=row.ci_high,
            robust_std_error=row.robust_std_error if math.isfinite(row.robust_std_error) else 0.0,
        )
    for field, name in _MODEL_FIELDS.items():
        value = inference.values.get(name)
        if value is not None and math.isfinite(value) and (linear or name != "scale"):
            setattr(message, field, value)
    return message


def missing_statistics_note(estimator, metadata) -> str:
    """Why a version (``estimator`` and its ``metadata``) carries no coefficient statistics."""
    note = unavailable_note(estimator.kind, penalised(metadata.spec), len(estimator.classes_ or ()))
    reasons = [str(warning.get("reason", "")) for warning in metadata.raw.get("warnings") or ()]
    if not note and any(reason.endswith("_SEPARATION") for reason in reasons):
        note = (
            "separated classes (see the warnings): the maximum-likelihood estimate does not exist, "
            "so standard errors, tests and intervals do not apply; train with a penalty instead"
        )
    # A version trained here says why it has none; the others were stored from fitted parameters or before statistics.
    return note or metadata.raw.get("inference_note") or _NO_STATISTICS


def add_intervals(response, estimator, X: np.ndarray, level: float, raw: bool, metadata) -> None:
    """Set the interval fields of a Predict or BatchPredict ``response`` for rows ``X`` at ``level``.

    ``metadata`` is the version's: its note says why a version without statistics cannot give intervals.
    """
    level = check_level(level, "interval_level")
    unavailable = missing_statistics_note(estimator, metadata) if estimator.inference is None else ""
    bounds = intervals(estimator, X, level, unavailable=unavailable)
    response.mean_lower.CopyFrom(convert.ndarray_to_vector(bounds.mean_lower, raw))
    response.mean_upper.CopyFrom(convert.ndarray_to_vector(bounds.mean_upper, raw))
    if bounds.prediction_lower is not None and bounds.prediction_upper is not None:
        response.prediction_lower.CopyFrom(convert.ndarray_to_vector(bounds.prediction_lower, raw))
        response.prediction_upper.CopyFrom(convert.ndarray_to_vector(bounds.prediction_upper, raw))
