"""Trainer end to end: agreement with scikit-learn, chunking invariance, errors and cleanup."""

import hashlib
import json

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

from regserve.server.errors import FailedPrecondition, InvalidInput
from regserve.server.models import training
from regserve.server.models.training import Trainer, TrainSpec


def train(spec, X, y, *, chunks=None, spool_dir=None):
    """Fit in one chunk, or split at the given row indices."""
    with Trainer(spec, spool_dir=spool_dir) as trainer:
        for Xc, yc in zip(np.split(X, chunks or []), np.split(y, chunks or []), strict=True):
            trainer.add_chunk(Xc, yc)
        return trainer.finish()


def uneven_splits(n, count, seed=0):
    return sorted(np.random.default_rng(seed).choice(np.arange(1, n), size=count - 1, replace=False).tolist())


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)


# --------------------------------------------------------------------------- against references


def test_linear_matches_lstsq_and_sklearn(diabetes):
    X, y = diabetes
    model = train(TrainSpec(), X, y).model
    expected = np.linalg.lstsq(np.column_stack([np.ones(len(y)), X]), y, rcond=None)[0]
    np.testing.assert_allclose(model.coef_[0], expected[1:], rtol=1e-8)
    np.testing.assert_allclose(model.intercept_[0], expected[0], rtol=1e-8)
    reference = LinearRegression().fit(X, y)
    np.testing.assert_allclose(model.coef_[0], reference.coef_, rtol=1e-8)
    np.testing.assert_allclose(model.predict(X), reference.predict(X), rtol=1e-8)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 10.0])
def test_ridge_matches_sklearn(diabetes, alpha, fit_intercept):
    X, y = diabetes
    model = train(TrainSpec(kind="ridge", alpha=alpha, fit_intercept=fit_intercept), X, y).model
    reference = Ridge(alpha=alpha, fit_intercept=fit_intercept, solver="svd").fit(X, y)
    np.testing.assert_allclose(model.coef_[0], reference.coef_, rtol=1e-8)
    np.testing.assert_allclose(model.intercept_[0], reference.intercept_, rtol=1e-8, atol=1e-9)


def test_standardized_ridge_matches_sklearn_on_scaled_features(diabetes):
    X, y = diabetes
    X = X * np.arange(1, 11) * 100 + 7  # give the columns different units
    mu, sd = X.mean(axis=0), X.std(axis=0)
    model = train(TrainSpec(kind="ridge", alpha=2.0, standardize=True), X, y).model
    reference = Ridge(alpha=2.0).fit((X - mu) / sd, y)
    np.testing.assert_allclose(model.coef_[0], reference.coef_, rtol=1e-8)
    np.testing.assert_allclose(model.mean_, mu, rtol=1e-12)
    np.testing.assert_allclose(model.scale_, sd, rtol=1e-12)
    np.testing.assert_allclose(model.predict(X), reference.predict((X - mu) / sd), rtol=1e-8)


def _logistic_reference(Z, y, alpha):
    # mean log-loss + (alpha/2)‖W‖²  ==  LogisticRegression(C = 1 / (alpha n)).
    return LogisticRegression(C=1.0 / (alpha * len(y)), tol=1e-12, max_iter=100_000).fit(Z, y)


def _objective(proba, y_index, coef, alpha):
    return skm.log_loss(y_index, proba, labels=np.arange(proba.shape[1])) + 0.5 * alpha * float((coef**2).sum())


def test_binary_logistic_matches_sklearn_on_breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    alpha = 0.01
    result = train(TrainSpec(kind="logistic", alpha=alpha, standardize=True, tolerance=1e-12), X, y.astype(float))
    model, info = result.model, result.metadata["solver_info"]
    assert result.metadata["classes"] == ["0", "1"] and info["converged"]
    mu, sd = X.mean(axis=0), X.std(axis=0)
    reference = _logistic_reference((X - mu) / sd, y, alpha)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba((X - mu) / sd), atol=1e-6)
    np.testing.assert_allclose(model.coef_ / model.scale_, reference.coef_ / sd, rtol=1e-5, atol=1e-6)
    ours = _objective(model.predict_proba(X), y, model.coef_, alpha)
    theirs = _objective(reference.predict_proba((X - mu) / sd), y, reference.coef_, alpha)
    assert ours <= theirs * (1 + 1e-12)
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    np.testing.assert_allclose(info["final_loss"], ours, rtol=1e-10)


