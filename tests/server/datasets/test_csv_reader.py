"""CSV files as spreadsheets write them, read through pyarrow; a bad row named by its physical line."""

from __future__ import annotations

import numpy as np
import pytest

from regserve.server.datasets.csv_reader import read_csv
from regserve.server.errors import InvalidInput


def _rows(path, target="y", **options):
    table = read_csv(path, target, **options)
    chunks = list(table.chunks)
    X = np.concatenate([c.features for c in chunks])
    y = np.concatenate([c.target for c in chunks])
    return table.feature_names, X, y, [c.first_row for c in chunks]


def _refusal(path, target="y", **options) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        _rows(path, target, **options)
    assert refused.value.reason == "MALFORMED_CSV"
    return refused.value


def test_bom_crlf_blank_lines_and_quoted_fields_just_work(tmp_path):
    path = tmp_path / "spreadsheet.csv"
    path.write_bytes(b'\xef\xbb\xbf"a","b",y\r\n1,2,3\r\n\r\n"4",5.5,"6"\r\n\r\n7,8e1,-9\r\n\r\n\r\n')
    names, X, y, _ = _rows(path)
    assert names == ["a", "b"]
    np.testing.assert_array_equal(X, [[1, 2], [4, 5.5], [7, 80]])
    np.testing.assert_array_equal(y, [3, 6, -9])


def test_chunks_have_the_asked_size_and_count_rows_from_zero(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(10)))
    _, X, y, firsts = _rows(path, chunk_rows=4)
    assert firsts == [0, 4, 8]
    np.testing.assert_array_equal(X[:, 0], np.arange(10))


