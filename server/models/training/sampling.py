"""Seeded draws that assign each row to the validation split or a cross-validation fold.

The draws are indexed by a row's *global* number and generated in fixed seeded
blocks, so the assignment does not depend on how the stream was chunked.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RowGroups", "SeededDraws"]

_SPLIT_BLOCK = 4096  # rows per seeded draw of the validation split
_FOLD_WINDOWS = 1024  # windows of cv_folds training rows per seeded fold draw


class SeededDraws:
    """Per-row draws indexed by a global ordinal, generated in fixed seeded blocks."""

    def __init__(self, draw, block_len: int) -> None:
        self._draw, self._len = draw, block_len
        self._cached: tuple[int, np.ndarray] = (-1, np.empty(0))  # (block, its draws); no block is -1

    def take(self, start: int, count: int) -> np.ndarray:
        """The draws of ordinals ``start`` to ``start + count - 1``, shape (count,)."""
        parts, stop = [], start + count
        while start < stop:
            block, offset = divmod(start, self._len)
            if self._cached[0] != block:
                self._cached = (block, self._draw(block))
            n = min(stop - start, self._len - offset)
            parts.append(self._cached[1][offset : offset + n])
            start += n
        return np.concatenate(parts) if parts else np.empty(0)


class RowGroups:
    """The group of each row: -1 for the validation split, else its training fold in ``0..n_folds-1``.

    Row ``i`` is held out when ``default_rng([seed, 0, i // 4096]).random(4096)[i % 4096]``
    is below ``validation_fraction``; the training rows, in order, then take their folds.
    """

    def __init__(self, seed: int, validation_fraction: float, n_folds: int) -> None:
        k = n_folds
        self._held_out = SeededDraws(lambda b: np.random.default_rng([seed, 0, b]).random(_SPLIT_BLOCK), _SPLIT_BLOCK)
        # Each window of k consecutive training rows gets a permutation of the folds,
        # so every fold is used as soon as k training rows exist.
        self._folds = SeededDraws(
            lambda b: (
                np.random.default_rng([seed, 1, b]).permuted(np.tile(np.arange(k), (_FOLD_WINDOWS, 1)), axis=1).ravel()
            ),
            _FOLD_WINDOWS * k,
        )
        self._fraction = validation_fraction

    def take(self, first_row: int, first_training_row: int, n: int) -> tuple[np.ndarray, int]:
        """Groups of the ``n`` rows from global row ``first_row``, as float64 of shape (n,), and how many train.

        ``first_training_row`` counts the training rows before them, which sets their folds.
        """
        held_out = self._held_out.take(first_row, n) < self._fraction
        group = np.full(n, -1.0)
        n_train = int(n - held_out.sum())
        group[~held_out] = self._folds.take(first_training_row, n_train)
        return group, n_train
