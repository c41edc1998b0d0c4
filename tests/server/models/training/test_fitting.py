"""Fits against independent references: lstsq, scikit-learn, the closed form; standardization and singular data."""

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

from regserve.server.models.training import TrainSpec
from tests.server.models.training.helpers import train


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
