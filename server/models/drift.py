"""What a version keeps of its training rows to tell when live rows no longer look like them.

``DriftReference`` holds, per feature, the inner edges of quantile bins drawn from the
training rows, the share of training rows in each bin, and the training mean and standard
deviation; for a classifier, also the share of training rows the model assigns to each
class.  It travels in the version's ``weights.npz`` as plain float arrays (``to_arrays``,
``from_arrays``), so it is covered by the checksum and loaded without pickle.

``bin_counts`` tallies rows into those bins, ``psi`` compares two distributions over the
same bins (the population stability index).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["BINS", "DRIFT_KEYS", "PSI_FLOOR", "DriftReference", "bin_counts", "psi"]

BINS = 10
"""Quantile bins per feature: deciles of the training rows."""
PSI_FLOOR = 1e-4
"""The least share a bin counts with in ``psi``, so an empty bin adds a bounded term rather than infinity."""
DRIFT_KEYS = ("drift_edges", "drift_proportions", "drift_mean", "drift_std", "drift_class_proportions")


@dataclass(frozen=True)
class DriftReference:
    """The training side of drift detection for one version.

    edges : ndarray of shape (n_features, BINS - 1)
        Inner bin edges per feature, non-decreasing; bin ``i`` holds ``edges[i-1] <= x < edges[i]``.
    proportions : ndarray of shape (n_features, BINS)
        Share of training rows in each bin; each row sums to 1.
    mean, std : ndarray of shape (n_features,)
        Training mean and (population) standard deviation of each feature.
    class_proportions : ndarray of shape (n_classes,), or None
        Share of training rows the model predicts as each class; None for a regression.
    """

    edges: np.ndarray
    proportions: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    class_proportions: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return int(self.edges.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store beside the model, under ``DRIFT_KEYS``."""
        arrays = dict(zip(DRIFT_KEYS[:4], (self.edges, self.proportions, self.mean, self.std), strict=True))
        if self.class_proportions is not None:
            arrays[DRIFT_KEYS[4]] = self.class_proportions
        return {key: np.ascontiguousarray(value, dtype=np.float64) for key, value in arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], n_features: int) -> DriftReference | None:
        """The reference stored in a version's ``arrays``; None when it has none or it does not fit the model.

        Versions stored before drift detection, or from fitted parameters, have none:
        drift is then not computed for them.
        """
        edges, proportions, mean, std = (arrays.get(key) for key in DRIFT_KEYS[:4])
        classes = arrays.get(DRIFT_KEYS[4])
        if edges is None or proportions is None or mean is None or std is None:
            return None
        shapes_fit = (
            edges.shape == (n_features, BINS - 1)
            and proportions.shape == (n_features, BINS)
            and mean.shape == std.shape == (n_features,)
            and (classes is None or classes.ndim == 1)
        )
        if not shapes_fit or any(a.dtype.kind != "f" for a in (edges, proportions, mean, std)):
            return None
        return cls(edges, proportions, mean, std, classes)


_SIDE_BY_SIDE = 64
"""Rows ``bin_counts`` compares at once as one long row."""
_WIDE_VALUES = 50_000
"""Values from which laying rows side by side pays for its fixed cost per edge."""


def bin_counts(X: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows per bin of each feature: shape (n_features, BINS), for X of shape (n_rows, n_features).

    A value's bin is the number of its feature's edges at or below it (``searchsorted``
    with ``side="right"``).  A small block counts it by one vectorised comparison per
    edge, about twice as fast as a ``searchsorted`` per column, then one ``bincount``
    over every feature's bins.  A large one (``_WIDE_VALUES`` values or more) uses that
    ``edges`` are non-decreasing along each feature: the rows in bin ``i`` are those at
    or above edge ``i - 1`` less those at or above edge ``i``, counted by one comparison
    per edge over ``_SIDE_BY_SIDE`` rows laid side by side (a view of the C-contiguous
    rows), so each comparison and column sum runs along one long row rather than many
    rows of ``n_features`` values: over twice as fast again.
    """
    n, d = X.shape
    if X.size < _WIDE_VALUES:
        index = np.zeros((n, d), dtype=np.uint8)
        for k in range(edges.shape[1]):
            index += X >= edges[:, k]
        flat = index + np.arange(0, d * BINS, BINS, dtype=np.intp)
        return np.bincount(flat.ravel(), minlength=d * BINS).reshape(d, BINS)
    X = np.ascontiguousarray(X)
    whole = n - n % _SIDE_BY_SIDE
    wide = X[:whole].reshape(whole // _SIDE_BY_SIDE, d * _SIDE_BY_SIDE)
    rest = X[whole:]
    above = np.empty(wide.shape, dtype=bool)
    flags = above.view(np.uint8)
    at_least = np.empty((BINS + 1, d), dtype=np.int64)  # at_least[i]: values at or above edge i - 1
    at_least[0], at_least[BINS] = n, 0
    for k in range(BINS - 1):
        np.greater_equal(wide, np.tile(edges[:, k], _SIDE_BY_SIDE), out=above)
        wide_count = np.zeros(wide.shape[1], dtype=np.int64)
        # Column sums in bytes over at most 255 rows at a time, which cannot wrap: several times faster
        # than a boolean sum, which casts every value to a wide integer on the way.
        for start in range(0, flags.shape[0], 255):
            wide_count += np.add.reduce(flags[start : start + 255], axis=0, dtype=np.uint8)
        at_least[k + 1] = wide_count.reshape(_SIDE_BY_SIDE, d).sum(axis=0) + (rest >= edges[:, k]).sum(axis=0)
    return np.ascontiguousarray((at_least[:-1] - at_least[1:]).T)


def psi(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Population stability index of ``actual`` against ``expected`` over the last axis.

    Both are shares (or counts, normalised here) per bin; Σ (a - e)·ln(a / e), with every
    share floored at ``PSI_FLOOR``.  Shape: that of the inputs without their last axis.
    """
    e = np.maximum(_shares(expected), PSI_FLOOR)
    a = np.maximum(_shares(actual), PSI_FLOOR)
    return ((a - e) * np.log(a / e)).sum(axis=-1)


def _shares(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
