"""Inference for unpenalized linear and binary logistic regression: covariances, tests, fit statistics.

At training, ``linear_inference`` and ``logistic_inference`` compute from the training
moments and one pass over the spooled training rows what inference needs (their
``LinearInferenceTally`` and ``LogisticInferenceTally`` fold that pass block by block,
so the trainer feeds them from the same read as its metrics), in the
ORIGINAL feature space with the intercept first (standardization folded in):

* linear regression (no penalty): the unscaled covariance (XᵀX)⁻¹, σ̂² = SSR / df_resid,
  the HC3 covariance (the leverages hᵢ = x̃ᵢᵀ(XᵀX)⁻¹x̃ᵢ need (XᵀX)⁻¹, known once the moments
  are, so the pass that sums the residuals also sums Σ eᵢ²/(1-hᵢ)² x̃ᵢx̃ᵢᵀ), R², adjusted R²,
  F, log-likelihood, AIC, BIC and the condition number, with statsmodels' definitions;
* binary logistic regression (no penalty): the inverse Hessian at the solution, the
  log-likelihood and that of the intercept-only model, McFadden's pseudo-R², AIC, BIC.

``Inference`` is stored with the version as plain float and unicode arrays (no pickle);
``coefficient_statistics`` and ``model_statistics`` turn it into tests and intervals at
a confidence level chosen when they are asked for.  Ridge, penalized logistic and
multinomial models get none; ``unavailable_note`` says why.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from regserve.server.models.solvers import MAX_CONDITION, rank_of

__all__ = [
    "DEFAULT_LEVEL",
    "CoefficientRow",
    "Inference",
    "LinearInferenceTally",
    "LogisticInferenceTally",
    "coefficient_statistics",
    "critical_value",
    "linear_inference",
    "logistic_inference",
    "model_statistics",
    "unavailable_note",
]

DEFAULT_LEVEL = 0.95

_PREFIX = "inference_"
_NAMES, _VALUES = "inference_names", "inference_values"
_COV, _ROBUST = "inference_covariance", "inference_robust_covariance"


@dataclass(frozen=True)
class Inference:
    """What a version stores for inference, over the parameters [intercept (if fitted), features...].

    ``unscaled`` times ``values["scale"]`` is the covariance of the estimates: (XᵀX)⁻¹ and
    σ̂² for linear regression, the inverse Hessian and 1 for logistic regression.
    ``robust`` is the HC3 covariance (linear regression only).  ``values`` holds the
    model-level numbers by name (nobs, df_model, df_resid, k_constant, scale, ...).
    """

    kind: str
    unscaled: np.ndarray
    robust: np.ndarray | None
    values: Mapping[str, float]

    @property
    def covariance(self) -> np.ndarray:
        return self.unscaled * self.values["scale"]

    @property
    def has_intercept(self) -> bool:
        return bool(self.values["k_constant"])

    @property
    def df_resid(self) -> float:
        return self.values["df_resid"]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for the version's npz file, every key prefixed ``inference_``."""
        names = sorted(self.values)
        arrays = {
            _NAMES: np.array(names, dtype=np.str_),
            _VALUES: np.array([self.values[k] for k in names], dtype=np.float64),
            _COV: np.ascontiguousarray(self.unscaled, dtype=np.float64),
        }
        if self.robust is not None:
            arrays[_ROBUST] = np.ascontiguousarray(self.robust, dtype=np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, kind: str, arrays: Mapping[str, np.ndarray], n_parameters: int) -> Inference | None:
        """The stored inference, None when the version has none; ValueError when the arrays do not fit."""
        if _COV not in arrays:
            return None
        names, values = np.asarray(arrays[_NAMES]), np.asarray(arrays[_VALUES], dtype=np.float64)
        if names.dtype.kind != "U" or names.shape != values.shape:
            raise ValueError("inference names and values disagree")
        unscaled = np.asarray(arrays[_COV], dtype=np.float64)
        robust = arrays.get(_ROBUST)
        by_name = {str(k): float(v) for k, v in zip(names, values, strict=True)}
        p = n_parameters + int(by_name.get("k_constant", 0.0))
        for matrix in (unscaled, robust):
            if matrix is not None and np.shape(matrix) != (p, p):
                raise ValueError(f"an inference covariance of shape {np.shape(matrix)} for {p} parameters")
        if not {"scale", "k_constant", "df_resid", "nobs"} <= by_name.keys():
            raise ValueError("inference values lack scale, k_constant, df_resid or nobs")
        return cls(kind, unscaled, None if robust is None else np.asarray(robust, dtype=np.float64), by_name)


