"""Regression and classification metrics in pure NumPy.

Two layers:

* pure functions on whole arrays (``mean_squared_error``, ``log_loss``,
  ``confusion_matrix``, ...), checked against ``sklearn.metrics`` in the tests;
* small tallies (``RegressionTally``, ``ClassificationTally``) that fold the
  same quantities block by block, so the trainer can score a data set that
  never sits in memory at once.  Their ``result()`` is JSON-ready: plain
  Python floats and ints, with ``None`` where a value is undefined;
* ``ModelScores``, a model's tally fed rows: what the trainer and the Dask
  path's partitions score with.

Classification inputs are class *indices* ``0..K-1`` into the model's
``classes_``; labels only appear in the reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from regserve.server.models.estimator import LinearModel

__all__ = [
    "ClassificationTally",
    "ModelScores",
    "RegressionTally",
    "accuracy_score",
    "confusion_matrix",
    "log_loss",
    "mean_absolute_error",
    "mean_squared_error",
    "precision_recall_f1",
    "r2_score",
]


def mean_squared_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean of ``(y_true - y_pred)**2``; both of shape (n_samples,)."""
    r = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return float(np.dot(r, r) / r.size)


def mean_absolute_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean of ``|y_true - y_pred|``; both of shape (n_samples,)."""
    r = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return float(np.abs(r).mean())


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination ``1 - SSE/SST``; NaN when ``y_true`` is constant."""
    y_true = np.asarray(y_true, dtype=np.float64)
    r = y_true - np.asarray(y_pred, dtype=np.float64)
    centred = y_true - y_true.mean()
    sst = float(np.dot(centred, centred))
    return 1.0 - float(np.dot(r, r)) / sst if sst > 0 else math.nan


