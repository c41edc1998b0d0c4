"""The bounded, seeded sample of validation rows stored with each trained version.

A report on a version plots what the served model answers on rows it was not fitted on;
the validation split itself may be any size, so at most ``SAMPLE_ROWS`` of its rows and
at most ``SAMPLE_VALUES`` feature values are kept.  The rows are drawn without
replacement by their position in the validation split, from the training seed, so the
same rows trained again, however chunked, keep the same sample.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SAMPLE_ROWS", "SAMPLE_VALUES", "SampleDraw", "sample_size"]

SAMPLE_ROWS = 2000
"""The most validation rows stored with a version."""
SAMPLE_VALUES = 250_000
"""The most feature values stored with a version (2 MB of float64), whatever its feature count."""


def sample_size(n_validation: int, n_features: int) -> int:
    """How many of ``n_validation`` rows of ``n_features`` features the sample keeps."""
    return max(0, min(n_validation, SAMPLE_ROWS, SAMPLE_VALUES // max(1, n_features)))


class SampleDraw:
    """The sampled validation rows, picked from the validation rows fed to ``update`` in spool order.

    ``n_validation`` rows will be fed in all; ``result()`` gives ``(X, y)`` of the
    sampled ones, in spool order, shapes (k, n_features) and (k,), ``y`` the target or,
    for a classifier, the class index.
    """

    def __init__(self, n_validation: int, n_features: int, seed: int) -> None:
        k = sample_size(n_validation, n_features)
        self._X, self._y = np.empty((k, n_features)), np.empty(k)
        # A generator of its own from the seed, apart from the split's and the folds' SplitMix64 draws (``sampling``).
        picks = np.random.default_rng([seed, 2]).choice(n_validation, size=k, replace=False) if k else np.empty(0)
        self._picks = np.sort(picks).astype(np.int64)
        self._offset = self._taken = 0

    def update(self, X: np.ndarray, y: np.ndarray) -> None:
        """Feed the next validation rows ``X`` (m, n_features) and ``y`` (m,)."""
        stop = self._offset + X.shape[0]
        taken = self._taken
        chosen = self._picks[taken : np.searchsorted(self._picks, stop)] - self._offset
        self._X[taken : taken + chosen.size] = X[chosen]
        self._y[taken : taken + chosen.size] = y[chosen]
        self._taken += chosen.size
        self._offset = stop

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self._X, self._y
