"""The REST gateway end to end: real HTTP (httpx) to a uvicorn server, proxied to a real gRPC server.

Every answer is compared with what the same call gives over gRPC, rendered with
protobuf's JSON mapping.  Status codes the regserve server cannot produce on demand
come from a tiny real gRPC server that aborts each call with the code it is asked for.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import duration_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from openapi_spec_validator import validate

from regserve.server.gateway.app import gateway_routes
from regserve.server.gateway.errors import http_status_for
from regserve.server.gateway.health import HEALTH_PATHS
from regserve.server.gateway.rules import PathTemplate, contract_services
from regserve.server.gateway.v2 import v2_http_routes
from regserve.v1 import model_service_pb2 as mpb
from regserve.v1 import model_service_pb2_grpc as mpb_grpc
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2
from tests.server.gateway.helpers import MODES, running_gateway

GOLDEN = Path(__file__).parent / "golden" / "routes.txt"


@pytest.fixture(params=MODES)
def http(request, app, target):
    with running_gateway(target, app.local if request.param == "in_process" else None) as client:
        yield client


@pytest.fixture
def stub(channel):
    return pb_grpc.RegressionServiceStub(channel)


@pytest.fixture
def admin(channel):
    return mpb_grpc.ModelServiceStub(channel)


def as_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=False)


def matrix(X) -> dict:
    return {"numColumns": X.shape[1], "values": X.ravel().tolist()}


def train(stub, model: str, X, y, chunk_rows: int = 1000, **spec):
    def requests():
        yield pb.TrainRequest(spec=types_pb2.TrainSpec(model=model, kind=types_pb2.MODEL_KIND_LINEAR, **spec))
        for i in range(0, len(X), chunk_rows):
            features = types_pb2.Matrix(num_columns=X.shape[1], values=X[i : i + chunk_rows].ravel())
            chunk = types_pb2.TrainChunk(features=features, targets=types_pb2.Vector(values=y[i : i + chunk_rows]))
            yield pb.TrainRequest(chunk=chunk)

    return stub.Train(requests())


def grpc_status_json(call, *args) -> dict:
    """The google.rpc.Status JSON of a gRPC call that fails."""
    with pytest.raises(grpc.RpcError) as failure:
        call(*args)
    return as_json(rpc_status.from_call(failure.value))


def reason(body: dict) -> str:
    return next(d["reason"] for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))


# The route table.


def test_route_table_matches_the_golden_file():
    table = "".join(route.describe() + "\n" for route in gateway_routes())
    if os.environ.get("REGSERVE_UPDATE_GOLDEN"):
        GOLDEN.write_text(table)
    assert table == GOLDEN.read_text(), "the HTTP rules changed: review, then rerun with REGSERVE_UPDATE_GOLDEN=1"


def test_every_rpc_of_the_contract_has_a_route():
    methods = {m.full_name for service in contract_services() for m in service.methods}
    assert methods == {route.rpc for route in gateway_routes()}
    assert len(methods) == 15


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/models/{model}:predict", "/v1/models/house:predict", {"model": "house"}),
        ("/v1/models/{model}:predict", "/v1/models/house:train", None),
        ("/v1/models/{model}", "/v1/models/house:predict", None),
        ("/v1/{name=models/*}:predict", "/v1/models/house:predict", {"name": "models/house"}),
        ("/v1/{name=models/*}", "/v1/models/a/b", None),
        ("/v1/{name=files/**}", "/v1/files/a/b/c", {"name": "files/a/b/c"}),
        ("/v1/*/x/{spec.model}", "/v1/anything/x/m", {"spec.model": "m"}),
        # Paths as sent: an encoded / or : stays in its segment; a value is decoded once matched.
        ("/v1/models/{model}:predict", "/v1/models/house%3Apredict", None),
        ("/v1/models/{model}/versions/{version}:promote", "/v1/models/a%2Fversions%2Fv1:promote", None),
        ("/v1/models/{model}", "/v1/models/h%C3%A4us", {"model": "häus"}),
    ],
)
def test_path_templates_follow_the_http_rule_grammar(template, path, expected):
    assert PathTemplate.parse(template).match(path) == expected


def test_an_encoded_slash_or_colon_does_not_reach_another_route(http, stub, linear_data):
    """As grpc-gateway routes: a proxy's rule on the raw path and the gateway read the same path."""
    X, y = linear_data
    train(stub, "house", X, y)
    for path in ("/v1/models/house%2Fversions%2Fv1:freeze", "/v1/models/house%3Apredict"):
        answer = http.post(path, json={"reason": "x"})
        assert answer.status_code in (404, 405), (path, answer.text)
    models = http.get("/v1/models").json()["models"]
    assert [m["model"] for m in models] == ["house"] and not models[0].get("frozen")
    assert http.get("/v1/models/hous%65").json()["modelVersion"]["model"] == "house"  # a value is decoded


