"""Inference stored with a version: statsmodels' numbers without an intercept too, and arrays that round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from sklearn.datasets import load_diabetes

from regserve.server.errors import IntegrityError
from regserve.server.models.estimator import LinearModel
from regserve.server.models.intervals import intervals
from regserve.server.models.statistics import coefficient_statistics, linear_inference, logistic_inference
from regserve.server.models.training import Trainer
from regserve.server.models.training.moments import Moments
from regserve.server.models.training.sampling import RowGroups
from regserve.server.models.training.spec import TrainSpec

RTOL = 1e-6


def _fit(spec: TrainSpec, X, y, chunk_rows: int = 1000) -> LinearModel:
    with Trainer(spec) as trainer:
        for start in range(0, len(X), chunk_rows):
            trainer.add_chunk(X[start : start + chunk_rows], y[start : start + chunk_rows])
        return trainer.finish().model


def test_linear_without_intercept_matches_statsmodels():
    X, y = load_diabetes(return_X_y=True)
    model = _fit(TrainSpec(kind="linear", fit_intercept=False), X, y, chunk_rows=50)
    ols = sm.OLS(y, X).fit()
    rows = coefficient_statistics(model, model.inference, [f"x{j}" for j in range(10)], 0.95)
    assert [row.name for row in rows] == [f"x{j}" for j in range(10)]
    np.testing.assert_allclose([row.std_error for row in rows], ols.bse, rtol=RTOL)
    np.testing.assert_allclose([row.p_value for row in rows], ols.pvalues, rtol=RTOL)
    np.testing.assert_allclose([row.robust_std_error for row in rows], sm.OLS(y, X).fit(cov_type="HC3").bse, rtol=RTOL)
    for name in ("rsquared", "rsquared_adj", "fvalue", "f_pvalue", "llf", "aic", "bic", "condition_number"):
        np.testing.assert_allclose(model.inference.values[name], getattr(ols, name), rtol=RTOL, err_msg=name)
    frame = ols.get_prediction(X[:5]).summary_frame(alpha=0.05)
    bounds = intervals(model, X[:5], 0.95)
    np.testing.assert_allclose(bounds.mean_lower, frame["mean_ci_lower"], rtol=RTOL)
    np.testing.assert_allclose(bounds.prediction_upper, frame["obs_ci_upper"], rtol=RTOL)


def test_logistic_without_intercept_matches_statsmodels():
    data = sm.datasets.spector.load_pandas()
    X, y = data.exog.to_numpy(dtype=np.float64), data.endog.to_numpy(dtype=np.float64)
    model = _fit(
        TrainSpec(kind="logistic", alpha=0.0, fit_intercept=False, tolerance=1e-12), X, y.astype(int).astype(str)
    )
    logit = sm.Logit(y, X).fit(disp=0)
    rows = coefficient_statistics(model, model.inference, ["GPA", "TUCE", "PSI"], 0.95)
    np.testing.assert_allclose([row.std_error for row in rows], logit.bse, rtol=RTOL)
    np.testing.assert_allclose([row.ci_low for row in rows], logit.conf_int()[:, 0], rtol=RTOL)
    for name in ("prsquared", "llf", "llnull", "llr", "llr_pvalue", "aic", "bic", "df_model", "df_resid"):
        np.testing.assert_allclose(model.inference.values[name], getattr(logit, name), rtol=RTOL, err_msg=name)


def test_inference_round_trips_through_the_stored_arrays_and_a_bad_one_is_refused():
    X, y = load_diabetes(return_X_y=True)
    model = _fit(TrainSpec(kind="linear", standardize=True), X, y)
    arrays = model.to_arrays()
    assert {"inference_covariance", "inference_robust_covariance", "inference_names", "inference_values"} <= set(arrays)
    assert all(a.dtype.kind in "fU" for a in arrays.values())
    loaded = LinearModel.from_arrays("linear", arrays)
    assert loaded.inference is not None
    np.testing.assert_array_equal(loaded.inference.covariance, model.inference.covariance)
    assert dict(loaded.inference.values) == dict(model.inference.values)
    with pytest.raises(IntegrityError) as refused:
        LinearModel.from_arrays("linear", {**arrays, "inference_covariance": np.eye(3)})
    assert refused.value.reason == "CORRUPT_MODEL"


def test_ridge_penalized_and_multinomial_fits_store_no_inference():
    X, y = load_diabetes(return_X_y=True)
    assert _fit(TrainSpec(kind="ridge", alpha=1.0), X, y).inference is None
    labels = np.array(["a", "b", "c"])[np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))]
    assert _fit(TrainSpec(kind="logistic", alpha=0.0, standardize=True), X, labels).inference is None
    binary = np.where(y > np.median(y), "high", "low")
    assert _fit(TrainSpec(kind="logistic", alpha=0.1), X, binary).inference is None
    assert _fit(TrainSpec(kind="logistic", alpha=0.0), X, binary).inference is not None


def test_with_a_validation_split_the_inference_describes_the_training_rows_only():
    X, y = load_diabetes(return_X_y=True)
    # The finish reads training and validation rows from the same blocks: each block's held-out rows must stay out.
    model = _fit(TrainSpec(kind="linear", validation_fraction=0.3, seed=5), X, y, chunk_rows=100)
    training = RowGroups(5, 0.3, 1).take(0, len(X))[0] >= 0
    design = sm.add_constant(X[training])
    ols = sm.OLS(y[training], design).fit()
    rows = coefficient_statistics(model, model.inference, [f"x{j}" for j in range(10)], 0.95)
    np.testing.assert_allclose([row.std_error for row in rows], ols.bse, rtol=RTOL)
    hc3 = sm.OLS(y[training], design).fit(cov_type="HC3").bse
    np.testing.assert_allclose([row.robust_std_error for row in rows], hc3, rtol=RTOL)
    for name in ("nobs", "rsquared", "fvalue", "llf"):
        np.testing.assert_allclose(model.inference.values[name], getattr(ols, name), rtol=RTOL, err_msg=name)


def test_the_inference_functions_give_what_the_trainer_stores():
    X, y = load_diabetes(return_X_y=True)
    model = _fit(TrainSpec(kind="linear"), X, y, chunk_rows=100)
    moments = Moments(11)
    moments.add(np.column_stack([X, y]))
    blocks = [(X[start : start + 60], y[start : start + 60]) for start in range(0, len(X), 60)]
    again = linear_inference(model, moments, blocks, fit_intercept=True)
    assert again is not None
    # Entries near zero (the diabetes features are centred) differ by rounding only: far below the largest.
    for got, stored in ((again.unscaled, model.inference.unscaled), (again.robust, model.inference.robust)):
        np.testing.assert_allclose(got, stored, rtol=1e-9, atol=1e-12 * np.abs(stored).max())
    assert again.values.keys() == model.inference.values.keys()
    for name, value in model.inference.values.items():
        np.testing.assert_allclose(again.values[name], value, rtol=1e-9, err_msg=name)
    binary = np.where(y > 140, "1", "0")
    classifier = _fit(TrainSpec(kind="logistic", alpha=0.0, standardize=True), X, binary, chunk_rows=100)
    index = (binary == "1").astype(np.float64)
    logistic = logistic_inference(classifier, [(X[:200], index[:200]), (X[200:], index[200:])], fit_intercept=True)
    assert logistic is not None
    stored = classifier.inference.unscaled
    np.testing.assert_allclose(logistic.unscaled, stored, rtol=1e-9, atol=1e-12 * np.abs(stored).max())
    for name, value in classifier.inference.values.items():
        np.testing.assert_allclose(logistic.values[name], value, rtol=1e-9, err_msg=name)


def test_hc3_does_not_depend_on_a_features_units():
    # A feature in units 10^7 times smaller: its HC3 standard error is 10^7 times larger, the others unchanged.
    X, y = load_diabetes(return_X_y=True)
    scaled = X * np.array([1e-7, *[1.0] * 9])
    model = _fit(TrainSpec(kind="linear"), scaled, y, chunk_rows=100)
    hc3 = sm.OLS(y, sm.add_constant(X)).fit(cov_type="HC3").bse * np.array([1.0, 1e7, *[1.0] * 9])
    rows = coefficient_statistics(model, model.inference, [f"x{j}" for j in range(10)], 0.95)
    np.testing.assert_allclose([row.robust_std_error for row in rows], hc3, rtol=RTOL)


@pytest.mark.parametrize("noise", [0.0, 1e-9])
def test_a_collinear_feature_gets_no_statistics_whatever_the_units(noise):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(200, 2)) * np.array([1e6, 1e-3])
    X = np.column_stack([X, X[:, 0] + X[:, 1] + noise * rng.normal(size=200)])
    y = X[:, 0] * 1e-6 + rng.normal(size=200)
    assert _fit(TrainSpec(kind="linear"), X, y).inference is None
    labels = np.where(y > 0, "1", "0")
    assert _fit(TrainSpec(kind="logistic", alpha=0.0), X, labels).inference is None
    # Nearly collinear at the scale of each feature but independent: statistics, as statsmodels gives them.
    X[:, 2] = X[:, 0] * 1e-3 + X[:, 1] + 0.1 * rng.normal(size=200)
    model = _fit(TrainSpec(kind="linear"), X, y)
    rows = coefficient_statistics(model, model.inference, ["a", "b", "c"], 0.95)
    np.testing.assert_allclose([row.std_error for row in rows], sm.OLS(y, sm.add_constant(X)).fit().bse, rtol=RTOL)


@pytest.mark.parametrize(("kind", "solver"), [("linear", "gd"), ("linear", "sgd"), ("logistic", "gd")])
def test_a_fit_that_stops_on_the_loss_gets_a_note_not_statistics(kind, solver):
    # gd stops when the loss changes by less than its tolerance: its coefficients may lie far from the
    # optimum in standard errors, so statistics computed around them would describe nothing.
    X, y = load_diabetes(return_X_y=True)
    target = np.where(y > 140, "1", "0") if kind == "logistic" else y
    spec = TrainSpec(
        kind=kind,
        solver=solver,
        alpha=0.0,
        standardize=True,
        learning_rate=0.5 if solver == "gd" else 0.05,
        epochs=5000,
        tolerance=1e-6,
    )
    with Trainer(spec) as trainer:
        trainer.add_chunk(X, target)
        result = trainer.finish()
    assert result.model.inference is None
    better = "newton" if kind == "logistic" else "the closed form"
    assert result.metadata["inference_note"] == (
        f"{solver} stops when the loss changes by less than its tolerance, short of the optimum that standard "
        f"errors, tests and intervals describe; train with {better} for them"
    )
