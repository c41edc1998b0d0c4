"""Arrow columns as NumPy arrays: the same values as pyarrow's own conversion, without importing pandas."""

from __future__ import annotations

import datetime
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regserve.server.datasets.arrow_arrays import numbers, row_major, texts


@pytest.mark.parametrize("d", [0, 1, 7, 64, 65, 130])
def test_row_major_is_the_columns_side_by_side_in_c_order(d):
    rng = np.random.default_rng(d)
    rows = 5003  # not a multiple of any block
    columns = [rng.standard_normal(rows) for _ in range(d)]
    X = row_major(columns, rows)
    assert X.shape == (rows, d) and X.flags.c_contiguous and X.dtype == np.float64
    expected = np.column_stack(columns) if d else np.empty((rows, 0))
    assert np.array_equal(X, expected)


def test_numbers_views_a_sliced_column_and_casts_other_types():
    column = pa.array(np.arange(10, dtype=np.float64)).slice(3, 4)
    assert numbers(column).tolist() == [3.0, 4.0, 5.0, 6.0]
    assert numbers(pa.array([True, False, True])).tolist() == [1.0, 0.0, 1.0]
    assert numbers(pa.array([1, 2, 3], pa.int32())).tolist() == [1.0, 2.0, 3.0]
    kept = numbers(pa.array([2**63 + 1], pa.uint64()), np.uint64)
    assert kept.dtype == np.uint64 and int(kept[0]) == 2**63 + 1
    with pytest.raises(ValueError, match="nulls"):
        numbers(pa.array([1.0, None]))
    with pytest.raises(ValueError, match="integer or floating"):
        numbers(pa.array([True] * 16), np.bool_)  # Arrow packs booleans in bits


def test_numbers_cannot_write_into_arrows_memory():
    column = pa.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="read-only"):
        numbers(column)[0] = 99.0
    assert column.to_pylist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "column",
    [
        pa.array(["setosa", "virginica", "setosa", "", "ünï", "virginica"]),
        pa.array(["b", "a", "b", "c"], pa.large_string()).slice(1, 3),
        pa.array(["no", "yes", "no"]).dictionary_encode(),
        pa.array([True, False, True]),
        pa.array([7, 3, 7], pa.int16()).dictionary_encode(),
        pa.array([datetime.datetime(2026, 1, 2, 3, 4, 5)] * 2, pa.timestamp("us")),
        pa.array([], pa.string()),
    ],
    ids=["string", "sliced large_string", "dictionary", "bool", "int dictionary", "timestamp", "empty"],
)
def test_texts_spells_every_value_as_pyarrows_own_conversion(column):
    decoded = column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
    expected = decoded.to_numpy(zero_copy_only=False).astype(np.str_)
    got = texts(column)
    assert got.dtype.kind == "U" and got.tolist() == expected.tolist()


def test_texts_refuses_a_column_with_nulls():
    with pytest.raises(ValueError, match="nulls"):
        texts(pa.array(["a", None]))


def test_reading_numeric_parquet_and_csv_does_not_import_pandas(tmp_path):
    """pyarrow's ``to_numpy`` (and ``pyarrow.dataset``) import pandas, a quarter of a second of every
    ``regserve train``: labels and directories included."""
    pq.write_table(
        pa.table({"a": [1.0, 2.0], "b": pa.array([1, 2], pa.int16()), "y": [0.5, 1.5]}), tmp_path / "f.parquet"
    )
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": [0, 1]}), tmp_path / "labels.parquet")
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": ["no", "yes"]}), tmp_path / "words.parquet")
    (tmp_path / "f.csv").write_text("a,b,y\n1,True,0.5\n2,False,1.5\n")
    (tmp_path / "words.csv").write_text("a,y\n1,no\n2,yes\n")
    (tmp_path / "folder").mkdir()
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": [0.5, 1.5]}), tmp_path / "folder" / "part-0.parquet")
    script = f"""
import sys
from regserve.server.datasets.tables import open_table
expected = {{
    "f.parquet": ([[1, 1], [2, 2]], [0.5, 1.5]),
    "labels.parquet": ([[1], [2]], [0, 1]),
    "words.parquet": ([[1], [2]], ["no", "yes"]),
    "f.csv": ([[1, 1], [2, 0]], [0.5, 1.5]),
    "words.csv": ([[1], [2]], ["no", "yes"]),
    "folder": ([[1], [2]], [0.5, 1.5]),
}}
for source, (rows, target) in expected.items():
    classifier = source in ("labels.parquet", "words.parquet", "words.csv")
    (chunk,) = open_table({str(tmp_path)!r} + "/" + source, "y", classifier=classifier).chunks
    assert chunk.features.tolist() == rows and chunk.target.tolist() == target, (source, chunk)
print("pandas" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
