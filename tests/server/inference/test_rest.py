"""The Open Inference Protocol's REST API end to end: real HTTP (httpx) to the gateway, a real server behind it.

Every answer is compared with what regserve.v1 Predict answers for the same rows on
the demo models (``iris``, a classifier; ``diabetes``, a regressor), number for number.
The gateway reaches the server both ways it can: over gRPC, and in process as inside
``regserve serve``.
"""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
from openapi_spec_validator import validate

from regserve.client import RegressionClient
from regserve.server.datasets.demo import ensure_demo_models
from regserve.server.gateway.limits import GatewayLimits
from regserve.server.gateway.v2_openapi import IRIS_REQUEST
from tests.conftest import start_server
from tests.server.gateway.helpers import MODES, running_gateway

IRIS_ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
TOKENS = "predict:p-token,admin:a-token"


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    app = start_server(tmp_path_factory.mktemp("models"))
    ensure_demo_models(app.store)
    app.update_health()
    yield app
    app.stop(0)


@pytest.fixture(scope="module")
def predict_client(demo_app):
    with RegressionClient(f"127.0.0.1:{demo_app.port}", timeout=60) as client:
        yield client


@pytest.fixture(scope="module", params=MODES)
def http(request, demo_app):
    local = demo_app.local if request.param == "in_process" else None
    with running_gateway(f"127.0.0.1:{demo_app.port}", local) as client:
        yield client


def diabetes_rows(n: int) -> np.ndarray:
    """``n`` rows around the diabetes data's means, seeded."""
    rng = np.random.default_rng(20261207)
    means = [50, 1.5, 26, 95, 190, 115, 50, 4, 4.6, 90]
    scales = [13, 0.5, 4, 14, 35, 30, 13, 1.3, 0.5, 11]
    return rng.normal(means, scales, size=(n, 10))


def infer_body(rows: np.ndarray, datatype: str = "FP64", **extra) -> dict:
    tensor = {"name": "inputs", "shape": list(rows.shape), "datatype": datatype, "data": rows.tolist()}
    return {"inputs": [tensor], **extra}


def outputs_by_name(document: dict) -> dict[str, dict]:
    return {output["name"]: output for output in document["outputs"]}


