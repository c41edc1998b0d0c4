"""Per-row intervals from a version's stored inference: Predict and BatchPredict with an interval level.

Linear regression: with x̃ = [1, x] and V = σ̂²(XᵀX)⁻¹, the mean's standard error is
√(x̃ᵀVx̃) and an observation's √(x̃ᵀVx̃ + σ̂²), each times Student's t at the level with
df_resid degrees of freedom, around x̃ᵀβ (statsmodels' ``get_prediction().summary_frame()``).

Binary logistic regression: the interval of the linear predictor η = x̃ᵀβ, η ± z·√(x̃ᵀVx̃)
with V the inverse Hessian, mapped through the logistic function (the delta method on the
link scale, as statsmodels' GLM predictions do), so the bounds stay inside (0, 1).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from regserve.server.errors import FailedPrecondition, InvalidInput
from regserve.server.models.statistics import critical_value

__all__ = ["Intervals", "check_level", "intervals"]


class Intervals(NamedTuple):
    """Per-row bounds: of the mean (the probability of the positive class for a classifier) and,
    for a regression, of a new observation (None for a classifier)."""

    mean_lower: np.ndarray
    mean_upper: np.ndarray
    prediction_lower: np.ndarray | None
    prediction_upper: np.ndarray | None


def check_level(level: float, field: str) -> float:
    """``level`` if it is strictly between 0 and 1, else InvalidInput INVALID_INTERVAL_LEVEL."""
    if not 0.0 < level < 1.0:
        raise InvalidInput(
            f"The interval level must be strictly between 0 and 1, got {level!r}.",
            reason="INVALID_INTERVAL_LEVEL",
            violations=[(field, "must be strictly between 0 and 1, such as 0.95")],
        )
    return level


def intervals(estimator, X: np.ndarray, level: float, *, unavailable: str = "") -> Intervals:
    """The intervals at ``level`` of rows ``X`` (already checked and predicted).

    Raises FailedPrecondition INTERVALS_UNAVAILABLE when the version carries no inference
    (ridge, penalized or multinomial logistic, a fit that did not converge, a version stored
    without it); ``unavailable`` is why, as the version's statistics note says it.
    """
    inference = getattr(estimator, "inference", None)
    if inference is None:
        note = unavailable or "this version carries no coefficient statistics"
        raise FailedPrecondition(
            f"This version cannot give intervals: {note}.",
            reason="INTERVALS_UNAVAILABLE",
            metadata={"kind": estimator.kind},
        )
    design = np.column_stack([np.ones(X.shape[0]), X]) if inference.has_intercept else X
    beta = estimator._weights[:, 0]
    eta = X @ beta + estimator._bias[0]
    # (x̃V)·x̃ row by row: one matrix product and a row-wise dot, far faster than a three-operand einsum.
    mean_se = np.sqrt(np.einsum("ij,ij->i", design @ inference.covariance, design))
    q = critical_value(inference, level)
    if inference.kind == "linear":
        obs_se = np.sqrt(mean_se**2 + inference.values["scale"])
        return Intervals(eta - q * mean_se, eta + q * mean_se, eta - q * obs_se, eta + q * obs_se)
    low, high = eta - q * mean_se, eta + q * mean_se
    return Intervals(_logistic(low), _logistic(high), None, None)


def _logistic(eta: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(eta / 2))
