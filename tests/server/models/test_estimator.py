"""LinearModel: predictions, the folded scaler, array round trips and corrupt arrays."""

import io

import numpy as np
import pytest

from regserve.server.errors import IntegrityError, InvalidInput
from regserve.server.models.estimator import LinearModel


def _standardized_regressor(rng):
    return LinearModel(
        "ridge", rng.normal(size=(1, 4)), np.array([0.7]), mean=rng.normal(size=4), scale=rng.uniform(0.5, 2.0, size=4)
    )


def test_predict_folds_the_scaler_into_one_matmul():
    rng = np.random.default_rng(0)
    model = _standardized_regressor(rng)
    X = rng.normal(size=(50, 4))
    expected = ((X - model.mean_) / model.scale_) @ model.coef_[0] + model.intercept_[0]
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12)
    assert model.predict(X).shape == (50,)
    assert model.predict(X[:1]).shape == (1,)
    assert model.n_features_in_ == 4 and not model.is_classifier


def test_wrong_feature_count_is_invalid_input():
    model = _standardized_regressor(np.random.default_rng(0))
    with pytest.raises(InvalidInput) as info:
        model.predict(np.zeros((3, 5)))
    assert info.value.reason == "FEATURE_COUNT_MISMATCH"
    assert info.value.violations == (("inputs", "expected 4 features, got 5"),)
    with pytest.raises(InvalidInput):
        model.predict(np.zeros(4))


def test_binary_classifier_probabilities_and_classes():
    model = LinearModel("logistic", np.array([[2.0, -1.0]]), np.array([0.5]), classes=("no", "yes"))
    X = np.array([[0.0, 0.0], [-1.0, 0.0], [400.0, 0.0], [-400.0, 0.0]])
    z = X @ model.coef_[0] + 0.5
    proba = model.predict_proba(X)
    assert proba.shape == (4, 2)
    np.testing.assert_allclose(proba[:2, 1], 1 / (1 + np.exp(-z[:2])), rtol=1e-14)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-14)
    assert np.isfinite(proba).all() and proba[2, 1] == 1.0 and proba[3, 1] < 1e-300
    np.testing.assert_array_equal(model.predict(X), [1.0, 0.0, 1.0, 0.0])
    assert model.is_classifier


def test_multinomial_probabilities_are_a_stable_softmax():
    rng = np.random.default_rng(3)
    model = LinearModel("logistic", rng.normal(size=(3, 2)) * 300, np.zeros(3), classes=("a", "b", "c"))
    X = rng.normal(size=(20, 2))
    proba = model.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(model.predict(X), np.argmax(X @ model.coef_.T, axis=1))


def test_regressor_has_no_probabilities():
    with pytest.raises(InvalidInput) as info:
        _standardized_regressor(np.random.default_rng(0)).predict_proba(np.zeros((1, 4)))
    assert info.value.reason == "NOT_A_CLASSIFIER"


def _roundtrip(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        return {key: loaded[key] for key in loaded.files}


@pytest.mark.parametrize("kind", ["regressor", "binary", "multinomial"])
def test_to_arrays_round_trips_through_npz(kind):
    rng = np.random.default_rng(4)
    if kind == "regressor":
        model = _standardized_regressor(rng)
    elif kind == "binary":
        model = LinearModel("logistic", rng.normal(size=(1, 3)), rng.normal(size=1), classes=("0", "1"))
    else:
        model = LinearModel(
            "logistic",
            rng.normal(size=(3, 3)),
            rng.normal(size=3),
            mean=rng.normal(size=3),
            scale=np.ones(3),
            classes=("x", "y", "zé"),
        )
    arrays = _roundtrip(model.to_arrays())
    assert all(a.dtype != object for a in arrays.values())
    again = LinearModel.from_arrays(model.kind, arrays)
    X = rng.normal(size=(10, model.n_features_in_))
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    assert again.classes_ == model.classes_
    if model.is_classifier:
        np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize(
    "kind, change",
    [
        ("linear", lambda a: a.update(intercept=np.zeros(2))),
        ("linear", lambda a: a.pop("coef")),
        ("linear", lambda a: a.update(scale=np.ones(3))),
        ("linear", lambda a: a.update(coef=np.full((1, 4), np.nan))),
        ("linear", lambda a: a.update(classes=np.array(["a", "b"]))),
        ("logistic", lambda a: None),
        ("logistic", lambda a: a.update(classes=np.array(["a", "b", "c"]))),
        ("forest", lambda a: None),
        ("linear", lambda a: a.update(scale=-np.ones(4))),
    ],
)
def test_inconsistent_arrays_are_corrupt(kind, change):
    arrays = _standardized_regressor(np.random.default_rng(0)).to_arrays()
    if kind == "logistic":
        arrays["classes"] = np.array(["a", "b"])
    change(arrays)
    if kind == "logistic" and len(arrays["classes"]) == 2:
        LinearModel.from_arrays(kind, arrays)  # the consistent binary case loads
        arrays["coef"] = np.zeros((2, 4))
        arrays["intercept"] = np.zeros(2)
    with pytest.raises(IntegrityError) as info:
        LinearModel.from_arrays(kind, arrays)
    assert info.value.reason == "CORRUPT_MODEL"


def test_only_a_regression_with_no_zero_weight_lets_its_answer_vouch_for_its_inputs():
    assert LinearModel("linear", coef=[[1.0, -2.0]], intercept=[0.5]).answers_reveal_bad_inputs
    # A zero weight would let an infinite input in its column vanish (or become NaN, or not).
    assert not LinearModel("linear", coef=[[1.0, 0.0]], intercept=[0.5]).answers_reveal_bad_inputs
    # A sigmoid or softmax turns an infinite score into a finite probability.
    logistic = LinearModel("logistic", coef=[[1.0, -2.0]], intercept=[0.5], classes=("a", "b"))
    assert not logistic.answers_reveal_bad_inputs
