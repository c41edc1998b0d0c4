"""Reading back the spool file, where ``Trainer`` writes every row as little-endian float64.

The iterative solvers and the metrics read it in blocks of bounded size, each next
block read ahead while the one before is used, so a pass holds two blocks at most.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import numpy as np

from regserve.server.models.executors import ahead

__all__ = ["SpoolFile", "SpoolView", "block_rows"]

_READ_BLOCK = 65_536  # most spooled rows read back at a time
_READER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="regserve-spool-read")
"""Reads the spool's next block ahead (``SpoolView.rows``); two, for two trainings finishing at once."""
BLOCK_BYTES = 16 * 1024 * 1024
"""Budget of one block read back: its rows' columns plus one score per output, as float64.

Below glibc's largest mmap threshold (32 MiB), a freed block's memory is reused for the
next; each 64 MiB block was a fresh mapping whose pages the kernel zeroed first, about
a tenth of the closed form's finish phase."""


def block_rows(n_columns: int, n_outputs: int = 1) -> int:
    """Rows per block of a spool of ``n_columns`` columns, read for a model of ``n_outputs`` outputs."""
    return max(1, min(_READ_BLOCK, BLOCK_BYTES // (8 * (n_columns + n_outputs))))


class SpoolFile:
    """The spool file as a read-only array of shape (n_rows, n_columns), read a slice at a time.

    Each slice reads only the rows it asks for into a new array, so the memory
    of one block is released before the next is read.  A read copies the pages
    straight from the page cache: mapping them (``np.memmap``) and copying them
    out took up to twice as long, most of it in page faults.
    """

    def __init__(self, path: str, shape: tuple[int, int]) -> None:
        self.path, self.shape = path, shape
        self._row_bytes = shape[1] * 8

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        if stop <= start:
            return np.empty((0, self.shape[1]))
        block = np.empty((stop - start, self.shape[1]), dtype="<f8")
        target = block.data.cast("B")
        with open(self.path, "rb", buffering=0) as spool:
            spool.seek(start * self._row_bytes)
            done = 0
            while done < target.nbytes:
                got = spool.readinto(target[done:])
                if not got:
                    raise OSError(f"the spool file {self.path} ends before row {stop}")
                done += got
        return block

    def every(self, stride: int) -> np.ndarray:
        """Rows 0, ``stride``, 2·``stride``, … as a new array.

        Mapped rather than read: a sample of one row in several touches every page
        but copies only the rows it takes, where reading copies every row first.
        The file is mapped one window of whole strides at a time, so no more of it
        than a read block is ever mapped (a mapped page counts in the process's
        resident memory).
        """
        n, columns = self.shape
        window = max(1, BLOCK_BYTES // (self._row_bytes * stride)) * stride
        taken = [np.empty((0, columns))]
        for start in range(0, n, window):
            rows = min(window, n - start)
            mapped = np.memmap(self.path, dtype="<f8", mode="r", offset=start * self._row_bytes, shape=(rows, columns))
            try:
                taken.append(np.array(mapped[::stride]))  # a window starts on a stride: its rows are global ones
            finally:
                mapped._mmap.close()  # type: ignore[attr-defined]  # now, not when the collector finds it
        return np.concatenate(taken)


class SpoolView:
    """The spooled rows of some groups, as the ``BlockSource`` the solvers read.

    Spool rows are ``[x (d), y or label id, group]``; validation rows carry
    group -1, training rows their fold.  ``groups`` None means every row, read
    without looking at its group.
    """

    def __init__(
        self,
        spool: SpoolFile | np.ndarray,
        groups: list[int] | None,
        shift: np.ndarray | float,
        scale: np.ndarray | float,
        n: int,
        label_map: np.ndarray | None,
        *,
        n_outputs: int = 1,
    ) -> None:
        self._spool = spool
        self._groups = None if groups is None else np.array(groups, dtype=np.float64)
        self._shift, self._scale, self.n, self._label_map = shift, scale, n, label_map
        self._block = block_rows(spool.shape[1], n_outputs)

    def rows(self, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Spool rows ``[x, y or label id, group]`` of the chosen groups, in blocks, blocks in ``order``.

        A spool file's next block is read in another thread while the caller works on this one.
        """
        starts = np.arange(0, self._spool.shape[0], self._block)
        if order is not None:
            starts = starts[order]
        slices = [slice(start, start + self._block) for start in starts.tolist()]
        blocks: Iterator[np.ndarray] = (np.asarray(self._spool[rows]) for rows in slices)
        if isinstance(self._spool, SpoolFile):
            blocks = ahead(_READER, blocks)  # the file is read with the GIL released
        for block in blocks:
            if self._groups is not None:
                chosen = np.isin(block[:, -1], self._groups)
                if not chosen.all():  # a block wholly chosen (no split, no folds) needs no copy
                    block = block[chosen]
            if block.shape[0]:
                yield block

    def raw_blocks(self, order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Unscaled ``(X, y)`` blocks of the chosen groups, blocks in ``order``."""
        for block in self.rows(order):
            yield self.xy(block)

    def raw_every(self, stride: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Unscaled ``(X, y)`` of rows 0, ``stride``, 2·``stride``, … without a pass over the others.

        None when only some groups are chosen: which rows those are is only known by reading them all.
        """
        if self._groups is not None:
            return None
        spool = self._spool
        rows = spool.every(stride) if isinstance(spool, SpoolFile) else np.array(spool[::stride])
        X, y = self.xy(rows)
        return np.ascontiguousarray(X), y

    def xy(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unscaled ``(X, y)`` of spool rows ``block``: views, but for class indices mapped from label ids."""
        y = block[:, -2]
        if self._label_map is not None:
            y = self._label_map[y.astype(np.intp)]
        return block[:, :-2], y

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Standardized ``(Z, y)`` blocks in spool order."""
        return self._scaled(self.raw_blocks())

    def shuffled_blocks(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Blocks in random order, rows shuffled within each: a full shuffle up to
        # one block of rows and bounded memory beyond.
        n_blocks = -(-self._spool.shape[0] // self._block)
        for Z, y in self._scaled(self.raw_blocks(rng.permutation(n_blocks))):
            order = rng.permutation(y.shape[0])
            yield Z[order], y[order]

    def _scaled(self, blocks: Iterator[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for X, y in blocks:
            Z = X - self._shift
            Z /= self._scale  # in place: one temporary per block, not two
            yield Z, y
