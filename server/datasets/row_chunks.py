"""Rows of a data file as the chunks that are streamed: features, target, and where they start."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from regserve.server.errors import InvalidInput
from regserve.server.models.class_labels import whole_number_labels

__all__ = ["RowChunk", "Table", "printable_path", "rechunk", "refuse_target_as_feature", "require_utf8_name"]


@dataclass(frozen=True)
class RowChunk:
    """Rows ``first_row``.. (0-based, counted over the whole input) of a data file.

    features : ndarray of shape (n_rows, n_features), float64
    target : ndarray of shape (n_rows,): float64 for a regressor, str for a classifier;
        None when no target column was asked for
    """

    first_row: int
    features: np.ndarray
    target: np.ndarray | None


def rechunk(pieces: Iterable[tuple[np.ndarray, np.ndarray | None]], chunk_rows: int) -> Iterator[RowChunk]:
    """Chunks of ``chunk_rows`` rows (the last may be shorter) from pieces of any size, in order.

    Raises ValueError when ``chunk_rows`` is below 1.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be 1 or more, not {chunk_rows}")
    held: list[tuple[np.ndarray, np.ndarray | None]] = []
    count = first = 0

    def joined() -> RowChunk:
        X = np.concatenate([p[0] for p in held]) if len(held) > 1 else held[0][0]
        targets = [p[1] for p in held if p[1] is not None]
        if any(t.dtype.kind == "U" for t in targets):
            # Numbers beside text: spelled as the server spells them (1.0 is "1", not NumPy's "1.0").
            targets = [t if t.dtype.kind == "U" else whole_number_labels(t) for t in targets]
        target = None if held[0][1] is None else np.concatenate(targets)
        return RowChunk(first, X, target)

    for X, y in pieces:
        start = 0
        while start < X.shape[0]:
            take = min(chunk_rows - count, X.shape[0] - start)
            held.append((X[start : start + take], None if y is None else y[start : start + take]))
            count, start = count + take, start + take
            if count == chunk_rows:
                yield joined()
                held, count, first = [], 0, first + chunk_rows
    if count:
        yield joined()


def printable_path(path: str) -> str:
    """``path`` as text any message can carry: bytes of a name that is not UTF-8 as escapes (``\\xe9``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def require_utf8_name(path: str) -> str:
    """``path``, or InvalidInput ``FILE_NAME_NOT_UTF8`` when its name is not UTF-8, which pyarrow cannot open."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = printable_path(path)
        raise InvalidInput(
            f"{shown} has a name that is not UTF-8, and pyarrow, which reads the files, opens only UTF-8 names; "
            "rename the file, or link it under a UTF-8 name (ln -s)",
            reason="FILE_NAME_NOT_UTF8",
            violations=[("file", f"not a UTF-8 name: {shown}")],
        ) from None
    return path


def refuse_target_as_feature(target: str | None, feature_columns: Sequence[str] | None) -> None:
    """InvalidInput ``TARGET_AS_FEATURE`` when the chosen feature columns name the target."""
    if target is not None and feature_columns and target in feature_columns:
        raise InvalidInput(
            f"{target!r} is the target, so it cannot also be a feature column; leave it out of the feature columns",
            reason="TARGET_AS_FEATURE",
            violations=[("feature_columns", f"names the target column: {target}")],
        )


@dataclass
class Table:
    """A data file opened for streaming: its feature names, its chunks, and how far reading has gone.

    ``size`` is the whole input in ``unit`` (``"B"`` for bytes, ``"rows"``) and
    ``done()`` how much of it has been read, for a progress bar.
    """

    feature_names: list[str]
    chunks: Iterator[RowChunk]
    size: int
    unit: str
    done: Callable[[], int]