def unavailable_note(kind: str, alpha: float, n_classes: int) -> str:
    """Why a version of this kind carries no inference; empty when it should carry it."""
    if kind == "ridge":
        return (
            "ridge regression: the L2 penalty biases the estimates, so classical standard errors, "
            "tests and intervals do not apply; train kind linear for them"
        )
    # Multinomial first: alpha 0 would not help there, so it must not be the advice.
    if kind == "logistic" and n_classes > 2:
        return "multinomial logistic regression: standard errors, tests and intervals are given for binary models only"
    if kind == "logistic" and alpha > 0:
        return (
            "penalized logistic regression: the L2 penalty biases the estimates, so standard errors, "
            "tests and intervals do not apply; train with alpha 0 for them"
        )
    return ""


def linear_inference(
    model, moments, blocks: Iterable[tuple[np.ndarray, np.ndarray]], *, fit_intercept: bool
) -> Inference | None:
    """Inference for an unpenalized linear regression, from the training ``moments`` of [x, y] and ``blocks``.

    ``blocks`` yields the training rows (X, y) once, in the original feature space.
    None when XᵀX is singular or no residual degree of freedom is left.
    """
    tally = LinearInferenceTally(model, moments, fit_intercept=fit_intercept)
    if tally.applies:
        for X, y in blocks:
            tally.update(X, y)
    return tally.result()


class LinearInferenceTally:
    """``linear_inference`` folded block by block: ``update(X, y)`` for each block of training rows, then ``result()``.

    ``applies`` is False, and ``update`` does nothing, when XᵀX is singular or no
    residual degree of freedom is left: ``result()`` is then None.
    """

    def __init__(self, model, moments, *, fit_intercept: bool) -> None:
        d, n = model.n_features_in_, int(moments.n)
        k = int(fit_intercept)
        self._d, self._n, self._k = d, n, k
        self._moments = moments
        self.applies = False
        self.ssr = 0.0
        if n - d - k <= 0:
            return
        mean, comoment = moments.mean[:d], moments.comoment[:d, :d]
        raw = comoment + n * np.outer(mean, mean)
        self._gram = np.block([[np.array([[n]]), n * mean[None, :]], [n * mean[:, None], raw]]) if k else raw
        # (XᵀX)⁻¹ of [1, x] by blocks around the centred comoment, which is far better conditioned.
        inner = _inverse(comoment if k else raw)
        if inner is None:
            return
        if k:
            shift = inner @ mean
            unscaled = np.block([[np.array([[1.0 / n + mean @ shift]]), -shift[None, :]], [-shift[:, None], inner]])
        else:
            unscaled = inner
        self.applies = True
        self.unscaled = (unscaled + unscaled.T) / 2
        self._weights, self._bias = model._weights[:, 0], float(model._bias[0]) if k else 0.0
        # U = F·diag(sign)·Fᵀ with F = Q·√|λ| from U's eigenvectors: any symmetric U factors so, and the
        # rows aᵢ of the design [1, x] map to rows wᵢ = aᵢF, so hᵢ = aᵢUaᵢᵀ = Σⱼ signⱼ·wᵢⱼ² and the HC3
        # meat U(Σ vᵢaᵢaᵢᵀ)U = F·S·(Σ vᵢwᵢwᵢᵀ)·S·Fᵀ: both from one product XF, with no design matrix.
        # U is factored at a unit diagonal (U = D·Ũ·D): features in very different units give U entries
        # tens of orders of magnitude apart, and eigh of U itself would lose the small ones' directions.
        scale = np.sqrt(np.diag(self.unscaled))
        eigenvalues, vectors = np.linalg.eigh(self.unscaled / np.outer(scale, scale))
        self._factor = scale[:, None] * (vectors * np.sqrt(np.abs(eigenvalues)))
        self._sign = np.where(eigenvalues < 0, -1.0, 1.0)
        self._meat = np.zeros_like(self.unscaled)

    def update(self, X: np.ndarray, y: np.ndarray) -> None:
        """Fold in training rows ``X`` (m, d) with targets ``y`` (m,)."""
        if not self.applies:
            return
        k, factor = self._k, self._factor
        residual = y - (X @ self._weights + self._bias)
        W = X @ factor[k:]
        if k:
            W += factor[0]  # the intercept's column of ones
        if (self._sign > 0).all():
            leverage = np.einsum("ij,ij->i", W, W)
        else:
            leverage = np.einsum("ij,ij->i", W * self._sign, W)
        self.ssr += float(residual @ residual)
        # Σ vᵢwᵢwᵢᵀ as SᵀS with S = W·√v, scaled in place: one BLAS syrk, several times faster than (W·v)ᵀW.
        W *= np.abs(residual / (1.0 - leverage))[:, None]
        self._meat += W.T @ W

    def fork(self) -> LinearInferenceTally:
        """A tally of the same fit with no rows folded in, sharing this one's read-only parts."""
        other = copy.copy(self)
        other.ssr = 0.0
        other._meat = np.zeros_like(self._meat) if self.applies else None
        return other

    def merge(self, other: LinearInferenceTally) -> None:
        """Add the rows ``other``, a tally of the same fit, has folded in."""
        if self.applies:
            self.ssr += other.ssr
            self._meat += other._meat

    def result(self) -> Inference | None:
        """The inference of the rows folded in; None when it does not apply."""
        if not self.applies:
            return None
        d, n, k, ssr, unscaled = self._d, self._n, self._k, self.ssr, self.unscaled
        df_model, df_resid = d, n - d - k
        y_mean, syy = float(self._moments.mean[d]), float(self._moments.comoment[d, d])
        scale = ssr / df_resid
        tss = syy if k else syy + n * y_mean**2
        rsquared = 1.0 - ssr / tss if tss > 0 else math.nan
        f_value = ((tss - ssr) / df_model) / scale if df_model and scale > 0 else math.nan
        llf = -n / 2 * (math.log(2 * math.pi) + math.log(ssr / n) + 1) if ssr > 0 else math.nan
        eigenvalues = np.linalg.eigvalsh(self._gram)
        values = {
            "nobs": float(n),
            "k_constant": float(k),
            "df_model": float(df_model),
            "df_resid": float(df_resid),
            "scale": scale,
            "ssr": ssr,
            "rsquared": rsquared,
            "rsquared_adj": 1.0 - (n - k) / df_resid * (1.0 - rsquared),
            "fvalue": f_value,
            "f_pvalue": _f_sf(f_value, df_model, df_resid),
            "llf": llf,
            "aic": -2 * llf + 2 * (df_model + k),
            "bic": -2 * llf + math.log(n) * (df_model + k),
            "condition_number": (
                math.sqrt(eigenvalues.max() / eigenvalues.min()) if eigenvalues.min() > 0 else math.inf
            ),
        }
        outer = self._factor * self._sign
        robust = outer @ self._meat @ outer.T
        return Inference("linear", unscaled, (robust + robust.T) / 2, values)