def test_multinomial_logistic_matches_sklearn_on_iris():
    X, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    alpha = 0.005
    result = train(TrainSpec(kind="logistic", alpha=alpha, tolerance=1e-12), X, labels)
    model = result.model
    assert model.classes_ == ("setosa", "versicolor", "virginica") and model.coef_.shape == (3, 4)
    reference = _logistic_reference(X, y, alpha)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        model.intercept_ - model.intercept_.mean(), reference.intercept_ - reference.intercept_.mean(), rtol=1e-5
    )
    ours = _objective(model.predict_proba(X), y, model.coef_, alpha)
    theirs = _objective(reference.predict_proba(X), y, reference.coef_, alpha)
    assert ours <= theirs * (1 + 1e-12)
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)
    np.testing.assert_array_equal(model.predict(X), reference.predict(X))
    np.testing.assert_allclose(
        result.metadata["training_metrics"]["log_loss"], skm.log_loss(y, model.predict_proba(X)), rtol=1e-10
    )


@pytest.mark.parametrize("solver", ["gd", "sgd"])
def test_iterative_solvers_reach_the_closed_form_loss(solver):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(3000, 6)) * [1, 5, 0.2, 3, 1, 2] + [0, 3, -1, 10, 2, 0]
    y = X @ rng.normal(size=6) + 4 + rng.normal(size=3000)
    exact = train(TrainSpec(kind="ridge", alpha=5.0, standardize=True), X, y)
    spec = TrainSpec(
        kind="ridge",
        alpha=5.0,
        standardize=True,
        solver=solver,
        epochs=500,
        tolerance=1e-15,
        learning_rate=0.5 if solver == "gd" else 0.05,
    )
    result = train(spec, X, y)
    best = exact.metadata["solver_info"]["final_loss"]
    assert result.metadata["solver"] == solver and result.metadata["solver_info"]["iterations"] >= 1
    assert abs(result.metadata["solver_info"]["final_loss"] - best) <= 1e-6 * best
    np.testing.assert_allclose(
        result.metadata["training_metrics"]["mse"], exact.metadata["training_metrics"]["mse"], rtol=1e-6
    )


# --------------------------------------------------------------------------- streaming invariance


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
        _assert_close_tree(a.metadata[key], b.metadata[key], tol)


def _assert_close_tree(a, b, tol):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_close_tree(a[key], b[key], tol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_close_tree(x, y, tol)
    elif isinstance(a, float):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    else:
        assert a == b


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


@pytest.mark.parametrize("kind, solver", [("logistic", "newton"), ("logistic", "sgd"), ("linear", "gd")])
def test_reading_the_spool_in_many_blocks_gives_the_same_model(monkeypatch, kind, solver):
    rng = np.random.default_rng(12)
    X = rng.normal(size=(700, 3))
    y = X @ [1.0, -1.0, 0.5] + rng.normal(size=700)
    if kind == "logistic":
        y = (y > 0).astype(float)
    spec = TrainSpec(
        kind=kind,
        solver=solver,
        alpha=0.1,
        fit_intercept=False,
        learning_rate=0.2,
        epochs=50,
        tolerance=1e-13,
        validation_fraction=0.1,
    )
    one_block = train(spec, X, y)
    monkeypatch.setattr(training, "_READ_BLOCK", 64)
    many_blocks = train(spec, X, y)
    best = one_block.metadata["solver_info"]["final_loss"]
    assert abs(many_blocks.metadata["solver_info"]["final_loss"] - best) <= 1e-6 * best
    assert np.all(many_blocks.model.intercept_ == 0.0)
    _assert_close_tree(one_block.metadata["validation_metrics"], many_blocks.metadata["validation_metrics"], 1e-4)


# --------------------------------------------------------------------------- metadata


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
    held_out = np.random.default_rng([3, 0, 0]).random(4096)[:442] < 0.25
    assert meta["n_validation"] == held_out.sum()
    reference = Ridge(alpha=1.0).fit(X[~held_out], y[~held_out])
    np.testing.assert_allclose(result.model.coef_[0], reference.coef_, rtol=1e-8)
    predicted = reference.predict(X[held_out])
    val = meta["validation_metrics"]
    np.testing.assert_allclose(val["mse"], skm.mean_squared_error(y[held_out], predicted), rtol=1e-8)
    np.testing.assert_allclose(val["mae"], skm.mean_absolute_error(y[held_out], predicted), rtol=1e-8)
    np.testing.assert_allclose(val["r2"], skm.r2_score(y[held_out], predicted), rtol=1e-8)


def test_classification_metrics_and_natural_label_order():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 2))
    y = np.digitize(X[:, 0] + 0.3 * rng.normal(size=300), [-0.5, 0.5])
    labels = np.array(["9", "10", "-2"])[y]
    result = train(TrainSpec(kind="logistic", alpha=0.1, validation_fraction=0.3), X, labels)
    assert result.metadata["classes"] == ["-2", "9", "10"]
    held_out = np.random.default_rng([0, 0, 0]).random(4096)[:300] < 0.3
    index = np.array([{"-2": 0, "9": 1, "10": 2}[label] for label in labels])
    proba = result.model.predict_proba(X[held_out])
    predicted = result.model.predict(X[held_out]).astype(int)
    val = result.metadata["validation_metrics"]
    assert val["accuracy"] == pytest.approx(skm.accuracy_score(index[held_out], predicted), rel=1e-12)
    np.testing.assert_allclose(val["log_loss"], skm.log_loss(index[held_out], proba, labels=[0, 1, 2]), rtol=1e-9)
    assert val["confusion_matrix"] == skm.confusion_matrix(index[held_out], predicted, labels=[0, 1, 2]).tolist()
    assert [c["label"] for c in val["per_class"]] == ["-2", "9", "10"]
    assert sum(c["support"] for c in val["per_class"]) == held_out.sum()


