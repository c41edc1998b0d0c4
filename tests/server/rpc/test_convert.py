"""Unit tests of the pure protobuf <-> NumPy converters."""

from __future__ import annotations

import numpy as np
import pytest

from regserve.server.errors import InvalidInput
from regserve.server.rpc import convert
from regserve.v1 import types_pb2


def test_raw_matrix_is_read_without_copy_and_keeps_row_major_order():
    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    matrix = types_pb2.Matrix(num_columns=3, raw=X.tobytes())
    out = convert.matrix_to_ndarray(matrix, "inputs")
    np.testing.assert_array_equal(out, X)
    assert not out.flags.owndata


def test_typed_matrix_and_single_row_without_num_columns():
    out = convert.matrix_to_ndarray(types_pb2.Matrix(values=[1, 2, 3]), "inputs")
    assert out.shape == (1, 3)
    out = convert.matrix_to_ndarray(types_pb2.Matrix(num_columns=2, values=[1, 2, 3, 4]), "inputs")
    np.testing.assert_array_equal(out, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("matrix", "reason", "field"),
    [
        (types_pb2.Matrix(num_columns=2, values=[1, 2, 3]), "MALFORMED_MATRIX", "inputs.num_columns"),
        (types_pb2.Matrix(num_columns=1, raw=b"\0" * 7), "MALFORMED_MATRIX", "inputs.raw"),
        (types_pb2.Matrix(num_columns=1, values=[1], raw=b"\0" * 8), "AMBIGUOUS_MATRIX", "inputs"),
    ],
)
def test_malformed_matrices_name_the_field(matrix, reason, field):
    with pytest.raises(InvalidInput) as info:
        convert.matrix_to_ndarray(matrix, "inputs")
    assert info.value.reason == reason
    assert info.value.violations[0][0] == field


def test_vectors_round_trip_both_encodings():
    values = np.array([0.5, -1.25, 3e300])
    for raw in (True, False):
        vector = convert.ndarray_to_vector(values, raw)
        assert bool(vector.raw) is raw
        np.testing.assert_array_equal(convert.vector_to_ndarray(vector, "v"), values)


def test_matrix_round_trip_both_encodings():
    values = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    for raw in (True, False):
        np.testing.assert_array_equal(convert.matrix_to_ndarray(convert.ndarray_to_matrix(values, raw), "m"), values)


def test_named_rows_follow_the_feature_index():
    index = {"a": 0, "b": 1}
    rows = [types_pb2.NamedRow(features={"b": 2.0, "a": 1.0}), types_pb2.NamedRow(features={"a": 3.0, "b": 4.0})]
    np.testing.assert_array_equal(convert.named_rows_to_ndarray(rows, index, "named_inputs"), [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("features", "reason"),
    [({"a": 1.0, "b": 2.0, "c": 3.0}, "UNKNOWN_FEATURE"), ({"a": 1.0}, "MISSING_FEATURE")],
)
def test_named_rows_reject_unknown_and_missing_features(features, reason):
    rows = [types_pb2.NamedRow(features={"a": 0.0, "b": 0.0}), types_pb2.NamedRow(features=features)]
    with pytest.raises(InvalidInput) as info:
        convert.named_rows_to_ndarray(rows, {"a": 0, "b": 1}, "named_inputs")
    assert info.value.reason == reason
    assert info.value.metadata["row"] == "1"


def test_spec_defaults_apply_only_to_unset_fields():
    spec = convert.spec_from_proto(types_pb2.TrainSpec(model="m", kind=types_pb2.MODEL_KIND_RIDGE, alpha=0.0))
    assert spec.kind == "ridge" and spec.alpha == 0.0 and spec.solver == "auto" and spec.fit_intercept
    spec = convert.spec_from_proto(
        types_pb2.TrainSpec(model="m", kind=types_pb2.MODEL_KIND_LOGISTIC, fit_intercept=False, learning_rate=0.5)
    )
    assert spec.kind == "logistic" and not spec.fit_intercept and spec.learning_rate == 0.5


def test_spec_without_kind_is_refused():
    with pytest.raises(InvalidInput) as info:
        convert.spec_from_proto(types_pb2.TrainSpec(model="m"))
    assert info.value.violations[0][0] == "spec.kind"


def test_train_chunk_labels_only_for_classifiers():
    chunk = types_pb2.TrainChunk(features=types_pb2.Matrix(num_columns=1, values=[1, 2]), labels=["a", "b"])
    X, y = convert.train_chunk(chunk, classifier=True)
    assert y.tolist() == ["a", "b"] and X.shape == (2, 1)
    with pytest.raises(InvalidInput) as info:
        convert.train_chunk(chunk, classifier=False)
    assert info.value.reason == "LABELS_FOR_REGRESSOR"
