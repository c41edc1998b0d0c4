"""Separation of an unpenalised logistic fit: found exactly by linear programs, or by the fit's own margins."""

import numpy as np
import pytest

from regserve.server.models.training import TrainSpec, separation
from regserve.server.models.training.sampling import RowGroups
from tests.server.models.training.helpers import train


def _overlapping(seed: int, classes: int = 2, n: int = 300):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    scores = X @ rng.normal(size=(3, classes)) + rng.gumbel(size=(n, classes))
    return X, np.argmax(scores, axis=1).astype(str)


def _completely_separated(seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 3))
    return X, np.where(X @ np.array([1.0, -2.0, 0.5]) > 0.3, "yes", "no")


def _quasi_separated(seed: int):
    # Half the rows sit on x0 = 0 with random classes; the other half are split by the sign of x0.
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] > 0).astype(int)
    X[:100, 0], y[:100] = 0.0, rng.integers(0, 2, size=100)
    return X, y.astype(str)


def _warnings(X, y, tmp_path, **changes):
    result = train(TrainSpec(kind="logistic", alpha=0.0, **changes), X, y, spool_dir=tmp_path)
    return [w["reason"] for w in result.metadata["warnings"]], result.metadata["solver_info"]["converged"]


def _three_classes_one_separated(seed: int):
    X, y = _overlapping(seed, classes=2)
    far = np.random.default_rng(seed + 1).normal(size=(60, 3)) + np.array([12.0, 0.0, 0.0])
    return np.vstack([X, far]), np.concatenate([y, np.full(60, "far")])


@pytest.mark.parametrize(
    "data, expected",
    [
        (_overlapping(1), []),
        (_overlapping(2, classes=3), []),
        (_completely_separated(3), ["COMPLETE_SEPARATION"]),
        (_quasi_separated(4), ["QUASI_COMPLETE_SEPARATION"]),
        (_three_classes_one_separated(5), ["QUASI_COMPLETE_SEPARATION"]),
    ],
    ids=["binary overlap", "multinomial overlap", "complete", "quasi-complete", "one class apart"],
)
def test_linear_programs_tell_separation_from_overlap(data, expected, tmp_path):
    reasons, converged = _warnings(*data, tmp_path)
    assert reasons == expected
    assert converged == (not expected)


def test_separation_is_found_without_an_intercept(tmp_path):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(200, 3))
    through_origin = np.where(X @ np.array([1.0, -2.0, 0.5]) > 0, "yes", "no")
    assert _warnings(X, through_origin, tmp_path, fit_intercept=False)[0] == ["COMPLETE_SEPARATION"]
    # Split away from the origin, the same rows cannot be separated by a boundary through it.
    assert _warnings(*_completely_separated(6), tmp_path, fit_intercept=False)[0] == []


def test_penalised_fits_are_not_checked(tmp_path):
    X, y = _completely_separated(7)
    for changes in ({"alpha": 0.01}, {}):
        result = train(TrainSpec(kind="logistic", **{"alpha": None, **changes}), X, y, spool_dir=tmp_path)
        assert result.metadata["warnings"] == [] and result.metadata["solver_info"]["converged"]


@pytest.mark.parametrize("cause", ["no scipy", "too many values"])
def test_without_the_linear_programs_complete_separation_is_found_from_the_fit(cause, tmp_path, monkeypatch):
    if cause == "no scipy":
        monkeypatch.setattr(separation, "_linprog", lambda: None)
    else:
        monkeypatch.setattr(separation, "LP_MAX_VALUES", 10)
    assert _warnings(*_completely_separated(8), tmp_path)[0] == ["COMPLETE_SEPARATION"]
    assert _warnings(*_overlapping(9, classes=3), tmp_path)[0] == []
    # What only a linear program can see is not claimed.
    assert _warnings(*_quasi_separated(10), tmp_path)[0] == []


def test_the_warning_says_what_was_found_and_what_to_do(tmp_path):
    result = train(TrainSpec(kind="logistic", alpha=0.0), *_quasi_separated(11), spool_dir=tmp_path)
    (warning,) = result.metadata["warnings"]
    assert "100 of the 200 training rows" in warning["message"]
    assert "maximum-likelihood estimate does not exist" in warning["message"]
    assert "alpha > 0" in warning["message"]


def test_a_class_held_out_entirely_is_warned_of(tmp_path):
    X, y = _overlapping(40)
    y[:3] = "rare"
    # The seed whose split holds the three "rare" rows out, found by the split itself.
    held = [seed for seed in range(50) if (RowGroups(seed, 0.5, 1).take(0, 3)[0] < 0).all()][0]
    result = train(TrainSpec(kind="logistic", validation_fraction=0.5, seed=held), X, y, spool_dir=tmp_path)
    warning = [w for w in result.metadata["warnings"] if w["reason"] == "CLASS_NOT_IN_TRAINING"]
    assert len(warning) == 1 and "'rare'" in warning[0]["message"]
    trained = train(TrainSpec(kind="logistic"), X, y, spool_dir=tmp_path)
    assert trained.metadata["warnings"] == []


def test_a_linear_fit_with_no_more_rows_than_parameters_is_warned_of(tmp_path):
    rng = np.random.default_rng(41)
    X, y = rng.normal(size=(3, 3)), rng.normal(size=3)
    reasons = [w["reason"] for w in train(TrainSpec(), X, y, spool_dir=tmp_path).metadata["warnings"]]
    assert reasons == ["TOO_FEW_ROWS_FOR_PARAMETERS"]
    assert train(TrainSpec(kind="ridge", alpha=1.0), X, y, spool_dir=tmp_path).metadata["warnings"] == []
    X, y = rng.normal(size=(5, 3)), rng.normal(size=5)
    assert train(TrainSpec(), X, y, spool_dir=tmp_path).metadata["warnings"] == []
