"""How numbers name classes: a whole number is the label of its integer text, 1.0 is "1".

The server spells numeric labels this way when a chunk brings them, and the file readers
spell numbers they send as text the same way, so one number is one class however it came.
Kept out of ``models.training`` so that reading a file does not import the trainer.
"""

from __future__ import annotations

import re
from decimal import Decimal

import numpy as np

__all__ = ["integer_text", "whole_float_text_labels", "whole_number_labels"]


def whole_number_labels(values: np.ndarray) -> np.ndarray:
    """Whole numbers ``values`` (n,), of any numeric dtype, as the class labels they stand for: 1.0 is "1"."""
    distinct, inverse = np.unique(values, return_inverse=True)
    return np.array([str(int(v)) for v in distinct.tolist()], dtype=np.str_)[inverse.ravel()]


_FLOAT_NOTATION = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][+-]?\d+|\.\d+[eE][+-]?\d+)")
"""A number written as a float: a decimal point or an exponent, digits only (no spaces, no underscores)."""
_EXACT = 2**53
"""Past this, a float no longer names one integer."""


def integer_text(text: str) -> str:
    """``text`` spelled as its integer when it writes a whole number in float notation ("1.0", "2e1"); else itself.

    Decided on the exact decimal value, so "9007199254740993.0" is not taken for its float's neighbour.
    """
    if not _FLOAT_NOTATION.fullmatch(text):
        return text  # an integer as written, zero-padded codes included, or a word
    value = Decimal(text)
    if value != value.to_integral_value() or abs(value) > _EXACT:
        return text
    return str(int(value))


def whole_float_text_labels(labels: np.ndarray) -> np.ndarray:
    """Text labels (n,) with the whole numbers written as floats spelled as integers: "1.0" is "1", "1.5" stays.

    So a CSV column that pandas wrote from float labels names the classes that the same
    numbers name from Parquet or the client.
    """
    distinct, inverse = np.unique(labels, return_inverse=True)
    spelled = [integer_text(text) for text in distinct.tolist()]
    if spelled == distinct.tolist():
        return labels
    return np.array(spelled, dtype=np.str_)[inverse.ravel()]
