"""tritonclient.http, unchanged, against `regserve serve`'s REST gateway: the answers are regserve.v1 Predict's.

tritonclient sends tensors as JSON (``binary_data=False``) or with the binary tensor
data extension (``Inference-Header-Content-Length``), and asks for outputs either way.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

FEATURES = {"iris": 4, "diabetes": 10}


@pytest.fixture(scope="module")
def client(served):
    client = triton.InferenceServerClient(served.http_target, network_timeout=120, connection_timeout=60)
    yield client
    client.close()


def _rows(model: str, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc=1.0, size=(n, FEATURES[model]))


def _infer(client, model: str, X: np.ndarray, *, binary: bool, outputs=None, datatype: str = "FP64", version=""):
    tensor = triton.InferInput("inputs", list(X.shape), datatype)
    tensor.set_data_from_numpy(X, binary_data=binary)
    requested = None if outputs is None else [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    return client.infer(model, [tensor], outputs=requested, model_version=version, request_id="http-test")


def _assert_same(model: str, result, expected: dict) -> None:
    if model == "iris":
        np.testing.assert_array_equal(result.as_numpy("predictions"), expected["values"].astype(np.int64))
        labels = [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("labels")]
        assert labels == expected["labels"].tolist()
        np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])
    else:
        np.testing.assert_array_equal(result.as_numpy("predictions"), expected["values"])


def test_live_ready_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "regserve" and metadata["version"]


def test_the_demo_models_are_ready_by_any_version_spelling(client):
    for model in FEATURES:
        assert client.is_model_ready(model)
        assert client.is_model_ready(model, "1")
        assert client.is_model_ready(model, "v1")
        assert not client.is_model_ready(model, "2")
    assert not client.is_model_ready("nope")


def test_model_metadata(client):
    iris = client.get_model_metadata("iris")
    assert iris["name"] == "iris" and iris["versions"] == ["v1"]
    assert iris["inputs"] == [{"name": "inputs", "datatype": "FP64", "shape": [-1, 4]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in iris["outputs"]] == [
        ("predictions", "INT64", [-1]),
        ("labels", "BYTES", [-1]),
        ("probabilities", "FP64", [-1, 3]),
    ]
    diabetes = client.get_model_metadata("diabetes", "1")
    assert diabetes["inputs"] == [{"name": "inputs", "datatype": "FP64", "shape": [-1, 10]}]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("rows", [1, 10_000])
@pytest.mark.parametrize("model", sorted(FEATURES))
def test_infer_equals_predict(client, served, tmp_path, model, rows, binary):
    X = _rows(model, rows, seed=rows + FEATURES[model] + binary)
    result = _infer(client, model, X, binary=binary)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (model, "v1", "http-test")
    _assert_same(model, result, served.predict(model, X, tmp_path))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_requested_outputs_other_datatypes_and_a_version(client, served, tmp_path, binary):
    X = _rows("iris", 7, seed=11).astype(np.float32)
    result = _infer(client, "iris", X, binary=binary, outputs=["probabilities"], datatype="FP32", version="1")
    assert [output["name"] for output in result.get_response()["outputs"]] == ["probabilities"]
    expected = served.predict("iris", X.astype(np.float64), tmp_path)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_class_count_answers_each_rows_likeliest_classes(client, served, tmp_path, binary):
    X = _rows("iris", 5, seed=12)
    tensor = triton.InferInput("inputs", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X, binary_data=binary)
    asked = [triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)]
    result = client.infer("iris", [tensor], outputs=asked)
    assert client.get_server_metadata()["extensions"] == ["classification", "model_repository", "binary_tensor_data"]
    expected = served.predict("iris", X, tmp_path)
    classes = ["setosa", "versicolor", "virginica"]
    for row, items in zip(expected["probabilities"], result.as_numpy("probabilities"), strict=True):
        order = np.argsort(-row, kind="stable")[:2]
        text = [item.decode() if isinstance(item, bytes) else item for item in items]
        assert text == [f"{float(row[i])!r}:{i}:{classes[i]}" for i in order]


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compressed_requests(client, served, tmp_path, compression):
    X = _rows("diabetes", 100, seed=13)
    tensor = triton.InferInput("inputs", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X)
    result = client.infer(
        "diabetes", [tensor], request_compression_algorithm=compression, response_compression_algorithm=compression
    )
    np.testing.assert_array_equal(result.as_numpy("predictions"), served.predict("diabetes", X, tmp_path)["values"])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_bad_tensor_is_400_with_the_reason(client, binary):
    tensor = triton.InferInput("inputs", [1, 3], "FP64")
    tensor.set_data_from_numpy(np.ones((1, 3)), binary_data=binary)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", [tensor])
    assert caught.value.status() == "400"
    assert "the model takes [rows, 4]" in caught.value.message()


def test_an_unknown_model_is_404(client):
    tensor = triton.InferInput("inputs", [1, 4], "FP64")
    tensor.set_data_from_numpy(np.ones((1, 4)))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", [tensor])
    assert caught.value.status() == "404"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert caught.value.status() == "404"


def test_repository_index_load_and_unload(client):
    index = client.get_model_repository_index()
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        ("diabetes", "v1", "READY"),
        ("iris", "v1", "READY"),
    ]
    client.load_model("iris")
    assert client.is_model_ready("iris")
    with pytest.raises(InferenceServerException) as caught:
        client.unload_model("iris")
    assert caught.value.status() == "400"
    assert "stays served" in caught.value.message()
    assert client.is_model_ready("iris")
    client.load_model("iris", config='{"version_policy": {"specific": {"versions": [1]}}}')
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("iris", config='{"version_policy": {"latest": {"num_versions": 1}}}')
    assert caught.value.status() == "400"
    assert "version_policy" in caught.value.message()
