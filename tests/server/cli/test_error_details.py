"""FEATURE_COUNT_MISMATCH names the expected and actual feature counts in its metadata, through a real server."""

from __future__ import annotations

import numpy as np
import pytest

from regserve.client import InvalidArgument


def test_predict_and_batch_predict_with_the_wrong_feature_count_name_both_counts(client, linear_data):
    client.train("house", *linear_data)
    with pytest.raises(InvalidArgument) as caught:
        client.predict("house", np.ones((3, 2)))
    assert caught.value.reason == "FEATURE_COUNT_MISMATCH"
    assert caught.value.metadata == {"expected": "5", "actual": "2"}
    with pytest.raises(InvalidArgument) as caught:
        client.batch_predict("house", np.ones((30, 4)), chunk_rows=10)
    assert caught.value.reason == "FEATURE_COUNT_MISMATCH"
    assert caught.value.metadata == {"expected": "5", "actual": "4"}


def test_a_train_chunk_of_another_width_names_both_counts(client, linear_data):
    X, y = linear_data
    chunks = [(X[:100], y[:100]), (X[100:200, :3], y[100:200])]
    with pytest.raises(InvalidArgument) as caught:
        client.train("house", chunks=chunks)
    assert caught.value.reason == "FEATURE_COUNT_MISMATCH"
    assert caught.value.metadata == {"expected": "5", "actual": "3"}
