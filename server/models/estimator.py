"""The fitted linear model that regserve serves, and its array form.

``LinearModel`` stores what the solver fitted: weights in the space of the
(optionally z-scored) features plus the scaler's ``mean_``/``scale_``.  At
construction it folds the scaler into one effective weight matrix, so
``predict`` is a single matrix product whatever the batch size: it is the
serving hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from regserve.server.errors import IntegrityError, InvalidInput
from regserve.server.models.statistics import Inference

__all__ = ["LinearModel", "MODEL_KINDS"]

logger = logging.getLogger(__name__)

MODEL_KINDS = ("linear", "ridge", "logistic")


class LinearModel:
    """A fitted linear regressor or logistic classifier.

    Parameters
    ----------
    kind : {"linear", "ridge", "logistic"}
    coef : ndarray of shape (n_outputs, n_features)
        Weights on the standardized features when ``mean``/``scale`` are
        given, else on the raw features.  ``n_outputs`` is 1 for regression
        and binary logistic (positive class ``classes[1]``), K for a
        multinomial model with K >= 3 classes.
    intercept : ndarray of shape (n_outputs,)
    mean, scale : ndarray of shape (n_features,), optional
        The z-score applied before ``coef``: ``z = (x - mean) / scale``.
    classes : sequence of str, optional
        Class labels, required for (and only for) ``kind="logistic"``.
    """

    def __init__(
        self,
        kind: str,
        coef: np.ndarray,
        intercept: np.ndarray,
        *,
        mean: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        classes: tuple[str, ...] | None = None,
    ) -> None:
        if (mean is None) != (scale is None):
            raise ValueError("mean and scale are given together or not at all")
        if (classes is None) == (kind == "logistic"):
            raise ValueError("classes are given for, and only for, a logistic model")
        self.kind = kind
        self.is_classifier = kind == "logistic"
        """True for logistic models."""
        self.coef_ = np.array(coef, dtype=np.float64, ndmin=2)
        self.intercept_ = np.array(intercept, dtype=np.float64, ndmin=1)
        self.mean_ = None if mean is None else np.array(mean, dtype=np.float64)
        self.scale_ = None if scale is None else np.array(scale, dtype=np.float64)
        self.classes_ = None if classes is None else tuple(str(c) for c in classes)
        self.inference: Inference | None = None
        """Covariances and fit statistics for tests and intervals (``statistics``), when the version has them."""
        # Fold the scaler in: w·(x - m)/s + b = (w/s)·x + (b - (m/s)·w).
        weights, bias = self.coef_, self.intercept_
        if self.scale_ is not None and self.mean_ is not None:
            weights = self.coef_ / self.scale_
            bias = self.intercept_ - weights @ self.mean_
        # Stored transposed and contiguous so X @ W needs no copy per call.
        self._weights = np.ascontiguousarray(weights.T)
        self._bias = np.ascontiguousarray(bias)
        self._row_shape = (self._weights.shape[0],)
        # A regression's single output as a vector and a 0-d array, for ``predict``: adding
        # a 0-d array to the answer costs half of adding a Python float.
        single = not self.is_classifier and self._weights.shape[1] == 1
        self._regression_weights = np.ascontiguousarray(self._weights[:, 0]) if single else None
        self._regression_bias = np.array(self._bias[0])  # read only when _regression_weights is set
        # A regression whose every weight is a non-zero finite number turns any NaN or
        # infinite input into a non-finite answer (inf times a non-zero weight stays
        # infinite, NaN stays NaN, and a finite bias cannot undo either): checking the
        # answer then checks the inputs too.
        self.answers_reveal_bad_inputs = (
            not self.is_classifier
            and bool(np.isfinite(self._weights).all() and np.isfinite(self._bias).all())
            and bool((self._weights != 0).all())
        )

    @property
    def n_features_in_(self) -> int:
        """Number of input columns ``predict`` expects."""
        return self.coef_.shape[1]

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw scores ``X @ W_eff + b_eff`` of shape (n_samples, n_outputs)."""
        self._check_features(X)
        scores = X @ self._weights
        scores += self._bias
        return scores

    def _check_features(self, X: np.ndarray) -> None:
        if X.shape[1:] != self._row_shape:  # one comparison: a 1-D or 3-D X differs too
            got = X.shape[1] if X.ndim == 2 else f"an array of {X.ndim} dimension(s)"
            expected = self._weights.shape[0]
            raise InvalidInput(
                f"The model expects {expected} features per row, got {got}.",
                reason="FEATURE_COUNT_MISMATCH",
                violations=[("inputs", f"expected {expected} features, got {got}")],
                metadata={"expected": expected, **({"actual": got} if X.ndim == 2 else {"dimensions": X.ndim})},
            )

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict for ``X`` of shape (n_samples, n_features).

        Returns an ndarray of shape (n_samples,), float64: the regression value,
        or for a classifier the index of the predicted class in ``classes_``.
        """
        if self._regression_weights is not None:
            if X.shape[1:] != self._row_shape:
                self._check_features(X)
            # One matrix-vector product and one scalar addition, cheaper than the general
            # (n, 1) form on a one-row Predict.  ``@`` rather than ``ndarray.dot``: dot
            # releases the GIL around every BLAS call, however small, and under load
            # getting it back costs a thread switch.
            return X @ self._regression_weights + self._regression_bias
        scores = self._decision_function(X)
        if not self.is_classifier:
            return scores[:, 0]
        if scores.shape[1] == 1:
            return (scores[:, 0] > 0).astype(np.float64)
        return np.argmax(scores, axis=1).astype(np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities of shape (n_samples, K), columns in ``classes_`` order."""
        return np.exp(self._predict_log_proba(X))

    def _predict_log_proba(self, X: np.ndarray) -> np.ndarray:
        """Log-probabilities of shape (n_samples, K), stable for large scores."""
        if not self.is_classifier:
            raise InvalidInput(
                "Probabilities are only defined for classifiers.",
                reason="NOT_A_CLASSIFIER",
                violations=[("model", f"a {self.kind} model has no class probabilities")],
            )
        scores = self._decision_function(X)
        if scores.shape[1] == 1:
            # log sigmoid(z) = -log(1 + e^-z); both columns from logaddexp, never 1 - p.
            z = scores[:, 0]
            return np.column_stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)])
        # log softmax(z) = z - max - log Σ exp(z - max).
        scores -= scores.max(axis=1, keepdims=True)
        scores -= np.log(np.exp(scores).sum(axis=1, keepdims=True))
        return scores

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Numeric arrays (and classes as a unicode array) for ``np.savez``.

        Keys: ``coef``, ``intercept``, and when present ``mean``, ``scale``,
        ``classes`` and the ``inference_*`` arrays.  No object arrays, so ``np.load(allow_pickle=False)`` works.
        """
        arrays = {"coef": self.coef_.copy(), "intercept": self.intercept_.copy()}
        if self.mean_ is not None and self.scale_ is not None:
            arrays["mean"] = self.mean_.copy()
            arrays["scale"] = self.scale_.copy()
        if self.classes_ is not None:
            arrays["classes"] = np.array(self.classes_, dtype=np.str_)
        if self.inference is not None:
            arrays.update(self.inference.to_arrays())
        return arrays

    @classmethod
    def from_arrays(cls, kind: str, arrays: Mapping[str, np.ndarray]) -> LinearModel:
        """Rebuild a model from ``to_arrays`` output, checking every shape.

        Raises
        ------
        IntegrityError
            ``reason="CORRUPT_MODEL"`` when the arrays do not describe a model.
        """
        try:
            return cls._from_checked_arrays(kind, arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise _corrupt(f"unreadable model arrays: {exc}") from exc

    @classmethod
    def _from_checked_arrays(cls, kind: str, arrays: Mapping[str, np.ndarray]) -> LinearModel:
        if kind not in MODEL_KINDS:
            raise _corrupt(f"unknown model kind {kind!r}")
        coef = np.asarray(arrays["coef"])
        intercept = np.asarray(arrays["intercept"])
        if coef.dtype.kind != "f" or intercept.dtype.kind != "f":
            raise _corrupt("coefficients are not floating point")
        if coef.ndim != 2 or coef.shape[1] < 1 or intercept.shape != (coef.shape[0],):
            raise _corrupt(f"coef {coef.shape} and intercept {intercept.shape} disagree")
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            raise _corrupt("non-finite coefficients")
        mean, scale = arrays.get("mean"), arrays.get("scale")
        if (mean is None) != (scale is None):
            raise _corrupt("mean and scale must be stored together")
        if mean is not None:
            mean, scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
            d = coef.shape[1]
            if mean.shape != (d,) or scale.shape != (d,):
                raise _corrupt(f"scaler shapes {mean.shape}, {scale.shape} for {d} features")
            if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
                raise _corrupt("scaler holds non-finite or non-positive values")
        stored_classes = arrays.get("classes")
        n_outputs = coef.shape[0]
        classes = None
        if kind == "logistic":
            if stored_classes is None or np.asarray(stored_classes).dtype.kind != "U":
                raise _corrupt("a logistic model needs its classes as a unicode array")
            classes = tuple(str(c) for c in np.asarray(stored_classes).ravel())
            expected = 1 if len(classes) == 2 else len(classes)
            if len(classes) < 2 or n_outputs != expected or len(set(classes)) != len(classes):
                raise _corrupt(f"{len(classes)} classes do not fit {n_outputs} output(s)")
        elif stored_classes is not None or n_outputs != 1:
            raise _corrupt(f"a {kind} model has one output and no classes")
        model = cls(kind, coef, intercept, mean=mean, scale=scale, classes=classes)
        model.inference = Inference.from_arrays(kind, arrays, coef.shape[1])
        return model

    def __repr__(self) -> str:
        extra = f", classes={list(self.classes_)}" if self.classes_ is not None else ""
        return f"LinearModel(kind={self.kind!r}, n_features={self.n_features_in_}{extra})"


def _corrupt(detail: str) -> IntegrityError:
    logger.warning("rejecting stored model: %s", detail)
    return IntegrityError(f"The stored model is corrupt: {detail}.", reason="CORRUPT_MODEL")
