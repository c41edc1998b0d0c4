"""Streaming Parquet files of training rows: one file, a directory of them, or a glob.

The files are read in a fixed order (sorted paths; a directory's files with a Parquet
suffix, in it and below, hidden and ``_``-prefixed ones left out), and each
file one row group at a time (``ParquetFile.read_row_group``), only the feature and
target columns.  So memory is bounded by a row group, not the file (``iter_batches``
was measured to hold more of a file the further it read), and a row's global index,
which sets its validation split and fold, is the same on every read.

Feature columns must hold numbers (integers and decimals are read as float64); a
classifier's target may be numbers (whole ones spelled as integers: 1.0 is the label "1", as
the client's numbers are), strings, bools (labels "True" and "False", as pandas prints them) or
a dictionary of those (pandas' ``category``).  A null or non-finite value, or in training rows one
past the ±1e150 training takes, is refused with its file, its 1-based row number in that file and its
column.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from typing import NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from regserve.server.datasets.arrow_arrays import numbers, row_major, texts
from regserve.server.datasets.row_chunks import (
    RowChunk,
    Table,
    rechunk,
    refuse_target_as_feature,
    require_utf8_name,
)
from regserve.server.errors import InvalidInput
from regserve.server.models.class_labels import whole_number_labels
from regserve.server.models.numeric import MAX_ABS_VALUE, trainable, untrainable

__all__ = ["columns", "default_features", "is_parquet", "parquet_files", "read_parquet"]

_SUFFIXES = (".parquet", ".parq", ".pq")


def is_parquet(source: str) -> bool:
    """Whether ``source`` names Parquet: a directory, a glob, or a file with a Parquet suffix."""
    return glob.has_magic(source) or os.path.isdir(source) or source.lower().endswith(_SUFFIXES)


_LEFT_OUT = (".", "_")
"""Beginnings of the names, of files and folders, a directory's listing leaves out."""


def in_directory(relative: str) -> bool:
    """Whether the file at ``relative`` (below a directory given as the data, ``/``-separated or the OS's) is one of its
    Parquet files: a Parquet suffix, in any case, and no part hidden or beginning with ``_``, as Spark's
    ``_SUCCESS`` and ``.crc`` files and pyarrow's own discovery leave out.  A README beside the files is no data."""
    parts = relative.replace(os.sep, "/").split("/")
    return relative.lower().endswith(_SUFFIXES) and not any(part.startswith(_LEFT_OUT) for part in parts)


def _below(directory: str) -> Iterator[str]:
    """The paths of the files in ``directory`` and below, not descending into folders ``in_directory`` leaves out."""
    for root, folders, names in os.walk(directory):
        folders[:] = [name for name in folders if not name.startswith(_LEFT_OUT)]
        yield from (os.path.join(root, name) for name in names)


def parquet_files(source: str) -> list[str]:
    """The files of ``source`` in reading order; InvalidInput when there are none."""
    if glob.has_magic(source):
        files = sorted(path for path in glob.glob(source, recursive=True) if os.path.isfile(path))
    elif os.path.isdir(source):
        files = sorted(path for path in _below(source) if in_directory(os.path.relpath(path, source)))
    else:
        files = [source] if os.path.exists(source) else []
    for path in files:  # a directory's or a glob's files may have names the source does not
        require_utf8_name(path)
    if not files:
        within = f" ({', '.join(_SUFFIXES)}; a glob names files of any name)" if os.path.isdir(source) else ""
        raise InvalidInput(
            f"no Parquet file at {source}{within}",
            reason="NO_INPUT_FILES",
            violations=[("file", f"matches no file: {source}")],
        )
    return files


def open_file(path: str, source=None) -> pq.ParquetFile:
    """``path`` as a ``pq.ParquetFile`` (read from ``source``, an open file, when given).

    InvalidInput UNREADABLE_FILE, naming the file, when it is not Parquet (empty, another format).
    """
    try:
        return pq.ParquetFile(path if source is None else source)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(
            f"{path} is not a Parquet file that can be read ({exc})",
            reason="UNREADABLE_FILE",
            violations=[("file", f"not readable as Parquet: {path}")],
            metadata={"file": path},
        ) from None


def columns(source: str) -> list[str]:
    """The column names of the first Parquet file of ``source``, whose order ``read_parquet`` follows."""
    return list(open_file(parquet_files(source)[0]).schema_arrow.names)


def default_features(schema: pa.Schema, target: str | None) -> list[str]:
    """The features when none are chosen: every column but the target and a pandas DataFrame's index.

    ``DataFrame.to_parquet`` writes any index but a plain range as columns (``__index_level_0__``),
    which pandas' metadata names: row labels, not features.
    """
    try:
        metadata = json.loads((schema.metadata or {}).get(b"pandas", b"{}"))
    except ValueError:
        metadata = None
    listed = metadata.get("index_columns") if isinstance(metadata, dict) else None  # another writer's may differ
    index = {name for name in listed if isinstance(name, str)} if isinstance(listed, list) else set()
    return [name for name in schema.names if name != target and name not in index]


