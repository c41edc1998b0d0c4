"""Trainer end to end: chunking invariance, the fingerprint, the metadata, finish errors and cleanup."""

import errno
import hashlib
import json

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import Ridge

from regserve.server.errors import FailedPrecondition, InvalidInput
from regserve.server.models.training import Trainer, TrainSpec
from regserve.server.models.training.sampling import RowGroups
from tests.server.models.training.helpers import assert_close_tree, train, uneven_splits


def _assert_same_run(a, b, tol=1e-10):
    np.testing.assert_allclose(a.model.coef_, b.model.coef_, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.model.intercept_, b.model.intercept_, rtol=tol, atol=tol)
    ma, mb = dict(a.metadata), dict(b.metadata)
    for key in (
        "duration_seconds",
        "solver_info",
        "training_metrics",
        "validation_metrics",
        "cv_metrics",
        "feature_stats",
    ):
        ma.pop(key), mb.pop(key)
    assert ma == mb  # counts, classes, fingerprint, names, spec
    for key in ("feature_stats", "training_metrics", "validation_metrics", "cv_metrics", "solver_info"):
        assert_close_tree(a.metadata[key], b.metadata[key], tol)


@pytest.mark.parametrize("kind, solver", [("ridge", "closed_form"), ("ridge", "sgd"), ("logistic", "newton")])
def test_997_uneven_chunks_give_the_same_run_as_one(kind, solver):
    rng = np.random.default_rng(11)
    n = 6000
    X = rng.normal(size=(n, 4)) * [1, 100, 0.01, 5] + [1e3, 0, 5, -2]
    score = X @ np.array([1.0, 0.01, 50.0, -0.3]) - 1250.6
    y = score + rng.normal(size=n) if kind == "ridge" else np.digitize(score + rng.logistic(size=n), [-1, 1])
    spec = TrainSpec(
        kind=kind,
        solver=solver,
        alpha=1.0,
        standardize=True,
        validation_fraction=0.2,
        cv_folds=3,
        seed=5,
        epochs=20,
        learning_rate=0.05,
    )
    y = y.astype(float) if kind == "ridge" else y.astype(str)
    whole = train(spec, X, y)
    pieces = train(spec, X, y, chunks=uneven_splits(n, 997))
    _assert_same_run(whole, pieces)
    assert whole.metadata["n_validation"] + whole.metadata["n_train"] == n
    assert 0.17 * n < whole.metadata["n_validation"] < 0.23 * n


def test_fingerprint_hashes_rows_in_stream_order(diabetes):
    X, y = diabetes
    result = train(TrainSpec(), X, y, chunks=[1, 100, 101])
    assert result.metadata["fingerprint"] == hashlib.sha256(np.column_stack([X, y]).astype("<f8").tobytes()).hexdigest()
    shuffled = train(TrainSpec(), X[::-1], y[::-1])
    assert shuffled.metadata["fingerprint"] != result.metadata["fingerprint"]
    # Float class labels hash as the integer text they are converted to.
    labels = (y > 140).astype(float)
    as_floats = train(TrainSpec(kind="logistic"), X, labels)
    as_text = train(TrainSpec(kind="logistic"), X, labels.astype(int).astype(str), chunks=[3])
    assert as_floats.metadata["fingerprint"] == as_text.metadata["fingerprint"]


def test_metadata_is_json_and_describes_the_run(diabetes):
    X, y = diabetes
    names = tuple(f"f{j}" for j in range(10))
    result = train(
        TrainSpec(kind="ridge", alpha=1.0, validation_fraction=0.25, cv_folds=4, seed=3, feature_names=names),
        X,
        y,
        chunks=[50, 51, 300],
    )
    meta = json.loads(json.dumps(result.metadata, allow_nan=False))
    assert meta == result.metadata
    assert meta["kind"] == "ridge" and meta["solver"] == "closed_form" and meta["classes"] is None
    assert meta["spec"]["feature_names"] == list(names) and meta["feature_names"] == list(names)
    assert meta["n_samples"] == 442 and meta["n_features"] == 10
    stats = meta["feature_stats"]
    np.testing.assert_allclose([s["mean"] for s in stats], X.mean(axis=0), atol=1e-15)
    np.testing.assert_allclose([s["std"] for s in stats], X.std(axis=0), rtol=1e-12)
    assert [s["min"] for s in stats] == X.min(axis=0).tolist() and [s["max"] for s in stats] == X.max(axis=0).tolist()
    info = meta["solver_info"]
    assert info["rank"] == 10 and info["fallback"] is None and info["condition_number"] > 1
    cv = meta["cv_metrics"]
    assert cv["folds"] == 4 and len(cv["per_fold"]) == 4 and set(cv["mean"]) == {"mse", "rmse", "mae", "r2"}
    np.testing.assert_allclose(cv["mean"]["mse"], np.mean([f["mse"] for f in cv["per_fold"]]), rtol=1e-12)
    # The documented split rule: row i is held out when its seeded uniform is below the fraction.
    held_out = RowGroups(3, 0.25, 1).take(0, 442)[0] < 0
    assert meta["n_validation"] == held_out.sum()
    reference = Ridge(alpha=1.0).fit(X[~held_out], y[~held_out])
    np.testing.assert_allclose(result.model.coef_[0], reference.coef_, rtol=1e-8)
    predicted = reference.predict(X[held_out])
    val = meta["validation_metrics"]
    np.testing.assert_allclose(val["mse"], skm.mean_squared_error(y[held_out], predicted), rtol=1e-8)
    np.testing.assert_allclose(val["mae"], skm.mean_absolute_error(y[held_out], predicted), rtol=1e-8)
    np.testing.assert_allclose(val["r2"], skm.r2_score(y[held_out], predicted), rtol=1e-8)


