"""Finiteness checks on the arrays a request brings and the answers a model gives.

Predict calls these on every request, so each check takes the cheapest route for the
size of its array.
"""

from __future__ import annotations

import math

import numpy as np

from regserve.server.errors import InvalidInput

__all__ = ["MAX_ABS_VALUE", "all_finite", "check_finite", "trainable", "untrainable"]

MAX_ABS_VALUE = 1e150
"""Largest magnitude accepted in training data: the square of anything larger overflows float64."""

_TINY = 16
"""Arrays up to this many elements are checked element by element in Python."""
_SMALL = 4096
"""Arrays up to this many elements are checked with ``isfinite().all()``; larger ones by their sum."""


def all_finite(values: np.ndarray) -> bool:
    """True when every element of ``values`` (any shape) is finite.

    Tiny arrays (the answer to a one-row Predict) are checked as Python floats: NumPy's
    fixed cost per call dominates at that size, and entering ``np.errstate`` alone costs
    more than the whole check.  Small arrays take ``isfinite().all()``.  Large arrays are
    summed: a finite sum proves every element finite without a temporary array, and only
    a sum that is not finite (NaN, infinity, or finite values whose sum overflows) is
    looked at element by element.
    """
    if values.size <= _TINY:
        return all(map(math.isfinite, values.ravel().tolist()))
    if values.size <= _SMALL:
        return bool(np.isfinite(values).all())
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(values.sum()):
            return True
    return bool(np.isfinite(values).all())


def check_finite(values: np.ndarray, field: str) -> None:
    """Raise InvalidInput NON_FINITE_VALUE naming the first NaN or infinite element of ``values``.

    ``values`` has shape (n,) or (n_rows, n_columns); ``field`` names the request field.
    """
    if all_finite(values):
        return
    bad = np.argwhere(~np.isfinite(values))
    if bad.size == 0:
        return
    position = tuple(int(i) for i in bad[0])
    where = f"row {position[0]}" + (f", column {position[1]}" if len(position) > 1 else "")
    raise InvalidInput(
        f"{field} holds {values[position]} at {where}; only finite numbers are accepted",
        reason="NON_FINITE_VALUE",
        violations=[(field, f"non-finite value at {where}")],
        metadata={"row": position[0], **({"column": position[1]} if len(position) > 1 else {})},
    )


def trainable(values: np.ndarray) -> bool:
    """True when every element of ``values`` is finite and within ±``MAX_ABS_VALUE``.

    The whole array's extremes take two vectorised passes and no temporary, and a NaN carries through both.
    """
    return values.size == 0 or bool(values.min() >= -MAX_ABS_VALUE and values.max() <= MAX_ABS_VALUE)


def untrainable(values: np.ndarray) -> np.ndarray:
    """Per element of ``values``: True where it is NaN, infinite or past ±``MAX_ABS_VALUE`` (``trainable``'s faults)."""
    with np.errstate(invalid="ignore"):
        return ~(np.abs(values) <= MAX_ABS_VALUE)
