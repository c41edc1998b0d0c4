import numpy as np
import pytest

from regserve.client._calls import serialize_train_request, train_requests
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import types_pb2


def _make():
    make = train_requests("m", "logistic", "newton", [], [], {})[1]
    return lambda pair: pb.TrainRequest.FromString(serialize_train_request(make(pair)))


def test_a_chunk_request_carries_rows_row_major_and_float_targets():
    rng = np.random.default_rng(7)
    X = np.asfortranarray(rng.standard_normal((5, 3)))
    y = rng.standard_normal(5)
    request = _make()((X, y))
    assert request.WhichOneof("payload") == "chunk"
    assert request.chunk.features.num_columns == 3
    assert request.chunk.features.raw == np.ascontiguousarray(X, dtype="<f8").tobytes()
    assert np.array_equal(np.frombuffer(request.chunk.targets.raw, dtype="<f8"), y)
    assert not request.chunk.labels


def test_a_chunk_request_carries_string_labels():
    request = _make()((np.ones((2, 2)), np.array(["a", "b"])))
    assert list(request.chunk.labels) == ["a", "b"]
    assert not request.chunk.targets.raw


def test_an_empty_chunk_is_still_a_chunk():
    request = _make()((np.empty((0, 0)), np.empty(0)))
    assert request.WhichOneof("payload") == "chunk"


@pytest.mark.parametrize("rows", [0, 1, 3, 40_000])  # 40,000 x 7 rows take lengths of three varint bytes
def test_a_chunk_parses_as_the_message_protobuf_would_write(rows):
    rng = np.random.default_rng(rows)
    X, y = rng.standard_normal((rows, 7)), rng.integers(0, 3, rows).astype(float)
    own = train_requests("m", "linear", "closed_form", [], [], {})[1]((X, y))
    expected = pb.TrainRequest(
        chunk=types_pb2.TrainChunk(
            features=types_pb2.Matrix(num_columns=7, raw=X.tobytes()), targets=types_pb2.Vector(raw=y.tobytes())
        )
    )
    assert pb.TrainRequest.FromString(own) == expected
