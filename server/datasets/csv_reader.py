"""Reading CSV files of training or prediction rows in bounded chunks.

A malformed file raises ``InvalidInput`` (reason ``MALFORMED_CSV``) naming the line.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from regserve.server.errors import InvalidInput

__all__ = ["CsvChunk", "InvalidInput", "read_csv_chunks"]


@dataclass(frozen=True)
class CsvChunk:
    """Rows ``first_line``.. of a CSV file.

    features : ndarray of shape (n_rows, n_features), float64
    target : ndarray of shape (n_rows,) of str, or None when no target column was asked for
    """

    first_line: int
    features: np.ndarray
    target: np.ndarray | None

    def targets(self, classifier: bool) -> np.ndarray:
        """The target column as a classifier's string labels, or as a regressor's float64 values."""
        if self.target is None:
            raise ValueError("this chunk was read without a target column")
        if classifier:
            return self.target
        try:
            return self.target.astype(np.float64)
        except ValueError:
            raise InvalidInput(
                f"a non-numeric target in lines {self.first_line}-{self.first_line + len(self.target) - 1}; "
                "a regression target must be a number (train a classifier with --kind logistic)",
                reason="MALFORMED_CSV",
                violations=[("csv", f"non-numeric target near line {self.first_line}")],
            ) from None


def read_csv_chunks(
    stream: Iterable[str], target: str | None = None, chunk_rows: int = 65536
) -> tuple[list[str], Iterator[CsvChunk]]:
    """Read a CSV with a header line; return the feature names and an iterator of chunks.

    The ``target`` column, when named, is returned as strings (a classifier's
    labels or a regressor's numbers); every other column must be numeric.
    """
    reader = csv.reader(stream)
    header = [name.strip() for name in next(reader, [])]
    if not header:
        raise InvalidInput("the CSV file is empty", reason="EMPTY_CSV", violations=[("csv", "no header line")])
    if target is not None and target not in header:
        raise InvalidInput(
            f"the CSV has no column {target!r}; its columns are {', '.join(header)}",
            reason="UNKNOWN_TARGET_COLUMN",
            violations=[("target", f"not a column of the CSV: {target}")],
        )
    target_index = header.index(target) if target is not None else None
    feature_columns = [i for i in range(len(header)) if i != target_index]
    names = [header[i] for i in feature_columns]

    def chunks() -> Iterator[CsvChunk]:
        line = 2
        while rows := list(itertools.islice(reader, chunk_rows)):
            try:
                cells = np.array(rows, dtype=np.str_)
            except ValueError:
                raise InvalidInput(
                    f"a row near line {line} has the wrong number of columns (expected {len(header)})",
                    reason="MALFORMED_CSV",
                    violations=[("csv", f"ragged row near line {line}")],
                ) from None
            if cells.ndim != 2 or cells.shape[1] != len(header):
                raise InvalidInput(
                    f"rows from line {line} do not have {len(header)} columns",
                    reason="MALFORMED_CSV",
                    violations=[("csv", f"expected {len(header)} columns from line {line}")],
                )
            try:
                features = cells[:, feature_columns].astype(np.float64)
            except ValueError:
                raise InvalidInput(
                    f"non-numeric feature value in lines {line}-{line + len(rows) - 1}",
                    reason="MALFORMED_CSV",
                    violations=[("csv", f"non-numeric feature near line {line}")],
                ) from None
            labels = cells[:, target_index] if target_index is not None else None
            yield CsvChunk(line, features, labels)
            line += len(rows)

    return names, chunks()
