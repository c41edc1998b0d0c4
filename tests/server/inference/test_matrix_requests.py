"""ModelInfer on one FP64 or FP32 input of shape [rows, features]: answered as every other request is.

The common request takes a shorter way through the servicer; a request that names
every output takes the general one, so the two answers must be equal message for
message, and equal to regserve.v1 Predict.  Requests that the shorter way does not
read fail with the reasons the general one gives, and every call counts once.
"""

from __future__ import annotations

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

Input = pb.ModelInferRequest.InferInputTensor
Output = pb.ModelInferRequest.InferRequestedOutputTensor
OUTPUTS = {"iris": ("predictions", "labels", "probabilities"), "diabetes": ("predictions",)}
FEATURES = {"iris": 4, "diabetes": 10}
DTYPES = {"FP64": "<f8", "FP32": "<f4"}
FIELDS = {"FP64": "fp64_contents", "FP32": "fp32_contents"}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    app = start_server(tmp_path_factory.mktemp("models"))
    ensure_demo_models(app.store)
    app.update_health()
    yield f"127.0.0.1:{app.port}"
    app.stop(0)


@pytest.fixture(scope="module")
def stub(target):
    with grpc.insecure_channel(target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _rows(n, features, seed):
    return np.random.default_rng(seed).normal(loc=1.0, size=(n, features))


def _request(model, X, datatype, raw, **fields):
    data = np.ascontiguousarray(X, dtype=DTYPES[datatype])
    tensor = Input(name="inputs", datatype=datatype, shape=data.shape)
    if raw:
        return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[data.tobytes()], **fields)
    getattr(tensor.contents, FIELDS[datatype]).extend(data.ravel().tolist())
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], **fields)


