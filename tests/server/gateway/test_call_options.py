"""Headers gRPC cannot carry, and JSON nested too deeply, are the client's errors: 400, never 5xx."""

from __future__ import annotations

import base64
import json

import pytest
from google.rpc import code_pb2

from tests.server.gateway.helpers import MODES, running_gateway


@pytest.fixture(params=MODES)
def http(request, app, target, client, linear_data):
    client.train("house", *linear_data)
    with running_gateway(target, app.local if request.param == "in_process" else None) as gateway:
        yield gateway


BODY = {"inputs": {"numColumns": 5, "values": [1, 2, 3, 4, 5]}}


def _reason(response) -> str:
    return next(d["reason"] for d in response.json()["details"] if d["@type"].endswith("ErrorInfo"))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Grpc-Metadata-foo-bin": "!!"}, "INVALID_HEADER"),
        ({"Grpc-Metadata-foo-bin": "a"}, "INVALID_HEADER"),
        ({"X-Request-Id": "café".encode().decode("latin-1")}, "INVALID_HEADER"),
        ({"Authorization": "Bearer \u00ff"}, "INVALID_HEADER"),
        ({"Grpc-Metadata-Tenant": "\u00e9t\u00e9"}, "INVALID_HEADER"),
        ({"Grpc-Metadata-grpc-timeout": "1S"}, "INVALID_HEADER"),
        ({"X-Timeout-Seconds": "inf"}, "INVALID_TIMEOUT"),
        ({"X-Timeout-Seconds": "-inf"}, "INVALID_TIMEOUT"),
        ({"X-Timeout-Seconds": "nan"}, "INVALID_TIMEOUT"),
        ({"X-Timeout-Seconds": "-1"}, "INVALID_TIMEOUT"),
        ({"X-Timeout-Seconds": "0"}, "INVALID_TIMEOUT"),
        ({"X-Timeout-Seconds": "1e300"}, "INVALID_TIMEOUT"),
    ],
)
def test_a_header_grpc_cannot_carry_is_400(http, headers, reason):
    encoded = {name: value.encode("latin-1") for name, value in headers.items()}
    response = http.post("/v1/models/house:predict", json=BODY, headers=encoded)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code_pb2.INVALID_ARGUMENT and _reason(response) == reason


def test_binary_metadata_is_sent_decoded_in_either_base64_alphabet(http):
    for value in (b"\x00\xff\xfe", b"\xfb\xff"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(value).decode().rstrip("=")
            response = http.post("/v1/models/house:predict", json=BODY, headers={"Grpc-Metadata-trace-bin": text})
            assert response.status_code == 200, (text, response.text)


def test_a_timeout_in_range_is_taken(http):
    response = http.post("/v1/models/house:predict", json=BODY, headers={"X-Timeout-Seconds": "30.5"})
    assert response.status_code == 200


def test_json_nested_a_thousand_deep_is_400(http):
    deep = "[" * 1000 + "]" * 1000
    response = http.post(
        "/v1/models/house:predict",
        content='{"inputs": {"values": ' + deep + "}}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400 and _reason(response) == "MALFORMED_JSON"


def test_ndjson_lines_nested_a_thousand_deep_are_invalid_argument(http):
    deep = '{"chunk": ' + "[" * 1000 + "]" * 1000 + "}"
    spec = json.dumps({"spec": {"model": "deep", "kind": "MODEL_KIND_LINEAR"}})
    trained = http.post(
        "/v1/models:train", content=f"{spec}\n{deep}\n", headers={"content-type": "application/x-ndjson"}
    )
    assert trained.status_code == 400 and trained.json()["code"] == code_pb2.INVALID_ARGUMENT
    assert _reason(trained) == "MALFORMED_JSON" and trained.json()["message"].startswith("line 2:")
    batch = http.post(
        "/v1/models/house:batchPredict",
        content=json.dumps(BODY) + "\n" + deep + "\n",
        headers={"content-type": "application/x-ndjson"},
    )
    if batch.status_code == 200:  # the first chunk was answered before the bad line was read
        error = json.loads(batch.text.splitlines()[-1])["error"]
    else:
        assert batch.status_code == 400
        error = batch.json()
    assert error["code"] == code_pb2.INVALID_ARGUMENT
