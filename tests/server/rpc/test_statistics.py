"""Coefficient inference and prediction intervals through a real server, against statsmodels on real data."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import statsmodels.api as sm
from sklearn.datasets import load_diabetes

from regserve.client import FailedPrecondition, InvalidArgument, ModelAdminClient
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2

RTOL = 1e-6


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return X, y, sm.OLS(y, sm.add_constant(X)).fit()


@pytest.fixture(scope="module")
def spector():
    data = sm.datasets.spector.load_pandas()
    X, y = data.exog.to_numpy(dtype=np.float64), data.endog.to_numpy(dtype=np.float64)
    return X, y, sm.Logit(y, sm.add_constant(X)).fit(disp=0)


@pytest.fixture
def admin(target):
    with ModelAdminClient(target, timeout=30) as admin:
        yield admin


def _columns(statistics):
    rows = statistics.coefficients
    return {
        field: np.array([getattr(row, field) for row in rows])
        for field in ("estimate", "std_error", "statistic", "p_value", "ci_low", "ci_high", "robust_std_error")
    }


def test_linear_statistics_match_statsmodels_ols(client, diabetes):
    X, y, ols = diabetes
    names = load_diabetes().feature_names
    # Standardized and sent in several chunks: the statistics are in the original feature space all the same.
    client.train("diabetes", X, y, feature_names=names, standardize=True, chunk_rows=100)
    info = client.model_info("diabetes", confidence_level=0.9)
    statistics = info.statistics
    assert statistics.note == ""
    assert [row.name for row in statistics.coefficients] == ["(intercept)", *names]
    assert (statistics.distribution, statistics.covariance_type, statistics.robust_covariance_type) == (
        "t",
        "nonrobust",
        "HC3",
    )
    got = _columns(statistics)
    np.testing.assert_allclose(got["estimate"], ols.params, rtol=RTOL)
    np.testing.assert_allclose(got["std_error"], ols.bse, rtol=RTOL)
    np.testing.assert_allclose(got["statistic"], ols.tvalues, rtol=RTOL)
    np.testing.assert_allclose(got["p_value"], ols.pvalues, rtol=RTOL)
    ci = ols.conf_int(alpha=0.1)
    np.testing.assert_allclose(got["ci_low"], ci[:, 0], rtol=RTOL)
    np.testing.assert_allclose(got["ci_high"], ci[:, 1], rtol=RTOL)
    hc3 = sm.OLS(y, sm.add_constant(X)).fit(cov_type="HC3")
    np.testing.assert_allclose(got["robust_std_error"], hc3.bse, rtol=RTOL)
    assert statistics.confidence_level == 0.9
    assert statistics.num_observations == len(y)
    assert (statistics.df_model, statistics.df_resid) == (ols.df_model, ols.df_resid)
    for field, name in [
        ("residual_variance", "scale"),
        ("r_squared", "rsquared"),
        ("adjusted_r_squared", "rsquared_adj"),
        ("f_statistic", "fvalue"),
        ("f_p_value", "f_pvalue"),
        ("log_likelihood", "llf"),
        ("aic", "aic"),
        ("bic", "bic"),
        ("condition_number", "condition_number"),
    ]:
        np.testing.assert_allclose(getattr(statistics, field), getattr(ols, name), rtol=RTOL, err_msg=field)
    # The default level is 0.95, and the Train response carries the statistics too.
    default = client.model_info("diabetes").statistics
    assert default.confidence_level == 0.95
    np.testing.assert_allclose(_columns(default)["ci_low"], ols.conf_int(alpha=0.05)[:, 0], rtol=RTOL)


def test_linear_intervals_match_statsmodels_summary_frame(client, channel, diabetes):
    X, y, ols = diabetes
    client.train("diabetes", X, y, standardize=True)
    rng = np.random.default_rng(7)
    X_new = X[rng.choice(len(X), 25, replace=False)] + rng.normal(scale=0.01, size=(25, X.shape[1]))
    frame = ols.get_prediction(sm.add_constant(X_new)).summary_frame(alpha=0.1)
    answer = client.predict("diabetes", X_new, interval=0.9)
    np.testing.assert_allclose(answer.values, frame["mean"], rtol=RTOL)
    np.testing.assert_allclose(answer.mean_lower, frame["mean_ci_lower"], rtol=RTOL)
    np.testing.assert_allclose(answer.mean_upper, frame["mean_ci_upper"], rtol=RTOL)
    np.testing.assert_allclose(answer.prediction_lower, frame["obs_ci_lower"], rtol=RTOL)
    np.testing.assert_allclose(answer.prediction_upper, frame["obs_ci_upper"], rtol=RTOL)
    # Without a level nothing else is sent.
    plain = client.predict("diabetes", X_new)
    assert plain.mean_lower is None and plain.prediction_upper is None
    # Typed inputs get typed bounds, and BatchPredict answers the same bounds chunk by chunk.
    stub = pb_grpc.RegressionServiceStub(channel)
    typed = stub.Predict(
        pb.PredictRequest(
            model="diabetes",
            inputs=types_pb2.Matrix(num_columns=X.shape[1], values=X_new.ravel()),
            interval_level=0.9,
        )
    )
    assert not typed.mean_lower.raw
    np.testing.assert_allclose(np.array(typed.prediction_upper.values), frame["obs_ci_upper"], rtol=RTOL)
    chunks = list(client.iter_batch_predict("diabetes", [X_new[:10], X_new[10:]], interval=0.9))
    np.testing.assert_allclose(np.concatenate([c.mean_lower for c in chunks]), frame["mean_ci_lower"], rtol=RTOL)
    np.testing.assert_allclose(np.concatenate([c.prediction_lower for c in chunks]), frame["obs_ci_lower"], rtol=RTOL)


def test_logistic_statistics_and_probability_intervals_match_statsmodels(client, spector):
    X, y, logit = spector
    names = ["GPA", "TUCE", "PSI"]
    client.train(
        "spector", X, np.where(y == 1, "yes", "no"), kind="logistic", alpha=0.0, feature_names=names, tolerance=1e-12
    )
    statistics = client.model_info("spector").statistics
    assert statistics.note == "" and statistics.distribution == "normal"
    assert [row.name for row in statistics.coefficients] == ["(intercept)", *names]
    got = _columns(statistics)
    np.testing.assert_allclose(got["estimate"], logit.params, rtol=RTOL)
    np.testing.assert_allclose(got["std_error"], logit.bse, rtol=RTOL)
    np.testing.assert_allclose(got["statistic"], logit.tvalues, rtol=RTOL)
    np.testing.assert_allclose(got["p_value"], logit.pvalues, rtol=RTOL)
    ci = logit.conf_int()
    np.testing.assert_allclose(got["ci_low"], ci[:, 0], rtol=RTOL)
    np.testing.assert_allclose(got["ci_high"], ci[:, 1], rtol=RTOL)
    for field, name in [
        ("pseudo_r_squared", "prsquared"),
        ("log_likelihood", "llf"),
        ("null_log_likelihood", "llnull"),
        ("llr", "llr"),
        ("llr_p_value", "llr_pvalue"),
        ("aic", "aic"),
        ("bic", "bic"),
    ]:
        np.testing.assert_allclose(getattr(statistics, field), getattr(logit, name), rtol=RTOL, err_msg=field)
    assert statistics.r_squared == 0.0 and statistics.residual_variance == 0.0
    # The probability's interval: the linear predictor's, through the logistic function, as a binomial GLM gives it.
    # IRLS to a tight tolerance: its default (1e-8 on the deviance) leaves the bounds 3e-5 from the optimum's.
    glm = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial()).fit(tol=1e-14)
    frame = glm.get_prediction(sm.add_constant(X)).summary_frame(alpha=0.05)
    answer = client.predict("spector", X, interval=0.95)
    np.testing.assert_allclose(answer.probabilities[:, 1], frame["mean"], rtol=RTOL)
    np.testing.assert_allclose(answer.mean_lower, frame["mean_ci_lower"], rtol=RTOL)
    np.testing.assert_allclose(answer.mean_upper, frame["mean_ci_upper"], rtol=RTOL)
    assert answer.prediction_lower is None


def test_ridge_and_penalized_logistic_say_why_they_have_no_statistics(client, diabetes, spector):
    X, y, _ = diabetes
    client.train("ridge", X, y, kind="ridge", alpha=1.0)
    statistics = client.model_info("ridge").statistics
    assert "ridge" in statistics.note and not statistics.coefficients
    with pytest.raises(FailedPrecondition) as refused:
        client.predict("ridge", X[:2], interval=0.95)
    assert refused.value.reason == "INTERVALS_UNAVAILABLE"
    assert "ridge" in refused.value.message
    Xs, ys, _ = spector
    client.train("penalized", Xs, ys.astype(int).astype(str), kind="logistic", alpha=0.1)
    assert "penalized" in client.model_info("penalized").statistics.note
    with pytest.raises(FailedPrecondition) as refused:
        client.predict("penalized", Xs[:2], interval=0.95)
    assert refused.value.reason == "INTERVALS_UNAVAILABLE"
    with pytest.raises(FailedPrecondition):
        list(client.iter_batch_predict("penalized", [Xs[:2]], interval=0.95))


def test_levels_outside_zero_and_one_are_refused(client, diabetes):
    X, y, _ = diabetes
    client.train("diabetes", X, y)
    with pytest.raises(InvalidArgument) as refused:
        client.predict("diabetes", X[:2], interval=1.5)
    assert refused.value.reason == "INVALID_INTERVAL_LEVEL"
    with pytest.raises(InvalidArgument) as refused:
        client.model_info("diabetes", confidence_level=-0.5)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_fit_that_stopped_short_is_warned_about_and_gets_no_statistics(client, diabetes):
    X, y, _ = diabetes
    # Three epochs of gradient descent on unscaled features stop far from the least-squares solution.
    trained = client.train("short", X, y, solver="gd", epochs=3)
    reasons = [warning.reason for warning in trained.model_version.warnings]
    assert reasons == ["NOT_CONVERGED"] and not trained.model_version.solver_report.converged
    statistics = client.model_info("short").statistics
    assert "not converged" in statistics.note and not statistics.coefficients
    with pytest.raises(FailedPrecondition) as refused:
        client.predict("short", X[:2], interval=0.95)
    assert "not converged" in refused.value.message


def test_each_version_without_statistics_says_why(client, admin, diabetes):
    X, y, _ = diabetes
    constant = np.column_stack([X, np.ones(len(X))])
    client.train("collinear", constant, y)
    assert "singular" in client.model_info("collinear").statistics.note
    client.train("few", X[:8], y[:8])
    assert "8 training rows for 11 parameters" in client.model_info("few").statistics.note
    iris_X = np.random.default_rng(3).normal(size=(90, 2))
    labels = np.repeat(["a", "b", "c"], 30)
    client.train("three", iris_X, labels, kind="logistic", alpha=0.0)
    note = client.model_info("three").statistics.note
    assert "multinomial" in note and "alpha 0" not in note
    admin.create_version("fitted", "linear", np.ones((1, 3)), [0.5])
    note = client.model_info("fitted").statistics.note
    assert "fitted parameters" in note
    with pytest.raises(FailedPrecondition) as refused:
        client.predict("fitted", np.ones((1, 3)), interval=0.9)
    assert "fitted parameters" in refused.value.message


def test_a_fit_without_residuals_has_infinite_statistics_and_warns_nothing(client):
    import warnings

    X = np.arange(10.0)[:, None]
    client.train("exact", X, 2 * X[:, 0] + 1)  # fitted to the last bit: every residual is 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        statistics = client.model_info("exact").statistics
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    got = _columns(statistics)
    assert np.isinf(got["statistic"]).all() and (got["p_value"] == 0).all()