def test_cross_validation_is_deterministic_and_uses_every_fold(diabetes):
    X, y = diabetes
    spec = TrainSpec(kind="ridge", solver="gd", alpha=1.0, standardize=True, cv_folds=5, learning_rate=0.5)
    first, again = train(spec, X, y), train(spec, X, y)
    assert first.metadata["cv_metrics"] == again.metadata["cv_metrics"]
    _assert_close_tree(first.metadata["cv_metrics"], train(spec, X, y, chunks=[200]).metadata["cv_metrics"], 1e-10)
    folds = first.metadata["cv_metrics"]["per_fold"]
    assert len(folds) == 5 and len({f["mse"] for f in folds}) == 5


def test_standardize_with_a_constant_column_stays_finite():
    rng = np.random.default_rng(4)
    X = np.column_stack([rng.normal(size=100), np.full(100, 0.1), rng.normal(size=100)])
    y = X[:, 0] - X[:, 2] + rng.normal(size=100)
    for spec in (
        TrainSpec(standardize=True),
        TrainSpec(kind="ridge", alpha=1.0, standardize=True),
        TrainSpec(standardize=True, solver="gd", learning_rate=0.5),
    ):
        result = train(spec, X, y)
        assert result.model.scale_[1] == 1.0
        assert np.isfinite(result.model.coef_).all() and np.isfinite(result.model.predict(X)).all()
        assert result.metadata["feature_stats"][1]["std"] == pytest.approx(0.0, abs=1e-15)


def test_singular_problem_is_not_an_error():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(50, 2))
    X = np.column_stack([X, X[:, 0] + X[:, 1]])
    y = X @ [1.0, 2.0, 0.0] + rng.normal(size=50)
    result = train(TrainSpec(), X, y)
    info = result.metadata["solver_info"]
    assert info["fallback"] == "lstsq" and info["rank"] == 2
    expected = np.linalg.lstsq(X - X.mean(axis=0), y - y.mean(), rcond=None)[0]
    np.testing.assert_allclose(result.model.coef_[0], expected, rtol=1e-6)


# --------------------------------------------------------------------------- errors and cleanup


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"alpha": -1.0}, "spec.alpha"),
        ({"alpha": float("nan")}, "spec.alpha"),
        ({"learning_rate": 0.0}, "spec.learning_rate"),
        ({"kind": "tree"}, "spec.kind"),
        ({"solver": "magic"}, "spec.solver"),
        ({"solver": "newton"}, "spec.solver"),
        ({"kind": "logistic", "solver": "closed_form"}, "spec.solver"),
        ({"validation_fraction": 1.0}, "spec.validation_fraction"),
        ({"validation_fraction": -0.1}, "spec.validation_fraction"),
        ({"cv_folds": 1}, "spec.cv_folds"),
        ({"cv_folds": -2}, "spec.cv_folds"),
        ({"epochs": 0}, "spec.epochs"),
        ({"batch_size": 0}, "spec.batch_size"),
        ({"max_iterations": 0}, "spec.max_iterations"),
        ({"tolerance": -1.0}, "spec.tolerance"),
        ({"seed": -1}, "spec.seed"),
        ({"feature_names": ("a", "a")}, "spec.feature_names"),
    ],
)
def test_invalid_specs_name_the_field(changes, field, tmp_path):
    with pytest.raises(InvalidInput) as info:
        Trainer(TrainSpec(**changes), spool_dir=tmp_path)
    assert info.value.reason == "INVALID_HYPERPARAMETER"
    assert info.value.violations[0][0] == field
    assert list(tmp_path.iterdir()) == []


