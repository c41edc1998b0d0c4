"""regserve train --dask local:2 against a real server: the model of 8 Parquet files equals the single-node one."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from regserve.server.cli import main
from regserve.server.models.training.sampling import RowGroups

pytest.importorskip("distributed")

SEED = 20261207
FILES, ROWS_PER_FILE, FEATURES = 8, 42_000, 6
SPLIT = ("--validation-fraction", "0.2", "--seed", "7")
NAMES = [f"f{j}" for j in range(FEATURES)]


@pytest.fixture(scope="module")
def data():
    """336,000 seeded rows: features on different scales, a linear target and a binary label from it."""
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(FILES * ROWS_PER_FILE, FEATURES)) * rng.uniform(0.5, 5.0, size=FEATURES)
    coef = rng.normal(size=FEATURES)
    y = X @ coef + 2.0 + rng.normal(scale=0.5, size=X.shape[0])
    score = (X @ coef) / np.std(X @ coef) * 2.0
    label = (rng.uniform(size=X.shape[0]) < 1.0 / (1.0 + np.exp(-score))).astype(np.int64)
    return X, y, label


def species(X: np.ndarray) -> np.ndarray:
    """Three text classes of the rows, by the noisy sign of two of their features (seeded)."""
    rng = np.random.default_rng(SEED + 1)
    names = np.array(["setosa", "versicolor", "virginica"])
    return names[(X[:, 0] + rng.normal(size=len(X)) > 0).astype(int) + (X[:, 1] > 0)]


@pytest.fixture(scope="module")
def parts(tmp_path_factory, data):
    """The rows as 8 Parquet files, in row groups of 10,000."""
    X, y, label = data
    folder = tmp_path_factory.mktemp("parts")
    for i in range(FILES):
        rows = slice(ROWS_PER_FILE * i, ROWS_PER_FILE * (i + 1))
        columns = {name: X[rows, j] for j, name in enumerate(NAMES)}
        table = pa.table({**columns, "y": y[rows], "label": label[rows], "species": species(X[rows])})
        pq.write_table(table, folder / f"part-{i:02d}.parquet", row_group_size=10_000)
    return folder


def training_rows(n: int) -> np.ndarray:
    """Which rows train under SPLIT, by the same row-identity draw as the trainer."""
    group, _ = RowGroups(7, 0.2, 1).take(0, n)
    return group >= 0


def train(target, folder, model, column, *extra) -> int:
    features = ("--feature-columns", ",".join(NAMES))
    return main(
        ["train", str(folder), "--server", target, "--model", model, "--target", column, *features, *SPLIT, *extra]
    )


def fitted(client, model, outputs=1):
    version = client.model_info(model)
    matrix = version.coefficients
    flat = np.frombuffer(matrix.raw, dtype="<f8") if matrix.raw else np.array(matrix.values)
    coef = flat.reshape(-1, FEATURES)
    assert coef.shape[0] == outputs
    return version, coef, np.array(version.intercepts)


def assert_same_run(dask_version, single_version):
    n_train = single_version.num_train
    assert single_version.num_samples == FILES * ROWS_PER_FILE and single_version.num_validation > 0
    assert f"({FILES * ROWS_PER_FILE} rows, {n_train} training)" in dask_version.source
    counts = ("num_samples", "num_train", "num_validation")
    assert [getattr(dask_version, c) for c in counts] == [getattr(single_version, c) for c in counts]
    assert dask_version.data_fingerprint.startswith("dask:")
    assert dask_version.validation.metrics.keys() == single_version.validation.metrics.keys()
    for name, value in single_version.validation.metrics.items():
        assert dask_version.validation.metrics[name] == pytest.approx(value, rel=1e-10, abs=1e-12)
    # The feature statistics and the solver's report, computed on the cluster, are stored with the version.
    assert [f.name for f in dask_version.feature_statistics] == [f.name for f in single_version.feature_statistics]
    for ours, theirs in zip(dask_version.feature_statistics, single_version.feature_statistics, strict=True):
        for field in ("mean", "std", "min", "max"):
            assert getattr(ours, field) == pytest.approx(getattr(theirs, field), rel=1e-10, abs=1e-12)
    # The settings of the fit are stored as a trained version's are: the penalty, the split, the seed.
    for field in ("alpha", "c", "standardize", "validation_fraction", "seed", "tolerance", "max_iterations"):
        assert dask_version.spec.HasField(field) == single_version.spec.HasField(field), field
        assert getattr(dask_version.spec, field) == getattr(single_version.spec, field), field
    assert dask_version.solver_report.solver == single_version.solver_report.solver
    assert dask_version.solver_report.converged == single_version.solver_report.converged
    assert dask_version.solver_report.final_loss == pytest.approx(single_version.solver_report.final_loss, rel=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "extra"), [("linear", ()), ("ridge", ("--alpha", "250"))])
def test_closed_form_on_the_cluster_equals_single_node_and_numpy(target, client, parts, data, kind, extra, capsys):
    X, y, _ = data
    assert train(target, parts, "single", "y", "--kind", kind, *extra) == 0
    assert train(target, parts, "cluster", "y", "--kind", kind, *extra, "--dask", "local:2") == 0
    assert "cluster v1: 336000 rows on the cluster, serving" in capsys.readouterr().out
    single, single_coef, single_intercept = fitted(client, "single")
    cluster, cluster_coef, cluster_intercept = fitted(client, "cluster")
    np.testing.assert_allclose(cluster_coef, single_coef, rtol=1e-10, atol=0)
    np.testing.assert_allclose(cluster_intercept, single_intercept, rtol=1e-10, atol=0)
    assert_same_run(cluster, single)
    train_rows = training_rows(X.shape[0])
    if kind == "linear":
        design = np.column_stack([np.ones(train_rows.sum()), X[train_rows]])
        reference = np.linalg.lstsq(design, y[train_rows], rcond=None)[0]
        expected_coef, expected_intercept = reference[1:], reference[0]
    else:
        ridge = Ridge(alpha=250.0, solver="cholesky").fit(X[train_rows], y[train_rows])
        expected_coef, expected_intercept = ridge.coef_, ridge.intercept_
    np.testing.assert_allclose(cluster_coef[0], expected_coef, rtol=1e-9, atol=1e-12)
    assert cluster_intercept[0] == pytest.approx(expected_intercept, rel=1e-9)


@pytest.mark.slow
def test_logistic_newton_on_the_cluster_equals_single_node_and_scikit_learn(target, client, parts, data):
    X, _, label = data
    assert train(target, parts, "single", "label", "--kind", "logistic") == 0
    assert train(target, parts, "cluster", "label", "--kind", "logistic", "--dask", "local:2") == 0
    single, single_coef, single_intercept = fitted(client, "single")
    cluster, cluster_coef, cluster_intercept = fitted(client, "cluster")
    assert list(cluster.classes) == list(single.classes) == ["0", "1"]
    # Both stop where the gradient's norm is below the tolerance (1e-8): equal to far better than 1e-6.
    np.testing.assert_allclose(cluster_coef, single_coef, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cluster_intercept, single_intercept, rtol=1e-6, atol=1e-9)
    for name, value in single.validation.metrics.items():
        assert cluster.validation.metrics[name] == pytest.approx(value, rel=1e-7, abs=1e-9)
    assert_same_run(cluster, single)
    train_rows = training_rows(X.shape[0])
    reference = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(X[train_rows], label[train_rows])
    np.testing.assert_allclose(cluster_coef[0], reference.coef_[0], rtol=1e-5, atol=1e-7)
    assert cluster_intercept[0] == pytest.approx(reference.intercept_[0], rel=1e-5, abs=1e-7)


def test_cross_validation_is_refused_before_a_cluster_starts(target, parts, capsys):
    assert train(target, parts, "cv", "y", "--cv", "3", "--dask", "local:1", "-o", "json") == 1
    assert "INVALID_HYPERPARAMETER" in capsys.readouterr().err


@pytest.mark.slow
def test_parquet_files_in_s3_train_on_the_cluster_as_the_same_local_files(target, client, parts, s3_url):
    import s3fs

    bucket = s3_url.removeprefix("s3://").split("/")[0]
    s3 = s3fs.S3FileSystem(skip_instance_cache=True)
    for path in sorted(parts.glob("part-0[0-3].parquet")):
        s3.put(str(path), f"{bucket}/data/{path.name}")
    local = parts.parent / "local-four"
    local.mkdir(exist_ok=True)
    for path in sorted(parts.glob("part-0[0-3].parquet")):
        (local / path.name).write_bytes(path.read_bytes())
    assert train(target, local, "local", "y", "--dask", "local:1") == 0
    assert train(target, f"s3://{bucket}/data", "remote", "y", "--dask", "local:1") == 0
    local_version, local_coef, local_intercept = fitted(client, "local")
    remote_version, remote_coef, remote_intercept = fitted(client, "remote")
    # The same rows in other chunks (row groups here, 65,536-row chunks locally): equal up to the moments' rounding.
    np.testing.assert_allclose(remote_coef, local_coef, rtol=1e-12, atol=0)
    np.testing.assert_allclose(remote_intercept, local_intercept, rtol=1e-12, atol=0)
    assert remote_version.data_fingerprint == local_version.data_fingerprint
    for name, value in local_version.validation.metrics.items():
        assert remote_version.validation.metrics[name] == pytest.approx(value, rel=1e-12)


@pytest.mark.slow
def test_multinomial_logistic_on_the_cluster_equals_single_node(target, client, parts):
    assert train(target, parts, "single3", "species", "--kind", "logistic", "--C", "0.05") == 0
    assert train(target, parts, "cluster3", "species", "--kind", "logistic", "--C", "0.05", "--dask", "local:2") == 0
    single, single_coef, single_intercept = fitted(client, "single3", outputs=3)
    cluster, cluster_coef, cluster_intercept = fitted(client, "cluster3", outputs=3)
    assert list(cluster.classes) == list(single.classes) == ["setosa", "versicolor", "virginica"]
    # Both stop where the gradient's norm is below 1e-8; coefficients near 0 then differ by about that much.
    np.testing.assert_allclose(cluster_coef, single_coef, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cluster_intercept, single_intercept, rtol=1e-6, atol=1e-7)
    for name, value in single.validation.metrics.items():
        assert cluster.validation.metrics[name] == pytest.approx(value, rel=1e-7, abs=1e-9)
    assert_same_run(cluster, single)


def _one_json_error(capsys) -> dict:
    """The error object of a failed ``-o json`` command: stderr holds it alone, on one line."""
    (line,) = capsys.readouterr().err.splitlines()
    return json.loads(line)


def test_an_unreachable_object_store_is_one_message_naming_the_url(target, capsys, monkeypatch):
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # refused at once on loopback
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()  # a cached client would keep another endpoint
    try:
        assert train(target, "s3://nowhere/data", "remote", "y", "--dask", "local:1", "-o", "json") == 1
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    error = _one_json_error(capsys)
    assert error["reason"] == "STORAGE_ERROR" and "s3://nowhere/data" in error["message"], error


def test_a_bad_row_on_a_worker_is_reported_once_without_the_workers_log(target, tmp_path, capfd):
    folder = tmp_path / "nulls"
    folder.mkdir()
    values = pa.array([1.0, None, 3.0] * 10)
    columns = {name: np.arange(30.0) * (j + 1) % 11 for j, name in enumerate(NAMES)}
    pq.write_table(pa.table({**columns, "y": np.arange(30.0)}), folder / "part-0.parquet")
    pq.write_table(pa.table({**columns, NAMES[2]: values, "y": np.arange(30.0)}), folder / "part-1.parquet")
    assert train(target, folder, "nulls", "y", "--dask", "local:1", "-o", "json") == 1
    error = _one_json_error(capfd)  # the worker processes write to the file descriptor, not to sys.stderr
    assert error["reason"] and "part-1.parquet" in error["message"], error


def test_complete_separation_on_the_cluster_is_stored_as_a_warning_as_single_node_does(
    target, client, tmp_path, monkeypatch
):
    rng = np.random.default_rng(SEED + 2)
    folder = tmp_path / "separated"
    folder.mkdir()
    for i in range(2):
        X = rng.normal(size=(300, FEATURES))
        columns = {name: X[:, j] for j, name in enumerate(NAMES)}
        pq.write_table(
            pa.table({**columns, "y": X[:, 0] + 0.5, "label": (X[:, 0] > 0).astype(np.int64)}), folder / f"p{i}.parquet"
        )
    logistic = ("--kind", "logistic", "--alpha", "0")
    assert train(target, folder, "sep_single", "label", *logistic) == 0
    monkeypatch.chdir(tmp_path)
    assert train(target, "separated", "sep_cluster", "label", *logistic, "--dask", "local:1") == 0
    single, cluster = client.model_info("sep_single"), client.model_info("sep_cluster")
    assert cluster.source.startswith(f"regserve train --dask of {folder} (")  # a relative path, made absolute
    assert single.source == f"regserve train of {folder}"
    assert [w.reason for w in single.warnings] == [w.reason for w in cluster.warnings] == ["COMPLETE_SEPARATION"]
    assert not cluster.solver_report.converged and not single.solver_report.converged
    # Penalised, the optimum exists: no warning. --source replaces the path on the cluster's version too.
    cluster_run = ("--dask", "local:1", "--source", "nightly export")
    assert train(target, folder, "sep_penalised", "label", "--kind", "logistic", *cluster_run) == 0
    penalised = client.model_info("sep_penalised")
    assert not penalised.warnings and penalised.source == "nightly export"
