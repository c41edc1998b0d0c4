"""Predictions from a served model: the domain step of Predict and BatchPredict."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from regserve.server.errors import InvalidInput
from regserve.server.models.numeric import all_finite, check_finite

__all__ = ["Prediction", "predict"]


class Prediction(NamedTuple):
    """The answer for a block of rows.

    values : ndarray of shape (n_rows,)
        Regression values, or the class index for classifiers.
    labels : list of str, or None
        The predicted class label per row, for classifiers.
    probabilities : ndarray of shape (n_rows, n_classes), or None
        The probability of each class, for classifiers.
    """

    values: np.ndarray
    labels: list[str] | None = None
    probabilities: np.ndarray | None = None


def _check_output(values: np.ndarray, X: np.ndarray) -> None:
    """A non-finite answer is the caller's bad input (named by row and column) or an overflow.

    Finite inputs so large that the linear map overflows must not come back as NaN
    with status OK.
    """
    if not all_finite(values):
        _refuse_non_finite(values, X)


def _refuse_non_finite(values: np.ndarray, X: np.ndarray) -> None:
    check_finite(X, "inputs")
    row = int(np.argmax(~np.isfinite(values).reshape(values.shape[0], -1).all(axis=1)))
    raise InvalidInput(
        f"The model's answer for row {row} overflows float64; the inputs are too large for it.",
        reason="NON_FINITE_PREDICTION",
        violations=[("inputs", f"row {row} gives a non-finite prediction")],
        metadata={"row": row},
    )


def predict(estimator, X: np.ndarray) -> Prediction:
    """Predict for X, of shape (n_rows, n_features), with a fitted ``LinearModel``.

    Refuses an empty X, NaN or infinite inputs (NON_FINITE_VALUE, naming the row and
    column) and answers that overflow (NON_FINITE_PREDICTION).  When the model's
    answer reveals bad inputs (see ``LinearModel.answers_reveal_bad_inputs``), the
    inputs are scanned only if the answer is not finite.  Classifiers compute the
    probabilities once and take their arg-max, rather than running the linear map twice.
    """
    if not len(X):
        raise InvalidInput(
            "the request holds no rows",
            reason="EMPTY_REQUEST",
            violations=[("inputs", "at least one row is required")],
        )
    if estimator.answers_reveal_bad_inputs:  # a regression: Predict's usual case, in as few steps as it takes
        values = estimator.predict(X)
        if not all_finite(values):
            _refuse_non_finite(values, X)
        return Prediction(values)
    check_finite(X, "inputs")
    if not estimator.is_classifier:
        values = estimator.predict(X)
        _check_output(values, X)
        return Prediction(values)
    probabilities = estimator.predict_proba(X)
    _check_output(probabilities, X)
    index = probabilities.argmax(axis=1)
    labels = np.asarray(estimator.classes_)[index].tolist()
    return Prediction(index.astype(np.float64), labels, probabilities)