def split_binary(response) -> tuple[dict, bytes]:
    """The JSON header and the bytes after it, of an answer with binary outputs."""
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def binary_outputs(response) -> dict[str, np.ndarray]:
    """The binary outputs of an answer as arrays, read as tritonclient reads them."""
    header, data = split_binary(response)
    out, offset = {}, 0
    for output in header["outputs"]:
        if "binary_data_size" not in output.get("parameters", {}):
            continue
        size = output["parameters"]["binary_data_size"]
        chunk = data[offset : offset + size]
        offset += size
        if output["datatype"] == "BYTES":
            items, i = [], 0
            while i < len(chunk):
                n = int.from_bytes(chunk[i : i + 4], "little")
                items.append(chunk[i + 4 : i + 4 + n].decode())
                i += 4 + n
            out[output["name"]] = np.array(items, dtype=object)
        else:
            dtype = {"FP64": "<f8", "INT64": "<i8", "FP32": "<f4"}[output["datatype"]]
            out[output["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(output["shape"])
    assert offset == len(data)
    return out


def assert_error(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.text
    document = response.json()
    assert set(document) <= {"error", "reason"} and document["error"], document
    assert document.get("reason") == reason, document
    return document


# ------------------------------------------------------------------ health and metadata


def test_the_server_is_live_and_ready_with_the_protocols_bodies(http):
    live = http.get("/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = http.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_a_server_without_models_is_live_but_not_ready(tmp_path):
    empty = start_server(tmp_path / "models")
    try:
        with running_gateway(f"127.0.0.1:{empty.port}", empty.local) as http:
            assert http.get("/v2/health/live").status_code == 200
            ready = http.get("/v2/health/ready")
            assert (ready.status_code, ready.json()) == (400, {"ready": False})
    finally:
        empty.stop(0)


def test_model_ready_by_name_and_by_version(http):
    for path in ("/v2/models/iris/ready", "/v2/models/iris/versions/1/ready", "/v2/models/iris/versions/v1/ready"):
        answer = http.get(path)
        assert (answer.status_code, answer.json()) == (200, {"name": "iris", "ready": True}), path
    for path in ("/v2/models/nothing/ready", "/v2/models/iris/versions/99/ready"):
        answer = http.get(path)
        assert answer.status_code == 400, path
        assert answer.json()["ready"] is False


def test_server_metadata(http):
    answer = http.get("/v2")
    assert answer.status_code == 200
    assert http.get("/v2/").json() == answer.json()
    document = answer.json()
    assert document["name"] == "regserve"
    assert isinstance(document["version"], str) and document["version"]
    assert {"model_repository", "binary_tensor_data"} <= set(document["extensions"])


def test_model_metadata_describes_inputs_and_outputs(http):
    iris = http.get("/v2/models/iris").json()
    assert iris["name"] == "iris" and iris["versions"] == ["v1"] and iris["platform"]
    assert iris["inputs"] == [{"name": "inputs", "datatype": "FP64", "shape": [-1, 4]}]
    assert iris["outputs"] == [
        {"name": "predictions", "datatype": "INT64", "shape": [-1]},
        {"name": "labels", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
    ]
    diabetes = http.get("/v2/models/diabetes/versions/1").json()
    assert diabetes["inputs"] == [{"name": "inputs", "datatype": "FP64", "shape": [-1, 10]}]
    assert diabetes["outputs"] == [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]
    assert json.loads(diabetes["properties"]["feature_names"]) == list(DIABETES_FEATURES)


def test_metadata_of_an_unknown_model_is_404(http):
    assert_error(http.get("/v2/models/nothing"), 404, "UNKNOWN_MODEL")
    assert_error(http.get("/v2/models/iris/versions/7"), 404, "UNKNOWN_VERSION")


# ------------------------------------------------------------------ inference, JSON


@pytest.mark.parametrize("nested", [True, False])
def test_iris_infer_as_json_gives_predicts_numbers(http, predict_client, nested):
    data = IRIS_ROWS.tolist() if nested else IRIS_ROWS.ravel().tolist()
    body = {"id": "req-1", "inputs": [{"name": "inputs", "shape": [3, 4], "datatype": "FP64", "data": data}]}
    answer = http.post("/v2/models/iris/infer", json=body, headers={"x-request-id": "rest-v2-1"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"] == "rest-v2-1"
    document = answer.json()
    assert (document["model_name"], document["model_version"], document["id"]) == ("iris", "v1", "req-1")
    expected = predict_client.predict("iris", IRIS_ROWS)
    outputs = outputs_by_name(document)
    assert list(outputs) == ["predictions", "labels", "probabilities"]
    assert outputs["predictions"] == {"name": "predictions", "datatype": "INT64", "shape": [3], "data": [0, 2, 1]}
    assert outputs["predictions"]["data"] == expected.values.astype(int).tolist()
    assert outputs["labels"]["data"] == expected.labels
    assert outputs["probabilities"]["shape"] == [3, 3]
    assert outputs["probabilities"]["data"] == expected.probabilities.ravel().tolist()


def test_diabetes_10000_rows_as_json_give_predicts_numbers(http, predict_client):
    rows = diabetes_rows(10_000)
    answer = http.post("/v2/models/diabetes/infer", json=infer_body(rows))
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("predictions", "FP64", [10_000])
    assert output["data"] == predict_client.predict("diabetes", rows).values.tolist()


def test_one_input_per_feature_is_read_as_columns(http, predict_client):
    rows = diabetes_rows(5)
    inputs = [
        {"name": name, "shape": [5], "datatype": "FP64", "data": rows[:, i].tolist()}
        for i, name in enumerate(DIABETES_FEATURES)
    ]
    answer = http.post("/v2/models/diabetes/versions/v1/infer", json={"inputs": inputs[::-1]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == predict_client.predict("diabetes", rows).values.tolist()


def test_integer_and_fp32_inputs_are_computed_as_float64(http, predict_client):
    rows = np.array([[5, 3, 1, 0], [7, 3, 5, 2]])
    answer = http.post("/v2/models/iris/infer", json=infer_body(rows, "INT32", outputs=[{"name": "probabilities"}]))
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["data"] == predict_client.predict("iris", rows.astype(float)).probabilities.ravel().tolist()
    as_fp32 = IRIS_ROWS.astype(np.float32)
    answer = http.post("/v2/models/iris/infer", json=infer_body(as_fp32, "FP32", outputs=[{"name": "labels"}]))
    assert answer.json()["outputs"][0]["data"] == predict_client.predict("iris", as_fp32.astype(np.float64)).labels


# ------------------------------------------------------------------ inference, binary extension


def test_binary_inputs_and_outputs_give_predicts_numbers(http, predict_client):
    rows = diabetes_rows(10_000)
    raw = rows.astype("<f8").tobytes()
    header = {
        "inputs": [
            {"name": "inputs", "shape": [10_000, 10], "datatype": "FP64", "parameters": {"binary_data_size": len(raw)}}
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    answer = http.post(
        "/v2/models/diabetes/infer",
        content=head + raw,
        headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    outputs = binary_outputs(answer)
    np.testing.assert_array_equal(outputs["predictions"], predict_client.predict("diabetes", rows).values)


def test_each_output_is_binary_or_json_as_asked(http, predict_client):
    raw = IRIS_ROWS.astype("<f4").tobytes()
    header = {
        "id": "mixed",
        "inputs": [
            {"name": "inputs", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
        ],
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": True}},
            {"name": "labels", "parameters": {"binary_data": False}},
        ],
    }
    head = json.dumps(header).encode()
    answer = http.post(
        "/v2/models/iris/infer", content=head + raw, headers={"Inference-Header-Content-Length": str(len(head))}
    )
    assert answer.status_code == 200, answer.text
    document, _ = split_binary(answer)
    assert document["id"] == "mixed"
    outputs = outputs_by_name(document)
    assert list(outputs) == ["labels", "probabilities"]
    expected = predict_client.predict("iris", IRIS_ROWS.astype(np.float32).astype(np.float64))
    assert outputs["labels"]["data"] == expected.labels
    np.testing.assert_array_equal(binary_outputs(answer)["probabilities"], expected.probabilities)


def test_json_and_binary_inputs_mix(http, predict_client):
    rows = diabetes_rows(4)
    inputs, blobs = [], []
    for i, name in enumerate(DIABETES_FEATURES):
        if i % 2:
            blob = rows[:, i].astype("<f8").tobytes()
            blobs.append(blob)
            inputs.append(
                {"name": name, "shape": [4], "datatype": "FP64", "parameters": {"binary_data_size": len(blob)}}
            )
        else:
            inputs.append({"name": name, "shape": [4, 1], "datatype": "FP64", "data": rows[:, i].tolist()})
    head = json.dumps({"inputs": inputs}).encode()
    answer = http.post(
        "/v2/models/diabetes/infer",
        content=head + b"".join(blobs),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == predict_client.predict("diabetes", rows).values.tolist()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_body_is_read_as_tritonclient_sends_it(http, predict_client, encoding):
    plain = json.dumps(infer_body(IRIS_ROWS)).encode()
    body = gzip.compress(plain) if encoding == "gzip" else zlib.compress(plain)
    answer = http.post("/v2/models/iris/infer", content=body, headers={"Content-Encoding": encoding})
    assert answer.status_code == 200, answer.text
    assert outputs_by_name(answer.json())["labels"]["data"] == predict_client.predict("iris", IRIS_ROWS).labels


def test_a_compressed_body_is_bounded_after_decompression_and_must_be_whole(demo_app):
    with running_gateway(
        f"127.0.0.1:{demo_app.port}", demo_app.local, limits=GatewayLimits(max_body_bytes=4096)
    ) as http:
        bomb = gzip.compress(b" " * 1_000_000)
        assert len(bomb) < 4096
        answer = http.post("/v2/models/iris/infer", content=bomb, headers={"Content-Encoding": "gzip"})
        assert_error(answer, 413, "BODY_TOO_LARGE")
        cut = gzip.compress(json.dumps(infer_body(IRIS_ROWS)).encode())[:-12]
        answer = http.post("/v2/models/iris/infer", content=cut, headers={"Content-Encoding": "gzip"})
        assert_error(answer, 400, "MALFORMED_BODY")
        answer = http.post("/v2/models/iris/infer", content=b"{}", headers={"Content-Encoding": "br"})
        assert_error(answer, 415, "UNSUPPORTED_MEDIA_TYPE")


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (infer_body(IRIS_ROWS[:, :3]), "WRONG_SHAPE"),
        (
            {"inputs": [{"name": "inputs", "shape": [2, 4], "datatype": "FP64", "data": [1.0] * 7}]},
            "TENSOR_SIZE_MISMATCH",
        ),
        (infer_body(IRIS_ROWS, "FP128"), "UNKNOWN_DATATYPE"),
        (infer_body(IRIS_ROWS, "BYTES"), "INVALID_TENSOR_DATA"),
        (
            {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "FP64", "data": ["a", "b", "c", "d"]}]},
            "INVALID_TENSOR_DATA",
        ),
        (
            {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "INT8", "data": [1, 2, 3, 300]}]},
            "INVALID_TENSOR_DATA",
        ),
        (
            {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "INT64", "data": [1.5, 2, 3, 4]}]},
            "INVALID_TENSOR_DATA",
        ),
        (
            {"inputs": [{"name": "inputs", "shape": [2, 4], "datatype": "FP64", "data": [[1, 2, 3, 4], [1, 2]]}]},
            "INVALID_TENSOR_DATA",
        ),
        ({"inputs": [{"name": "inputs", "shape": [1, -4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, "INVALID_SHAPE"),
        ({"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "FP64"}]}, "MISSING_TENSOR_DATA"),
        ({"inputs": []}, "MISSING_INPUTS"),
        ({}, "MISSING_INPUTS"),
        ({"inputs": [{"name": "petal", "shape": [1], "datatype": "FP64", "data": [1]}] * 2}, "DUPLICATE_INPUT"),
        (
            {
                "inputs": [
                    {"name": "petal", "shape": [1], "datatype": "FP64", "data": [1]},
                    {"name": "sepal", "shape": [1], "datatype": "FP64", "data": [1]},
                ]
            },
            "UNKNOWN_INPUT",
        ),
        ({"inputs": infer_body(IRIS_ROWS)["inputs"] * 2}, "DUPLICATE_INPUT"),
        (
            {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "FP64", "data": [True, 3, 1, 0]}]},
            "INVALID_TENSOR_DATA",
        ),
        (
            {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "INT64", "data": [1, 3, False, 0]}]},
            "INVALID_TENSOR_DATA",
        ),
        (
            {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "FP32", "data": [1e300, 3, 1, 0]}]},
            "INVALID_TENSOR_DATA",
        ),
        (
            {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "UINT64", "data": [2**64, 3, 1, 0]}]},
            "INVALID_TENSOR_DATA",
        ),
        (
            {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "UINT64", "data": [2**63, 3, -1, 0]}]},
            "INVALID_TENSOR_DATA",
        ),
        (
            {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "FP64", "data": [10**400, 3, 1, 0]}]},
            "INVALID_TENSOR_DATA",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "inputs",
                        "shape": [1, 4],
                        "datatype": "FP64",
                        "data": [5.1, 3.5, 1.4, 0.2],
                        "parameters": {"binary_data_size": 32},
                    }
                ]
            },
            "AMBIGUOUS_CONTENTS",
        ),
        ({"inputs": [{"name": "inputs", "shape": [1, 2**70], "datatype": "FP64", "data": [1]}]}, "INVALID_SHAPE"),
        ({"inputs": [{"name": "inputs", "shape": [2**32, 2**32, 0], "datatype": "FP64", "data": []}]}, "INVALID_SHAPE"),
        (infer_body(IRIS_ROWS, outputs=[{"name": "logits"}]), "UNKNOWN_OUTPUT"),
        (infer_body(IRIS_ROWS, parameters={"nested": {"a": 1}}), "INVALID_PARAMETER"),
        (
            infer_body(IRIS_ROWS, outputs=[{"name": "labels", "parameters": {"binary_data": "yes"}}]),
            "INVALID_PARAMETER",
        ),
        (["not", "an", "object"], "INVALID_JSON_MESSAGE"),
    ],
)
def test_a_bad_request_is_400_with_a_reason(http, body, reason):
    assert_error(http.post("/v2/models/iris/infer", json=body), 400, reason)


