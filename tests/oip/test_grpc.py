"""tritonclient.grpc, unchanged, against `regserve serve`: the answers are regserve.v1 Predict's, to the bit."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.rpc import error_details_pb2, status_pb2
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.oip.server import ROOT, Served

FEATURES = {"iris": 4, "diabetes": 10}


@pytest.fixture(scope="module")
def client(served):
    with triton.InferenceServerClient(served.grpc_target) as client:
        yield client


@pytest.fixture(scope="module")
def stub(served):
    """The same service through tritonclient's own generated stubs, for typed contents and error details."""
    with grpc.insecure_channel(served.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _rows(model, n, seed):
    return np.random.default_rng(seed).normal(loc=1.0, size=(n, FEATURES[model]))


def _infer(client, model, X, outputs=None):
    tensor = triton.InferInput("inputs", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X)
    requested = None if outputs is None else [triton.InferRequestedOutput(name) for name in outputs]
    return client.infer(model, [tensor], outputs=requested)


def _assert_same(model, answer, expected):
    """``answer`` maps output names to arrays; ``expected`` is Predict's answer."""
    if model == "iris":
        np.testing.assert_array_equal(answer["predictions"], expected["values"].astype(np.int64))
        assert [label.decode() for label in answer["labels"]] == expected["labels"].tolist()
        np.testing.assert_array_equal(answer["probabilities"], expected["probabilities"])
    else:
        np.testing.assert_array_equal(answer["predictions"], expected["values"])


def test_live_ready_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "regserve"
    assert "model_repository" in metadata["extensions"]


def test_the_demo_models_are_ready_by_any_version_spelling(client):
    for model in FEATURES:
        assert client.is_model_ready(model)
        assert client.is_model_ready(model, "1")
        assert client.is_model_ready(model, "v1")
        assert not client.is_model_ready(model, "2")
    assert not client.is_model_ready("nope")


def test_model_metadata(client):
    iris = client.get_model_metadata("iris", as_json=True)
    assert iris["versions"] == ["v1"]
    assert iris["inputs"] == [{"name": "inputs", "datatype": "FP64", "shape": ["-1", "4"]}]
    assert [(o["name"], o["datatype"]) for o in iris["outputs"]] == [
        ("predictions", "INT64"),
        ("labels", "BYTES"),
        ("probabilities", "FP64"),
    ]
    diabetes = client.get_model_metadata("diabetes", "1")
    assert [(t.name, list(t.shape)) for t in diabetes.inputs] == [("inputs", [-1, 10])]
    assert [(t.name, t.datatype) for t in diabetes.outputs] == [("predictions", "FP64")]


@pytest.mark.parametrize("rows", [1, 10_000])
@pytest.mark.parametrize("model", sorted(FEATURES))
def test_raw_infer_equals_predict(client, served, tmp_path, model, rows):
    X = _rows(model, rows, seed=rows + FEATURES[model])
    result = _infer(client, model, X)
    response = result.get_response()
    assert (response.model_name, response.model_version) == (model, "v1")
    names = [output.name for output in response.outputs]
    _assert_same(model, {name: result.as_numpy(name) for name in names}, served.predict(model, X, tmp_path))


def _typed_answer(response):
    fields = {"FP64": "fp64_contents", "INT64": "int64_contents", "BYTES": "bytes_contents"}
    return {
        output.name: np.array(list(getattr(output.contents, fields[output.datatype]))).reshape(tuple(output.shape))
        for output in response.outputs
    }


@pytest.mark.parametrize("rows", [1, 10_000])
@pytest.mark.parametrize("model", sorted(FEATURES))
def test_typed_infer_equals_predict(stub, served, tmp_path, model, rows):
    X = _rows(model, rows, seed=rows * 3 + FEATURES[model])
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="inputs", datatype="FP64", shape=X.shape, contents=service_pb2.InferTensorContents(fp64_contents=X.ravel())
    )
    response = stub.ModelInfer(service_pb2.ModelInferRequest(model_name=model, inputs=[tensor]), timeout=120)
    assert not response.raw_output_contents
    _assert_same(model, _typed_answer(response), served.predict(model, X, tmp_path))


