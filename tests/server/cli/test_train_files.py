"""regserve train on files as users have them, against a real server: Parquet, awkward CSV, bad rows by line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regserve.server.cli import main
from regserve.server.registry.disk import ModelRegistry

SPLIT = ("--validation-fraction", "0.25", "--seed", "5", "--cv", "3")


def _train(target, source, model, *extra):
    return main(["train", str(source), "--server", target, "--model", model, "--target", "price", *SPLIT, *extra])


def _version(client, model):
    return client.model_info(model)


def _same_model(a, b):
    assert a.data_fingerprint == b.data_fingerprint and a.num_samples == b.num_samples
    assert a.num_validation == b.num_validation and list(a.feature_names) == list(b.feature_names)
    np.testing.assert_allclose(
        np.frombuffer(a.coefficients.raw), np.frombuffer(b.coefficients.raw), rtol=1e-10, atol=1e-12
    )
    assert a.validation.metrics.keys() == b.validation.metrics.keys()
    for name in a.validation.metrics:
        assert a.validation.metrics[name] == pytest.approx(b.validation.metrics[name], rel=1e-10, abs=1e-12)


@pytest.fixture
def parquet_parts(tmp_path, linear_data):
    """linear_data as four files of 100 rows in row groups of 32, with a text column no model may read."""
    X, y = linear_data
    folder = tmp_path / "houses"
    folder.mkdir()
    for i in range(4):
        rows = slice(100 * i, 100 * (i + 1))
        columns = {name: X[rows, j] for j, name in enumerate("abcde")}
        table = pa.table({**columns, "street": ["Elm St"] * 100, "price": y[rows]})
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=32)
    return folder


def test_parquet_directory_glob_and_file_train_as_the_same_rows_sent_from_python(
    target, client, parquet_parts, linear_data, capsys
):
    X, y = linear_data
    client.train("reference", X, y, feature_names=list("abcde"), validation_fraction=0.25, seed=5, cv_folds=3)
    columns = ("--feature-columns", "a,b,c,d,e")
    assert _train(target, parquet_parts, "folder", *columns, "--chunk-rows", "50") == 0
    assert "folder v1: 400 rows" in capsys.readouterr().out
    assert _train(target, parquet_parts / "part-*.parquet", "glob", *columns) == 0
    reference = _version(client, "reference")
    _same_model(_version(client, "folder"), reference)
    _same_model(_version(client, "glob"), reference)
    # One file, and a projection of two of its columns.
    assert _train(target, parquet_parts / "part-2.parquet", "one", "--feature-columns", "d,a") == 0
    one = _version(client, "one")
    assert list(one.feature_names) == ["d", "a"] and one.num_samples == 100
    capsys.readouterr()
    # Without a projection the text column is a feature, and the file is refused before anything is sent.
    assert _train(target, parquet_parts, "text") == 1
    assert "column 'street'" in capsys.readouterr().err


def _error_of(capsys) -> dict:
    """The one JSON error object a failed ``-o json`` command wrote on stderr."""
    (line,) = capsys.readouterr().err.splitlines()
    return json.loads(line)


def test_files_that_are_not_parquet_or_differ_in_columns_are_named(target, tmp_path, capsys, model_dir):
    folder = tmp_path / "parts"
    folder.mkdir()
    columns = {name: np.arange(40.0) % 7 * (j + 1) for j, name in enumerate("abc")}
    pq.write_table(pa.table({**columns, "price": np.arange(40.0)}), folder / "part-1.parquet")
    # A later file with a column the first lacks: refused whichever order the files come in.
    pq.write_table(pa.table({**columns, "z": np.ones(40), "price": np.arange(40.0)}), folder / "part-2.parquet")
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "part-1.parquet").write_bytes((folder / "part-2.parquet").read_bytes())
    (swapped / "part-2.parquet").write_bytes((folder / "part-1.parquet").read_bytes())
    for source in (folder, swapped):  # the second file has z, or lacks it: the same difference, named alike
        assert _train(target, source, "extra", "-o", "json") == 1
        error = _error_of(capsys)
        assert error["reason"] == "COLUMNS_DIFFER"
        assert error["metadata"] == {
            "file": str(source / "part-2.parquet"),
            "column": "z",
            "first_file": str(source / "part-1.parquet"),
        }
    # A projection reads the files that have its columns, whatever else they hold.
    assert _train(target, folder, "projected", "--feature-columns", "a,b", "-o", "json") == 0
    capsys.readouterr()
    # An empty file and one of another format are named, by reason.
    for name, content in (("part-5.parquet", b""), ("part-6.parquet", b"a,b\n1,2\n")):
        (folder / name).write_bytes(content)
        assert _train(target, folder, "broken", "--feature-columns", "a,b", "-o", "json") == 1
        error = _error_of(capsys)
        assert (error["reason"], error["metadata"]["file"].endswith(name)) == ("UNREADABLE_FILE", True), error
        (folder / name).unlink()
    assert not (model_dir / "extra").exists() and not (model_dir / "broken").exists()


def test_a_url_without_a_cluster_says_to_use_one(target, capsys):
    assert _train(target, "s3://bucket/houses/", "remote", "-o", "json") == 1
    assert _error_of(capsys)["reason"] == "URL_NEEDS_DASK"


def _float_labels(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """300 seeded rows of two features and float labels 0.0 and 1.0."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, 2))
    return X, (X[:, 0] - X[:, 1] + rng.logistic(size=300) > 0).astype(np.float64)