def logistic_inference(
    model, blocks: Iterable[tuple[np.ndarray, np.ndarray]], *, fit_intercept: bool
) -> Inference | None:
    """Inference for an unpenalized binary logistic regression from one pass over its training ``blocks``.

    ``blocks`` yields (X, class index) of the training rows.  None when the Hessian is singular.
    """
    tally = LogisticInferenceTally(model, fit_intercept=fit_intercept)
    for X, y in blocks:
        tally.update(X, y)
    return tally.result()


class LogisticInferenceTally:
    """``logistic_inference`` folded block by block: ``update(X, y)`` per block of training rows, then ``result()``."""

    def __init__(self, model, *, fit_intercept: bool) -> None:
        d, k = model.n_features_in_, int(fit_intercept)
        self._d, self._k = d, k
        self._beta = np.concatenate([[model._bias[0]], model._weights[:, 0]]) if k else model._weights[:, 0].copy()
        self._hessian = np.zeros((d + k, d + k))
        self.llf, self.n, self._positives = 0.0, 0, 0.0

    def update(self, X: np.ndarray, y: np.ndarray) -> None:
        """Fold in training rows ``X`` (m, d) with class indices ``y`` (m,) in {0, 1}."""
        k, beta = self._k, self._beta
        eta = X @ beta[k:] + (beta[0] if k else 0.0)
        p = 0.5 * (1.0 + np.tanh(eta / 2))  # the logistic function without overflow warnings
        # The rows of the design [1, x] scaled by √(p(1-p)), written once rather than built and then scaled.
        weight = np.sqrt(p * (1.0 - p))
        root = np.empty((X.shape[0], X.shape[1] + k))
        if k:
            root[:, 0] = weight
        np.multiply(X, weight[:, None], out=root[:, k:])
        self._hessian += root.T @ root  # one BLAS syrk, several times faster than (A·w)ᵀA
        # log p = -log(1 + e^-η), log(1 - p) = -log(1 + e^η): exact for large |η|.
        self.llf -= float(y @ np.logaddexp(0.0, -eta) + (1.0 - y) @ np.logaddexp(0.0, eta))
        self.n += X.shape[0]
        self._positives += float(y.sum())

    def fork(self) -> LogisticInferenceTally:
        """A tally of the same fit with no rows folded in."""
        other = copy.copy(self)
        other._hessian = np.zeros_like(self._hessian)
        other.llf, other.n, other._positives = 0.0, 0, 0.0
        return other

    def merge(self, other: LogisticInferenceTally) -> None:
        """Add the rows ``other``, a tally of the same fit, has folded in."""
        self._hessian += other._hessian
        self.llf += other.llf
        self.n += other.n
        self._positives += other._positives

    def result(self) -> Inference | None:
        """The inference of the rows folded in; None when the Hessian is singular or no residual freedom is left."""
        d, k, n, llf = self._d, self._k, self.n, self.llf
        df_resid = n - d - k
        if df_resid <= 0:
            return None
        unscaled = _inverse(self._hessian)
        if unscaled is None:
            return None
        rate = self._positives / n
        # The null model is the intercept-only fit, with or without an intercept in the model, as in statsmodels.
        llnull = n * sum(q * math.log(q) for q in (rate, 1.0 - rate) if q > 0)
        llr = 2 * (llf - llnull)
        # statsmodels' discrete models count the parameters beyond the null model's one.
        df_model = d + k - 1
        values = {
            "nobs": float(n),
            "k_constant": float(k),
            "df_model": float(df_model),
            "df_resid": float(df_resid),
            "scale": 1.0,
            "llf": llf,
            "llnull": llnull,
            "prsquared": 1.0 - llf / llnull if llnull else math.nan,
            "llr": llr,
            "llr_pvalue": _chi2_sf(llr, df_model),
            "aic": -2 * (llf - (d + k)),
            "bic": -2 * llf + math.log(n) * (d + k),
        }
        return Inference("logistic", (unscaled + unscaled.T) / 2, None, values)