def _finish_error(spec, chunks, tmp_path):
    with Trainer(spec, spool_dir=tmp_path) as trainer:
        for X, y in chunks:
            trainer.add_chunk(X, y)
        with pytest.raises(InvalidInput) as info:
            trainer.finish()
        assert list(tmp_path.iterdir()) == []  # removed by the failed finish itself
    return info.value


def test_finish_errors_remove_the_spool(tmp_path):
    error = _finish_error(TrainSpec(), [(np.ones((0, 2)), np.ones(0))], tmp_path)
    assert error.reason == "EMPTY_TRAINING_SET" and error.violations[0][0] == "chunks"
    error = _finish_error(TrainSpec(kind="logistic"), [(np.ones((4, 2)), np.array(["x"] * 4))], tmp_path)
    assert error.reason == "SINGLE_CLASS" and error.violations[0][0] == "chunk.targets"
    error = _finish_error(TrainSpec(validation_fraction=0.01), [(np.ones((3, 2)), np.ones(3))], tmp_path)
    assert error.reason == "TOO_FEW_ROWS" and error.violations[0][0] == "spec.validation_fraction"
    error = _finish_error(TrainSpec(validation_fraction=0.99), [(np.ones((3, 2)), np.ones(3))], tmp_path)
    assert error.reason == "TOO_FEW_ROWS" and error.violations[0][0] == "spec.validation_fraction"
    error = _finish_error(TrainSpec(cv_folds=5), [(np.ones((4, 2)), np.ones(4))], tmp_path)
    assert error.reason == "TOO_FEW_ROWS" and error.violations[0][0] == "spec.cv_folds"


def test_a_full_disk_fails_the_next_call_and_leaves_no_spool(tmp_path, diabetes):
    X, y = diabetes
    with Trainer(TrainSpec(), spool_dir=tmp_path) as trainer:
        # The spool's writes go to /dev/full, as they would on a full disk: they run in the store thread.
        trainer._spool.close()
        trainer._spool = open("/dev/full", "wb")  # noqa: SIM115 - the trainer closes it
        trainer.add_chunk(X, y)
        with pytest.raises(OSError) as info:
            trainer.add_chunk(X, y)
        assert info.value.errno == errno.ENOSPC
        assert trainer.rows_seen == 442  # the failed call took no rows
    assert list(tmp_path.iterdir()) == []
    with Trainer(TrainSpec(), spool_dir=tmp_path) as trainer:
        trainer._spool.close()
        trainer._spool = open("/dev/full", "wb")  # noqa: SIM115 - the trainer closes it
        trainer.add_chunk(X[:1], y[:1])  # a row small enough to sit in the file's buffer until it is flushed
        with pytest.raises(OSError):
            trainer.finish()
    assert list(tmp_path.iterdir()) == []


def test_finished_trainer_refuses_more_work_and_cleans_up(tmp_path, diabetes):
    X, y = diabetes
    trainer = Trainer(TrainSpec(), spool_dir=tmp_path)
    trainer.add_chunk(X, y)
    assert trainer.rows_seen == 442
    trainer.finish()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FailedPrecondition):
        trainer.add_chunk(X, y)
    with pytest.raises(FailedPrecondition):
        trainer.finish()
    trainer.close()


def test_fingerprint_of_labels_is_each_row_then_its_length_prefixed_label(diabetes):
    X, y = diabetes
    labels = np.array(["low", "mid", "é", "high"])[np.digitize(y, [100, 150, 200])]
    expected = hashlib.sha256()
    for row, label in zip(X.astype("<f8"), labels.tolist(), strict=True):
        raw = label.encode("utf-8")
        expected.update(row.tobytes() + len(raw).to_bytes(4, "little") + raw)
    for chunks in ([], [1, 57, 300]):
        result = train(TrainSpec(kind="logistic"), X, labels, chunks=chunks)
        assert result.metadata["fingerprint"] == expected.hexdigest()
    # Labels of one encoded width take another route to the same format.
    same_width = np.array(["lo", "mi", "hi", "ab"])[np.digitize(y, [100, 150, 200])]
    one_width = hashlib.sha256()
    for row, label in zip(X.astype("<f8"), same_width.tolist(), strict=True):
        raw = label.encode("utf-8")
        one_width.update(row.tobytes() + len(raw).to_bytes(4, "little") + raw)
    assert train(TrainSpec(kind="logistic"), X, same_width, chunks=[5]).metadata["fingerprint"] == one_width.hexdigest()


@pytest.mark.parametrize("labels", [["yes", "no"], ["a", "bb", "ccc"], ["ü", "u"]])
def test_fingerprint_of_labels_is_each_rows_x_bytes_then_its_label(labels):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 2))
    y = np.array(labels)[rng.integers(0, len(labels), 60)]
    y[:10] = labels[0]  # the other labels first appear in later chunks
    expected = hashlib.sha256()
    for row, label in zip(X.astype("<f8"), y, strict=True):
        raw = str(label).encode("utf-8")
        expected.update(row.tobytes() + len(raw).to_bytes(4, "little") + raw)
    for chunks in ([], [10, 11, 37]):
        result = train(TrainSpec(kind="logistic"), X, y, chunks=chunks)
        assert result.metadata["fingerprint"] == expected.hexdigest()