def _error(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    next(d for d in status.details if d.Is(info.DESCRIPTOR)).Unpack(info)
    return caught.value.code(), info.reason


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("rows", [1, 3, 100, 10_000])
@pytest.mark.parametrize("model", ["iris", "diabetes"])
def test_naming_every_output_changes_nothing_in_the_answer(stub, model, datatype, raw, rows):
    X = _rows(rows, FEATURES[model], seed=rows)
    fields = {"id": "call-1", "parameters": {"routing_key": pb.InferParameter(string_param="user-1")}}
    plain = stub.ModelInfer(_request(model, X, datatype, raw, **fields))
    named = [Output(name=name) for name in OUTPUTS[model]]
    assert plain == stub.ModelInfer(_request(model, X, datatype, raw, outputs=named, **fields))
    assert (plain.model_name, plain.model_version, plain.id) == (model, "v1", "call-1")
    assert [tensor.name for tensor in plain.outputs] == list(OUTPUTS[model])
    assert bool(plain.raw_output_contents) == raw


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@pytest.mark.parametrize("raw", [True, False])
def test_fp32_and_fp64_rows_answer_as_predict_answers_them(stub, target, datatype, raw):
    X = _rows(7, 10, seed=5)
    response = stub.ModelInfer(_request("diabetes", X, datatype, raw))
    if raw:
        values = np.frombuffer(response.raw_output_contents[0], dtype="<f8")
    else:
        values = np.array(response.outputs[0].contents.fp64_contents)
    sent = X.astype(DTYPES[datatype]).astype(np.float64)
    with RegressionClient(target, timeout=60) as client:
        np.testing.assert_array_equal(values, client.predict("diabetes", sent).values)


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("model", ["iris", "diabetes"])
def test_one_row_answers_in_turn_each_carry_their_own_row(stub, model, raw):
    # One-row replies are copies of one kept template: no answer may leak into the next.
    X = _rows(5, FEATURES[model], seed=11)
    named = [Output(name=name) for name in OUTPUTS[model]]
    answers = [stub.ModelInfer(_request(model, X[i : i + 1], "FP64", raw)) for i in range(5)]
    for i, answer in enumerate(answers):
        assert answer == stub.ModelInfer(_request(model, X[i : i + 1], "FP64", raw, outputs=named))
        assert [list(tensor.shape) for tensor in answer.outputs][0] == [1]
        assert len(answer.raw_output_contents) == (len(OUTPUTS[model]) if raw else 0)
    assert len({answer.SerializeToString(deterministic=True) for answer in answers}) == 5


def _shaped(datatype, shape, **contents):
    if not contents:  # an empty contents message would still count as set
        return Input(name="inputs", datatype=datatype, shape=shape)
    return Input(name="inputs", datatype=datatype, shape=shape, contents=pb.InferTensorContents(**contents))


@pytest.mark.parametrize(
    ("inputs", "raw", "reason"),
    [
        ([_shaped("FP32", [1, 4])], [b"\0" * 32], "RAW_LENGTH_MISMATCH"),
        ([_shaped("FP32", [2, 3])], [b"\0" * 24], "WRONG_SHAPE"),
        ([_shaped("FP64", [-1, 4])], [b""], "INVALID_SHAPE"),
        # No element, but dimensions no array can have: NumPy refused to shape it, an INTERNAL error.
        ([_shaped("FP64", [2**32, 2**32, 0])], [b""], "INVALID_SHAPE"),
        ([_shaped("FP64", [0, 2**32, 2**32])], [b""], "INVALID_SHAPE"),
        ([Input(name="sepal_length", datatype="FP64", shape=[2**32, 2**32, 0])], [b""], "INVALID_SHAPE"),
        # BYTES elements take 4 bytes each at least: a shape alone may not make the server allocate its array.
        ([_shaped("BYTES", [2**31, 4])], [b""], "RAW_LENGTH_MISMATCH"),
        ([_shaped("BYTES", [2**40, 2**40])], [b"\0" * 8], "RAW_LENGTH_MISMATCH"),
        ([_shaped("FP64", [0, 4])], [b""], "EMPTY_REQUEST"),
        ([_shaped("FP64", [1, 4], fp64_contents=[1, 2, 3, 4])], [b"\0" * 32], "AMBIGUOUS_CONTENTS"),
        ([_shaped("FP64", [1, 4], fp64_contents=[1, 2, 3])], [], "TENSOR_SIZE_MISMATCH"),
        ([_shaped("FP32", [2, 4])], [b"\0" * 32] * 2, "RAW_CONTENTS_MISMATCH"),
        ([_shaped("FP64", [1, 4], fp64_contents=[1, np.inf, 3, 4])], [], "NON_FINITE_VALUE"),
    ],
)
def test_matrix_requests_that_cannot_be_answered_fail_with_their_reason(stub, inputs, raw, reason):
    request = pb.ModelInferRequest(model_name="iris", inputs=inputs, raw_input_contents=raw)
    assert _error(lambda: stub.ModelInfer(request)) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


def test_a_bad_routing_parameter_and_a_missing_model_are_refused(stub):
    X = _rows(1, 4, seed=8)
    bad = {"routing_key": pb.InferParameter(bool_param=True)}
    assert _error(lambda: stub.ModelInfer(_request("iris", X, "FP64", True, parameters=bad))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PARAMETER",
    )
    assert _error(lambda: stub.ModelInfer(_request("", X, "FP64", True))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MISSING_MODEL",
    )


def test_every_call_counts_once_against_the_version_that_answered(tmp_path):
    app = start_server(tmp_path / "models", max_predict_rows=10)
    ensure_demo_models(app.store)
    app.update_health()
    target = f"127.0.0.1:{app.port}"
    try:
        with grpc.insecure_channel(target) as channel, ModelAdminClient(target, timeout=60) as admin:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for raw in (True, False):
                stub.ModelInfer(_request("diabetes", _rows(3, 10, seed=9), "FP64", raw))
            stub.ModelInfer(_request("diabetes", _rows(2, 10, seed=9), "FP32", True))
            failing = [
                _request("diabetes", _rows(1, 9, seed=10), "FP64", True),  # WRONG_SHAPE, after routing
                _request("diabetes", _rows(11, 10, seed=10), "FP64", True),  # TOO_MANY_ROWS
                _request("diabetes", np.full((1, 10), np.nan), "FP64", False),  # NON_FINITE_VALUE
            ]
            for request in failing:
                assert _error(lambda request=request: stub.ModelInfer(request))[0] is grpc.StatusCode.INVALID_ARGUMENT
            (status,) = admin.status("diabetes")
            (version,) = status.versions
            assert (version.requests, version.errors, version.rows) == (6, 3, 8)
    finally:
        app.stop(0)