def test_refusals_say_what_is_wrong(http):
    cases = [
        ({"name": "inputs", "shape": [1, 2**70], "datatype": "FP64", "data": [1]}, "past 2^63 - 1"),
        ({"name": "inputs", "shape": [1, 4], "datatype": "FP32", "data": [1e300, 3, 1, 0]}, "out of the range of FP32"),
        ({"name": "inputs", "shape": [2, 4], "datatype": "FP64", "data": [[1, 2, 3, 4], [1, 2]]}, "differ in length"),
        (
            {"name": "inputs", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": "32"}},
            "must be an integer",
        ),
    ]
    for tensor, words in cases:
        document = http.post("/v2/models/iris/infer", json={"inputs": [tensor]}).json()
        assert words in document["error"], document
    pair = {
        "inputs": infer_body(IRIS_ROWS)["inputs"] + [{"name": "x", "shape": [3], "datatype": "FP64", "data": [1] * 3}]
    }
    document = http.post("/v2/models/iris/infer", json=pair).json()
    assert "must be the request's only input" in document["error"], document


def test_json_integers_past_int64_are_read_as_the_numbers_they_are(http, predict_client):
    rows = np.array([[10**19, 1, 2, 3, 4, 5, 6, 7, 8, 2**63]])
    body = {"inputs": [{"name": "inputs", "shape": [1, 10], "datatype": "UINT64", "data": [int(v) for v in rows[0]]}]}
    answer = http.post("/v2/models/diabetes/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert (
        answer.json()["outputs"][0]["data"]
        == predict_client.predict("diabetes", rows.astype(np.float64)).values.tolist()
    )
    big = [99999999999999999999999, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    answer = http.post(
        "/v2/models/diabetes/infer",
        json={"inputs": [{"name": "inputs", "shape": [1, 10], "datatype": "FP64", "data": big}]},
    )
    assert answer.status_code == 200, answer.text
    expected = predict_client.predict("diabetes", np.array([big], dtype=np.float64)).values.tolist()
    assert answer.json()["outputs"][0]["data"] == expected
    booleans_elsewhere = infer_body(IRIS_ROWS, outputs=[{"name": "labels", "parameters": {"binary_data": False}}])
    answer = http.post("/v2/models/iris/infer", json=booleans_elsewhere)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == predict_client.predict("iris", IRIS_ROWS).labels


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_boolean_among_numbers_is_refused_in_any_json_encoding(http, encoding):
    body = {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "FP64", "data": [1.5, True, 1.0, 0.5]}]}
    answer = http.post(
        "/v2/models/iris/infer", content=json.dumps(body).encode(encoding), headers={"Content-Type": "application/json"}
    )
    assert_error(answer, 400, "INVALID_TENSOR_DATA")


