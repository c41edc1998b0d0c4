import numpy as np

from regserve.client._calls import train_requests


def _make():
    return train_requests("m", "logistic", "newton", [], [], {})[1]


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