def read_parquet(
    source: str,
    target: str | None = None,
    *,
    classifier: bool = False,
    chunk_rows: int = 65536,
    feature_columns: Sequence[str] | None = None,
) -> Table:
    """Open the Parquet file(s) of ``source`` for streaming in chunks of ``chunk_rows`` rows.

    The features are ``feature_columns``, else every column of the first file but the
    target, in its order.  Raises InvalidInput for a missing or non-numeric column.
    """
    files = parquet_files(source)
    first = open_file(files[0]).schema_arrow
    names = [field.name for field in first]
    if target is not None and target not in names:
        raise InvalidInput(
            f"{files[0]} has no column {target!r}; its columns are {', '.join(names)}",
            reason="UNKNOWN_TARGET_COLUMN",
            violations=[("target", f"not a column of the Parquet data: {target}")],
        )
    refuse_target_as_feature(target, feature_columns)
    features = list(feature_columns) if feature_columns else default_features(first, target)
    columns = features + ([target] if target is not None else [])
    total = 0
    for path in files:
        metadata = open_file(path).metadata
        schema = metadata.schema.to_arrow_schema()
        _check_schema(path, schema, features, target, classifier, None if feature_columns else files[0])
        total += metadata.num_rows
    read = [0]

    def pieces() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for path in files:
            row = 0
            with open_file(path) as parquet:
                for group in range(parquet.num_row_groups):
                    for batch in parquet.read_row_group(group, columns=columns).to_batches(max_chunksize=chunk_rows):
                        yield _arrays(batch, path, row, len(features), target is not None and classifier)
                        row += batch.num_rows
                        read[0] += batch.num_rows

    def chunks() -> Iterator[RowChunk]:
        yield from rechunk(pieces(), chunk_rows)

    return Table(features, chunks(), total, "rows", lambda: read[0])


def _check_schema(
    path: str, schema: pa.Schema, features: list[str], target: str | None, classifier: bool, first: str | None = None
) -> None:
    """InvalidInput unless ``schema`` has the columns, features numeric, the target as the kind needs.

    ``first`` names the file whose columns made ``features`` when none were chosen: then a
    column that file lacks is refused too, since it would otherwise be dropped unseen, and a
    column of it this file lacks is refused as the same difference (``COLUMNS_DIFFER``).
    """
    columns = [*features, *([target] if target is not None else [])]
    if first is not None and path != first:
        extra = [name for name in default_features(schema, target) if name not in features]
        missing = [name for name in columns if name not in schema.names]
        if extra or missing:
            # Either way round, one file holds a column the other lacks.
            name, has, lacks = (extra[0], path, first) if extra else (missing[0], first, path)
            raise InvalidInput(
                f"{has} has the column {name!r}, which {lacks} does not have; the features are the first "
                "file's columns, so give every file the same columns or choose the features with --feature-columns",
                reason="COLUMNS_DIFFER",
                violations=[("file", f"column {name!r} of {has} is not in {lacks}")],
                metadata={"file": path, "column": name, "first_file": first},
            )
    for name in columns:
        if name not in schema.names:
            raise InvalidInput(
                f"{path} has no column {name!r}; its columns are {', '.join(schema.names)}",
                reason="UNKNOWN_FEATURE_COLUMN" if name != target else "UNKNOWN_TARGET_COLUMN",
                violations=[("feature_columns" if name != target else "target", f"not a column of {path}: {name}")],
            )
        kind = schema.field(name).type
        if name == target:
            readable = _holds_labels(kind) if classifier else _numeric(kind)
        else:
            readable = _feature(kind)
        if not readable:
            raise InvalidInput(
                f"column {name!r} of {path} holds {kind}, not numbers",
                reason="NON_NUMERIC_COLUMN",
                violations=[(name, f"{kind} in {path}")],
                metadata={"file": path, "column": name, "type": str(kind)},
            )


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _feature(kind: pa.DataType) -> bool:
    """Whether a feature column of ``kind`` reads as numbers: booleans too, as 0 and 1 (``pandas.get_dummies``'
    columns, which the client reads the same way)."""
    return _numeric(kind) or pa.types.is_boolean(kind)