# Every route answers as the gRPC call does.


def test_predict_answers_the_grpc_json(http, stub, linear_data):
    X, y = linear_data
    train(stub, "house", X, y, feature_names=list("abcde"))
    rows = X[:7]
    response = http.post("/v1/models/house:predict", json={"inputs": matrix(rows)})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    expected = stub.Predict(
        pb.PredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=5, values=rows.ravel()))
    )
    assert response.json() == as_json(expected)
    named = [dict(zip("abcde", row, strict=True)) for row in rows[:2]]
    response = http.post("/v1/models/house:predict", json={"namedInputs": [{"features": f} for f in named]})
    assert response.json()["predictions"]["values"] == as_json(expected)["predictions"]["values"][:2]


def test_read_routes_answer_the_grpc_json(http, stub, admin, linear_data):
    X, y = linear_data
    train(stub, "house", X, y, validation_fraction=0.25, seed=3)
    train(stub, "house", X[:200], y[:200], promote=False)
    train(stub, "flat", X, y)
    stub.Predict(pb.PredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=5, values=X[:3].ravel())))
    pairs = [
        ("/v1/models/house", stub.ModelInfo, pb.ModelInfoRequest(model="house")),
        ("/v1/models/house?version=v2", stub.ModelInfo, pb.ModelInfoRequest(model="house", version="v2")),
        ("/v1/models", admin.ListModels, mpb.ListModelsRequest()),
        ("/v1/models/house/versions", admin.ListVersions, mpb.ListVersionsRequest(model="house")),
        ("/v1/models/house/versions/v1", admin.GetVersion, mpb.GetVersionRequest(model="house", version="v1")),
        ("/v1/status", admin.GetStatus, mpb.GetStatusRequest()),
        ("/v1/models/flat/status", admin.GetStatus, mpb.GetStatusRequest(model="flat")),
    ]
    for path, call, request in pairs:
        response = http.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json() == as_json(call(request)), path


def test_lifecycle_routes_answer_the_grpc_state(http, stub, admin, linear_data):
    X, y = linear_data
    for rows in (400, 300, 200):
        train(stub, "house", X[:rows], y[:rows], promote=False)
    admin.PromoteVersion(mpb.PromoteVersionRequest(model="house", version="v1"))

    def state() -> dict:
        return as_json(admin.ListModels(mpb.ListModelsRequest()).models[0])

    steps = [
        ("post", "/v1/models/house/versions/v2:promote", {"reason": "better"}),
        ("post", "/v1/models/house:rollback", {}),
        ("post", "/v1/models/house/versions/v3:freeze", {"reason": "bad data"}),
        ("post", "/v1/models/house/versions/v3:unfreeze", {}),
        ("post", "/v1/models/house:setTrafficSplit", {"weights": {"v1": 90, "v2": 10}}),
        ("post", "/v1/models/house:setTrafficSplit", {}),
        ("delete", "/v1/models/house/versions/v3?reason=cleanup", None),
    ]
    for method, path, body in steps:
        response = http.request(method.upper(), path, json=body)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["state"] == state(), path
    assert state()["versions"] == ["v1", "v2"]
    assert [s.action for s in admin.GetStatus(mpb.GetStatusRequest(model="house")).models[0].history][-1] == "delete"