def test_nan_is_refused_by_the_prediction_path(http):
    answer = http.post(
        "/v2/models/iris/infer",
        content=b'{"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "FP64", "data": [1, NaN, 3, 4]}]}',
    )
    assert answer.status_code == 400
    assert "reason" in answer.json()


def test_malformed_bodies_and_headers_are_400(http):
    assert_error(http.post("/v2/models/iris/infer", content=b"{"), 400, "MALFORMED_JSON")
    head = json.dumps(infer_body(IRIS_ROWS)).encode()
    too_long = {"Inference-Header-Content-Length": str(len(head) + 1)}
    assert_error(http.post("/v2/models/iris/infer", content=head, headers=too_long), 400, "INVALID_HEADER_LENGTH")
    not_a_number = {"Inference-Header-Content-Length": "many"}
    assert_error(http.post("/v2/models/iris/infer", content=head, headers=not_a_number), 400, "INVALID_HEADER_LENGTH")
    extra = {"Inference-Header-Content-Length": str(len(head))}
    assert_error(
        http.post("/v2/models/iris/infer", content=head + b"\0" * 8, headers=extra), 400, "INVALID_BINARY_DATA_SIZE"
    )
    claims = json.dumps(
        {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 64}}]}
    ).encode()
    short = {"Inference-Header-Content-Length": str(len(claims))}
    assert_error(
        http.post("/v2/models/iris/infer", content=claims + b"\0" * 32, headers=short), 400, "INVALID_BINARY_DATA_SIZE"
    )
    fp32_as_fp64 = json.dumps(
        {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]}
    ).encode()
    answer = http.post(
        "/v2/models/iris/infer",
        content=fp32_as_fp64 + np.ones(4, "<f4").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(fp32_as_fp64))},
    )
    assert_error(answer, 400, "RAW_LENGTH_MISMATCH")


