"""The ``DriftReference`` of a trained version, from its spooled training rows.

Exact quantiles would need every training row in memory at once, so the bin edges
come from a bounded seeded sample of the training rows (at most ``EDGE_SAMPLE_ROWS``
rows and ``EDGE_SAMPLE_VALUES`` values, drawn without replacement by position, as the
validation sample is); a second pass over the spool then counts *every* training row
into those bins, takes their mean and standard deviation, and, for a classifier, the
class the fitted model predicts for each.  Both passes read the spool in blocks, so the
memory stays bounded whatever the number of rows.
"""

from __future__ import annotations

import numpy as np

from regserve.server.models.drift import BINS, DriftReference, bin_counts
from regserve.server.models.estimator import LinearModel
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
    model: LinearModel,
    n_train: int,
    n_features: int,
    seed: int,
    interrupt: Interrupt = uninterrupted,
) -> DriftReference:
    """The reference of ``model`` from the ``n_train`` training rows ``view`` yields (``rows``: [x, y, group])."""
    edges = _sample_edges(view, n_train, n_features, seed, interrupt)
    counts = np.zeros((n_features, BINS), dtype=np.int64)
    moments = Moments(n_features)
    classes = np.zeros(len(model.classes_), dtype=np.int64) if model.classes_ is not None else None
    for block in view.rows():
        interrupt()
        X = block[:, :n_features]
        counts += bin_counts(X, edges)
        moments.add(X)
        if classes is not None:
            classes += np.bincount(model.predict_proba(X).argmax(axis=1), minlength=classes.size)
    std = np.sqrt(np.maximum(np.diag(moments.comoment), 0.0) / max(moments.n, 1))
    proportions = counts / max(moments.n, 1)
    shares = None if classes is None else classes / max(int(classes.sum()), 1)
    return DriftReference(edges, proportions, moments.mean.copy(), std, shares)


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
    return np.ascontiguousarray(np.quantile(sample[:taken], quantiles, axis=0).T)