def _trains_as_the_client(target, client, path, X, labels, *extra, classes=("0", "1")) -> None:
    """``regserve train path`` gives the classes, fingerprint and coefficients of the client's train on X, labels."""
    client.train(f"{path.stem}_python", X, labels, kind="logistic", feature_names=["a", "b"])
    command = ["train", str(path), "--server", target, "--model", f"{path.stem}_file", *extra]
    assert main([*command, "--target", "label", "--kind", "logistic"]) == 0
    ours, theirs = _version(client, f"{path.stem}_file"), _version(client, f"{path.stem}_python")
    assert list(ours.classes) == list(theirs.classes) == list(classes)
    assert ours.data_fingerprint == theirs.data_fingerprint
    np.testing.assert_array_equal(np.frombuffer(ours.coefficients.raw), np.frombuffer(theirs.coefficients.raw))


def test_float_labels_from_parquet_train_as_the_clients_float_labels_do(target, client, tmp_path):
    X, labels = _float_labels(21)
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "label": labels}), tmp_path / "parquet_rows.parquet")
    _trains_as_the_client(target, client, tmp_path / "parquet_rows.parquet", X, labels)


def test_boolean_labels_from_parquet_train_as_the_clients_boolean_labels_do(target, client, tmp_path):
    X, labels = _float_labels(24)
    flags = labels.astype(bool)
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "label": flags}), tmp_path / "bool_rows.parquet")
    _trains_as_the_client(target, client, tmp_path / "bool_rows.parquet", X, flags, classes=("False", "True"))


def test_float_labels_from_csv_train_as_the_clients_float_labels_do(target, client, tmp_path):
    # pandas writes a float label column as 0.0 and 1.0; a hand-written file may say 1 in places.
    X, labels = _float_labels(22)
    spelled = [("1" if i % 7 == 0 else "1.0") if v else "0.0" for i, v in enumerate(labels)]
    lines = ["a,b,label"] + [f"{a!r},{b!r},{text}" for (a, b), text in zip(X.tolist(), spelled, strict=True)]
    (tmp_path / "csv_rows.csv").write_text("\n".join(lines) + "\n")
    _trains_as_the_client(target, client, tmp_path / "csv_rows.csv", X, labels, "--chunk-rows", "64")


def test_a_csv_of_pandas_dummies_trains_as_the_clients_data_frame(target, client, tmp_path):
    import pandas as pd

    rng = np.random.default_rng(23)
    frame = pd.DataFrame({"sqft": rng.uniform(50, 200, 240), "color": rng.choice(["red", "blue", "green"], 240)})
    frame = pd.get_dummies(frame, columns=["color"])  # bool columns, written as True/False
    frame["price"] = 2.0 * frame["sqft"] + 30.0 * frame["color_red"] + rng.normal(size=240)
    frame.to_csv(tmp_path / "dummies.csv")  # with the index pandas writes as a first, unnamed column
    features = frame.drop(columns="price")
    client.train("dummies_python", features, frame["price"].to_numpy(), validation_fraction=0.25, seed=5, cv_folds=3)
    assert _train(target, tmp_path / "dummies.csv", "dummies_file") == 0
    _same_model(_version(client, "dummies_file"), _version(client, "dummies_python"))


