"""``regserve predict --csv`` reads the model's features by name from the file's columns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from regserve.client import ModelAdminClient
from regserve.server.cli import main

NAMES = ["bedrooms", "bathrooms", "sqft"]


@pytest.fixture
def houses():
    """60 houses: bedrooms, bathrooms, sqft and a price that weighs them very differently."""
    rng = np.random.default_rng(20261207)
    X = np.column_stack([rng.integers(1, 6, 60), rng.integers(1, 4, 60), rng.uniform(50, 250, 60)]).astype(float)
    y = X @ [10.0, -20.0, 2.0] + 30.0 + rng.normal(scale=0.5, size=60)
    return X, y


def _write(path, columns: dict[str, np.ndarray]):
    header = ",".join(columns)
    np.savetxt(path, np.column_stack(list(columns.values())), delimiter=",", header=header, comments="", fmt="%.17g")
    return path


def _predict(target, path, *flags) -> tuple[int, list[str]]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["predict", "--server", target, "--model", "houses", "--csv", str(path), *flags])
    return status, out.getvalue().splitlines()


def test_columns_in_another_order_and_the_target_are_read_by_name(target, client, houses, tmp_path):
    X, y = houses
    client.train("houses", X, y, feature_names=NAMES)
    expected = client.predict("houses", X).values
    shuffled = _write(tmp_path / "shuffled.csv", {"sqft": X[:, 2], "bathrooms": X[:, 1], "bedrooms": X[:, 0]})
    with_target = _write(tmp_path / "train.csv", {**dict(zip(NAMES, X.T, strict=True)), "price": y})
    for path in (shuffled, with_target):
        status, lines = _predict(target, path, "--chunk-rows", "16")
        assert status == 0
        np.testing.assert_allclose([float(line) for line in lines], expected, rtol=1e-12)


def test_a_file_without_the_models_features_is_refused_naming_them(target, client, houses, tmp_path, capsys):
    X, y = houses
    client.train("houses", X, y, feature_names=NAMES)
    path = _write(tmp_path / "foo.csv", {"foo": X[:, 0], "bar": X[:, 1], "sqft": X[:, 2]})
    status, lines = _predict(target, path)
    assert (status, lines) == (1, [])
    err = capsys.readouterr().err
    assert "has no column 'bedrooms', 'bathrooms' for houses v1" in err
    assert "the file's columns are foo, bar, sqft" in err
    status, _ = _predict(target, path, "--output", "json")
    error = json.loads(capsys.readouterr().err)
    assert status == 1 and error["reason"] == "MISSING_FEATURE_COLUMNS"
    assert error["metadata"]["missing"] == "bedrooms,bathrooms"


def test_a_model_trained_without_names_reads_the_columns_by_position(target, client, houses, tmp_path):
    X, y = houses
    client.train("houses", X, y)  # its features are x0, x1, x2
    expected = client.predict("houses", X).values
    status, lines = _predict(target, _write(tmp_path / "any.csv", {"foo": X[:, 0], "bar": X[:, 1], "baz": X[:, 2]}))
    assert status == 0
    np.testing.assert_allclose([float(line) for line in lines], expected, rtol=1e-12)
    # Named x0.. columns are matched by name like any other.
    swapped = _write(tmp_path / "x.csv", {"x2": X[:, 2], "x0": X[:, 0], "x1": X[:, 1]})
    status, lines = _predict(target, swapped)
    np.testing.assert_allclose([float(line) for line in lines], expected, rtol=1e-12)


def test_the_version_asked_for_is_the_one_whose_columns_are_read(target, client, houses, tmp_path, capsys):
    X, y = houses
    client.train("houses", X, y, feature_names=NAMES)
    client.train("houses", X[:, ::-1], y, feature_names=NAMES[::-1])  # v2: the same features, reversed
    expected = client.predict("houses", X, version="v1").values
    path = _write(tmp_path / "v1.csv", dict(zip(NAMES, X.T, strict=True)))
    for version in ("v1", "v2"):
        status, lines = _predict(target, path, "--version", version)
        assert status == 0
        np.testing.assert_allclose([float(line) for line in lines], expected, rtol=1e-8)


def test_a_split_answering_with_other_features_is_refused(target, client, houses, tmp_path, capsys):
    X, y = houses
    client.train("houses", X, y, feature_names=NAMES)
    client.train("houses", X[:, ::-1], y, feature_names=NAMES[::-1], promote=False)
    with ModelAdminClient(target) as admin:
        admin.set_split("houses", {"v2": 100.0})
    path = _write(tmp_path / "all.csv", dict(zip(NAMES, X.T, strict=True)))
    status, lines = _predict(target, path)
    assert (status, lines) == (1, [])
    err = capsys.readouterr().err
    assert "houses v2 answered, whose features (sqft, bathrooms, bedrooms) are not those of v1" in err
    # Naming the version reads that version's columns.
    status, lines = _predict(target, path, "--version", "v2")
    assert status == 0 and len(lines) == len(y)


def test_a_split_answering_with_another_feature_count_is_refused_the_same_way(target, client, houses, tmp_path, capsys):
    X, y = houses
    client.train("houses", X, y, feature_names=NAMES)
    client.train("houses", X[:, :2], y, feature_names=NAMES[:2], promote=False)
    with ModelAdminClient(target) as admin:
        admin.set_split("houses", {"v2": 100.0})
    path = _write(tmp_path / "all.csv", dict(zip(NAMES, X.T, strict=True)))
    status, lines = _predict(target, path, "--output", "json")
    error = json.loads(capsys.readouterr().err)
    assert (status, lines, error["reason"]) == (1, [], "VERSION_FEATURES_DIFFER")
    assert error["message"].startswith("houses answered with a version of 2 features, not v1 (bedrooms, bathrooms,")
    assert "sqft) the columns were put in order for; name a version (--version)" in error["message"]
    status, lines = _predict(target, path, "--version", "v1")
    assert status == 0 and len(lines) == len(y)
    # A file whose own columns do not fit the version described keeps the server's refusal.
    client.train("unnamed", X, y)
    with ModelAdminClient(target) as admin:
        admin.set_split("unnamed", {"v1": 100.0})
    narrow = _write(tmp_path / "narrow.csv", {"a": X[:, 0], "b": X[:, 1]})
    status = main(["predict", "--server", target, "--model", "unnamed", "--csv", str(narrow), "-o", "json"])
    assert status == 1 and json.loads(capsys.readouterr().err)["reason"] == "FEATURE_COUNT_MISMATCH"


def test_predict_prints_the_intervals_asked_for_as_the_client_gets_them(target, client, houses, tmp_path, capsys):
    X, y = houses
    client.train("houses", X, y, feature_names=NAMES)
    expected = client.predict("houses", X, interval=0.9)
    path = _write(tmp_path / "houses.csv", dict(zip(NAMES, X.T, strict=True)))
    status, lines = _predict(target, path, "--interval", "0.9")
    assert status == 0
    columns = ("values", "mean_lower", "mean_upper", "prediction_lower", "prediction_upper")
    printed = np.array([[float(cell) for cell in line.split("\t")] for line in lines])
    np.testing.assert_array_equal(printed, np.column_stack([getattr(expected, name) for name in columns]))
    status, lines = _predict(target, path, "--interval", "0.9", "-o", "json")
    rows = [json.loads(line) for line in lines]
    assert [row["prediction_upper"] for row in rows] == expected.prediction_upper.tolist()
    # A binary classifier: its label and the interval of its second class's probability.
    noisy = y + np.random.default_rng(5).normal(scale=y.std(), size=len(y))
    client.train("expensive", X, np.where(noisy > np.median(noisy), "high", "low"), kind="logistic", alpha=0.0)
    labelled = client.predict("expensive", X[:1], interval=0.9)
    flags = ["--model", "expensive", "--features", ",".join(map(str, X[0])), "--interval", "0.9"]
    assert main(["predict", "--server", target, *flags]) == 0
    label, lower, upper = capsys.readouterr().out.rstrip("\n").split("\t")
    assert label == labelled.labels[0] and labelled.prediction_lower is None
    assert (float(lower), float(upper)) == (labelled.mean_lower[0], labelled.mean_upper[0])


def test_predict_without_intervals_prints_one_value_a_line(target, client, houses, tmp_path, capsys):
    X, y = houses
    client.train("houses", X, y, feature_names=NAMES)
    assert main(["predict", "--server", target, "--model", "houses", "--features", ",".join(map(str, X[0]))]) == 0
    assert capsys.readouterr().out == f"{client.predict('houses', X[:1]).values.tolist()[0]!r}\n"
