"""The ``DriftReference`` of a trained version, from its spooled training rows.

Exact quantiles would need every training row in memory at once, so the bin edges
come from a bounded seeded sample of the training rows (at most ``EDGE_SAMPLE_ROWS``
rows and ``EDGE_SAMPLE_VALUES`` values, drawn without replacement by position, as the
validation sample is); a second pass over the spool then counts *every* training row
into those bins.  Both passes read the spool in blocks, so the memory stays bounded
whatever the number of rows.  The mean and standard deviation come from the training
rows' moments, and a classifier's predicted classes from its training confusion matrix:
the trainer has both already.
"""

from __future__ import annotations

import numpy as np

from regserve.server.models.drift import BINS, DriftReference, bin_counts
from regserve.server.models.interrupt import Interrupt, uninterrupted
from regserve.server.models.training.moments import Moments
from regserve.server.models.training.spool import SpoolView

__all__ = ["EDGE_SAMPLE_ROWS", "EDGE_SAMPLE_VALUES", "build_drift_reference"]

EDGE_SAMPLE_ROWS = 100_000
"""The most training rows the bin edges are drawn from: quantiles to within a fraction of a percent."""
EDGE_SAMPLE_VALUES = 10_000_000
"""The most feature values held for the edges (80 MB of float64), whatever the feature count."""


def build_drift_reference(
    view: SpoolView,
    moments: Moments,
    n_features: int,
    seed: int,
    confusion: np.ndarray | None = None,
    interrupt: Interrupt = uninterrupted,
) -> DriftReference:
    """The reference of the training rows ``view`` yields (``rows``: [x, y, group]).

    ``moments`` are those rows' moments, of [x] or [x, y]: their first ``n_features``
    give the mean and the standard deviation.  ``confusion`` is a classifier's (K, K)
    confusion matrix on those rows (true classes by row, predicted by column); None
    for a regression.
    """
    n_train = moments.n
    edges = _sample_edges(view, n_train, n_features, seed, interrupt)
    counts = np.zeros((n_features, BINS), dtype=np.int64)
    for block in view.rows():
        interrupt()
        counts += bin_counts(block[:, :n_features], edges)
    classes = None if confusion is None else np.asarray(confusion, dtype=np.float64).sum(axis=0)
    variance = np.diag(moments.comoment)[:n_features] / max(n_train, 1)
    std = np.sqrt(np.maximum(variance, 0.0))
    proportions = counts / max(n_train, 1)
    shares = None if classes is None else classes / max(int(classes.sum()), 1)
    return DriftReference(edges, proportions, moments.mean[:n_features].copy(), std, shares)


def _sample_edges(view: SpoolView, n_train: int, n_features: int, seed: int, interrupt: Interrupt) -> np.ndarray:
    """Inner decile edges per feature, shape (n_features, BINS - 1), from a seeded sample of the training rows."""
    k = max(1, min(n_train, EDGE_SAMPLE_ROWS, EDGE_SAMPLE_VALUES // max(1, n_features)))
    # A generator of its own from the seed, apart from the split's, the folds' and the validation sample's draws.
    picks = np.sort(np.random.default_rng([seed, 3]).choice(n_train, size=k, replace=False))
    sample = np.empty((k, n_features))
    offset = taken = 0
    for block in view.rows():
        interrupt()
        stop = offset + block.shape[0]
        chosen = picks[taken : np.searchsorted(picks, stop)] - offset
        sample[taken : taken + chosen.size] = block[chosen, :n_features]
        taken += chosen.size
        offset = stop
    quantiles = np.arange(1, BINS) / BINS
    # Along contiguous rows of the transpose: partitioning down the columns of the sample is slower.
    return np.quantile(np.ascontiguousarray(sample[:taken].T), quantiles, axis=1).T.copy()