def test_a_classifiers_labels_may_be_quoted_and_span_lines(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text('x,kind\n1,cold\n2,"very\nhot"\n3,"a, b"\n')
    _, X, y, _ = _rows(path, "kind", classifier=True)
    assert y.tolist() == ["cold", "very\nhot", "a, b"] and X[:, 0].tolist() == [1, 2, 3]


def test_feature_columns_choose_and_order_the_features(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("a,note,b,y\n1,x,2,3\n4,yy,5,6\n")
    names, X, _, _ = _rows(path, feature_columns=["b", "a"])
    assert names == ["b", "a"] and X.tolist() == [[2, 1], [5, 4]]
    with pytest.raises(InvalidInput) as refused:
        read_csv(path, "y", feature_columns=["a", "nope"])
    assert refused.value.reason == "UNKNOWN_FEATURE_COLUMN"


def test_the_target_named_as_a_feature_column_is_refused_as_such(tmp_path):
    path = tmp_path / "houses.csv"
    path.write_text("bedrooms,sqft,price\n3,120,300\n")
    with pytest.raises(InvalidInput) as refused:
        read_csv(path, "price", feature_columns=["sqft", "price"])
    assert refused.value.reason == "TARGET_AS_FEATURE"
    assert "'price' is the target, so it cannot also be a feature column" in refused.value.message


@pytest.mark.parametrize(
    ("body", "line", "column", "problem"),
    [
        ("1,2,3\n4,5\n", 3, "y", "ragged"),
        ("1,2,3\n4,5,6,7\n", 3, "y", "ragged"),
        ("1,2,3\n4,,6\n", 3, "b", "empty"),
        ("1,2,3\n4,five,6\n", 3, "b", "non-numeric"),
        ("1,2,3\n4,5,\n", 3, "y", "empty"),
        ("1,2,3\n4,5,inf\n", 3, "y", "non-finite"),
        # The first bad row in file order wins, whatever its fault or column.
        ("1,,3\n4,5\n", 2, "b", "empty"),
    ],
)
def test_a_bad_row_is_named_by_line_column_and_kind(tmp_path, body, line, column, problem):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,y\n" + body)
    error = _refusal(path)
    assert error.metadata == {"line": str(line), "column": column, "problem": problem}
    assert str(error).startswith(f"line {line}")


@pytest.mark.parametrize(("cell_b", "cell_y", "column"), [("1e200", "6", "b"), ("5", "-1e151", "y")])
def test_a_magnitude_past_what_training_takes_is_named_by_line_and_column(tmp_path, cell_b, cell_y, column):
    path = tmp_path / "huge.csv"
    path.write_text(f"a,b,y\n1,2,3\n4,{cell_b},{cell_y}\n")
    with pytest.raises(InvalidInput) as refused:
        _rows(path)
    assert refused.value.reason == "VALUE_TOO_LARGE"  # the server's reason, here with the file's line
    assert refused.value.metadata == {"line": "3", "column": column, "problem": "too large"}
    assert str(refused.value).startswith(f"line 3, column {column!r}: ") and "1e+150" in str(refused.value)


def test_rows_to_predict_may_hold_any_finite_magnitude(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text("a,b\n1,2\n4,1e200\n")
    (chunk,) = read_csv(path, None).chunks
    assert chunk.features.tolist() == [[1.0, 2.0], [4.0, 1e200]]


def test_the_line_is_the_physical_line_past_blank_lines_and_quoted_newlines(tmp_path):
    path = tmp_path / "lines.csv"
    # Data rows 1-3 take lines 2-7: a blank line, then a label over three lines.
    path.write_bytes(b'x,kind\r\n1,cold\r\n\r\n2,"very\r\nvery\r\nhot"\r\n3,warm\r\n\r\n,cold\r\n')
    error = _refusal(path, "kind", classifier=True)
    assert error.metadata == {"line": "9", "column": "x", "problem": "empty"}


def test_a_bad_row_past_the_first_blocks_is_found_on_its_line(tmp_path):
    path = tmp_path / "long.csv"
    rng = np.random.default_rng(7)
    lines = [f"{a:.6f},{b:.6f}" for a, b in rng.normal(size=(50_000, 2))]
    lines[41_234] = "1.5,oops"
    path.write_text("a,y\n" + "\n".join(lines) + "\n")
    error = _refusal(path, chunk_rows=1000)
    assert error.metadata == {"line": "41236", "column": "y", "problem": "non-numeric"}


def test_an_empty_file_and_a_repeated_column_are_refused(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(InvalidInput) as refused:
        read_csv(empty, "y")
    assert refused.value.reason == "EMPTY_CSV"
    twice = tmp_path / "twice.csv"
    twice.write_text("a,a,y\n1,2,3\n")
    with pytest.raises(InvalidInput) as refused:
        read_csv(twice, "y")
    assert refused.value.reason == "DUPLICATE_COLUMN"


def test_a_missing_file_and_a_header_column_without_a_name_are_refused(tmp_path):
    with pytest.raises(InvalidInput) as refused:
        read_csv(tmp_path / "absent.csv", "y")
    assert refused.value.reason == "NO_INPUT_FILES"
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("a,b,y,\n1,2,3,\n4,5,6,\n")  # a spreadsheet's trailing comma
    with pytest.raises(InvalidInput) as refused:
        read_csv(trailing, "y")
    assert refused.value.reason == "UNNAMED_COLUMN" and "column 4" in str(refused.value)
    names, X, y, _ = _rows(trailing, feature_columns=["a", "b"])
    assert names == ["a", "b"] and X.tolist() == [[1, 2], [4, 5]] and y.tolist() == [3, 6]


def test_the_index_pandas_writes_as_a_first_unnamed_column_is_not_a_feature(tmp_path):
    import pandas as pd

    path = tmp_path / "frame.csv"
    pd.DataFrame({"a": [1.5, 2.5], "b": [3.0, 4.0], "y": [5.0, 6.0]}, index=[10, 20]).to_csv(path)
    assert path.read_text().splitlines()[0] == ",a,b,y"
    names, X, y, _ = _rows(path)
    assert names == ["a", "b"] and X.tolist() == [[1.5, 3.0], [2.5, 4.0]] and y.tolist() == [5.0, 6.0]


@pytest.mark.parametrize("where", ["header", "cell", "label"])
def test_a_file_that_is_not_utf8_is_refused_on_its_line(tmp_path, where):
    rows = ["a,b,y", *(f"{i},{i + 1},{'x' if i % 2 else 'z'}" for i in range(1, 3000))]
    line = {"header": 1, "cell": 1500, "label": 2900}[where]
    text = "\n".join(rows).encode()
    lines = text.split(b"\n")
    # Latin-1's é, as Excel exports it, in the header, in a feature cell, or in a class label.
    if where == "header":
        lines[0] = b"caf\xe9,b,y"
    elif where == "cell":
        lines[line - 1] = lines[line - 1].replace(b",", b"\xe9,", 1)
    else:
        lines[line - 1] = lines[line - 1] + b"\xe9"
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InvalidInput) as refused:
        target = "y"
        _rows(path, target, classifier=True, feature_columns=None if where != "header" else ["b"])
    assert refused.value.reason == "MALFORMED_CSV"
    assert refused.value.metadata == {"line": str(line), "problem": "not UTF-8"}, refused.value


def test_a_bad_byte_just_after_a_character_split_across_read_blocks_is_on_its_line(tmp_path):
    # A 3-byte character that straddles 64 KiB, then the bad byte, on the second line.
    head = b"a,y\n" + b"1," + b"2" * (65536 - 10) + b"\n"
    path = tmp_path / "split.csv"
    path.write_bytes(head + b"3,\xe2\x82\xac\xff\n4,5\n")
    with pytest.raises(InvalidInput) as refused:
        _rows(path, classifier=True)
    assert refused.value.metadata == {"line": "3", "problem": "not UTF-8"}


def test_boolean_feature_columns_read_as_one_and_zero(tmp_path):
    # pandas writes a bool column (get_dummies' among them) as True/False.
    path = tmp_path / "dummies.csv"
    path.write_text("a,is_red,is_big,y\n0.5,True,false,1\n1.5,False,TRUE,2\n2.5,True,0,3\n")
    names, X, y, _ = _rows(path)
    assert names == ["a", "is_red", "is_big"]
    assert X.tolist() == [[0.5, 1.0, 0.0], [1.5, 0.0, 1.0], [2.5, 1.0, 0.0]]
    assert y.tolist() == [1.0, 2.0, 3.0]


def test_a_column_that_begins_with_a_boolean_names_its_first_other_cell(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("a,flag,y\n" + "1,True,2\n" * 200 + "2,maybe,3\n")  # all in the first block
    error = _refusal(path)
    assert error.metadata == {"line": "202", "column": "flag", "problem": "non-boolean"}
    assert "'maybe' is not True or False" in str(error)


def test_a_boolean_cell_in_a_column_of_other_words_says_when_booleans_are_read(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("a,flag,y\n1,maybe,2\n2,True,3\n")
    error = _refusal(path)
    assert error.metadata == {"line": "2", "column": "flag", "problem": "non-numeric"}
    path.write_text("a,flag,y\n1,2.5,2\n2,True,3\n")
    error = _refusal(path)
    assert error.metadata == {"line": "3", "column": "flag", "problem": "non-numeric"}
    assert "only when its first rows hold nothing else" in str(error)


def test_a_ragged_row_beside_a_boolean_column_is_named_as_ragged(tmp_path):
    path = tmp_path / "dummies.csv"
    path.write_text("a,is_red,y\n0.5,True,1\n1.5,False\n2.5,True,3\n")
    assert _refusal(path).metadata == {"line": "3", "column": "y", "problem": "ragged"}


def test_a_boolean_column_with_another_cell_past_its_first_block_is_named_on_its_line(tmp_path):
    path = tmp_path / "dummies.csv"
    lines = [f"{i},{'True' if i % 3 else 'False'},{i}" for i in range(150_000)]
    lines[123_456] = "1,maybe,2"  # past the first 1 MiB block, whose cells decide the column is boolean
    path.write_text("a,flag,y\n" + "\n".join(lines) + "\n")
    error = _refusal(path, chunk_rows=1000)
    assert error.metadata == {"line": "123458", "column": "flag", "problem": "non-boolean"}
    assert "'maybe' is not True or False" in str(error)


def test_the_columns_are_the_header_names_without_the_bom_or_spaces(tmp_path):
    from regserve.server.datasets.tables import table_columns

    path = tmp_path / "spreadsheet.csv"
    path.write_bytes(b'\xef\xbb\xbf"a", b ,y\r\n1,2,3\r\n')
    assert table_columns(str(path)) == ["a", "b", "y"]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("1.0", "1"),
        ("-0.0", "0"),
        ("2e1", "20"),
        (".5e1", "5"),
        ("1.5", "1.5"),
        ("007", "007"),
        (" 2.0", " 2.0"),
        ("1_0.0", "1_0.0"),
        ("9007199254740993.0", "9007199254740993.0"),
        ("1e300", "1e300"),
        ("nan", "nan"),
        ("cat", "cat"),
    ],
)
def test_a_whole_number_written_as_a_float_is_the_label_of_its_integer(text, label):
    from regserve.server.models.class_labels import integer_text

    assert integer_text(text) == label