def accuracy_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of equal entries; class indices of shape (n_samples,)."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean ``-log p[i, y_true[i]]``, probabilities clipped to ``[eps, 1-eps]``.

    ``y_true`` holds class indices (n_samples,), ``proba`` is (n_samples, K)
    with rows summing to one.  Matches ``sklearn.metrics.log_loss``.
    """
    y_true = np.asarray(y_true, dtype=np.intp)
    eps = np.finfo(np.float64).eps
    p = np.clip(np.asarray(proba, dtype=np.float64), eps, 1 - eps)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.log(p[np.arange(y_true.size), y_true]).mean())


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of shape (K, K): rows are true classes, columns predicted ones."""
    flat = np.asarray(y_true, dtype=np.intp) * n_classes + np.asarray(y_pred, dtype=np.intp)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def precision_recall_f1(confusion: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class precision, recall, F1 and support from a (K, K) confusion matrix.

    A ratio whose denominator is zero is reported as 0, as scikit-learn's
    ``zero_division="warn"`` does.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    return precision, recall, f1, support.astype(np.int64)


def _finite_or_none(value: float) -> float | None:
    # JSON has no NaN or infinity; an undefined metric is reported as null.
    return float(value) if math.isfinite(value) else None


class RegressionTally:
    """Folds (y_true, y_pred) blocks into MSE, RMSE, MAE and R².

    The target's spread for R² is merged with Chan et al.'s pairwise update,
    so the result does not depend on how the rows were split into blocks
    beyond rounding.
    """

    def __init__(self) -> None:
        self.n = 0
        self._sse = 0.0
        self._sae = 0.0
        self._mean = 0.0
        self._m2 = 0.0

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Add a block; both arrays of shape (n_block,)."""
        nb = y_true.size
        if nb == 0:
            return
        r = y_true - y_pred
        self._sse += float(np.dot(r, r))
        self._sae += float(np.abs(r).sum())
        mean_b = float(y_true.mean())
        centred = y_true - mean_b
        m2_b = float(np.dot(centred, centred))
        n = self.n + nb
        delta = mean_b - self._mean
        # Chan et al.: M2 = M2_a + M2_b + delta² · n_a · n_b / n.
        self._m2 += m2_b + delta * delta * self.n * nb / n
        self._mean += delta * nb / n
        self.n = n

    def merge(self, other: RegressionTally) -> None:
        """Add the blocks ``other`` has folded, as if they had been folded here."""
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other._mean - self._mean
        self._sse += other._sse
        self._sae += other._sae
        self._m2 += other._m2 + delta * delta * self.n * other.n / n
        self._mean += delta * other.n / n
        self.n = n

    def result(self) -> dict[str, float | None]:
        """``{"mse", "rmse", "mae", "r2"}``; all ``None`` for an empty tally."""
        if self.n == 0:
            return {"mse": None, "rmse": None, "mae": None, "r2": None}
        mse = self._sse / self.n
        r2 = 1.0 - self._sse / self._m2 if self._m2 > 0 else math.nan
        return {
            "mse": _finite_or_none(mse),
            "rmse": _finite_or_none(math.sqrt(mse)),
            "mae": _finite_or_none(self._sae / self.n),
            "r2": _finite_or_none(r2),
        }


class ClassificationTally:
    """Folds (y_true, log-probability) blocks into accuracy, log-loss and a confusion matrix.

    Taking log-probabilities (computed stably from the decision values) keeps
    the log-loss exact where a probability underflows to zero.
    """

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)
        self.n = 0
        self._nll = 0.0
        self._confusion = np.zeros((len(self.labels), len(self.labels)), dtype=np.int64)

    def update(self, y_true: np.ndarray, log_proba: np.ndarray) -> None:
        """Add a block: class indices (n_block,) and log-probabilities (n_block, K)."""
        if y_true.size == 0:
            return
        y_true = y_true.astype(np.intp, copy=False)
        self._nll -= float(log_proba[np.arange(y_true.size), y_true].sum())
        pred = np.argmax(log_proba, axis=1)
        self._confusion += confusion_matrix(y_true, pred, len(self.labels))
        self.n += y_true.size

    def update_binary(self, y_true: np.ndarray, z: np.ndarray) -> None:
        """Add a block of a two-class model from its decision values ``z`` (n_block,), P(class 1) = σ(z).

        The same log-loss as ``update`` on ``log σ(∓z)``, from one ``logaddexp`` instead of two, and the
        class predicted as the model's ``predict`` has it, z > 0.
        """
        if y_true.size == 0:
            return
        positive = y_true.astype(np.intp, copy=False) == 1
        self._nll += float(np.logaddexp(0.0, np.where(positive, -z, z)).sum())
        self._confusion += confusion_matrix(positive, z > 0, 2)
        self.n += y_true.size

    def merge(self, other: ClassificationTally) -> None:
        """Add the blocks ``other`` (over the same labels) has folded, as if they had been folded here."""
        if other.labels != self.labels:
            raise ValueError("tallies over different classes cannot be merged")
        self._nll += other._nll
        self._confusion += other._confusion
        self.n += other.n

    def result(self) -> dict[str, object]:
        """``{"accuracy", "log_loss", "per_class", "confusion_matrix"}``."""
        if self.n == 0:
            return {"accuracy": None, "log_loss": None, "per_class": [], "confusion_matrix": []}
        precision, recall, f1, support = precision_recall_f1(self._confusion)
        per_class = [
            {
                "label": label,
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, label in enumerate(self.labels)
        ]
        return {
            "accuracy": float(np.trace(self._confusion) / self.n),
            "log_loss": _finite_or_none(self._nll / self.n),
            "per_class": per_class,
            "confusion_matrix": self._confusion.tolist(),
        }


class ModelScores:
    """A model's metrics on rows fed block by block: ``update(X, y)``, ``merge``, then ``result()``.

    ``y`` holds targets for a regressor and class indices for a classifier.
    """

    def __init__(self, model: LinearModel) -> None:
        self._model = model
        self._tally = RegressionTally() if model.classes_ is None else ClassificationTally(model.classes_)

    def update(self, X: np.ndarray, y: np.ndarray) -> None:
        if isinstance(self._tally, ClassificationTally):
            if self._model.coef_.shape[0] == 1:  # one decision value per row: P(second class) = σ(z)
                self._tally.update_binary(y, self._model._decision_function(X)[:, 0])
            else:
                self._tally.update(y, self._model._predict_log_proba(X))
        else:
            self._tally.update(y, self._model.predict(X))

    def merge(self, other: ModelScores) -> None:
        """Add the rows ``other``, the scores of the same model, has folded in."""
        self._tally.merge(other._tally)  # type: ignore[arg-type]  # both tallies are of one model

    def result(self) -> dict:
        return self._tally.result()
