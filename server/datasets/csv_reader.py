"""Streaming a CSV file of training or prediction rows through pyarrow, naming a bad row by its line.

``pyarrow.csv.open_csv`` parses the file in blocks of at most ``BLOCK_BYTES`` and converts
the cells to float64 as it goes, so memory stays bounded whatever the file's size; a UTF-8
byte-order mark, CRLF, quoted fields (also over several lines) and blank lines are its
own business.  The file has a header line; every column but the target is a feature
unless ``feature_columns`` names them, and only those and the target are converted; a first
column without a name (the index pandas writes) is not a feature.

A feature column whose first block holds only booleans (pandas writes a ``bool`` column,
``get_dummies``' among them, as True/False), or whose first cell is True or False, is read as
1 and 0, as the Parquet reader and the client read booleans.

A bad row (ragged, an empty cell, a cell that is not a number, NaN or infinity, and in
training rows a magnitude past the ±1e150 training takes) stops the read.  pyarrow's
streaming reader does not know physical line numbers, so the file is then read again from
its start with Python's ``csv`` module, which counts them, up to the first bad row: the
``InvalidInput`` (reason ``MALFORMED_CSV``, or ``VALUE_TOO_LARGE`` as the server says it)
names its line (the first physical line of the record), the column and the kind of fault.
Only a file that fails pays for that second pass.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from regserve.server.datasets.arrow_arrays import numbers, row_major, texts
from regserve.server.datasets.row_chunks import RowChunk, Table, rechunk, refuse_target_as_feature
from regserve.server.errors import InvalidInput
from regserve.server.models.class_labels import integer_text, whole_float_text_labels
from regserve.server.models.numeric import MAX_ABS_VALUE, trainable, untrainable

__all__ = ["BLOCK_BYTES", "columns", "read_csv"]

BLOCK_BYTES = 1 << 20
"""The bytes of the file parsed at once; pyarrow reads a few dozen blocks ahead, so this bounds memory."""
_LOCATE_ROWS = 8192  # records checked at once when looking for the bad row
_TRUE = ("True", "true", "TRUE", "1")
_FALSE = ("False", "false", "FALSE", "0")
"""The cells a boolean column holds: pyarrow's spellings, and 1 and 0."""
_WORDS = frozenset(_TRUE[:3] + _FALSE[:3])
"""The cells that make a column boolean when its first one is among them."""


class _BadRow(Exception):
    """The streaming read met a bad row; which one is found by ``_locate``."""


