"""The client library: typed exceptions, deadlines, context manager, against a real server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from regserve.client import DeadlineExceeded, InvalidArgument, NotFound, RegressionClient, RegserveError, Unavailable


def test_exceptions_carry_code_reason_and_violations(client, linear_data):
    client.train("house", *linear_data)
    with pytest.raises(InvalidArgument) as info:
        client.predict("house", np.ones((1, 3)))
    error = info.value
    assert isinstance(error, RegserveError)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "FEATURE_COUNT_MISMATCH"
    assert error.field_violations[0][0] == "inputs"
    assert isinstance(error.__cause__, grpc.RpcError)


def test_not_found_is_typed(client):
    with pytest.raises(NotFound):
        client.model_info("nothing")


def test_an_unreachable_server_is_unavailable():
    with RegressionClient("127.0.0.1:1", timeout=2) as client:
        with pytest.raises((Unavailable, DeadlineExceeded)):
            client.predict("m", np.ones((1, 1)))


def test_a_tiny_deadline_is_exceeded(client, linear_data):
    client.train("house", *linear_data)
    client.timeout = 1e-6
    with pytest.raises(DeadlineExceeded):
        client.batch_predict("house", np.ones((200_000, 5)))


def test_context_manager_closes_the_channel(target):
    with RegressionClient(target) as client:
        pass
    with pytest.raises(ValueError):
        client.predict("m", np.ones((1, 1)))


def test_one_dimensional_input_is_one_row(client, linear_data):
    X, y = linear_data
    client.train("house", X, y)
    np.testing.assert_array_equal(client.predict("house", X[0]).values, client.predict("house", X[:1]).values)