def _chunk_error(spec, chunks, tmp_path):
    trainer = Trainer(spec, spool_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(InvalidInput) as info:
        for X, y in chunks:
            trainer.add_chunk(X, y)
    trainer.close()
    trainer.close()  # idempotent
    assert list(tmp_path.iterdir()) == []
    return info.value


def test_feature_count_must_stay_fixed(tmp_path):
    error = _chunk_error(TrainSpec(), [(np.zeros((3, 2)), np.zeros(3)), (np.zeros((2, 3)), np.zeros(2))], tmp_path)
    assert error.reason == "FEATURE_COUNT_MISMATCH" and error.violations[0][0] == "chunk.features"
    error = _chunk_error(TrainSpec(feature_names=("a", "b", "c")), [(np.zeros((3, 2)), np.zeros(3))], tmp_path)
    assert error.reason == "FEATURE_COUNT_MISMATCH" and error.violations[0][0] == "chunk.features"
    error = _chunk_error(TrainSpec(), [(np.zeros(3), np.zeros(3))], tmp_path)
    assert error.reason == "FEATURE_COUNT_MISMATCH"


def test_target_count_must_match(tmp_path):
    error = _chunk_error(TrainSpec(), [(np.zeros((3, 2)), np.zeros(4))], tmp_path)
    assert error.reason == "TARGET_COUNT_MISMATCH" and error.violations[0][0] == "chunk.targets"


def test_non_finite_values_report_the_global_row(tmp_path):
    X = np.ones((5, 3))
    X[3, 2] = np.nan
    error = _chunk_error(
        TrainSpec(), [(np.ones((7, 3)), np.ones(7)), (np.ones((0, 3)), np.ones(0)), (X, np.ones(5))], tmp_path
    )
    assert error.reason == "NON_FINITE_VALUE" and error.violations[0][0] == "chunk.features"
    assert error.metadata == {"row": "10", "column": "2"}
    y = np.ones(5)
    y[1] = np.inf
    error = _chunk_error(TrainSpec(), [(np.ones((7, 3)), np.ones(7)), (np.ones((5, 3)), y)], tmp_path)
    assert error.reason == "NON_FINITE_VALUE" and error.violations[0][0] == "chunk.targets"
    assert error.metadata["row"] == "8"
    error = _chunk_error(TrainSpec(kind="logistic"), [(np.ones((5, 3)), y)], tmp_path)
    assert error.reason == "NON_FINITE_VALUE" and error.metadata["row"] == "1"


def test_labels_are_checked(tmp_path):
    spec = TrainSpec(kind="logistic", class_labels=("a", "b"))
    error = _chunk_error(
        spec, [(np.ones((2, 1)), np.array(["a", "b"])), (np.ones((3, 1)), np.array(["a", "c", "d"]))], tmp_path
    )
    assert error.reason == "UNKNOWN_LABEL" and error.violations[0][0] == "chunk.targets"
    assert error.metadata["row"] == "3"
    error = _chunk_error(
        TrainSpec(kind="logistic", class_labels=("0", "1")), [(np.ones((2, 1)), np.array([1.0, 2.0]))], tmp_path
    )
    assert error.reason == "UNKNOWN_LABEL" and error.metadata["row"] == "1"
    error = _chunk_error(TrainSpec(kind="logistic"), [(np.ones((2, 1)), np.array([1.0, 0.5]))], tmp_path)
    assert error.reason == "INVALID_LABEL" and error.violations[0][0] == "chunk.targets"


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


def test_minimal_cv_uses_every_fold():
    X = np.arange(6.0)[:, None]
    result = train(TrainSpec(cv_folds=3), X, 2 * X[:, 0] + 1)
    assert result.metadata["cv_metrics"]["folds"] == 3
    assert all(f["mse"] is not None for f in result.metadata["cv_metrics"]["per_fold"])