def test_unknown_models_versions_paths_and_methods(http):
    assert_error(http.post("/v2/models/nothing/infer", json=infer_body(IRIS_ROWS)), 404, "UNKNOWN_MODEL")
    assert_error(http.post("/v2/models/iris/versions/9/infer", json=infer_body(IRIS_ROWS)), 404, "UNKNOWN_VERSION")
    assert_error(http.get("/v2/models/iris/explain"), 404, "ROUTE_NOT_FOUND")
    wrong = http.get("/v2/models/iris/infer")
    assert_error(wrong, 405, "METHOD_NOT_ALLOWED")
    assert wrong.headers["allow"] == "POST"
    form = http.post("/v2/models/iris/infer", content=b"a=1", headers={"Content-Type": "text/plain"})
    assert_error(form, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_a_body_over_the_limit_is_413_in_the_protocols_form(demo_app):
    limits = GatewayLimits(max_body_bytes=4096)
    with running_gateway(f"127.0.0.1:{demo_app.port}", demo_app.local, limits=limits) as http:
        answer = http.post("/v2/models/diabetes/infer", json=infer_body(diabetes_rows(500)))
        assert_error(answer, 413, "BODY_TOO_LARGE")


@pytest.mark.parametrize("mode", MODES)
def test_the_edge_authenticates_v2_calls(tmp_path, mode):
    secured = start_server(tmp_path / "models", tokens=TOKENS)
    try:
        ensure_demo_models(secured.store)
        local = secured.local if mode == "in_process" else None
        with running_gateway(f"127.0.0.1:{secured.port}", local) as http:
            assert_error(http.post("/v2/models/iris/infer", json=infer_body(IRIS_ROWS)), 401, "MISSING_TOKEN")
            unauthenticated = http.get("/v2/models/iris")
            assert_error(unauthenticated, 401, "MISSING_TOKEN")
            assert unauthenticated.headers["www-authenticate"] == 'Bearer realm="regserve"'
            token = {"Authorization": "Bearer p-token"}
            assert http.post("/v2/models/iris/infer", json=infer_body(IRIS_ROWS), headers=token).status_code == 200
            load = "/v2/repository/models/iris/load"
            assert_error(http.post(load, headers=token), 403, "ROLE_NOT_ALLOWED")
            assert http.post(load, headers={"Authorization": "Bearer a-token"}).status_code == 200
    finally:
        secured.stop(0)


# ------------------------------------------------------------------ the model repository extension


def test_the_repository_index_lists_every_version(http):
    answer = http.post("/v2/repository/index")
    assert answer.status_code == 200, answer.text
    listed = sorted((m["name"], m["version"], m["state"]) for m in answer.json())
    assert listed == [("diabetes", "v1", "READY"), ("iris", "v1", "READY")]
    assert all(m["reason"] == "serving" for m in answer.json())
    assert len(http.post("/v2/repository/index", json={"ready": True}).json()) == 2


def test_load_and_unload_map_onto_the_lifecycle(http):
    assert http.post("/v2/repository/models/iris/load").status_code == 200
    assert http.post("/v2/repository/models/iris/load", json={"parameters": {"version": "1"}}).status_code == 200
    refused = http.post("/v2/repository/models/iris/unload", json={"parameters": {"unload_dependents": False}})
    assert_error(refused, 400, "MODEL_STAYS_SERVED")
    assert http.get("/v2/models/iris/ready").status_code == 200
    assert_error(http.post("/v2/repository/models/nothing/load"), 404, "UNKNOWN_MODEL")
    unknown = http.post("/v2/repository/models/iris/load", json={"parameters": {"config": "{}"}})
    assert_error(unknown, 400, "UNSUPPORTED_PARAMETER")
    assert_error(http.post("/v2/repository/index", json={"ready": "yes"}), 400, "INVALID_JSON_MESSAGE")
    # A version of any other JSON type gets the one message, whichever layer reads it.
    for version in (2.5, True, [1], None, 2**64):
        refused = http.post("/v2/repository/models/iris/load", json={"parameters": {"version": version}})
        assert_error(refused, 400, "INVALID_PARAMETER")
        assert refused.json()["error"] == "parameter 'version' must be a string or an integer of at most 64 bits"


# ------------------------------------------------------------------ the OpenAPI document


def test_the_openapi_document_describes_v2_and_its_example_works(http, predict_client):
    document = http.get("/openapi.json").json()
    validate(document)
    infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]
    example = infer["requestBody"]["content"]["application/json"]["example"]
    assert example == IRIS_REQUEST
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready"):
        assert "get" in document["paths"][path], path
    # Not ready is the route's own body with a 400, which the document says (not the error schema).
    for path, schema in (("/v2/health/ready", "v2.Ready"), ("/v2/models/{name}/ready", "v2.ModelReady")):
        not_ready = document["paths"][path]["get"]["responses"]["400"]["content"]["application/json"]
        assert not_ready["schema"]["$ref"].endswith(schema), path
    answer = http.post("/v2/models/iris/infer", json=example)
    assert answer.status_code == 200, answer.text
    expected = predict_client.predict("iris", np.array(example["inputs"][0]["data"]))
    outputs = outputs_by_name(answer.json())
    assert outputs["labels"]["data"] == expected.labels
    assert outputs["probabilities"]["data"] == expected.probabilities.ravel().tolist()
