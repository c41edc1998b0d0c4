"""Fixtures for the training tests: the diabetes regression data set."""

import pytest
from sklearn.datasets import load_diabetes


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)
