"""Property-based abuse of a real server: malformed messages and random bytes never crash it.

Every answer is a status the caller can act on, never UNKNOWN nor INTERNAL: a body that
is not a valid protobuf encoding is refused INVALID_ARGUMENT with reason
MALFORMED_MESSAGE by the edge.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2
from tests.conftest import start_server

FUZZ = settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
RPC = "/regserve.v1.RegressionService/"

texts = st.text(max_size=12)
models = st.one_of(st.sampled_from(["house", "house", "house", "", "fz"]), texts)
doubles = st.floats(allow_nan=True, allow_infinity=True)
uint32 = st.integers(0, 2**32 - 1)
any_matrices = st.builds(
    types_pb2.Matrix,
    num_columns=st.one_of(st.integers(0, 8), uint32),
    values=st.lists(doubles, max_size=24),
    raw=st.one_of(st.just(b""), st.binary(max_size=200)),
)
# Well-shaped matrices (whole rows) get past the shape checks to the checks behind them.
shaped_matrices = st.tuples(st.integers(1, 6), st.integers(0, 5)).flatmap(
    lambda shape: st.builds(
        types_pb2.Matrix,
        num_columns=st.just(shape[0]),
        values=st.lists(doubles, min_size=shape[0] * shape[1], max_size=shape[0] * shape[1]),
    )
)
matrices = st.one_of(any_matrices, shaped_matrices)
vectors = st.builds(types_pb2.Vector, values=st.lists(doubles, max_size=24), raw=st.binary(max_size=96))
named_rows = st.builds(
    types_pb2.NamedRow, features=st.dictionaries(st.sampled_from("abcdez") | texts, doubles, max_size=6)
)
predict_requests = st.builds(
    pb.PredictRequest,
    model=models,
    version=st.one_of(st.sampled_from(["", "v1", "v2", "v0"]), texts),
    routing_key=texts,
    inputs=st.one_of(st.none(), matrices),
    named_inputs=st.lists(named_rows, max_size=4),
)
batch_requests = st.builds(
    pb.BatchPredictRequest, model=models, version=st.sampled_from(["", "v1", "x"]), inputs=matrices
)
# Optional fields are often left unset (None), so some specs are valid and train.
maybe = st.none
specs = st.builds(
    types_pb2.TrainSpec,
    model=st.one_of(st.just("fz"), st.just("fz"), texts),
    kind=st.integers(0, 5),
    solver=st.integers(0, 6),
    feature_names=st.lists(texts, max_size=5),
    alpha=maybe() | doubles,
    learning_rate=maybe() | doubles,
    epochs=maybe() | st.integers(0, 20),
    batch_size=maybe() | uint32,
    tolerance=maybe() | doubles,
    max_iterations=maybe() | st.integers(0, 20),
    validation_fraction=maybe() | doubles,
    cv_folds=maybe() | st.integers(0, 6) | uint32,
    seed=maybe() | st.integers(0, 2**64 - 1),
    class_labels=st.lists(texts, max_size=4),
    promote=maybe() | st.booleans(),
    promotion_gate=st.booleans(),
)
chunks = st.builds(
    types_pb2.TrainChunk,
    features=matrices,
    targets=vectors,
    labels=st.lists(st.sampled_from(["a", "b", ""]), max_size=20),
)
any_train_streams = st.lists(
    st.one_of(st.builds(pb.TrainRequest, spec=specs), st.builds(pb.TrainRequest, chunk=chunks)), max_size=4
)
shaped_chunks = st.integers(1, 12).flatmap(
    lambda rows: st.builds(
        types_pb2.TrainChunk,
        features=st.builds(
            types_pb2.Matrix,
            num_columns=st.just(2),
            values=st.lists(st.floats(-1e6, 1e6) | doubles, min_size=2 * rows, max_size=2 * rows),
        ),
        targets=st.builds(types_pb2.Vector, values=st.lists(st.floats(-1e6, 1e6), min_size=rows, max_size=rows)),
    )
)
shaped_train_streams = st.tuples(specs, st.lists(shaped_chunks, min_size=1, max_size=3)).map(
    lambda parts: [pb.TrainRequest(spec=parts[0])] + [pb.TrainRequest(chunk=c) for c in parts[1]]
)
train_streams = st.one_of(any_train_streams, shaped_train_streams)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    app = start_server(tmp_path_factory.mktemp("fuzz") / "models")
    rng = np.random.default_rng(11)
    X = rng.normal(size=(60, 5))
    y = X @ np.arange(1.0, 6.0) + 2.0
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.RegressionServiceStub(channel)
        spec = types_pb2.TrainSpec(model="house", kind=types_pb2.MODEL_KIND_LINEAR, feature_names=list("abcde"))
        chunk = types_pb2.TrainChunk(
            features=types_pb2.Matrix(num_columns=5, raw=X.tobytes()), targets=types_pb2.Vector(raw=y.tobytes())
        )
        stub.Train(iter([pb.TrainRequest(spec=spec), pb.TrainRequest(chunk=chunk)]), timeout=30)
        yield channel, stub, X
    app.stop(0)


def _code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _still_serving(stub, X) -> None:
    request = pb.PredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=5, raw=X[:3].tobytes()))
    assert len(stub.Predict(request, timeout=10).predictions.raw) == 3 * 8


@FUZZ
@given(request=predict_requests)
def test_malformed_predict_requests_get_a_definite_status(fuzzed, request):
    _, stub, _ = fuzzed
    assert _code(lambda: stub.Predict(request, timeout=10)) not in NEVER


@FUZZ
@given(stream=st.lists(batch_requests, max_size=3))
def test_malformed_batch_predict_streams_get_a_definite_status(fuzzed, stream):
    _, stub, _ = fuzzed
    assert _code(lambda: list(stub.BatchPredict(iter(stream), timeout=10))) not in NEVER


@FUZZ
@given(stream=train_streams)
def test_malformed_train_streams_get_a_definite_status(fuzzed, stream):
    _, stub, _ = fuzzed
    assert _code(lambda: stub.Train(iter(stream), timeout=20)) not in NEVER


@FUZZ
@given(body=st.binary(max_size=256), method=st.sampled_from(["Predict", "ModelInfo", "Train", "BatchPredict"]))
def test_random_bytes_never_crash_the_server(fuzzed, body, method):
    channel, stub, X = fuzzed
    if method in ("Predict", "ModelInfo"):
        call = channel.unary_unary(RPC + method)
        code = _code(lambda: call(body, timeout=10))
    elif method == "Train":
        call = channel.stream_unary(RPC + method)
        code = _code(lambda: call(iter([body]), timeout=10))
    else:
        call = channel.stream_stream(RPC + method)
        code = _code(lambda: list(call(iter([body]), timeout=10)))
    assert code not in NEVER
    request_type = {"Predict": pb.PredictRequest, "ModelInfo": pb.ModelInfoRequest}.get(
        method, pb.TrainRequest if method == "Train" else pb.BatchPredictRequest
    )
    try:
        request_type.FromString(body)
    except Exception:  # noqa: BLE001 - any protobuf decode error
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    _still_serving(stub, X)


def test_the_server_still_serves_after_the_abuse(fuzzed):
    _, stub, X = fuzzed
    _still_serving(stub, X)