def _inverse(matrix: np.ndarray) -> np.ndarray | None:
    """The inverse of a symmetric positive semi-definite ``matrix``; None when it is singular.

    Judged and inverted at a unit diagonal, as the closed-form solver judges its Gram matrix
    (numpy's ``matrix_rank`` tolerance, and the condition number above which the solver takes
    its minimum-norm fallback): the features' units neither hide a collinear feature nor make
    one up, and a design the solver answered with its fallback gets no statistics.
    """
    scale = np.sqrt(np.diag(matrix))
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        return None  # a constant feature beside the intercept, or an overflow
    eigenvalues, vectors = np.linalg.eigh(matrix / np.outer(scale, scale))
    if eigenvalues[0] <= 0 or rank_of(eigenvalues) < len(eigenvalues):
        return None
    if eigenvalues[-1] / eigenvalues[0] > MAX_CONDITION:
        return None
    inverse = (vectors / eigenvalues) @ vectors.T / np.outer(scale, scale)
    return (inverse + inverse.T) / 2


def _f_sf(value: float, dfn: float, dfd: float) -> float:
    from scipy import stats

    return float(stats.f.sf(value, dfn, dfd)) if math.isfinite(value) else math.nan


def _chi2_sf(value: float, df: float) -> float:
    from scipy import stats

    return float(stats.chi2.sf(value, df)) if math.isfinite(value) else math.nan


def critical_value(inference: Inference, level: float) -> float:
    """The two-sided quantile at ``level``: Student's t with df_resid degrees of freedom for linear, else normal."""
    return _quantile(inference.kind == "linear", inference.df_resid, level)


@functools.lru_cache(maxsize=256)
def _quantile(student: bool, df: float, level: float) -> float:
    # Cached because a call to scipy's ppf costs more than the intervals of a thousand rows.
    from scipy import stats

    upper = 0.5 + level / 2
    return float(stats.t.ppf(upper, df)) if student else float(stats.norm.ppf(upper))


@dataclass(frozen=True)
class CoefficientRow:
    """One coefficient's estimate, standard errors, test and interval."""

    name: str
    estimate: float
    std_error: float
    statistic: float
    p_value: float
    ci_low: float
    ci_high: float
    robust_std_error: float


def coefficient_statistics(model, inference: Inference, feature_names: list[str], level: float) -> list[CoefficientRow]:
    """One row per coefficient in the original feature space: the intercept first when fitted, then the features."""
    from scipy import stats

    k = inference.has_intercept
    beta = np.concatenate([[model._bias[0]], model._weights[:, 0]]) if k else model._weights[:, 0]
    names = (["(intercept)"] if k else []) + list(feature_names)
    se = np.sqrt(np.diag(inference.covariance))
    robust = np.sqrt(np.diag(inference.robust)) if inference.robust is not None else np.full(len(beta), math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        # A fit with no residual has zero standard errors: its statistics are infinite, as statsmodels gives them.
        statistic = beta / se
    if inference.kind == "linear":
        p_values = 2 * stats.t.sf(np.abs(statistic), inference.df_resid)
    else:
        p_values = 2 * stats.norm.sf(np.abs(statistic))
    q = critical_value(inference, level)
    return [
        CoefficientRow(
            names[j],
            float(beta[j]),
            float(se[j]),
            float(statistic[j]),
            float(p_values[j]),
            float(beta[j] - q * se[j]),
            float(beta[j] + q * se[j]),
            float(robust[j]),
        )
        for j in range(len(beta))
    ]


def model_statistics(inference: Inference) -> dict[str, float]:
    """The model-level numbers by name, as stored."""
    return dict(inference.values)