def read_csv(
    path: str | os.PathLike,
    target: str | None = None,
    *,
    classifier: bool = False,
    chunk_rows: int = 65536,
    feature_columns: Sequence[str] | None = None,
) -> Table:
    """Open a CSV file with a header line for streaming in chunks of ``chunk_rows`` rows.

    The ``target`` column, when named, is read as strings for a ``classifier`` and as
    float64 otherwise; the feature columns must be numeric.  Raises InvalidInput for
    an empty file, an unknown or repeated column; the chunks raise it for a bad row.
    """
    path = os.fspath(path)
    header = _header(path)
    names = [name.strip() for name in header]
    # A first column without a name is the index pandas' ``DataFrame.to_csv`` writes: not a feature.
    unnamed = [j for j, name in enumerate(names) if not name and j > 0]
    if unnamed and not feature_columns:
        # A spreadsheet's trailing comma: every column but the target would be a feature, this one too.
        raise InvalidInput(
            f"column {unnamed[0] + 1} of the CSV's header has no name; name it, or choose the features "
            "with --feature-columns",
            reason="UNNAMED_COLUMN",
            violations=[("csv", f"column {unnamed[0] + 1} has no name")],
            metadata={"column": unnamed[0] + 1},
        )
    repeated = sorted({name for name in names if name and names.count(name) > 1})
    if repeated:
        raise InvalidInput(
            f"the CSV names column {repeated[0]!r} more than once",
            reason="DUPLICATE_COLUMN",
            violations=[("csv", f"repeated column: {repeated[0]}")],
        )
    features = _feature_columns(names, target, feature_columns)
    raw = dict(zip(names, header, strict=True))
    booleans = _boolean_columns(path, [raw[name] for name in features])
    types = {raw[name]: pa.bool_() if raw[name] in booleans else pa.float64() for name in features}
    if target is not None:
        types[raw[target]] = pa.string() if classifier else pa.float64()
    used = [names.index(name) for name in features] + ([names.index(target)] if target is not None else [])
    source = pa.OSFile(path)

    def pieces() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=_convert_options(types, [header[j] for j in used]),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            yield _arrays(batch, len(features), target is not None and classifier)

    def chunks() -> Iterator[RowChunk]:
        try:
            yield from rechunk(pieces(), chunk_rows)
        except (_BadRow, pa.ArrowInvalid) as exc:
            target_index = used[-1] if target is not None else None
            numeric = set(used[: len(features)]) if classifier or target_index is None else set(used)
            boolean = {j for j in numeric if header[j] in booleans}
            found = _locate(path, header, used, numeric - boolean, boolean, target_index)
            if found is None:
                raise InvalidInput(
                    f"the CSV could not be read: {exc}", reason="MALFORMED_CSV", violations=[("csv", str(exc))]
                ) from None
            raise found from None
        finally:
            source.close()

    return Table(features, chunks(), os.path.getsize(path), "B", source.tell)


def _convert_options(types: dict[str, pa.DataType], columns: list[str]) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types=types,
        include_columns=columns,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        true_values=list(_TRUE),
        false_values=list(_FALSE),
    )


def _boolean_columns(path: str, features: list[str]) -> set[str]:
    """The ``features`` whose first block pyarrow's type inference reads as booleans, or whose first
    cell is True or False (a boolean column with a bad cell further on, which the read then names).

    A file pyarrow cannot parse has none here: the read itself then says what is wrong.
    """
    try:
        with pacsv.open_csv(
            path,
            # One block, read in this thread: no reading ahead for a reader that is closed at once.
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
            # A ragged row is the read's to name; here it must not hide the other rows' types.
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: "skip"),
            convert_options=_convert_options({}, features),
        ) as reader:
            found = {field.name for field in reader.schema if pa.types.is_boolean(field.type)}
            text = [field.name for field in reader.schema if pa.types.is_string(field.type)]
            if text:
                first = reader.read_next_batch()
                for name in text:
                    values = first.column(name).drop_null()
                    if len(values) and values[0].as_py() in _WORDS:
                        found.add(name)
            return found
    except (pa.ArrowInvalid, OSError, StopIteration):
        return set()


def columns(path: str | os.PathLike) -> list[str]:
    """The column names of the CSV's header line, as ``read_csv`` reads them."""
    return [name.strip() for name in _header(os.fspath(path))]


def _header(path: str) -> list[str]:
    """The header line's fields, as written (a BOM dropped)."""
    if not os.path.isfile(path):
        raise InvalidInput(f"no CSV file at {path}", reason="NO_INPUT_FILES", violations=[("file", f"no file: {path}")])
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            for record in csv.reader(stream):
                if record:
                    return record
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    raise InvalidInput("the CSV file is empty", reason="EMPTY_CSV", violations=[("csv", "no header line")])