def test_csv_with_bom_crlf_blank_lines_and_quotes_trains_as_a_plain_one(target, client, tmp_path, linear_data):
    X, y = linear_data
    plain = tmp_path / "plain.csv"
    np.savetxt(plain, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,e,price", comments="", fmt="%.17g")
    rows = [",".join(f"{v:.17g}" for v in row) for row in np.column_stack([X, y])]
    awkward_rows = []
    for i, row in enumerate(rows):
        cells = row.split(",")
        awkward_rows.append(",".join(f'"{c}"' if (i + k) % 3 == 0 else c for k, c in enumerate(cells)))
        if i % 50 == 7:
            awkward_rows.append("")
    body = '"a","b",c,d,e,"price"\r\n' + "\r\n".join(awkward_rows) + "\r\n\r\n\r\n"
    awkward = tmp_path / "awkward.csv"
    awkward.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert _train(target, plain, "plain") == 0
    assert _train(target, awkward, "awkward", "--chunk-rows", "33") == 0
    _same_model(_version(client, "awkward"), _version(client, "plain"))


def test_a_ragged_row_at_line_4_is_named_and_nothing_is_stored(target, tmp_path, capsys, model_dir):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b,price\n1,2,3\n2,3,4\n4,5\n5,6,7\n")
    assert _train(target, path, "ragged") == 1
    assert "line 4 has 2 fields where the header has 3: column 'price' and after are missing" in (
        capsys.readouterr().err
    )
    assert "ragged" not in ModelRegistry(model_dir).list_models()


@pytest.mark.parametrize(
    ("row", "column", "problem"), [("4,,6", "b", "empty"), ("4,n/a,6", "b", "non-numeric"), ("4,5,", "price", "empty")]
)
def test_an_empty_or_non_numeric_cell_is_named_in_json(target, tmp_path, capsys, model_dir, row, column, problem):
    path = tmp_path / "cells.csv"
    path.write_text(f"a,b,price\n1,2,3\n\n{row}\n5,6,7\n")
    assert _train(target, path, "cells", "-o", "json") == 1
    error = json.loads(capsys.readouterr().err)
    assert error["reason"] == "MALFORMED_CSV"
    assert error["metadata"] == {"line": "4", "column": column, "problem": problem}
    assert "cells" not in ModelRegistry(model_dir).list_models()


@pytest.mark.slow
def test_a_ragged_row_at_line_900001_is_named_and_nothing_is_stored(target, tmp_path, capsys, model_dir):
    rng = np.random.default_rng(900_001)
    X = rng.integers(-1000, 1000, size=(899_998, 2))
    lines = np.char.add(np.char.add(X[:, 0].astype(str), ","), X[:, 1].astype(str))
    lines = np.char.add(lines, ",1")
    path = tmp_path / "big.csv"
    with path.open("w") as out:
        out.write("a,b,price\n")
        out.write("\n".join(lines[:1000]) + "\n\n")  # a blank line at line 1,002: lines and rows part there
        out.write("\n".join(lines[1000:]) + "\n")
        out.write("1,2,3,4\n")  # line 900,001
        out.write("\n".join(lines[:500]) + "\n")
    assert _train(target, path, "big") == 1
    err = capsys.readouterr().err
    assert "line 900001 has 4 fields where the header has 3" in err
    assert "big" not in ModelRegistry(model_dir).list_models()


def test_without_pyarrow_train_names_the_extra_to_install(target, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("a,price\n1,2\n2,3\n")
    # pyarrow is the files extra: a None entry in sys.modules makes importing it fail as when it is absent.
    script = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from regserve.server.cli import main\n"
        f"sys.exit(main(['train', {str(path)!r}, '--server', {target!r}, '--model', 'm', '--target', 'price']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "install regserve[files]" in done.stderr
    assert "Traceback" not in done.stderr
