"""inference.GRPCInferenceService on a real server through a real channel, against regserve.v1 Predict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from regserve.client import ModelAdminClient, RegressionClient
from regserve.inference import grpc_service_pb2 as pb
from regserve.inference import grpc_service_pb2_grpc as pb_grpc
from regserve.server.datasets.demo import ensure_demo_models
from tests.conftest import start_server

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl") or "grpcurl"
Input = pb.ModelInferRequest.InferInputTensor


def _demo_server(model_dir, **overrides):
    app = start_server(model_dir, **overrides)
    ensure_demo_models(app.store)
    app.update_health()
    return app


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    app = _demo_server(tmp_path_factory.mktemp("models"))
    yield f"127.0.0.1:{app.port}"
    app.stop(0)


@pytest.fixture(scope="module")
def stub(demo):
    with grpc.insecure_channel(demo) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def predict_client(demo):
    with RegressionClient(demo, timeout=60) as client:
        yield client


def _rows(n, features, seed):
    return np.random.default_rng(seed).normal(loc=1.0, size=(n, features))


def _typed(X, name="inputs"):
    return pb.ModelInferRequest.InferInputTensor(
        name=name, datatype="FP64", shape=X.shape, contents=pb.InferTensorContents(fp64_contents=X.ravel())
    )


def _contents(datatype, shape, **fields):
    """The input ``inputs`` with typed contents ``fields``."""
    return Input(name="inputs", datatype=datatype, shape=shape, contents=pb.InferTensorContents(**fields))


def _raw_request(model, X, **fields):
    X = np.ascontiguousarray(X, dtype="<f8")
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[Input(name="inputs", datatype="FP64", shape=X.shape)],
        raw_input_contents=[X.tobytes()],
        **fields,
    )


def _outputs(response):
    """Output name -> array, from raw or typed contents."""
    out = {}
    for i, tensor in enumerate(response.outputs):
        if response.raw_output_contents:
            raw = response.raw_output_contents[i]
            if tensor.datatype == "BYTES":
                items, offset = [], 0
                while offset < len(raw):
                    length = int.from_bytes(raw[offset : offset + 4], "little")
                    items.append(raw[offset + 4 : offset + 4 + length])
                    offset += 4 + length
                data = np.array(items, dtype=object)
            else:
                data = np.frombuffer(raw, dtype={"FP64": "<f8", "INT64": "<i8"}[tensor.datatype])
        else:
            field = {"FP64": "fp64_contents", "INT64": "int64_contents", "BYTES": "bytes_contents"}[tensor.datatype]
            data = np.array(list(getattr(tensor.contents, field)))
        out[tensor.name] = data.reshape(tuple(tensor.shape))
    return out


def _error(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    reasons = [d for d in status.details if d.Is(info.DESCRIPTOR)]
    assert reasons, status
    reasons[0].Unpack(info)
    return caught.value.code(), info


def test_live_ready_and_server_metadata(stub):
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    meta = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "regserve"
    assert set(meta.extensions) == {"classification", "model_repository", "binary_tensor_data"}


def test_a_server_without_models_is_live_but_not_ready(tmp_path):
    app = start_server(tmp_path / "models")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(pb.ServerLiveRequest()).live
            assert not stub.ServerReady(pb.ServerReadyRequest()).ready
            assert not stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready
    finally:
        app.stop(0)


def test_a_draining_server_is_not_ready_and_still_answers(tmp_path):
    app = _demo_server(tmp_path / "models")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest()).ready
            app.drain()
            assert not stub.ServerReady(pb.ServerReadyRequest()).ready
            assert stub.ServerLive(pb.ServerLiveRequest()).live
            assert stub.ModelInfer(_raw_request("iris", _rows(1, 4, 21))).model_version == "v1"
    finally:
        app.stop(0)


def test_model_ready_by_regserve_or_bare_version(stub):
    for version in ("", "1", "v1"):
        assert stub.ModelReady(pb.ModelReadyRequest(name="iris", version=version)).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="iris", version="9")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="nope")).ready


def test_model_metadata_describes_the_demo_models(stub):
    iris = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"))
    assert list(iris.versions) == ["v1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in iris.inputs] == [("inputs", "FP64", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in iris.outputs] == [
        ("predictions", "INT64", [-1]),
        ("labels", "BYTES", [-1]),
        ("probabilities", "FP64", [-1, 3]),
    ]
    assert json.loads(iris.properties["classes"]) == ["setosa", "versicolor", "virginica"]
    assert len(json.loads(iris.properties["feature_names"])) == 4
    diabetes = stub.ModelMetadata(pb.ModelMetadataRequest(name="diabetes", version="1"))
    assert [(t.name, t.datatype, list(t.shape)) for t in diabetes.outputs] == [("predictions", "FP64", [-1])]
    assert json.loads(diabetes.properties["feature_names"])[0] == "age"


@pytest.mark.parametrize("rows", [1, 10_000])
@pytest.mark.parametrize("raw", [False, True])
def test_infer_equals_predict(stub, predict_client, rows, raw):
    for model, features, seed in (("iris", 4, 11), ("diabetes", 10, 12)):
        X = _rows(rows, features, seed)
        request = _raw_request(model, X) if raw else pb.ModelInferRequest(model_name=model, inputs=[_typed(X)])
        response = stub.ModelInfer(request)
        assert bool(response.raw_output_contents) == raw
        assert (response.model_name, response.model_version) == (model, "v1")
        out = _outputs(response)
        expected = predict_client.predict(model, X)
        if model == "iris":
            np.testing.assert_array_equal(out["predictions"], expected.values.astype(np.int64))
            assert [label.decode() for label in out["labels"]] == expected.labels
            np.testing.assert_array_equal(out["probabilities"], expected.probabilities)
        else:
            assert list(out) == ["predictions"]
            np.testing.assert_array_equal(out["predictions"], expected.values)


def test_columnar_inputs_named_as_the_features(stub, predict_client):
    names = json.loads(stub.ModelMetadata(pb.ModelMetadataRequest(name="diabetes")).properties["feature_names"])
    X = _rows(5, len(names), 13)
    inputs = [
        Input(name=name, datatype="FP32", shape=[5], contents=pb.InferTensorContents(fp32_contents=X[:, i]))
        for i, name in reversed(list(enumerate(names)))
    ]
    out = _outputs(stub.ModelInfer(pb.ModelInferRequest(model_name="diabetes", inputs=inputs)))
    expected = predict_client.predict("diabetes", X.astype(np.float32).astype(np.float64)).values
    np.testing.assert_array_equal(out["predictions"], expected)


def test_requested_outputs_id_and_binary_data(stub):
    X = _rows(3, 4, 14)
    request = pb.ModelInferRequest(
        model_name="iris",
        id="req-7",
        inputs=[_typed(X)],
        outputs=[
            pb.ModelInferRequest.InferRequestedOutputTensor(
                name="labels", parameters={"binary_data": pb.InferParameter(bool_param=True)}
            )
        ],
    )
    response = stub.ModelInfer(request)
    assert response.id == "req-7"
    assert [t.name for t in response.outputs] == ["labels"]
    assert len(response.raw_output_contents) == 1


def _classification_request(model, X, count, *, raw, output="probabilities"):
    parameters = {"classification": pb.InferParameter(int64_param=count)}
    if raw:
        parameters["binary_data"] = pb.InferParameter(bool_param=True)
    asked = [pb.ModelInferRequest.InferRequestedOutputTensor(name=output, parameters=parameters)]
    return pb.ModelInferRequest(model_name=model, inputs=[_typed(X)], outputs=asked)


@pytest.mark.parametrize("raw", [False, True])
def test_classification_answers_each_rows_likeliest_classes(stub, predict_client, raw):
    X = _rows(6, 4, 21)
    expected = predict_client.predict("iris", X)
    answer = _outputs(stub.ModelInfer(_classification_request("iris", X, 2, raw=raw)))
    top = answer["probabilities"]
    assert top.shape == (6, 2)
    for row, items in zip(expected.probabilities, top, strict=True):
        order = np.argsort(-row, kind="stable")[:2]
        assert [item.decode() for item in items] == [f"{float(row[i])!r}:{i}:{expected.classes[i]}" for i in order]
    # More classes than the model has: every class, the likeliest first.
    every = _outputs(stub.ModelInfer(_classification_request("iris", X[:1], 10, raw=raw)))["probabilities"]
    assert every.shape == (1, 3)
    assert [float(item.split(b":")[0]) for item in every[0]] == sorted(expected.probabilities[0], reverse=True)


def test_classification_is_refused_where_it_has_no_meaning(stub):
    X = _rows(1, 4, 22)
    code, info = _error(lambda: stub.ModelInfer(_classification_request("iris", X, 2, raw=False, output="labels")))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_PARAMETER")
    code, info = _error(lambda: stub.ModelInfer(_classification_request("iris", X, 0, raw=False)))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER")
    asked = pb.ModelInferRequest.InferRequestedOutputTensor(
        name="probabilities", parameters={"classification": pb.InferParameter(string_param="2")}
    )
    code, info = _error(
        lambda: stub.ModelInfer(pb.ModelInferRequest(model_name="iris", inputs=[_typed(X)], outputs=[asked]))
    )
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER")
    regressor = _classification_request("diabetes", _rows(1, 10, 23), 2, raw=False, output="predictions")
    code, info = _error(lambda: stub.ModelInfer(regressor))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_PARAMETER")


@pytest.mark.parametrize(
    ("inputs", "raw", "reason"),
    [
        ([Input(name="inputs", datatype="FP64", shape=[1, 3])], [b"\0" * 24], "WRONG_SHAPE"),
        ([Input(name="inputs", datatype="FP64", shape=[1, 4])], [b"\0" * 31], "RAW_LENGTH_MISMATCH"),
        ([Input(name="inputs", datatype="BYTES", shape=[1, 4])], [b"\0" * 32], "RAW_LENGTH_MISMATCH"),
        ([Input(name="inputs", datatype="FP64", shape=[1, 4])], [b"\0" * 32, b""], "RAW_CONTENTS_MISMATCH"),
        ([Input(name="inputs", datatype="FP9", shape=[1, 4])], [b"\0" * 32], "UNKNOWN_DATATYPE"),
        ([Input(name="inputs", datatype="FP16", shape=[1, 4])], [], "RAW_CONTENTS_REQUIRED"),
        ([Input(name="inputs", datatype="FP64", shape=[1, 4])], [], "TENSOR_SIZE_MISMATCH"),
        (
            [Input(name="sepal_length", datatype="FP64", shape=[1]), Input(name="x", datatype="FP64", shape=[1])],
            [b"\0" * 8, b"\0" * 8],
            "UNKNOWN_INPUT",
        ),
        (
            [Input(name="inputs", datatype="FP64", shape=[1, 4])],
            [np.array([1.0, np.nan, 2.0, 3.0]).tobytes()],
            "NON_FINITE_VALUE",
        ),
        ([], [], "MISSING_INPUTS"),
        (
            [Input(name="inputs", datatype="FP64", shape=[1, 4]), Input(name="inputs", datatype="FP64", shape=[1, 4])],
            [b"\0" * 32, b"\0" * 32],
            "DUPLICATE_INPUT",
        ),
        # Elements in a contents field of another datatype: instead of the input's own, beside it, or with no rows.
        ([_contents("FP64", [1, 4], fp32_contents=[5.1, 3.5, 1.4, 0.2])], [], "INVALID_TENSOR_DATA"),
        ([_contents("INT8", [1, 4], int_contents=[5, 3, 1, 0], fp64_contents=[9.0] * 4)], [], "INVALID_TENSOR_DATA"),
        ([_contents("FP64", [0, 4], fp32_contents=[5.1, 3.5, 1.4, 0.2])], [], "INVALID_TENSOR_DATA"),
    ],
)
def test_bad_tensors_are_invalid_argument_with_a_reason(stub, inputs, raw, reason):
    request = pb.ModelInferRequest(model_name="iris", inputs=inputs, raw_input_contents=raw)
    code, info = _error(lambda: stub.ModelInfer(request))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == reason


@pytest.mark.parametrize(
    ("datatype", "field", "value"),
    [("UINT8", "uint_contents", 261), ("UINT16", "uint_contents", 65541), ("INT8", "int_contents", 500)],
)
def test_a_typed_integer_its_datatype_cannot_hold_is_refused_not_wrapped(stub, predict_client, datatype, field, value):
    def request(first):
        contents = pb.InferTensorContents(**{field: [first, 3, 1, 0]})
        return pb.ModelInferRequest(
            model_name="iris", inputs=[Input(name="inputs", datatype=datatype, shape=[1, 4], contents=contents)]
        )

    code, info = _error(lambda: stub.ModelInfer(request(value)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "INVALID_TENSOR_DATA"
    answer = _outputs(stub.ModelInfer(request(5)))  # in range: computed as the float rows
    expected = predict_client.predict("iris", np.array([[5.0, 3, 1, 0]]))
    np.testing.assert_array_equal(answer["probabilities"], expected.probabilities)


def test_unknown_models_versions_and_outputs(stub):
    X = _rows(1, 4, 15)
    code, info = _error(lambda: stub.ModelInfer(_raw_request("nope", X)))
    assert (code, info.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL")
    code, info = _error(lambda: stub.ModelInfer(_raw_request("iris", X, model_version="7")))
    assert (code, info.reason, info.metadata["version"]) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_VERSION", "v7")
    asked = [pb.ModelInferRequest.InferRequestedOutputTensor(name="scores")]
    code, info = _error(lambda: stub.ModelInfer(_raw_request("iris", X, outputs=asked)))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_OUTPUT")


def _violated_fields(call) -> list[str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    status = rpc_status.from_call(caught.value)
    assert status is not None
    found = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(found.DESCRIPTOR):
            detail.Unpack(found)
    return [violation.field for violation in found.field_violations]


def test_an_unknown_model_or_version_is_named_by_the_fields_of_the_protocols_request(stub):
    X = _rows(1, 4, 16)
    assert _violated_fields(lambda: stub.ModelInfer(_raw_request("nope", X))) == ["model_name"]
    assert _violated_fields(lambda: stub.ModelInfer(_raw_request("iris", X, model_version="7"))) == ["model_version"]
    assert _violated_fields(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))) == ["name"]
    metadata = pb.ModelMetadataRequest(name="iris", version="7")
    assert _violated_fields(lambda: stub.ModelMetadata(metadata)) == ["version"]
    load = pb.RepositoryModelLoadRequest(model_name="nope")
    assert _violated_fields(lambda: stub.RepositoryModelLoad(load)) == ["model_name"]
    unload = pb.RepositoryModelUnloadRequest(
        model_name="iris", parameters={"version": pb.ModelRepositoryParameter(string_param="v7")}
    )
    assert _violated_fields(lambda: stub.RepositoryModelUnload(unload)) == ["parameters[version]"]


def test_too_many_rows_are_refused_as_predict_refuses_them(tmp_path):
    app = _demo_server(tmp_path / "models", max_predict_rows=10)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            code, info = _error(lambda: stub.ModelInfer(_raw_request("iris", _rows(11, 4, 16))))
            assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_ROWS")
    finally:
        app.stop(0)


@pytest.fixture
def lifecycle(tmp_path):
    """A server whose iris has a second version, v2, stored but not serving."""
    app = _demo_server(tmp_path / "models")
    target = f"127.0.0.1:{app.port}"
    X = _rows(60, 4, 17)
    y = np.array(["setosa", "versicolor", "virginica"] * 20)
    with RegressionClient(target, timeout=60) as client:
        client.train("iris", X, y, kind="logistic", promote=False, feature_names=["a", "b", "c", "d"])
    with grpc.insecure_channel(target) as channel, ModelAdminClient(target, timeout=60) as admin:
        yield pb_grpc.GRPCInferenceServiceStub(channel), admin
    app.stop(0)


def _index(stub, ready=False):
    response = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=ready))
    return {(m.name, m.version): (m.state, m.reason) for m in response.models}


def test_frozen_versions_and_traffic_splits_route_as_for_predict(lifecycle):
    stub, admin = lifecycle
    X = _rows(1, 4, 18)
    assert stub.ModelInfer(_raw_request("iris", X, model_version="2")).model_version == "v2"
    assert list(stub.ModelMetadata(pb.ModelMetadataRequest(name="iris")).versions) == ["v1", "v2"]
    admin.freeze("iris", "v2")
    code, info = _error(lambda: stub.ModelInfer(_raw_request("iris", X, model_version="v2")))
    assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_FROZEN")
    # The metadata's versions are those a request may name.
    assert list(stub.ModelMetadata(pb.ModelMetadataRequest(name="iris")).versions) == ["v1"]
    admin.unfreeze("iris", "v2")
    admin.set_split("iris", {"v1": 0.5, "v2": 0.5})
    arms = set()
    for key in map(str, range(40)):
        parameters = {"routing_key": pb.InferParameter(string_param=key)}
        first = stub.ModelInfer(_raw_request("iris", X, parameters=parameters)).model_version
        assert stub.ModelInfer(_raw_request("iris", X, parameters=parameters)).model_version == first
        arms.add(first)
    assert arms == {"v1", "v2"}


def test_repository_index_load_and_unload(lifecycle):
    stub, admin = lifecycle
    assert _index(stub) == {
        ("diabetes", "v1"): ("READY", "serving"),
        ("iris", "v1"): ("READY", "serving"),
        ("iris", "v2"): ("READY", "answers calls that name its version"),
    }
    # Load without a version: the model is ready as it is.
    stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="iris"))
    # Unload of a version freezes it; Unload of the whole model is refused.
    version = {"version": pb.ModelRepositoryParameter(string_param="2")}
    stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="iris", parameters=version))
    assert _index(stub)[("iris", "v2")] == ("UNAVAILABLE", "frozen")
    assert ("iris", "v2") not in _index(stub, ready=True)
    assert not stub.ModelReady(pb.ModelReadyRequest(name="iris", version="2")).ready
    code, info = _error(lambda: stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="iris")))
    assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_STAYS_SERVED")
    serving = {"version": pb.ModelRepositoryParameter(string_param="v1")}
    code, _ = _error(
        lambda: stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="iris", parameters=serving))
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    # Load of a version unfreezes and promotes it.
    load = pb.RepositoryModelLoadRequest(
        model_name="iris", parameters={"version": pb.ModelRepositoryParameter(int64_param=2)}
    )
    stub.RepositoryModelLoad(load)
    assert _index(stub)[("iris", "v2")] == ("READY", "serving")
    assert stub.ModelInfer(_raw_request("iris", _rows(1, 4, 19))).model_version == "v2"
    code, info = _error(lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="nope")))
    assert (code, info.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL")

    # tritonclient's load_model(name, config=...) names a version by Triton's version policy.
    def load_config(text, **more):
        parameters = {"config": pb.ModelRepositoryParameter(string_param=text), **more}
        return stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="iris", parameters=parameters))

    load_config('{"version_policy": {"specific": {"versions": [1]}}}')
    assert _index(stub)[("iris", "v1")] == ("READY", "serving")
    load_config('{"version_policy": {"specific": {"versions": ["v2"]}}}')
    assert _index(stub)[("iris", "v2")] == ("READY", "serving")
    duplicated = '{"version_policy": {"specific": {"versions": [1]}, "specific": {"versions": [2]}}}'
    for text in (
        "{}",
        "not json",
        '{"version_policy": {"specific": {"versions": [1, 2]}}}',
        '{"max_batch_size": 8}',
        '{"version_policy": {"specific": {"versions": "1"}}}',
        duplicated,
    ):
        code, info = _error(lambda text=text: load_config(text))
        assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_PARAMETER"), text
    code, info = _error(lambda: load_config('{"version_policy": {"specific": {"versions": [true]}}}'))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER")
    both = {"version": pb.ModelRepositoryParameter(string_param="v1")}
    code, info = _error(lambda: load_config('{"version_policy": {"specific": {"versions": [1]}}}', **both))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER")


def test_roles_apply_as_for_regserve_v1(tmp_path):
    app = _demo_server(tmp_path / "models", tokens="admin:oip-admin,predict:oip-predict")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            predict = (("authorization", "Bearer oip-predict"),)
            admin = (("authorization", "Bearer oip-admin"),)
            code, _ = _error(lambda: stub.ModelInfer(_raw_request("iris", _rows(1, 4, 20))))
            assert code is grpc.StatusCode.UNAUTHENTICATED
            assert stub.ModelInfer(_raw_request("iris", _rows(1, 4, 20)), metadata=predict).model_version == "v1"
            load = pb.RepositoryModelLoadRequest(model_name="iris")
            code, _ = _error(lambda: stub.RepositoryModelLoad(load, metadata=predict))
            assert code is grpc.StatusCode.PERMISSION_DENIED
            stub.RepositoryModelLoad(load, metadata=admin)
    finally:
        app.stop(0)


def test_grpcurl_lists_and_describes_the_service_through_reflection(demo):
    listed = subprocess.run([GRPCURL, "-plaintext", demo, "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "inference.GRPCInferenceService" in listed.stdout.split()
    described = subprocess.run(
        [GRPCURL, "-plaintext", demo, "describe", "inference.GRPCInferenceService"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert described.returncode == 0, described.stderr
    for rpc in ("ModelInfer", "ServerLive", "ModelMetadata", "RepositoryIndex", "RepositoryModelUnload"):
        assert f"rpc {rpc} (" in described.stdout
    body = json.dumps({"name": "iris"})
    ready = subprocess.run(
        [GRPCURL, "-plaintext", "-d", body, demo, "inference.GRPCInferenceService/ModelReady"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ready.returncode == 0, ready.stderr
    assert json.loads(ready.stdout) == {"ready": True}


def test_load_picks_up_a_version_another_replica_trained(tmp_path):
    first = _demo_server(tmp_path / "models", poll_interval=3600)
    second = start_server(tmp_path / "models", poll_interval=3600)
    try:
        with RegressionClient(f"127.0.0.1:{first.port}", timeout=60) as client:
            y = np.array(["setosa", "versicolor", "virginica"] * 20)
            client.train("iris", _rows(60, 4, 22), y, kind="logistic", promote=False)
        with grpc.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert not stub.ModelReady(pb.ModelReadyRequest(name="iris", version="2")).ready
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="iris"))
            assert stub.ModelReady(pb.ModelReadyRequest(name="iris", version="2")).ready
    finally:
        second.stop(0)
        first.stop(0)