def _not_utf8(path: str) -> InvalidInput:
    """The refusal of a file that is not UTF-8 text, naming the first line that is not."""
    line = 0
    with open(path, "rb") as stream:
        for line, raw in enumerate(stream, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return InvalidInput(
                    f"line {line} is not UTF-8 text (byte 0x{raw[error.start]:02X}); save the CSV as UTF-8",
                    reason="MALFORMED_CSV",
                    violations=[("csv", f"line {line}: not UTF-8")],
                    metadata={"line": line, "problem": "not UTF-8"},
                )
    return InvalidInput(  # unreachable for a file that failed to decode, but never leave the caller without one
        "the CSV is not UTF-8 text; save it as UTF-8",
        reason="MALFORMED_CSV",
        violations=[("csv", f"line {line}: not UTF-8")],
        metadata={"line": line, "problem": "not UTF-8"},
    )


def _feature_columns(names: list[str], target: str | None, chosen: Sequence[str] | None) -> list[str]:
    """The feature columns: ``chosen``, else every column but the target; InvalidInput for an unknown name."""
    if target is not None and target not in names:
        raise InvalidInput(
            f"the CSV has no column {target!r}; its columns are {', '.join(names)}",
            reason="UNKNOWN_TARGET_COLUMN",
            violations=[("target", f"not a column of the CSV: {target}")],
        )
    if not chosen:
        return [name for name in names if name != target and name]
    refuse_target_as_feature(target, chosen)
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise InvalidInput(
            f"{unknown[0]!r} is not a feature column of the CSV; its columns are {', '.join(names)}",
            reason="UNKNOWN_FEATURE_COLUMN",
            violations=[("feature_columns", f"not a feature column of the CSV: {unknown[0]}")],
        )
    return list(chosen)


def _arrays(batch: pa.RecordBatch, d: int, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A batch's features (n, d) and target (n,) or None; ``_BadRow`` for an empty or non-finite cell, or a
    magnitude past ``MAX_ABS_VALUE``, which the server would name only by its row in the stream."""
    columns = batch.columns
    if any(column.null_count for column in columns):
        raise _BadRow
    X = row_major([numbers(column) for column in columns[:d]], batch.num_rows)
    # Rows with a target are training rows, held to the magnitudes training takes; Predict takes any finite value.
    if not (trainable(X) if len(columns) > d else np.isfinite(X).all()):
        raise _BadRow
    if len(columns) == d:
        return X, None
    if labels:
        target = texts(columns[d])
        # The distinct labels by hashing, in C: only a block that writes a whole number as a float is respelled.
        if any(integer_text(text) != text for text in columns[d].unique().to_pylist()):
            target = whole_float_text_labels(target)
        return X, target
    y = numbers(columns[d])
    if not trainable(y):
        raise _BadRow
    return X, y


def _locate(
    path: str, header: list[str], used: list[int], numeric: set[int], boolean: set[int], target_index: int | None
) -> InvalidInput | None:
    """The error for the first bad row of the file (columns ``used``, ``numeric`` of them numbers and
    ``boolean`` of them booleans), or None."""
    width = len(header)
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            for record in reader:
                if record:
                    break
            records: list[list[str]] = []
            lines: list[int] = []
            before = reader.line_num
            for record in reader:
                start, before = before + 1, reader.line_num
                if not record:
                    continue
                if len(record) != width:
                    earlier = _cell_error(header, records, lines, used, numeric, boolean, target_index)
                    return earlier or _ragged(header, record, start)
                records.append(record)
                lines.append(start)
                if len(records) == _LOCATE_ROWS:
                    if error := _cell_error(header, records, lines, used, numeric, boolean, target_index):
                        return error
                    records, lines = [], []
            return _cell_error(header, records, lines, used, numeric, boolean, target_index)
    except UnicodeDecodeError:
        return _not_utf8(path)


def _ragged(header: list[str], record: list[str], line: int) -> InvalidInput:
    width = len(header)
    if len(record) < width:
        column, detail = header[len(record)].strip(), f"column {header[len(record)].strip()!r} and after are missing"
    else:
        column, detail = header[-1].strip(), f"{len(record) - width} field(s) after column {header[-1].strip()!r}"
    return InvalidInput(
        f"line {line} has {len(record)} fields where the header has {width}: {detail}",
        reason="MALFORMED_CSV",
        violations=[(column, f"line {line}: ragged row")],
        metadata={"line": line, "column": column, "problem": "ragged"},
    )


def _cell_error(
    header: list[str],
    records: list[list[str]],
    lines: list[int],
    used: list[int],
    numeric: set[int],
    boolean: set[int],
    target_index: int | None,
) -> InvalidInput | None:
    """The error for the first bad cell of ``records`` (in row order, then column order), or None.

    Training rows (those with a target) are also held to the magnitudes training takes.
    """
    bounded = target_index is not None
    first: tuple[int, int, str] | None = None  # (record, column, problem)
    for j in used:
        cells = [record[j] for record in records]
        problems = _boolean_problems(cells) if j in boolean else _cell_problems(cells, j in numeric, bounded)
        bad = np.flatnonzero(problems != "")
        if bad.size and (first is None or bad[0] < first[0]):
            first = (int(bad[0]), j, str(problems[bad[0]]))
    if first is None:
        return None
    i, j, problem = first
    line, column, text = lines[i], header[j].strip(), records[i][j]
    detail = {
        "empty": "the cell is empty",
        "non-numeric": f"{text!r} is not a number",
        "non-boolean": f"{text!r} is not True or False, as the column's first rows are",
        "too large": f"{text!r} lies past ±{MAX_ABS_VALUE:g}, the largest magnitude training takes",
    }.get(problem, f"{text!r} is not a finite number")
    if problem == "non-numeric" and j == target_index:
        detail += "; a regression target must be a number (train a classifier with --kind logistic)"
    elif problem == "non-numeric" and text in {*_TRUE, *_FALSE}:
        detail += "; a column is read as booleans (1 and 0) only when its first rows hold nothing else"
    message = f"line {line}, column {column!r}: {detail}"
    return InvalidInput(
        message,
        reason="VALUE_TOO_LARGE" if problem == "too large" else "MALFORMED_CSV",
        violations=[(column, f"line {line}: {problem} cell")],
        metadata={"line": line, "column": column, "problem": problem},
    )


def _cell_problems(cells: list[str], numeric: bool, bounded: bool = False) -> np.ndarray:
    """Per cell: "" when fine, else "empty", "non-numeric", "non-finite" or, when ``bounded``, "too large"
    (past ``MAX_ABS_VALUE``); str array of shape (len(cells),)."""
    problems = np.array(["empty" if cell == "" else "" for cell in cells], dtype=object)
    if not numeric:
        return problems
    filled = ["0" if cell == "" else cell for cell in cells]
    try:
        values = pa.array(filled, pa.string()).cast(pa.float64()).to_numpy()
    except pa.ArrowInvalid:
        values = np.array([_parsed(cell) for cell in filled])
    problems[(problems == "") & np.isnan(values) & ~_spelled_nan(filled)] = "non-numeric"
    problems[(problems == "") & ~np.isfinite(values)] = "non-finite"
    if bounded:
        problems[(problems == "") & untrainable(values)] = "too large"  # the non-finite are named already
    return problems


def _boolean_problems(cells: list[str]) -> np.ndarray:
    """Per cell of a boolean column: "" when fine, else "empty" or "non-boolean"."""
    spellings = {*_TRUE, *_FALSE}
    return np.array(["empty" if cell == "" else "" if cell in spellings else "non-boolean" for cell in cells])


def _parsed(cell: str) -> float:
    """The cell as pyarrow converts it to float64; NaN when it cannot (told apart by ``_spelled_nan``)."""
    try:
        return float(pa.array([cell], pa.string()).cast(pa.float64())[0].as_py())
    except pa.ArrowInvalid:
        return float("nan")


def _spelled_nan(cells: list[str]) -> np.ndarray:
    """Whether each cell converts to NaN because it says so, bool of shape (len(cells),)."""
    return np.array([cell.strip().lstrip("+-").lower() == "nan" for cell in cells], dtype=bool)
