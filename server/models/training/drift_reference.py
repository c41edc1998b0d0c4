"""The ``DriftReference`` of a trained version: its edges sampled during intake, its bins counted in one pass.

Exact quantiles would need every training row in memory at once, so the bin edges
come from a bounded sample of the training rows, at most ``EDGE_SAMPLE_ROWS`` rows and
``EDGE_SAMPLE_VALUES`` values.  ``EdgeSample`` draws it while the rows arrive: it keeps
the training rows whose SplitMix64 draw of (seed, global row index) is smallest (a
bottom-k sample, ``sampling.row_keys``), so the sample is the same rows however the
stream is chunked, and a run with fewer training rows than the bound keeps them all.
``DriftCounts`` then counts *every* training row into those bins, block by block in
the finish phase's one pass over the spool, so the memory stays bounded whatever the
number of rows.  The mean and standard deviation come from the training rows'
moments, and a classifier's predicted classes from its training confusion matrix: the
trainer has both already.
"""

from __future__ import annotations

import numpy as np

from regserve.server.models.drift import BINS, DriftReference, bin_counts
from regserve.server.models.training.moments import Moments
from regserve.server.models.training.sampling import DRIFT_EDGE_STREAM, row_keys

__all__ = ["EDGE_SAMPLE_ROWS", "EDGE_SAMPLE_VALUES", "DriftCounts", "EdgeSample", "build_drift_reference"]

EDGE_SAMPLE_ROWS = 100_000
"""The most training rows the bin edges are drawn from: quantiles to within a fraction of a percent."""
EDGE_SAMPLE_VALUES = 10_000_000
"""The most feature values held for the edges (80 MB of float64), whatever the feature count."""

_NO_KEY = np.iinfo(np.uint64).max


class EdgeSample:
    """The training rows with the smallest draws of (``seed``, global row index), at most ``capacity`` of them."""

    def __init__(self, seed: int, n_features: int) -> None:
        self.seed, self.n_features = seed, n_features
        self.capacity = max(1, min(EDGE_SAMPLE_ROWS, EDGE_SAMPLE_VALUES // max(1, n_features)))
        self.size = 0
        self._keys = np.empty(self.capacity, dtype=np.uint64)
        # Pages of np.empty are only mapped once written, so a small run holds only the rows it keeps.
        self._rows = np.empty((self.capacity, n_features))
        self._threshold = _NO_KEY  # no kept row has a larger draw, once the sample is full

    def add(self, first_row: int, X: np.ndarray, training: np.ndarray | None = None) -> None:
        """Offer rows ``X`` (m, n_features) from global row ``first_row``; only those where ``training`` is True."""
        keys = row_keys(self.seed, DRIFT_EDGE_STREAM, first_row, X.shape[0])
        wanted = keys <= self._threshold
        if training is not None:
            wanted &= training
        chosen = np.flatnonzero(wanted)
        if chosen.size == 0:
            return
        keys = keys[chosen]
        free = self.capacity - self.size
        if keys.size <= free:
            self._keys[self.size : self.size + keys.size] = keys
            self._rows[self.size : self.size + keys.size] = X[chosen]
            self.size += keys.size
        else:
            # Keep the capacity smallest of the kept and offered draws; offered rows take the dropped rows' slots.
            merged = np.concatenate([self._keys[: self.size], keys])
            smallest = np.argpartition(merged, self.capacity - 1)[: self.capacity]
            taken = smallest[smallest >= self.size] - self.size
            kept = np.zeros(self.size, dtype=bool)
            kept[smallest[smallest < self.size]] = True
            slots = np.concatenate([np.flatnonzero(~kept), np.arange(self.size, self.capacity)])
            self._keys[slots] = keys[taken]
            self._rows[slots] = X[chosen[taken]]
            self.size = self.capacity
        if self.size == self.capacity:
            self._threshold = self._keys.max()

    @property
    def rows(self) -> np.ndarray:
        """The rows kept, (size, n_features), in no particular order."""
        return self._rows[: self.size]

    def edges(self) -> np.ndarray:
        """Inner decile edges per feature, shape (n_features, BINS - 1), from the rows kept."""
        quantiles = np.arange(1, BINS) / BINS
        sample = np.array(self.rows.T, order="C")  # a copy always: it is partitioned in place
        n = sample.shape[1]
        position = quantiles * (n - 1)  # np.quantile's "linear" method: between order statistics lo and lo + 1
        lo = np.floor(position).astype(np.intp)
        hi = np.minimum(lo + 1, n - 1)
        # One in-place partition along the transpose's contiguous rows, where np.quantile partitions a copy down
        # its first axis: about 2.5 times faster on 100,000 x 50.  The order statistics it leaves in place
        # are then interpolated by np.quantile itself on each pair, so the edges are the same to the bit.
        sample.partition(np.unique(np.concatenate([lo, hi])), axis=1)
        edges = np.empty((sample.shape[0], quantiles.size))
        for i in range(quantiles.size):
            pair = np.stack([sample[:, lo[i]], sample[:, hi[i]]], axis=1)
            edges[:, i] = np.quantile(pair, position[i] - lo[i], axis=1)
        return edges


class DriftCounts:
    """Training rows per bin of each feature, folded in block by block."""

    def __init__(self, edges: np.ndarray, n_columns: int) -> None:
        """``edges`` of the first ``edges.shape[0]`` of the ``n_columns`` columns of the blocks ``update`` takes."""
        self.edges = edges
        d = edges.shape[0]
        # The blocks' other columns are binned against zeros and dropped: cheaper than copying out the features.
        self._padded = np.zeros((n_columns, BINS - 1))
        self._padded[:d] = edges
        self.counts = np.zeros((d, BINS), dtype=np.int64)

    def update(self, rows: np.ndarray) -> None:
        """Count ``rows`` (m, n_columns), a C-contiguous block whose first columns are the features."""
        self.counts += bin_counts(rows, self._padded)[: self.counts.shape[0]]


def build_drift_reference(counts: DriftCounts, moments: Moments, confusion: np.ndarray | None = None) -> DriftReference:
    """The reference of the training rows ``counts`` counted, whose moments (of [x] or [x, y]) are ``moments``.

    ``confusion`` is a classifier's (K, K) confusion matrix on those rows (true classes
    by row, predicted by column); None for a regression.
    """
    n_train, d = moments.n, counts.counts.shape[0]
    classes = None if confusion is None else np.asarray(confusion, dtype=np.float64).sum(axis=0)
    variance = np.diag(moments.comoment)[:d] / max(n_train, 1)
    std = np.sqrt(np.maximum(variance, 0.0))
    proportions = counts.counts / max(n_train, 1)
    shares = None if classes is None else classes / max(int(classes.sum()), 1)
    return DriftReference(counts.edges, proportions, moments.mean[:d].copy(), std, shares)
