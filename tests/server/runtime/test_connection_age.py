"""--max-connection-age: the server asks clients to reconnect, and calls go on without a failure."""

from __future__ import annotations

import json
import logging
import time

import pytest

from regserve.client import RegressionClient
from regserve.server.config import Settings
from tests.conftest import start_server

WAIT_SECONDS = 60  # generous: the loop ends as soon as the reconnections are seen


def _peers(caplog) -> set[str]:
    """The distinct client addresses (host and source port) of the Predict calls in the access log."""
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "regserve.access"]
    return {line["peer"] for line in lines if line["method"].endswith("/Predict")}


def test_a_client_under_a_short_connection_age_reconnects_and_no_call_fails(tmp_path, caplog, linear_data):
    caplog.set_level(logging.INFO, logger="regserve.access")
    X, y = linear_data
    app = start_server(tmp_path / "models", max_connection_age=1.0, access_log_peer=True)
    try:
        with RegressionClient(f"127.0.0.1:{app.port}", timeout=30) as client:
            client.train("house", X, y)
            calls, start = 0, time.monotonic()
            # Each connection is closed after about a second; every call must still succeed.
            while len(_peers(caplog)) < 3:
                assert time.monotonic() - start < WAIT_SECONDS, f"one connection only after {calls} calls"
                assert client.predict("house", X[:4]).values.shape == (4,)
                calls += 1
    finally:
        app.stop(0)
    assert len(_peers(caplog)) >= 3
    print(f"{calls} Predict calls over {len(_peers(caplog))} connections, none failed")


def test_connections_are_not_aged_by_default(tmp_path, caplog, linear_data):
    caplog.set_level(logging.INFO, logger="regserve.access")
    X, y = linear_data
    assert Settings().max_connection_age == 0
    app = start_server(tmp_path / "models", access_log_peer=True)
    try:
        with RegressionClient(f"127.0.0.1:{app.port}", timeout=30) as client:
            client.train("house", X, y)
            for _ in range(20):
                client.predict("house", X[:4])
    finally:
        app.stop(0)
    assert len(_peers(caplog)) == 1


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_a_connection_age_that_is_no_finite_positive_number_is_refused(value):
    with pytest.raises(ValueError, match="--max-connection-age must be a finite number of seconds"):
        Settings(max_connection_age=value).check()
