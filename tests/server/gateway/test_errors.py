"""429 answers say when to retry: Retry-After, in whole seconds rounded up from the RetryInfo detail."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from regserve.client import RegressionClient
from regserve.server.gateway.errors import status_response
from tests.conftest import start_server
from tests.server.gateway.helpers import MODES, running_gateway


def _retry_delay(body: dict) -> float:
    delay = next(d["retryDelay"] for d in body["details"] if d["@type"].endswith("RetryInfo"))
    return float(delay.removesuffix("s"))


@pytest.mark.parametrize("mode", MODES)
def test_a_rate_limited_call_has_retry_after(tmp_path, linear_data, mode):
    limited = start_server(tmp_path / "models", rate_limit=0.4, rate_burst=1)
    try:
        with RegressionClient(f"127.0.0.1:{limited.port}", timeout=30) as client:
            client.train("house", *linear_data)  # takes this peer's one token
        X, _ = linear_data
        row = {"inputs": {"numColumns": 5, "values": X[0].tolist()}}
        with running_gateway(f"127.0.0.1:{limited.port}", limited.local if mode == "in_process" else None) as http:
            answers = [http.post("/v1/models/house:predict", json=row) for _ in range(2)]
            refused = next(a for a in answers if a.status_code == 429)
            assert refused.json()["code"] == code_pb2.RESOURCE_EXHAUSTED
            assert refused.headers["retry-after"] == str(math.ceil(_retry_delay(refused.json())))
            assert int(refused.headers["retry-after"]) >= 1
            streamed = http.post(
                "/v1/models/house:batchPredict",
                content=json.dumps(row) + "\n",
                headers={"content-type": "application/x-ndjson"},
            )
            assert streamed.status_code == 429 and int(streamed.headers["retry-after"]) >= 1
    finally:
        limited.stop(0)


@pytest.mark.parametrize(("seconds", "header"), [(0.2, "1"), (1.0, "1"), (2.0001, "3"), (30, "30")])
def test_retry_after_rounds_the_retry_delay_up(seconds, header):
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow down")
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    assert status_response(status).headers["retry-after"] == header
    assert "retry-after" not in status_response(status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED)).headers
    assert "retry-after" not in status_response(status, http_status=400).headers