def _holds_labels(kind: pa.DataType) -> bool:
    """Whether a classifier's labels can be read from a column of ``kind``: numbers, strings, bools, or a
    dictionary (pandas' ``category``) of them."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return _numeric(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_boolean(kind)


_EXACT_INTEGERS = 2**53
"""Integers of at most this size are exact in float64, so they travel as numeric targets."""


def _labels(column: pa.Array) -> np.ndarray:
    """A label column, shape (n,): integers and whole floats of at most 2**53 as int64 and float64 (sent
    as numbers, which the server spells as integers, as it does here and for the client's numbers),
    anything else as str: other numbers spelled as the server spells numbers (a fraction as NumPy
    prints it), a dictionary's values, and a bool as "True"/"False" as pandas prints it.

    A batch may go as numbers and the next as text: ``rechunk`` spells the numbers of a chunk
    that holds both."""
    if pa.types.is_integer(column.type):
        values = numbers(column, column.type.to_pandas_dtype())
        if len(values) == 0 or max(abs(int(values.min())), abs(int(values.max()))) <= _EXACT_INTEGERS:
            return values.astype(np.int64, copy=False)
    if pa.types.is_floating(column.type):
        values = numbers(column, column.type.to_pandas_dtype())
        whole = values == np.round(values)
        if whole.all() and (len(values) == 0 or float(np.abs(values).max()) <= _EXACT_INTEGERS):
            return values.astype(np.float64, copy=False)
        # Spelled one by one as the server spells numbers, so 1.0 is "1" here as in a batch sent as numbers.
        spelled = values.astype(np.str_).astype(object)
        spelled[whole] = whole_number_labels(values[whole]).astype(object)
        return spelled.astype(np.str_)
    return texts(column)


def _arrays(
    batch: pa.RecordBatch, path: str, first_row: int, d: int, labels: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """A batch's features (n, d) as float64 and target (n,), refusing nulls, non-finite values and magnitudes
    past ``MAX_ABS_VALUE``, each named by file, row and column (the server could only count rows across files)."""
    values: list[np.ndarray] = []
    # Rows with a target are training rows, held to the magnitudes training takes; Predict takes any finite value.
    training = len(batch.columns) > d
    for j, column in enumerate(batch.columns):
        if column.null_count:
            _refuse(batch, j, path, first_row, column.is_null().to_numpy(zero_copy_only=False), "empty")
        if labels and j == d:
            break
        values.append(numbers(column))
        if not (trainable(values[-1]) if training else np.isfinite(values[-1]).all()):
            _refuse_values(batch, j, path, first_row, values[-1], training)
    X = row_major(values[:d], batch.num_rows)
    if len(batch.columns) == d:
        return X, None
    if not labels:
        return X, values[d]
    target = batch.column(d)
    if pa.types.is_floating(target.type) and not np.isfinite(floats := numbers(target)).all():
        _refuse(batch, d, path, first_row, ~np.isfinite(floats), "non-finite")
    named = _labels(target)
    if named.dtype.kind == "U" and (empty := named == "").any():
        # Named here by file and row: the server could only count rows across every file.
        _refuse(batch, d, path, first_row, empty, "empty label")
    return X, named


_FAULTS = {
    "empty": ("the value is null", "empty value"),
    "non-finite": ("not finite", "non-finite value"),
    "empty label": ("the class label is empty", "empty label"),
    "too large": ("", "value too large"),
}
"""A fault's words in the message and in the field violation."""


def _refuse_values(
    batch: pa.RecordBatch, j: int, path: str, first_row: int, values: np.ndarray, bounded: bool
) -> NoReturn:
    """``_refuse`` for the first value of column ``j`` that is not finite or, when ``bounded``, lies past
    ±``MAX_ABS_VALUE``."""
    bad = untrainable(values) if bounded else ~np.isfinite(values)
    value = float(values[int(np.argmax(bad))])
    if not np.isfinite(value):
        _refuse(batch, j, path, first_row, bad, "non-finite")
    said = f"{value:g} lies past ±{MAX_ABS_VALUE:g}, the largest magnitude training takes"
    _refuse(batch, j, path, first_row, bad, "too large", said)


def _refuse(
    batch: pa.RecordBatch, j: int, path: str, first_row: int, bad: np.ndarray, problem: str, said: str = ""
) -> NoReturn:
    """InvalidInput naming the first row of column ``j`` that ``bad`` marks: MALFORMED_PARQUET, or
    VALUE_TOO_LARGE (the server's reason for the same refusal) for a magnitude past the bound."""
    row = first_row + int(np.argmax(bad)) + 1
    name = batch.schema.names[j]
    default, violation = _FAULTS[problem]
    raise InvalidInput(
        f"{path}, row {row}, column {name!r}: {said or default}",
        reason="VALUE_TOO_LARGE" if problem == "too large" else "MALFORMED_PARQUET",
        violations=[(name, f"{path} row {row}: {violation}")],
        metadata={"file": path, "row": row, "column": name, "problem": problem},
    )