def test_train_reads_an_ndjson_stream(http, stub, admin, linear_data):
    X, y = linear_data
    lines = [{"spec": {"model": "rest", "kind": "MODEL_KIND_LINEAR"}}]
    lines += [
        {"chunk": {"features": matrix(X[i : i + 100]), "targets": {"values": y[i : i + 100].tolist()}}}
        for i in range(0, 400, 100)
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    response = http.post("/v1/models:train", content=body, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    trained = response.json()
    assert trained["promoted"] is True and trained["modelVersion"]["version"] == "v1"
    assert trained["modelVersion"] == as_json(
        admin.GetVersion(mpb.GetVersionRequest(model="rest", version="v1")).model_version
    )
    reference = train(stub, "reference", X, y, chunk_rows=100).model_version
    assert trained["modelVersion"]["coefficients"] == as_json(reference.coefficients)
    assert trained["modelVersion"]["dataFingerprint"] == reference.data_fingerprint


def test_batch_predict_streams_100000_rows_as_grpc_does(http, stub, linear_data):
    X, y = linear_data
    train(stub, "house", X, y)
    big = np.random.default_rng(7).normal(size=(100_000, 5))
    chunks = np.split(big, 10)
    body = "".join(json.dumps({"inputs": matrix(chunk)}) + "\n" for chunk in chunks)
    response = http.post(
        "/v1/models/house:batchPredict", content=body, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    results = [json.loads(line)["result"] for line in response.text.splitlines()]
    assert [int(r.get("chunkIndex", 0)) for r in results] == list(range(10))
    assert [int(r.get("rowOffset", 0)) for r in results] == list(range(0, 100_000, 10_000))
    requests = (
        pb.BatchPredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=5, values=chunk.ravel()))
        for chunk in chunks
    )
    expected = [as_json(answer) for answer in stub.BatchPredict(requests)]
    assert results == expected
    streamed = np.concatenate([r["predictions"]["values"] for r in results])
    np.testing.assert_array_equal(streamed, np.concatenate([e["predictions"]["values"] for e in expected]))
    assert streamed.shape == (100_000,)


# Errors: the status table, with the body the gRPC call reports.


def test_invalid_argument_is_400_with_the_grpc_status(http, stub, linear_data):
    X, y = linear_data
    train(stub, "house", X, y)
    response = http.post("/v1/models/house:predict", json={"inputs": {"numColumns": 3, "values": [1, 2, 3]}})
    request = pb.PredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=3, values=[1, 2, 3]))
    assert response.status_code == 400
    assert response.json() == grpc_status_json(stub.Predict, request)
    assert response.json()["code"] == code_pb2.INVALID_ARGUMENT
    assert any(d["@type"].endswith("google.rpc.BadRequest") for d in response.json()["details"])


def test_not_found_is_404_with_the_grpc_status(http, stub):
    response = http.get("/v1/models/nosuch")
    assert response.status_code == 404
    assert response.json() == grpc_status_json(stub.ModelInfo, pb.ModelInfoRequest(model="nosuch"))
    assert response.json()["code"] == code_pb2.NOT_FOUND


def test_failed_precondition_is_400_with_the_grpc_status(http, stub, admin, linear_data):
    X, y = linear_data
    train(stub, "house", X, y)
    response = http.post("/v1/models/house:rollback", json={})
    assert response.status_code == 400
    assert response.json()["code"] == code_pb2.FAILED_PRECONDITION and reason(response.json()) == "NO_PREVIOUS_VERSION"
    assert response.json() == grpc_status_json(admin.RollbackModel, mpb.RollbackModelRequest(model="house"))


def test_an_unreachable_server_is_503():
    with socket.socket() as probe:  # a port that was free a moment ago, with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with running_gateway(f"127.0.0.1:{port}") as http:
        response = http.get("/v1/models")
        v2 = http.get("/v2/models/iris")
    assert response.status_code == 503 and response.json()["code"] == code_pb2.UNAVAILABLE
    # grpc's own status, without the server's details: a reason says the gateway could not reach it.
    assert reason(response.json()) == "UPSTREAM_UNAVAILABLE"
    assert v2.status_code == 503 and v2.json()["reason"] == "UPSTREAM_UNAVAILABLE"


