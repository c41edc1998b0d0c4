"""Streamed moments: count, mean, centred comoment, min and max, merged block by block."""

from __future__ import annotations

import numpy as np

__all__ = ["Moments"]


class Moments:
    """Count, mean, centred comoment (Σ(v-m)(v-m)ᵀ), min and max of vectors of length p."""

    def __init__(self, p: int) -> None:
        self.n = 0
        self.mean = np.zeros(p)
        self.comoment = np.zeros((p, p))
        self.min = np.full(p, np.inf)
        self.max = np.full(p, -np.inf)

    def add(self, V: np.ndarray, scratch: np.ndarray | None = None) -> None:
        """Fold in rows ``V`` of shape (m, p): two-pass moments of the block, then a merge.

        ``scratch``, a 1-D float64 array of at least m·p values, takes the centred rows in
        place of a new array: subtracting into memory already touched is several times
        faster than into a fresh array of a chunk's size.
        """
        if V.shape[0] == 0:
            return
        mean = V.mean(axis=0)
        if scratch is None:
            centred = V - mean
        else:
            centred = np.subtract(V, mean, out=scratch[: V.size].reshape(V.shape))
        self._merge(V.shape[0], mean, centred.T @ centred, V.min(axis=0), V.max(axis=0))

    def merge(self, other: Moments) -> None:
        """Fold in the moments of other rows; ``other`` is left as it is."""
        if other.n:
            self._merge(other.n, other.mean, other.comoment, other.min, other.max)

    def _merge(self, n_b: int, mean_b: np.ndarray, comoment_b: np.ndarray, min_b, max_b) -> None:
        # Chan et al.: C = C_a + C_b + δδᵀ·n_a·n_b/n, mean = m_a + δ·n_b/n, δ = m_b - m_a.
        # In place, so a merge of p × p moments needs one more p × p array, not three.
        n = self.n + n_b
        delta = mean_b - self.mean
        self.comoment += comoment_b
        spread = np.outer(delta, delta)
        spread *= self.n * n_b / n
        self.comoment += spread
        self.mean = self.mean + delta * (n_b / n)
        self.n = n
        self.min, self.max = np.minimum(self.min, min_b), np.maximum(self.max, max_b)

    @classmethod
    def combined(cls, parts: list[Moments]) -> Moments:
        """A new ``Moments`` holding the merge of ``parts`` (at least one); the parts are left as they are."""
        total = cls(parts[0].mean.size)
        for part in parts:
            total.merge(part)
        return total