def test_class_count_answers_each_rows_likeliest_classes(client, served, tmp_path):
    X = _rows("iris", 5, seed=8)
    tensor = triton.InferInput("inputs", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X)
    result = client.infer("iris", [tensor], outputs=[triton.InferRequestedOutput("probabilities", class_count=2)])
    expected = served.predict("iris", X, tmp_path)
    classes = ["setosa", "versicolor", "virginica"]
    for row, items in zip(expected["probabilities"], result.as_numpy("probabilities"), strict=True):
        order = np.argsort(-row, kind="stable")[:2]
        assert [item.decode() for item in items] == [f"{float(row[i])!r}:{i}:{classes[i]}" for i in order]


def test_other_datatypes_columns_and_requested_outputs(client, served, tmp_path):
    X = _rows("iris", 7, seed=5).astype(np.float32)
    tensor = triton.InferInput("inputs", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer("iris", [tensor], outputs=[triton.InferRequestedOutput("probabilities")])
    assert [output.name for output in result.get_response().outputs] == ["probabilities"]
    expected = served.predict("iris", X.astype(np.float64), tmp_path)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])
    # Triton's ModelMetadataResponse has no ``properties`` (the protocol's field 6, where the
    # feature names travel): tritonclient cannot show them, so they are read from the dataset.
    header = (ROOT / "server" / "datasets" / "diabetes.csv").read_text().splitlines()[0].split(",")
    features = [name for name in header if name != "progression"]
    X = _rows("diabetes", 4, seed=6)
    columns = []
    for i, name in enumerate(features):
        column = triton.InferInput(name, [4], "FP64")
        column.set_data_from_numpy(np.ascontiguousarray(X[:, i]))
        columns.append(column)
    result = client.infer("diabetes", columns)
    np.testing.assert_array_equal(result.as_numpy("predictions"), served.predict("diabetes", X, tmp_path)["values"])


def _reason(error: grpc.RpcError) -> str:
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert details is not None, error
    status = status_pb2.Status.FromString(details)
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):
            return info.reason
    raise AssertionError(status)


@pytest.mark.parametrize(
    ("shape", "datatype", "raw", "reason"),
    [
        ([1, 3], "FP64", b"\0" * 24, "WRONG_SHAPE"),
        ([1, 4], "FP64", b"\0" * 30, "RAW_LENGTH_MISMATCH"),
        ([1, 4], "BYTES", b"\0" * 32, "RAW_LENGTH_MISMATCH"),
        ([1, 4], "FP64", np.array([1.0, np.nan, 0.0, 0.0]).tobytes(), "NON_FINITE_VALUE"),
        ([1, 4], "FP64", np.array([1.0, np.inf, 0.0, 0.0]).tobytes(), "NON_FINITE_VALUE"),
    ],
)
def test_bad_tensors_are_invalid_argument_with_a_reason(client, stub, shape, datatype, raw, reason):
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="inputs", datatype=datatype, shape=shape)
    request = service_pb2.ModelInferRequest(model_name="iris", inputs=[tensor], raw_input_contents=[raw])
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=60)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(caught.value) == reason


def test_tritonclient_reports_a_bad_tensor_as_invalid_argument(client):
    tensor = triton.InferInput("not_a_feature", [1, 4], "INT32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.int32))
    other = triton.InferInput("sepal_length", [1], "FP64")
    other.set_data_from_numpy(np.ones(1))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", [other, tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "not a feature of the model" in caught.value.message()


@pytest.fixture
def own_server(tmp_path):
    server = Served(tmp_path / "models")
    yield server
    server.stop()


def test_repository_index_load_and_unload(own_server):
    with triton.InferenceServerClient(own_server.grpc_target) as client:
        index = client.get_model_repository_index(as_json=True)["models"]
        assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
            ("diabetes", "v1", "READY"),
            ("iris", "v1", "READY"),
        ]
        client.load_model("iris")
        assert client.is_model_ready("iris")
        with pytest.raises(InferenceServerException) as caught:
            client.unload_model("iris")
        assert caught.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert client.is_model_ready("iris")
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("iris", config="{}")
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        client.load_model("iris", config='{"version_policy": {"specific": {"versions": [1]}}}')
        assert client.get_model_repository_index(as_json=True)["models"][1]["reason"] == "serving"
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("iris", config='{"version_policy": {"specific": {"versions": [2]}}}')
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("nope")
        assert caught.value.status() == "StatusCode.NOT_FOUND"