def test_batch_predict_answers_while_the_body_is_still_arriving(http, stub, linear_data):
    """Each chunk is sent only after the answer to the previous one came back, over one raw HTTP/1.1 connection."""
    X, y = linear_data
    train(stub, "house", X, y)
    expected = stub.Predict(pb.PredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=5, values=X.ravel())))
    host, port = http.base_url.host, http.base_url.port
    with socket.create_connection((host, port), timeout=10) as conn, conn.makefile("rb") as answers:
        head = f"POST /v1/models/house:batchPredict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-ndjson\r\n"
        conn.sendall((head + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode())
        values = []
        for i, chunk in enumerate(np.split(X, 4)):
            line = (json.dumps({"inputs": matrix(chunk)}) + "\n").encode()
            conn.sendall(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            if i == 0:  # the answer starts once the first chunk is answered
                assert answers.readline().startswith(b"HTTP/1.1 200")
                while answers.readline() != b"\r\n":
                    pass
            size = int(answers.readline(), 16)
            values += json.loads(answers.read(size + 2))["result"]["predictions"]["values"]
        conn.sendall(b"0\r\n\r\n")
    assert values == list(expected.predictions.values)


def test_a_stream_that_fails_after_its_first_answer_ends_with_an_error_line(http, stub, linear_data):
    X, y = linear_data
    train(stub, "house", X, y)
    chunks = [X[:4], X[:2, :3]]
    body = "".join(json.dumps({"inputs": matrix(chunk)}) + "\n" for chunk in chunks)
    response = http.post(
        "/v1/models/house:batchPredict", content=body, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 200
    first, last = [json.loads(line) for line in response.text.splitlines()]
    requests = [
        pb.BatchPredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=c.shape[1], values=c.ravel()))
        for c in chunks
    ]
    answers = stub.BatchPredict(iter(requests))
    assert first == {"result": as_json(next(answers))}
    assert last == {"error": grpc_status_json(next, answers)}
    assert last["error"]["code"] == code_pb2.INVALID_ARGUMENT


def test_a_bad_ndjson_line_fails_the_stream_with_its_line_number(http, stub, linear_data):
    X, y = linear_data
    train(stub, "house", X, y)
    body = json.dumps({"inputs": matrix(X[:3])}) + "\n{not json\n"
    response = http.post(
        "/v1/models/house:batchPredict", content=body, headers={"content-type": "application/x-ndjson"}
    )
    lines = [json.loads(line) for line in response.text.splitlines()]
    errors = [line["error"] for line in lines if "error" in line]
    if response.status_code == 200:  # the first chunk was answered before the bad line was read
        assert len(errors) == 1 and "result" in lines[0]
        error = errors[0]
    else:
        assert response.status_code == 400
        error = response.json()
    assert error["code"] == code_pb2.INVALID_ARGUMENT and reason(error) == "MALFORMED_JSON"
    assert error["message"].startswith("line 2:")
    first = json.dumps({"spec": {"model": "m", "kind": "MODEL_KIND_LINEAR"}})
    response = http.post(
        "/v1/models:train", content=first + "\n[1,\n", headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 400 and reason(response.json()) == "MALFORMED_JSON"


def test_the_gateway_answers_its_own_errors_as_status_json(http):
    malformed = http.post("/v1/models/house:predict", content=b"{", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["code"] == code_pb2.INVALID_ARGUMENT and reason(malformed.json()) == "MALFORMED_JSON"
    unknown_field = http.post("/v1/models/house:predict", json={"rows": [1]})
    assert unknown_field.status_code == 400 and reason(unknown_field.json()) == "INVALID_JSON_MESSAGE"
    array = http.post("/v1/models/house:predict", json=[1, 2])
    assert array.status_code == 400 and reason(array.json()) == "INVALID_JSON_MESSAGE"
    assert "must be a JSON object" in array.json()["message"]
    wrong_type = http.post("/v1/models/house:predict", content=b"a=1", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415 and reason(wrong_type.json()) == "UNSUPPORTED_MEDIA_TYPE"
    no_route = http.get("/v9/nothing")
    assert no_route.status_code == 404 and reason(no_route.json()) == "ROUTE_NOT_FOUND"
    wrong_method = http.put("/v1/models/house")
    assert wrong_method.status_code == 405 and reason(wrong_method.json()) == "METHOD_NOT_ALLOWED"
    assert wrong_method.headers["allow"] == "GET, HEAD"
    assert http.get("/v1/models/house:predict").status_code == 405
    bad_query = http.get("/v1/models/house?nosuch=1")
    assert bad_query.status_code == 400 and reason(bad_query.json()) == "INVALID_PARAMETER"
    bad_timeout = http.get("/v1/models", headers={"X-Timeout-Seconds": "soon"})
    assert bad_timeout.status_code == 400 and reason(bad_timeout.json()) == "INVALID_TIMEOUT"


# Codes the regserve server cannot produce on demand, from a tiny real server that aborts with them.

ABORTING_CODES = [
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
]
EXPECTED_HTTP = {
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "CANCELLED": 499,
    "UNIMPLEMENTED": 501,
    "OUT_OF_RANGE": 400,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
}


def _rich_status(code: grpc.StatusCode) -> status_pb2.Status:
    details = [
        error_details_pb2.ErrorInfo(reason=f"TEST_{code.name}", domain="regserve.v1", metadata={"k": "v"}),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2)),
        error_details_pb2.BadRequest(field_violations=[error_details_pb2.BadRequest.FieldViolation(field="model")]),
    ]
    status = status_pb2.Status(code=code.value[0], message=f"aborted with {code.name}")
    for detail in details:
        status.details.add().Pack(detail)
    return status


def _aborting_predict(request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
    """Abort with the code named by the model, or echo the forwarded headers when it is ``echo``."""
    if request.model == "slow":
        deadline = time.monotonic() + 5
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)
        return pb.PredictResponse(model="slow")
    if request.model == "echo":
        metadata = dict(context.invocation_metadata())
        context.send_initial_metadata((("x-request-id", metadata.get("x-request-id", "")),))
        return pb.PredictResponse(model=metadata.get("authorization", ""), version=metadata.get("x-tenant", ""))
    context.abort_with_status(rpc_status.to_status(_rich_status(grpc.StatusCode[request.model])))


@pytest.fixture(scope="module")
def aborting_http():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(
        _aborting_predict,
        request_deserializer=pb.PredictRequest.FromString,
        response_serializer=pb.PredictResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("regserve.v1.RegressionService", {"Predict": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with running_gateway(f"127.0.0.1:{port}") as http:
            yield http
    finally:
        server.stop(0)


@pytest.mark.parametrize("code", ABORTING_CODES, ids=lambda c: c.name)
def test_each_grpc_code_gets_its_http_status_and_rich_body(aborting_http, code):
    response = aborting_http.post(f"/v1/models/{code.name}:predict", json={})
    assert response.status_code == EXPECTED_HTTP[code.name] == http_status_for(code.value[0])
    body = response.json()
    assert body == json_format.MessageToDict(_rich_status(code))
    assert reason(body) == f"TEST_{code.name}"
    types = [d["@type"] for d in body["details"]]
    assert types == [f"type.googleapis.com/google.rpc.{t}" for t in ("ErrorInfo", "RetryInfo", "BadRequest")]
    assert body["details"][1]["retryDelay"] == "2s"


def test_a_deadline_shorter_than_the_call_is_504(aborting_http):
    response = aborting_http.post("/v1/models/slow:predict", json={}, headers={"X-Timeout-Seconds": "0.2"})
    assert response.status_code == 504 and response.json()["code"] == code_pb2.DEADLINE_EXCEEDED


def test_an_rpc_the_server_lacks_is_501(aborting_http):
    response = aborting_http.get("/v1/models/house")
    assert response.status_code == 501 and response.json()["code"] == code_pb2.UNIMPLEMENTED


def test_headers_are_forwarded_as_metadata_and_the_request_id_returned(aborting_http):
    headers = {"Authorization": "Bearer s3cret", "X-Request-Id": "req-42", "Grpc-Metadata-X-Tenant": "acme"}
    response = aborting_http.post("/v1/models/echo:predict", json={}, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"model": "Bearer s3cret", "version": "acme"}
    assert response.headers["x-request-id"] == "req-42"


# Documentation.


def test_openapi_document_is_valid_and_lists_every_route(http):
    response = http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    routes = [*gateway_routes(), *v2_http_routes()]
    assert listed == {(r.http_method, r.path.openapi_path) for r in routes} | {("GET", path) for path in HEALTH_PATHS}
    predict = document["paths"]["/v1/models/{model}:predict"]["post"]
    assert predict["summary"].startswith("Predict answers one or several rows")
    assert predict["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "google.rpc.Status"
    )
    batch = document["paths"]["/v1/models/{model}:batchPredict"]["post"]
    assert [media.lower() for media in batch["requestBody"]["content"]] == ["application/x-ndjson"]
    schemas = document["components"]["schemas"]
    assert schemas["regserve.v1.Matrix"]["properties"]["numColumns"]["description"] == (
        "The number of columns. When it is zero the data is read as a single row."
    )
    assert schemas["regserve.v1.BatchPredictResponse"]["properties"]["chunkIndex"]["type"] == "string"


def test_docs_page_uses_only_local_assets(http):
    response = http.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    references = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert references and all(ref.startswith("/docs/static/") for ref in references)
    assert "http://" not in response.text and "https://" not in response.text
    for ref in references:
        assert http.get(ref).status_code == 200, ref
    assert '"/openapi.json"' in response.text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_regserve_gateway_command_proxies_to_an_upstream(target, client, linear_data):
    """`regserve gateway --upstream` as its own process in front of a running server."""
    import subprocess
    import sys

    client.train("house", *linear_data)
    port = _free_port()
    command = [sys.executable, "-m", "regserve.server.cli", "gateway", "--upstream", target, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/models/house", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json()["modelVersion"]["version"] == "v1"
        missing = httpx.get(f"http://127.0.0.1:{port}/v1/models/nowhere", timeout=5)
        assert missing.status_code == 404 and reason(missing.json()) == "UNKNOWN_MODEL"
    finally:
        process.terminate()
        process.wait(10)


def test_an_in_process_call_past_its_deadline_is_504(app, target, stub, linear_data):
    X, y = linear_data
    train(stub, "house", X, y)
    with running_gateway(target, app.local) as http:
        body = {"inputs": matrix(X[:1])}
        answer = http.post("/v1/models/house:predict", json=body, headers={"X-Timeout-Seconds": "0.000001"})
        assert answer.status_code == 504 and answer.json()["code"] == code_pb2.DEADLINE_EXCEEDED
        assert reason(answer.json()) == "DEADLINE_EXCEEDED"  # grpc's own status, with an ErrorInfo as every other
        assert http.post("/v1/models/house:predict", json=body).status_code == 200


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_over_the_message_limit_is_refused_in_both_modes(tmp_path, mode):
    """An answer the gRPC server would not send (over --max-message-mb) is not sent in process either."""
    from regserve.client import RegressionClient
    from tests.conftest import start_server

    small = start_server(tmp_path / "models", max_message_mb=1)
    try:
        rng = np.random.default_rng(7)
        X = rng.normal(size=(300, 1))
        labels = np.array(["low", "mid", "high"])[np.digitize(X[:, 0], [-0.5, 0.5])]
        with RegressionClient(f"127.0.0.1:{small.port}") as client:
            client.train("bands", X, labels, kind="logistic")
        rows = rng.normal(size=(40_000, 1))  # 0.3 MB of inputs; the labels and probabilities come to 1.5 MB
        with running_gateway(f"127.0.0.1:{small.port}", small.local if mode == "in_process" else None) as http:
            body = {"inputs": matrix(rows)}
            answer = http.post("/v1/models/bands:predict", json=body, headers={"X-Request-Id": "big-1"})
            assert answer.status_code == 429 and answer.json()["code"] == code_pb2.RESOURCE_EXHAUSTED
            assert "Sent message larger than max" in answer.json()["message"]
            if mode == "in_process":
                assert reason(answer.json()) == "MESSAGE_TOO_LARGE"
                assert answer.headers["x-request-id"] == "big-1"
            fine = http.post("/v1/models/bands:predict", json={"inputs": matrix(rows[:1000])})
            assert fine.status_code == 200 and len(fine.json()["labels"]) == 1000
    finally:
        small.stop(0)


def test_an_in_process_request_over_the_message_limit_is_refused(tmp_path, linear_data):
    from tests.conftest import start_server

    small = start_server(tmp_path / "models", max_message_mb=1)
    try:
        X, y = linear_data
        with grpc.insecure_channel(f"127.0.0.1:{small.port}") as channel:
            train(pb_grpc.RegressionServiceStub(channel), "house", X, y)
        with running_gateway(f"127.0.0.1:{small.port}", small.local) as http:
            rows = np.ones((30_000, 5))  # 1.2 MB of doubles: over the 1 MiB limit
            answer = http.post("/v1/models/house:predict", json={"inputs": matrix(rows)})
            assert answer.status_code == 429 and reason(answer.json()) == "MESSAGE_TOO_LARGE"
            assert http.post("/v1/models/house:predict", json={"inputs": matrix(rows[:10])}).status_code == 200
    finally:
        small.stop(0)


def test_head_is_answered_wherever_get_is(http):
    for path in ("/v1/models", "/v2/health/live", "/v2"):
        got, head = http.get(path), http.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
    refused = http.delete("/v1/models")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


def test_a_gzip_json_body_is_read_on_v1_and_a_compressed_stream_is_refused(http, stub, linear_data):
    import gzip
    import zlib

    X, y = linear_data
    train(stub, "house", X, y)
    body = json.dumps({"inputs": matrix(X[:3])}).encode()
    plain = http.post("/v1/models/house:predict", content=body, headers={"content-type": "application/json"})
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        headers = {"content-type": "application/json", "content-encoding": encoding}
        answer = http.post("/v1/models/house:predict", content=packed, headers=headers)
        assert answer.status_code == 200 and answer.json() == plain.json(), encoding
    headers = {"content-type": "application/json", "content-encoding": "br"}
    assert http.post("/v1/models/house:predict", content=body, headers=headers).status_code == 415
    line = json.dumps({"spec": {"model": "house", "kind": "MODEL_KIND_LINEAR"}}).encode() + b"\n"
    headers = {"content-type": "application/x-ndjson", "content-encoding": "gzip"}
    streamed = http.post("/v1/models:train", content=gzip.compress(line), headers=headers)
    assert streamed.status_code == 415 and reason(streamed.json()) == "UNSUPPORTED_MEDIA_TYPE"


def test_an_error_the_gateway_answers_itself_carries_a_request_id(http):
    sent = {"content-type": "application/json", "x-request-id": "trace-7"}
    for answer in (
        http.post("/v1/models/house:predict", content=b"{", headers=sent),
        http.post("/v2/models/house/infer", content=b"{", headers=sent),
        http.get("/v1/no-such-route", headers={"x-request-id": "trace-7"}),
    ):
        assert answer.status_code in (400, 404) and answer.headers["x-request-id"] == "trace-7"
    made = http.post("/v1/models/house:predict", content=b"{", headers={"content-type": "application/json"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])


def test_a_json_body_naming_a_key_twice_is_refused_on_v1_and_v2(http, stub, linear_data):
    X, y = linear_data
    train(stub, "house", X, y)
    row = ",".join(map(str, X[0]))
    v1 = f'{{"inputs": {{"numColumns": 5, "values": [{row}]}}, "inputs": {{"numColumns": 5, "values": [{row}]}}}}'
    v2 = f'{{"inputs": [{{"name": "inputs", "shape": [1, 5], "datatype": "FP64", "data": [{row}], "shape": [5, 1]}}]}}'
    headers = {"content-type": "application/json"}
    for path, body in (("/v1/models/house:predict", v1), ("/v2/models/house/infer", v2)):
        answer = http.post(path, content=body.encode(), headers=headers)
        assert answer.status_code == 400, (path, answer.text)
        assert "given twice" in answer.text, answer.text


def test_an_integer_too_long_for_python_is_refused_in_the_documents_terms(http):
    body = b'{"inputs": {"numColumns": 1, "values": [' + b"9" * 5000 + b"]}}"
    for path in ("/v1/models/house:predict", "/v2/models/house/infer"):
        answer = http.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400 and "more than 4,300 digits" in answer.text, answer.text
        assert "sys." not in answer.text
