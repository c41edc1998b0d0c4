"""Unit tests of the finiteness checks Predict and training run on arrays."""

from __future__ import annotations

import numpy as np
import pytest

from regserve.server.errors import InvalidInput
from regserve.server.models.numeric import all_finite, check_finite


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_row_and_column(bad):
    X = np.zeros((5, 3))
    X[3, 2] = bad
    with pytest.raises(InvalidInput) as info:
        check_finite(X, "inputs")
    assert info.value.reason == "NON_FINITE_VALUE"
    assert info.value.metadata == {"row": "3", "column": "2"}


def test_check_finite_accepts_finite_values_whose_sum_overflows():
    check_finite(np.full((2, 2), 1e308), "inputs")


# Sizes on both sides of each path of all_finite: Python floats (up to 16 values),
# isfinite().all() (up to 4096), and a sum with an element-wise look when it is not finite.
@pytest.mark.parametrize("size", [1, 16, 17, 4096, 4097, 20_000])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_finds_one_bad_value_at_every_size(size, bad):
    rng = np.random.default_rng(size)
    values = rng.normal(size=size) * 1e300  # large finite values: their sum may overflow
    assert all_finite(values)
    values[rng.integers(size)] = bad
    assert not all_finite(values)
    assert not all_finite(values.reshape(1, -1))
