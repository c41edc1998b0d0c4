"""Logistic defaults through a real server: no hyperparameters fit scikit-learn's LogisticRegression() problem.

``LogisticRegression()`` minimises ``C·Σ log-loss + ½‖W‖²`` with C = 1, intercepts
unpenalised, multinomial for more than two classes.  Its default lbfgs stops at
``tol=1e-4`` or 100 iterations, short of the optimum on unscaled data, so the
reference is the same estimator with its exact Newton solver run to convergence.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from regserve.client import InvalidArgument

DATASETS = {"wine": load_wine, "breast_cancer": load_breast_cancer, "iris": load_iris}


def _split(name: str):
    X, y = DATASETS[name](return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    return X_train, X_test, y_train.astype(str), y_test.astype(str)


def _parameters(version) -> tuple[np.ndarray, np.ndarray]:
    coef = np.array(version.coefficients.values).reshape(-1, version.coefficients.num_columns)
    return coef, np.array(version.intercepts)


def _reference(X, y, **options) -> LogisticRegression:
    """``LogisticRegression(**options)``'s problem solved to convergence by its exact Newton solver."""
    return LogisticRegression(solver="newton-cholesky", tol=1e-12, max_iter=1000, **options).fit(X, y)


@pytest.mark.parametrize("name", ["wine", "breast_cancer", "iris"])
def test_no_hyperparameters_fit_scikit_learns_logistic_regression(client, name):
    X_train, X_test, y_train, y_test = _split(name)
    version = client.train(name, X_train, y_train, kind="logistic").model_version
    reference = _reference(X_train, y_train)
    coef, intercept = _parameters(version)
    assert list(version.classes) == list(reference.classes_)
    np.testing.assert_allclose(coef, reference.coef_, rtol=0, atol=1e-4)
    np.testing.assert_allclose(intercept, reference.intercept_, rtol=0, atol=1e-4)
    # The stored spec names the problem: C = 1, no alpha, on the features as sent.
    assert version.spec.HasField("c") and version.spec.c == 1.0
    assert not version.spec.HasField("alpha") and not version.standardization.enabled
    assert version.solver_report.converged and not version.warnings
    answer = client.predict(name, X_test)
    np.testing.assert_allclose(answer.probabilities, reference.predict_proba(X_test), rtol=0, atol=1e-6)
    assert list(answer.labels) == list(reference.predict(X_test))
    # ModelInfo keeps what Train answered.
    assert client.model_info(name).spec == version.spec


def test_wine_default_beats_the_unpenalised_fit_on_held_out_rows(client):
    """The issue's example: the separable wine split, where the unpenalised fit runs off to infinity."""
    X_train, X_test, y_train, y_test = _split("wine")
    client.train("wine", X_train, y_train, kind="logistic")
    default = np.mean(np.array(client.predict("wine", X_test).labels) == y_test)
    client.train("wine", X_train, y_train, kind="logistic", alpha=0.0)
    unpenalised = np.mean(np.array(client.predict("wine", X_test).labels) == y_test)
    reference = _reference(X_train, y_train).score(X_test, y_test)
    assert default == pytest.approx(reference) and default > unpenalised


