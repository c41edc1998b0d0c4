"""Reading back the spool file, where ``Trainer`` writes every row as little-endian float64.

The iterative solvers and the metrics read it in blocks of bounded size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["SpoolFile", "SpoolView"]

_READ_BLOCK = 65_536  # spooled rows read back at a time


class SpoolFile:
    """The spool file as a read-only array of shape (n_rows, n_columns), mapped a window at a time.

    Each slice maps only the rows it asks for and copies them out, so the pages
    of one block are released before the next is read: one map of the whole
    file would keep every page it touched resident until the end.
    """

    def __init__(self, path: str, shape: tuple[int, int]) -> None:
        self.path, self.shape = path, shape
        self._row_bytes = shape[1] * 8

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        if stop <= start:
            return np.empty((0, self.shape[1]))
        window = np.memmap(
            self.path, dtype="<f8", mode="r", offset=start * self._row_bytes, shape=(stop - start, self.shape[1])
        )
        block = np.array(window)
        del window
        return block


class SpoolView:
    """The spooled rows of some groups, as the ``BlockSource`` the solvers read.

    Spool rows are ``[x (d), y or label id, group]``; validation rows carry
    group -1, training rows their fold.
    """

    def __init__(
        self,
        spool: SpoolFile | np.ndarray,
        groups: list[int],
        shift: np.ndarray | float,
        scale: np.ndarray | float,
        n: int,
        label_map: np.ndarray | None,
    ) -> None:
        self._spool, self._groups = spool, np.array(groups, dtype=np.float64)
        self._shift, self._scale, self.n, self._label_map = shift, scale, n, label_map

    def raw_blocks(self, order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Unscaled ``(X, y)`` blocks of the chosen groups, blocks in ``order``."""
        starts = np.arange(0, self._spool.shape[0], _READ_BLOCK)
        for start in starts if order is None else starts[order]:
            block = np.asarray(self._spool[start : start + _READ_BLOCK])
            block = block[np.isin(block[:, -1], self._groups)]
            if block.shape[0] == 0:
                continue
            y = block[:, -2]
            if self._label_map is not None:
                y = self._label_map[y.astype(np.intp)]
            yield block[:, :-2], y

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Standardized ``(Z, y)`` blocks in spool order."""
        return self._scaled(self.raw_blocks())

    def shuffled_blocks(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Blocks in random order, rows shuffled within each: a full shuffle up to
        # 65,536 rows and bounded memory beyond.
        n_blocks = -(-self._spool.shape[0] // _READ_BLOCK)
        for Z, y in self._scaled(self.raw_blocks(rng.permutation(n_blocks))):
            order = rng.permutation(y.shape[0])
            yield Z[order], y[order]

    def _scaled(self, blocks: Iterator[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for X, y in blocks:
            yield (X - self._shift) / self._scale, y
