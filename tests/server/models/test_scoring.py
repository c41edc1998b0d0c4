"""Metrics against sklearn.metrics, and the block tallies against the whole-array functions."""

import numpy as np
import pytest
from sklearn import metrics as skm

from regserve.server.models import scoring as metrics


@pytest.fixture
def regression_data():
    rng = np.random.default_rng(1)
    y = rng.normal(size=300) * 5 + 2
    return y, y + rng.normal(size=300)


@pytest.fixture
def classification_data():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(400, 3)) * 2
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in proba])
    return y, proba


def test_regression_functions_match_sklearn(regression_data):
    y, p = regression_data
    np.testing.assert_allclose(metrics.mean_squared_error(y, p), skm.mean_squared_error(y, p), rtol=1e-12)
    np.testing.assert_allclose(metrics.mean_absolute_error(y, p), skm.mean_absolute_error(y, p), rtol=1e-12)
    np.testing.assert_allclose(metrics.r2_score(y, p), skm.r2_score(y, p), rtol=1e-12)


def test_r2_of_constant_target_is_undefined():
    assert np.isnan(metrics.r2_score(np.ones(5), np.arange(5.0)))
    tally = metrics.RegressionTally()
    tally.update(np.ones(5), np.arange(5.0))
    assert tally.result()["r2"] is None


def test_classification_functions_match_sklearn(classification_data):
    y, proba = classification_data
    pred = proba.argmax(axis=1)
    assert metrics.accuracy_score(y, pred) == pytest.approx(skm.accuracy_score(y, pred), rel=1e-12)
    np.testing.assert_allclose(metrics.log_loss(y, proba), skm.log_loss(y, proba), rtol=1e-12)
    confusion = metrics.confusion_matrix(y, pred, 3)
    np.testing.assert_array_equal(confusion, skm.confusion_matrix(y, pred, labels=[0, 1, 2]))
    expected = skm.precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    for ours, theirs in zip(metrics.precision_recall_f1(confusion), expected, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_precision_with_a_never_predicted_class_is_zero():
    confusion = metrics.confusion_matrix(np.array([0, 1, 2]), np.array([0, 0, 0]), 3)
    precision, recall, f1, support = metrics.precision_recall_f1(confusion)
    expected = skm.precision_recall_fscore_support([0, 1, 2], [0, 0, 0], labels=[0, 1, 2], zero_division=0)
    np.testing.assert_allclose(precision, expected[0])
    np.testing.assert_allclose(f1, expected[2])
    np.testing.assert_array_equal(support, [1, 1, 1])


def test_regression_tally_in_blocks_matches_whole_arrays(regression_data):
    y, p = regression_data
    tally = metrics.RegressionTally()
    for lo, hi in [(0, 7), (7, 8), (8, 150), (150, 150), (150, 300)]:
        tally.update(y[lo:hi], p[lo:hi])
    result = tally.result()
    np.testing.assert_allclose(result["mse"], skm.mean_squared_error(y, p), rtol=1e-12)
    np.testing.assert_allclose(result["rmse"], np.sqrt(skm.mean_squared_error(y, p)), rtol=1e-12)
    np.testing.assert_allclose(result["mae"], skm.mean_absolute_error(y, p), rtol=1e-12)
    np.testing.assert_allclose(result["r2"], skm.r2_score(y, p), rtol=1e-12)


def test_classification_tally_in_blocks_matches_sklearn(classification_data):
    y, proba = classification_data
    tally = metrics.ClassificationTally(["a", "b", "c"])
    for lo, hi in [(0, 1), (1, 200), (200, 400)]:
        tally.update(y[lo:hi], np.log(proba[lo:hi]))
    result = tally.result()
    pred = proba.argmax(axis=1)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), rel=1e-12)
    np.testing.assert_allclose(result["log_loss"], skm.log_loss(y, proba), rtol=1e-12)
    assert result["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    _, recall, _, support = skm.precision_recall_fscore_support(y, pred, zero_division=0)
    assert [row["label"] for row in result["per_class"]] == ["a", "b", "c"]
    np.testing.assert_allclose([row["recall"] for row in result["per_class"]], recall, rtol=1e-12)
    assert [row["support"] for row in result["per_class"]] == support.tolist()


def test_binary_tally_from_decision_values_matches_the_log_probability_tally_and_sklearn():
    rng = np.random.default_rng(11)
    z = np.concatenate([rng.normal(scale=4.0, size=500), [0.0, 800.0, -800.0]])  # a tie and saturated rows
    y = (rng.random(z.size) < 1 / (1 + np.exp(-np.clip(z, -50, 50)))).astype(np.float64)
    y[-2:] = [0.0, 1.0]  # each saturated row on its wrong side: a log-loss term of 800
    fast, reference = metrics.ClassificationTally(["no", "yes"]), metrics.ClassificationTally(["no", "yes"])
    for lo, hi in [(0, 1), (1, 250), (250, 250), (250, z.size)]:
        fast.update_binary(y[lo:hi], z[lo:hi])
        reference.update(y[lo:hi], np.column_stack([-np.logaddexp(0.0, z[lo:hi]), -np.logaddexp(0.0, -z[lo:hi])]))
    assert fast.result() == reference.result()
    proba = 1 / (1 + np.exp(-z[:-2]))
    np.testing.assert_allclose(
        fast.result()["log_loss"] * z.size, skm.log_loss(y[:-2], proba, normalize=False) + 1600.0, rtol=1e-12
    )
    assert fast.result()["confusion_matrix"] == skm.confusion_matrix(y, z > 0).tolist()


def test_empty_tallies_report_none():
    assert metrics.RegressionTally().result() == {"mse": None, "rmse": None, "mae": None, "r2": None}
    assert metrics.ClassificationTally(["0", "1"]).result()["accuracy"] is None


def test_merged_regression_tallies_match_one_tally_over_all_rows(regression_data):
    y, p = regression_data
    whole = metrics.RegressionTally()
    whole.update(y, p)
    merged = metrics.RegressionTally()
    for lo, hi in [(0, 0), (0, 40), (40, 41), (41, 300)]:
        part = metrics.RegressionTally()
        part.update(y[lo:hi], p[lo:hi])
        merged.merge(part)
    assert merged.n == whole.n == 300
    for name, value in whole.result().items():
        assert merged.result()[name] == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(merged.result()["r2"], skm.r2_score(y, p), rtol=1e-12)


def test_merged_classification_tallies_match_one_tally_over_all_rows(classification_data):
    y, proba = classification_data
    whole = metrics.ClassificationTally(["a", "b", "c"])
    whole.update(y, np.log(proba))
    merged = metrics.ClassificationTally(["a", "b", "c"])
    for lo, hi in [(0, 150), (150, 150), (150, 400)]:
        part = metrics.ClassificationTally(["a", "b", "c"])
        part.update(y[lo:hi], np.log(proba[lo:hi]))
        merged.merge(part)
    assert merged.result()["confusion_matrix"] == whole.result()["confusion_matrix"]
    assert merged.result()["log_loss"] == pytest.approx(whole.result()["log_loss"], rel=1e-12)
    with pytest.raises(ValueError, match="different classes"):
        merged.merge(metrics.ClassificationTally(["a", "b"]))
