"""The report's charts, each drawn on its own matplotlib ``Figure`` and returned as PNG bytes.

Figures are made without ``pyplot``, so no global backend or figure registry is touched:
``Figure.savefig`` renders PNG with the Agg canvas whatever backend is configured.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from matplotlib.figure import Figure

from regserve.server.report.data import ServingRow

__all__ = [
    "calibration_chart",
    "coefficient_chart",
    "confusion_chart",
    "qq_chart",
    "residual_histogram",
    "residuals_vs_fitted",
    "roc_chart",
    "roc_curve",
    "serving_charts",
]

_SIZE = (6.4, 4.2)
_DPI = 100
_CALIBRATION_BINS = 10


def _figure(size: tuple[float, float] = _SIZE) -> Figure:
    return Figure(figsize=size, dpi=_DPI, layout="constrained")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No Software entry: the same data draws the same bytes whatever matplotlib release drew them.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def coefficient_chart(
    feature_names: Sequence[str], coefficients: np.ndarray, classes: Sequence[str], standardized: bool
) -> bytes:
    """Horizontal bars of each feature's coefficient, one group per output (class) of the model."""
    outputs, features = coefficients.shape
    figure = _figure((6.4, max(2.5, 0.9 + 0.32 * features * max(1, min(outputs, 3)))))
    axes = figure.subplots()
    positions = np.arange(features)
    height = 0.8 / outputs
    labels = list(classes) if len(classes) == outputs else [f"output {k}" for k in range(outputs)]
    for k in range(outputs):
        offset = (k - (outputs - 1) / 2) * height
        axes.barh(positions + offset, coefficients[k], height=height, label=labels[k] if outputs > 1 else None)
    axes.set_yticks(positions, list(feature_names))
    axes.invert_yaxis()
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("coefficient on the standardized feature" if standardized else "coefficient")
    axes.set_title("Coefficients")
    if outputs > 1:
        axes.legend(fontsize="small")
    return _png(figure)


def residuals_vs_fitted(fitted: np.ndarray, residuals: np.ndarray) -> bytes:
    """Scatter of residuals (target - prediction) against the predictions, with the zero line."""
    figure = _figure()
    axes = figure.subplots()
    axes.scatter(fitted, residuals, s=10, alpha=0.6)
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("fitted value (the server's prediction)")
    axes.set_ylabel("residual (target - prediction)")
    axes.set_title("Residuals against fitted values")
    return _png(figure)


def residual_histogram(residuals: np.ndarray) -> bytes:
    """Histogram of the residuals."""
    figure = _figure()
    axes = figure.subplots()
    axes.hist(residuals, bins=min(40, max(5, int(np.sqrt(residuals.size)))), edgecolor="white")
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("residual (target - prediction)")
    axes.set_ylabel("rows")
    axes.set_title("Residual histogram")
    return _png(figure)


def qq_chart(residuals: np.ndarray) -> bytes:
    """Normal Q-Q plot: the standardized residuals, sorted, against normal quantiles (Blom's positions)."""
    n = residuals.size
    spread = float(residuals.std())
    standardized = np.sort((residuals - residuals.mean()) / (spread if spread > 0 else 1.0))
    normal = NormalDist()
    theoretical = np.array([normal.inv_cdf((i + 1 - 0.375) / (n + 0.25)) for i in range(n)])
    figure = _figure()
    axes = figure.subplots()
    axes.scatter(theoretical, standardized, s=10, alpha=0.6)
    low, high = float(theoretical[0]), float(theoretical[-1])
    axes.plot([low, high], [low, high], color="black", linewidth=0.8)
    axes.set_xlabel("normal quantile")
    axes.set_ylabel("standardized residual")
    axes.set_title("Normal Q-Q plot of the residuals")
    return _png(figure)


