"""The bounded, seeded sample of validation rows stored with each trained version.

A report on a version plots what the served model answers on rows it was not fitted on;
the validation split itself may be any size, so at most ``SAMPLE_ROWS`` of its rows and
at most ``SAMPLE_VALUES`` feature values are kept.  The rows are drawn without
replacement by their position in the validation split, from the training seed, so the
same rows trained again, however chunked, keep the same sample.
"""

from __future__ import annotations

import numpy as np

from regserve.server.models.interrupt import Interrupt, uninterrupted
from regserve.server.models.training.spool import SpoolView

__all__ = ["SAMPLE_ROWS", "SAMPLE_VALUES", "draw_sample", "sample_size"]

SAMPLE_ROWS = 2000
"""The most validation rows stored with a version."""
SAMPLE_VALUES = 250_000
"""The most feature values stored with a version (2 MB of float64), whatever its feature count."""


def sample_size(n_validation: int, n_features: int) -> int:
    """How many of ``n_validation`` rows of ``n_features`` features the sample keeps."""
    return max(0, min(n_validation, SAMPLE_ROWS, SAMPLE_VALUES // max(1, n_features)))


def draw_sample(
    view: SpoolView, n_validation: int, n_features: int, seed: int, interrupt: Interrupt = uninterrupted
) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of the sampled validation rows of ``view``, in spool order.

    ``view`` yields the validation rows (``raw_blocks``), ``n_validation`` of them; ``y``
    is the target, or for a classifier the class index.  Shapes (k, n_features) and (k,).
    """
    k = sample_size(n_validation, n_features)
    X, y = np.empty((k, n_features)), np.empty(k)
    if k == 0:
        return X, y
    # A generator of its own from the seed, apart from the split's and the folds' SplitMix64 draws (``sampling``).
    picks = np.sort(np.random.default_rng([seed, 2]).choice(n_validation, size=k, replace=False))
    offset = taken = 0
    for block_X, block_y in view.raw_blocks():
        interrupt()
        stop = offset + block_X.shape[0]
        chosen = picks[taken : np.searchsorted(picks, stop)] - offset
        X[taken : taken + chosen.size] = block_X[chosen]
        y[taken : taken + chosen.size] = block_y[chosen]
        taken += chosen.size
        offset = stop
        if taken == k:
            break
    return X, y
