"""Parquet as it is kept: one file, a directory, a glob; only the chosen columns; bad values named."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regserve.server.datasets.parquet_reader import read_parquet
from regserve.server.errors import InvalidInput


@pytest.fixture
def parts(tmp_path):
    """Three files of 500 rows in row groups of 128: features a, b, a text column, target y."""
    rng = np.random.default_rng(17)
    X = rng.normal(size=(1500, 2))
    y = X @ [2.0, -1.0] + 0.5
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):
        rows = slice(500 * i, 500 * (i + 1))
        table = pa.table({"a": X[rows, 0], "note": ["n"] * 500, "b": X[rows, 1], "y": y[rows]})
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=128)
    (folder / "_SUCCESS").write_text("")
    return folder, X, y


def _all(table):
    chunks = list(table.chunks)
    return np.concatenate([c.features for c in chunks]), np.concatenate([c.target for c in chunks]), chunks


def test_a_directory_and_a_glob_read_every_file_in_order(parts):
    folder, X, y = parts
    for source in (str(folder), str(folder / "part-*.parquet")):
        table = read_parquet(source, "y", chunk_rows=200, feature_columns=["a", "b"])
        assert table.feature_names == ["a", "b"] and (table.size, table.unit) == (1500, "rows")
        got_X, got_y, chunks = _all(table)
        np.testing.assert_array_equal(got_X, X)
        np.testing.assert_array_equal(got_y, y)
        assert [c.first_row for c in chunks] == list(range(0, 1500, 200)) and table.done() == 1500


def test_a_directory_reads_its_parquet_files_below_it_and_nothing_else(parts):
    folder, X, y = parts
    (folder / "0README.md").write_text("# rows\n")  # sorts first: it used to be read as Parquet
    (folder / "a.csv").write_text("a,b,y\n1,2,3\n")
    nested, hidden = folder / "more", folder / ".cache"
    nested.mkdir()
    hidden.mkdir()
    shutil.copy(folder / "part-0.parquet", nested / "PART-3.PARQ")
    shutil.copy(folder / "part-0.parquet", hidden / "part-9.parquet")
    shutil.copy(folder / "part-0.parquet", folder / ".part-8.parquet")
    table = read_parquet(str(folder), "y", feature_columns=["a", "b"])
    got, target, _ = _all(table)
    # In sorted path order: more/PART-3.PARQ before part-0.parquet.
    assert np.array_equal(got, np.vstack([X[:500], X])) and np.array_equal(target, np.concatenate([y[:500], y]))
    only_notes = folder / "notes"
    only_notes.mkdir()
    (only_notes / "README.md").write_text("")
    with pytest.raises(InvalidInput) as refused:
        read_parquet(str(only_notes), "y")
    assert refused.value.reason == "NO_INPUT_FILES" and ".parquet, .parq, .pq" in str(refused.value)


def test_one_file_and_projection_read_only_the_chosen_columns(parts):
    folder, X, _ = parts
    table = read_parquet(str(folder / "part-1.parquet"), "y", feature_columns=["b"])
    got_X, _, _ = _all(table)
    np.testing.assert_array_equal(got_X[:, 0], X[500:1000, 1])
    # Without a choice every other column is a feature, and the text one is refused.
    with pytest.raises(InvalidInput) as refused:
        read_parquet(str(folder), "y")
    assert refused.value.reason == "NON_NUMERIC_COLUMN" and refused.value.metadata["column"] == "note"


def test_a_null_is_refused_with_its_file_row_and_column(tmp_path):
    path = tmp_path / "holes.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, None, 4.0], "y": [1, 2, 3, 4]}), path, row_group_size=2)
    with pytest.raises(InvalidInput) as refused:
        list(read_parquet(str(path), "y").chunks)
    assert refused.value.metadata == {"file": str(path), "row": "3", "column": "a", "problem": "empty"}


def test_a_magnitude_past_what_training_takes_is_refused_with_its_file_row_and_column(tmp_path):
    for i, a in enumerate(([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, -3e150, 4.0])):
        pq.write_table(pa.table({"a": a, "y": [1.0, 2.0, 3.0, 4.0]}), tmp_path / f"part-{i}.parquet", row_group_size=2)
    with pytest.raises(InvalidInput) as refused:
        list(read_parquet(str(tmp_path), "y").chunks)
    path = str(tmp_path / "part-1.parquet")
    assert refused.value.reason == "VALUE_TOO_LARGE"  # the server's reason, here with the file and its row
    assert refused.value.metadata == {"file": path, "row": "3", "column": "a", "problem": "too large"}
    said = "-3e+150 lies past ±1e+150, the largest magnitude training takes"
    assert str(refused.value) == f"{path}, row 3, column 'a': {said}"
    # Rows to predict (no target) may hold any finite value.
    (chunk,) = read_parquet(path, None).chunks
    assert chunk.features[:, 0].tolist() == [1.0, 2.0, -3e150, 4.0]


def test_an_empty_label_is_refused_with_its_file_row_and_column(tmp_path):
    for i, labels in enumerate((["a", "b", "a", "b"], ["a", "b", "", "b"])):
        pq.write_table(pa.table({"x": [1.0, 2.0, 3.0, 4.0], "kind": labels}), tmp_path / f"part-{i}.parquet")
    with pytest.raises(InvalidInput) as refused:
        list(read_parquet(str(tmp_path), "kind", classifier=True).chunks)
    path = str(tmp_path / "part-1.parquet")
    assert refused.value.reason == "MALFORMED_PARQUET"
    assert refused.value.metadata == {"file": path, "row": "3", "column": "kind", "problem": "empty label"}


def test_a_pandas_index_written_as_a_column_is_not_a_feature(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) ** 2, "y": np.arange(10.0)})
    frame[frame.a > 3].to_parquet(tmp_path / "filtered.parquet")  # its index is kept as __index_level_0__
    table = read_parquet(str(tmp_path / "filtered.parquet"), "y")
    assert table.feature_names == ["a", "b"]
    got_X, _, _ = _all(table)
    np.testing.assert_array_equal(got_X, frame[frame.a > 3][["a", "b"]].to_numpy())


def test_boolean_features_read_as_zero_and_one(tmp_path):
    path = tmp_path / "dummies.parquet"
    pq.write_table(pa.table({"a": [0.5, 1.5, 2.5], "is_red": [True, False, True], "y": [1.0, 2.0, 3.0]}), path)
    X, _, _ = _all(read_parquet(str(path), "y"))
    assert X.tolist() == [[0.5, 1.0], [1.5, 0.0], [2.5, 1.0]]


def test_classifier_labels_and_missing_inputs(tmp_path):
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3], "kind": ["a", "b", "a"]}), path)
    _, labels, _ = _all(read_parquet(str(path), "kind", classifier=True))
    assert labels.tolist() == ["a", "b", "a"]
    with pytest.raises(InvalidInput) as refused:
        read_parquet(str(tmp_path / "none-*.parquet"), "kind")
    assert refused.value.reason == "NO_INPUT_FILES"
    with pytest.raises(InvalidInput) as refused:
        read_parquet(str(path), "price")
    assert refused.value.reason == "UNKNOWN_TARGET_COLUMN"


def test_categorical_and_bool_labels_are_read_as_pandas_prints_them(tmp_path):
    import pandas as pd

    frame = pd.DataFrame(
        {
            "a": [1.0, 2.0, 3.0, 4.0],
            "kind": pd.Categorical(["cold", "hot", "cold", "hot"]),
            "wet": [True, False, False, True],
        }
    )
    path = tmp_path / "labels.parquet"
    frame.to_parquet(path)
    assert pa.types.is_dictionary(pq.read_schema(path).field("kind").type)
    _, kinds, _ = _all(read_parquet(str(path), "kind", classifier=True, feature_columns=["a"]))
    assert kinds.tolist() == frame["kind"].astype(str).tolist()
    _, wet, _ = _all(read_parquet(str(path), "wet", classifier=True, feature_columns=["a"]))
    assert wet.tolist() == frame["wet"].astype(str).tolist() == ["True", "False", "False", "True"]
    # A category as a feature, and a boolean as a regression's target, are refused (a boolean feature is 0 or 1).
    for target, features, classifier in (("a", ["kind"], True), ("wet", ["a"], False)):
        with pytest.raises(InvalidInput) as refused:
            read_parquet(str(path), target, classifier=classifier, feature_columns=features)
        assert refused.value.reason == "NON_NUMERIC_COLUMN"


def test_the_target_named_as_a_feature_column_is_refused_as_such(parts):
    folder, _, _ = parts
    with pytest.raises(InvalidInput) as refused:
        read_parquet(str(folder), "y", feature_columns=["a", "y"])
    assert refused.value.reason == "TARGET_AS_FEATURE"


def test_the_columns_are_those_of_the_first_file_in_order(parts):
    from regserve.server.datasets.tables import table_columns

    folder, _, _ = parts
    assert table_columns(str(folder)) == table_columns(str(folder / "part-0.parquet")) == ["a", "note", "b", "y"]


def test_integer_labels_stay_numbers_unless_float64_cannot_hold_them(tmp_path):
    path = tmp_path / "ints.parquet"
    big = 2**53 + 1
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "small": [0, 2, -7], "big": [0, big, 1]}), path)
    _, small, _ = _all(read_parquet(str(path), "small", classifier=True, feature_columns=["a"]))
    assert small.dtype == np.int64 and small.tolist() == [0, 2, -7]
    # Sent as numbers, a label past 2**53 would reach the server rounded: it travels as text.
    _, spelled, _ = _all(read_parquet(str(path), "big", classifier=True, feature_columns=["a"]))
    assert spelled.tolist() == ["0", str(big), "1"]


def test_whole_float_labels_are_spelled_as_the_clients_numbers_are(tmp_path):
    path = tmp_path / "floats.parquet"
    table = pa.table(
        {
            "a": [1.0, 2.0, 3.0, 4.0],
            "whole": [0.0, 1.0, 1.0, -2.0],
            "mixed": pa.array([1.0, 0.5, 2.0, 0.1], type=pa.float32()),
            "broken": [0.0, 1.0, float("nan"), 1.0],
        }
    )
    pq.write_table(table, path, row_group_size=2)
    # Numbers, as the client sends its float labels: the server spells them "0", "1", "-2".
    _, whole, _ = _all(read_parquet(str(path), "whole", classifier=True, feature_columns=["a"]))
    assert whole.dtype == np.float64 and whole.tolist() == [0.0, 1.0, 1.0, -2.0]
    # A batch with fractions travels as text, its whole values spelled as the server spells numbers.
    chunks = list(read_parquet(str(path), "mixed", classifier=True, feature_columns=["a"], chunk_rows=2).chunks)
    assert [chunk.target.tolist() for chunk in chunks] == [["1", "0.5"], ["2", "0.1"]]
    with pytest.raises(InvalidInput) as refused:
        list(read_parquet(str(path), "broken", classifier=True, feature_columns=["a"]).chunks)
    assert refused.value.metadata == {"file": str(path), "row": "3", "column": "broken", "problem": "non-finite"}


def test_a_chunk_joining_whole_and_fractional_label_batches_spells_each_label_once(tmp_path):
    # The first row group holds whole stars only (numbers), the second a half star (text): however the
    # rows are chunked, 2.0 is the label "2", never also "2.0".
    path = tmp_path / "stars.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0, 4.0], "stars": [1.0, 2.0, 4.5, 2.0]}), path, row_group_size=2)
    for chunk_rows in (1, 2, 3, 4):
        chunks = read_parquet(str(path), "stars", classifier=True, feature_columns=["a"], chunk_rows=chunk_rows).chunks
        labels = [str(int(v)) if isinstance(v, float) else v for chunk in chunks for v in chunk.target.tolist()]
        assert labels == ["1", "2", "4.5", "2"], chunk_rows


def test_whole_float_labels_past_2_53_travel_as_text_in_every_batch(tmp_path):
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0, 4.0], "y": [0.0, 1e200, 0.5, 1e200]}), path, row_group_size=2)
    chunks = list(read_parquet(str(path), "y", classifier=True, feature_columns=["a"], chunk_rows=2).chunks)
    assert [chunk.target.dtype.kind for chunk in chunks] == ["U", "U"]
    assert chunks[0].target.tolist() == ["0", str(int(1e200))] and chunks[1].target.tolist() == ["0.5", str(int(1e200))]


@pytest.mark.parametrize("pattern", [False, True])
def test_a_file_name_that_is_not_utf8_is_refused_by_name_in_a_directory_or_a_glob(parts, pattern):
    folder, _, _ = parts
    odd = os.path.join(os.fsencode(folder), b"part-\xe9.parquet")
    shutil.copy(folder / "part-0.parquet", os.fsdecode(odd))
    source = str(folder / "*.parquet") if pattern else str(folder)
    with pytest.raises(InvalidInput) as caught:
        read_parquet(source, "y", feature_columns=["a", "b"])
    assert caught.value.reason == "FILE_NAME_NOT_UTF8"
    assert f"{folder}/part-\\xe9.parquet has a name that is not UTF-8" in str(caught.value)
