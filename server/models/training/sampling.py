"""The validation split and the cross-validation folds, as a function of each row's global index and the seed.

A row's group depends on nothing but its 0-based position in the whole data set and
the training seed: not on how the rows were chunked, nor on any row before it.  So a
process that holds only rows ``i..j`` (a later chunk, another worker's partition)
assigns them exactly as a single pass over the whole stream does.

The draws are SplitMix64 (Steele, Lea and Flood, 2014), vectorised in NumPy: the
``i``-th output of a generator seeded with a key derived from the seed, which is a
bijective mix of ``key + (i + 1)·γ``, so no state passes from one row to the next.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DRIFT_EDGE_STREAM", "RowGroups", "row_keys", "row_uniforms", "splitmix64"]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MASK = (1 << 64) - 1
_SPLIT_STREAM, _FOLD_STREAM = 0, 1
DRIFT_EDGE_STREAM = 2
"""The stream of the drift reference's edge sample (``drift_reference.EdgeSample``)."""


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function of each uint64 in ``x`` (wrapping arithmetic), same shape."""
    z = np.asarray(x, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _key(seed: int, stream: int) -> np.uint64:
    """The generator key of one stream (split or folds) of ``seed``."""
    mixed = splitmix64(np.array([seed & _MASK], dtype=np.uint64))[0]
    return splitmix64(np.array([mixed ^ np.uint64(stream)], dtype=np.uint64))[0]


def _row_hashes(key: np.uint64, first_row: int, n: int) -> np.ndarray:
    """The uint64 draws of rows ``first_row..first_row+n-1`` of the generator ``key``, shape (n,)."""
    rows = np.arange(first_row + 1, first_row + n + 1, dtype=np.uint64)
    return splitmix64(key + rows * _GAMMA)


def row_keys(seed: int, stream: int, first_row: int, n: int) -> np.ndarray:
    """The uint64 draws of stream ``stream`` of ``seed`` for the ``n`` rows from global row ``first_row``, shape (n,).

    Distinct rows get distinct draws: the mix is a bijection of distinct states.
    """
    return _row_hashes(_key(seed, stream), first_row, n)


def row_uniforms(seed: int, first_row: int, n: int) -> np.ndarray:
    """The split's uniform draw in [0, 1) of each of the ``n`` rows from global row ``first_row``, float64 (n,)."""
    top53 = _row_hashes(_key(seed, _SPLIT_STREAM), first_row, n) >> np.uint64(11)
    return top53.astype(np.float64) * 2.0**-53


class RowGroups:
    """The group of each row: -1 for the validation split, else its training fold in ``0..n_folds-1``.

    Row ``i`` is held out when ``row_uniforms(seed, i, 1)`` is below ``validation_fraction``.
    The rows fall in windows of ``n_folds`` consecutive global indices; within a window
    the folds are dealt by the rank of each row's fold draw, so without a validation
    split every fold holds ``n // n_folds`` or one more rows.
    """

    def __init__(self, seed: int, validation_fraction: float, n_folds: int) -> None:
        self._seed, self._fraction, self._k = seed, validation_fraction, n_folds
        self._fold_key = _key(seed, _FOLD_STREAM)

    def take(self, first_row: int, n: int) -> tuple[np.ndarray, int]:
        """Groups of the ``n`` rows from global row ``first_row``, as float64 of shape (n,), and how many train."""
        held_out = row_uniforms(self._seed, first_row, n) < self._fraction
        group = self.folds(first_row, n).astype(np.float64)
        group[held_out] = -1.0
        return group, int(n - held_out.sum())

    def folds(self, first_row: int, n: int) -> np.ndarray:
        """The fold each of the ``n`` rows from ``first_row`` takes when it trains, int64 of shape (n,)."""
        k = self._k
        if k == 1 or n == 0:
            return np.zeros(n, dtype=np.int64)
        start = first_row // k * k
        windows = -(-(first_row + n - start) // k)
        draws = _row_hashes(self._fold_key, start, windows * k).reshape(windows, k)
        ranks = np.argsort(np.argsort(draws, axis=1, kind="stable"), axis=1, kind="stable")
        return ranks.ravel()[first_row - start : first_row - start + n].astype(np.int64)
