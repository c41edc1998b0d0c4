"""Opening a data file for ``regserve train`` or ``predict``: CSV, or Parquet (a file, a directory or a glob).

Both readers are built on ``pyarrow``, which is the ``files`` extra (``pip install
"regserve[files]"``): the server does not need it, so importing this module raises
ImportError without it, and the commands import it only when they read a file.
"""

from __future__ import annotations

from collections.abc import Sequence

from regserve.server.datasets import csv_reader, parquet_reader
from regserve.server.datasets.row_chunks import Table, require_utf8_name

__all__ = ["open_table", "table_columns"]


def open_table(
    source: str,
    target: str | None = None,
    *,
    classifier: bool = False,
    chunk_rows: int = 65536,
    feature_columns: Sequence[str] | None = None,
) -> Table:
    """Open ``source`` for streaming: Parquet when it is a directory, a glob or a ``.parquet`` file, else CSV."""
    require_utf8_name(source)
    read = parquet_reader.read_parquet if parquet_reader.is_parquet(source) else csv_reader.read_csv
    return read(source, target, classifier=classifier, chunk_rows=chunk_rows, feature_columns=feature_columns)


def table_columns(source: str) -> list[str]:
    """The column names of ``source`` (a CSV's header, or the first Parquet file's schema), reading no row."""
    require_utf8_name(source)
    if parquet_reader.is_parquet(source):
        return parquet_reader.columns(source)
    return csv_reader.columns(source)