def test_c_is_scikit_learns_c_and_standardize_is_standard_scaler(client):
    X_train, _, y_train, _ = _split("breast_cancer")
    version = client.train("cancer", X_train, y_train, kind="logistic", c=0.05, standardize=True).model_version
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    reference = _reference((X_train - mean) / std, y_train, C=0.05)
    coef, intercept = _parameters(version)
    np.testing.assert_allclose(coef, reference.coef_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(intercept, reference.intercept_, rtol=0, atol=1e-6)
    assert version.spec.c == 0.05 and version.standardization.enabled


def test_alpha_zero_is_the_maximum_likelihood_fit_on_non_separated_classes(client):
    # Wine's first two features (alcohol, malic acid) overlap across the three cultivars.
    X, y = load_wine(return_X_y=True)
    X, labels = X[:, :2], y.astype(str)
    version = client.train("overlap", X, labels, kind="logistic", alpha=0.0, tolerance=1e-12).model_version
    reference = _reference(X, labels, C=np.inf)
    coef, intercept = _parameters(version)
    np.testing.assert_allclose(coef, reference.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(intercept, reference.intercept_, rtol=1e-6, atol=1e-8)
    assert version.spec.HasField("alpha") and version.spec.alpha == 0.0 and not version.spec.HasField("c")
    assert version.solver_report.converged and not version.warnings


def test_alpha_zero_matches_statsmodels_logit(client):
    sm = pytest.importorskip("statsmodels.api")
    data = sm.datasets.spector.load_pandas()
    X, y = data.exog.to_numpy(), data.endog.to_numpy().astype(int)
    version = client.train("spector", X, y.astype(str), kind="logistic", alpha=0.0, tolerance=1e-12).model_version
    logit = sm.Logit(y, sm.add_constant(X)).fit(disp=0, tol=1e-12)
    coef, intercept = _parameters(version)
    np.testing.assert_allclose(np.concatenate([intercept, coef[0]]), logit.params, rtol=1e-6)
    assert not version.warnings


def test_complete_separation_is_a_warning_in_train_and_model_info(client):
    X_train, _, y_train, _ = _split("wine")
    response = client.train("wine", X_train, y_train, kind="logistic", alpha=0.0)
    version = response.model_version
    assert [w.reason for w in version.warnings] == ["COMPLETE_SEPARATION"]
    assert "does not exist" in version.warnings[0].message
    # Newton met its gradient tolerance only because the weights ran off: not reported as converged.
    assert not version.solver_report.converged
    info = client.model_info("wine")
    assert list(info.warnings) == list(version.warnings) and not info.solver_report.converged


def test_a_separated_binary_fit_has_no_standard_errors(client):
    X, y = load_breast_cancer(return_X_y=True)
    client.train("cancer", X, y.astype(str), kind="logistic", alpha=0.0)
    statistics = client.model_info("cancer").statistics
    assert not statistics.coefficients and "maximum-likelihood estimate does not exist" in statistics.note


def test_quasi_complete_separation_is_a_warning(client):
    # Iris: setosa is separated from the other two species, which overlap.
    X, y = load_iris(return_X_y=True)
    version = client.train("iris", X, y.astype(str), kind="logistic", alpha=0.0).model_version
    assert [w.reason for w in version.warnings] == ["QUASI_COMPLETE_SEPARATION"]
    assert not version.solver_report.converged


def test_a_penalised_fit_of_separated_classes_has_no_warning(client):
    X_train, _, y_train, _ = _split("wine")
    for options in ({}, {"alpha": 0.01}, {"c": 100.0}):
        version = client.train("wine", X_train, y_train, kind="logistic", **options).model_version
        assert not version.warnings and version.solver_report.converged, options


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"kind": "logistic", "c": 0.0}, "spec.c"),
        ({"kind": "logistic", "c": 1.0, "alpha": 0.5}, "spec.c"),
        ({"kind": "ridge", "c": 1.0}, "spec.c"),
    ],
)
def test_bad_c_is_refused(client, options, field):
    X, y = load_iris(return_X_y=True)
    labels = y.astype(str) if options["kind"] == "logistic" else y.astype(float)
    with pytest.raises(InvalidArgument) as caught:
        client.train("bad", X, labels, **options)
    assert caught.value.reason == "INVALID_HYPERPARAMETER"
    assert field in str(caught.value)


def test_linear_and_ridge_defaults_are_unchanged(client):
    X, y = load_wine(return_X_y=True)
    for kind in ("linear", "ridge"):
        version = client.train(kind, X, y.astype(float), kind=kind).model_version
        assert version.spec.HasField("alpha") and version.spec.alpha == 0.0
        assert not version.spec.HasField("c") and not version.warnings