def confusion_chart(true: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> bytes:
    """The confusion matrix of the sample: true classes as rows, predicted classes as columns, with counts."""
    k = len(classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (true.astype(np.intp), predicted.astype(np.intp)), 1)
    figure = _figure((max(4.0, 1.2 + 0.6 * k), max(3.5, 1.0 + 0.5 * k)))
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, label="rows")
    if k <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(k):
            for j in range(k):
                colour = "white" if matrix[i, j] > threshold else "black"
                axes.text(j, i, str(matrix[i, j]), ha="center", va="center", color=colour, fontsize="small")
    axes.set_xticks(range(k), list(classes), rotation=45, ha="right")
    axes.set_yticks(range(k), list(classes))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix")
    return _png(figure)


def _one_vs_rest(classes: Sequence[str]) -> list[int]:
    """The classes drawn one against the rest: the positive class alone for two classes."""
    return [1] if len(classes) == 2 else list(range(len(classes)))


def calibration_chart(true: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> bytes:
    """Reliability curves: per class, the share of rows of that class against the mean predicted
    probability, in ten equal-width bins of the probability (empty bins left out)."""
    figure = _figure()
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--", label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, _CALIBRATION_BINS + 1)
    for k in _one_vs_rest(classes):
        scores, positive = probabilities[:, k], true == k
        bins = np.clip(np.digitize(scores, edges[1:-1]), 0, _CALIBRATION_BINS - 1)
        counts = np.bincount(bins, minlength=_CALIBRATION_BINS)
        filled = counts > 0
        mean_score = np.bincount(bins, weights=scores, minlength=_CALIBRATION_BINS)[filled] / counts[filled]
        share = np.bincount(bins, weights=positive, minlength=_CALIBRATION_BINS)[filled] / counts[filled]
        axes.plot(mean_score, share, marker="o", label=str(classes[k]))
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("share of rows of the class")
    axes.set_title("Calibration (one class against the rest)")
    axes.legend(fontsize="small")
    return _png(figure)


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """False and true positive rates at every distinct threshold of ``scores``, and the area under them.

    ``positive`` is boolean; both classes must be present.
    """
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, hits = scores[order], positive[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(sorted_scores)), hits.size - 1]
    true_positives = np.cumsum(hits)[last_of_each]
    false_positives = last_of_each + 1 - true_positives
    tpr = np.r_[0.0, true_positives / hits.sum()]
    fpr = np.r_[0.0, false_positives / (hits.size - hits.sum())]
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return fpr, tpr, area


def roc_chart(true: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> tuple[bytes, dict[str, float]]:
    """ROC curves, one per class against the rest, and each class's area under its curve.

    A class absent from the sample, or the only one in it, has no curve.
    """
    figure = _figure()
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--", label="chance")
    areas: dict[str, float] = {}
    for k in _one_vs_rest(classes):
        positive = true == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, area = roc_curve(positive, probabilities[:, k])
        areas[str(classes[k])] = area
        axes.plot(fpr, tpr, label=f"{classes[k]} (AUC {area:.3f})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC curves (one class against the rest)")
    axes.legend(fontsize="small", loc="lower right")
    return _png(figure), areas


def serving_charts(rows: Sequence[ServingRow]) -> tuple[bytes, bytes]:
    """Requests (with errors) per version, and latency mean, p50 and p99 per version."""
    versions = [row.version for row in rows]
    positions = np.arange(len(rows))
    requests = _figure()
    axes = requests.subplots()
    answered = [row.requests - row.errors for row in rows]
    axes.bar(positions, answered, label="answered")
    axes.bar(positions, [row.errors for row in rows], bottom=answered, label="failed")
    axes.set_xticks(positions, versions)
    axes.set_xlabel("version")
    axes.set_ylabel("requests")
    axes.set_title("Requests per version")
    axes.legend(fontsize="small")
    latency = _figure()
    axes = latency.subplots()
    width = 0.27
    for i, (label, values) in enumerate(
        (
            ("mean", [row.latency_mean_ms for row in rows]),
            ("p50", [row.latency_p50_ms for row in rows]),
            ("p99", [row.latency_p99_ms for row in rows]),
        )
    ):
        axes.bar(positions + (i - 1) * width, values, width=width, label=label)
    axes.set_xticks(positions, versions)
    axes.set_xlabel("version")
    axes.set_ylabel("latency (ms)")
    axes.set_title("Latency per version")
    axes.legend(fontsize="small")
    return _png(requests), _png(latency)
