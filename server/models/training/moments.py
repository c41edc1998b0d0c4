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

    def add(self, V: np.ndarray) -> None:
        """Fold in rows ``V`` of shape (m, p): two-pass moments of the block, then a merge."""
        if V.shape[0] == 0:
            return
        block = Moments(V.shape[1])
        block.n, block.mean = V.shape[0], V.mean(axis=0)
        centred = V - block.mean
        block.comoment = centred.T @ centred
        block.min, block.max = V.min(axis=0), V.max(axis=0)
        self.merge(block)

    def merge(self, other: Moments) -> None:
        # Chan et al.: C = C_a + C_b + δδᵀ·n_a·n_b/n, mean = m_a + δ·n_b/n, δ = m_b - m_a.
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.comoment = self.comoment + other.comoment + np.outer(delta, delta) * (self.n * other.n / n)
        self.mean = self.mean + delta * (other.n / n)
        self.n = n
        self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)

    @classmethod
    def combined(cls, parts: list[Moments]) -> Moments:
        """A new ``Moments`` holding the merge of ``parts`` (at least one); the parts are left as they are."""
        total = cls(parts[0].mean.size)
        for part in parts:
            total.merge(part)
        return total
