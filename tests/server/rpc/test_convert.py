"""Unit tests of the pure protobuf <-> NumPy converters."""

from __future__ import annotations

import numpy as np
import pytest

from regserve.server.errors import InvalidInput
from regserve.server.observability.serving_stats import VersionSummary
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


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_row_and_column(bad):
    X = np.zeros((5, 3))
    X[3, 2] = bad
    with pytest.raises(InvalidInput) as info:
        convert.check_finite(X, "inputs")
    assert info.value.reason == "NON_FINITE_VALUE"
    assert info.value.metadata == {"row": "3", "column": "2"}


def test_check_finite_accepts_finite_values_whose_sum_overflows():
    convert.check_finite(np.full((2, 2), 1e308), "inputs")


# Sizes on both sides of each path of all_finite: Python floats (up to 16 values),
# isfinite().all() (up to 4096), and a sum with an element-wise look when it is not finite.
@pytest.mark.parametrize("size", [1, 16, 17, 4096, 4097, 20_000])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_finds_one_bad_value_at_every_size(size, bad):
    rng = np.random.default_rng(size)
    values = rng.normal(size=size) * 1e300  # large finite values: their sum may overflow
    assert convert.all_finite(values)
    values[rng.integers(size)] = bad
    assert not convert.all_finite(values)
    assert not convert.all_finite(values.reshape(1, -1))


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


def _state(**changes):
    state = {"generation": 7, "serving": "v2", "previous": ["v1"], "frozen": ["v3"], "split": {}, "history": []}
    return {**state, **changes}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (_state(), {"v1": "available", "v2": "serving", "v3": "frozen", "v4": "available"}),
        (_state(split={"v1": 90.0, "v4": 10.0}), {"v1": "in_split", "v2": "serving", "v3": "frozen", "v4": "in_split"}),
        (_state(serving=None), {"v1": "available", "v2": "available", "v3": "frozen", "v4": "available"}),
    ],
)
def test_version_serving_state_follows_split_then_serving_then_frozen(state, expected):
    assert {v: convert.version_serving_state(state, v) for v in expected} == expected


def test_model_state_to_proto_copies_every_field():
    message = convert.model_state_to_proto("house", _state(split={"v1": 90.0, "v2": 10.0}), ["v1", "v2", "v3"])
    assert (message.model, message.serving_version, message.generation) == ("house", "v2", 7)
    assert list(message.previous_versions) == ["v1"] and list(message.frozen_versions) == ["v3"]
    assert dict(message.traffic_split) == {"v1": 90.0, "v2": 10.0}
    assert list(message.versions) == ["v1", "v2", "v3"]
    empty = convert.model_state_to_proto("new", _state(serving=None, previous=[], frozen=[]), [])
    assert empty.serving_version == "" and not empty.traffic_split


def test_switch_to_proto_reads_time_versions_and_reason():
    entry = {"at": "2026-01-02T03:04:05.678Z", "action": "promote", "from": None, "to": "v1", "reason": "first"}
    message = convert.switch_to_proto(entry)
    assert message.time.ToJsonString() == "2026-01-02T03:04:05.678Z"
    assert (message.action, message.from_version, message.to_version, message.reason) == ("promote", "", "v1", "first")


def test_split_switch_lists_its_arms_and_a_cleared_split_none():
    entry = {"at": "2026-01-02T03:04:05Z", "action": "split", "from": "v2", "to": None, "reason": "ab"}
    assert convert.switch_to_proto({**entry, "split": {"v1": 90.0, "v2": 10.0}}).to_version == "v1=90,v2=10"
    assert convert.switch_to_proto({**entry, "split": {}}).to_version == ""


def test_a_delete_switch_names_the_deleted_version_as_its_target():
    entry = {"at": "2026-01-02T03:04:05Z", "action": "delete", "from": None, "to": "v3", "reason": "unused"}
    message = convert.switch_to_proto(entry)
    assert (message.from_version, message.to_version) == ("", "v3")


def test_model_status_to_proto_pairs_versions_with_their_statistics():
    history = [{"at": "2026-01-02T03:04:05Z", "action": "promote", "from": "v1", "to": "v2", "reason": "better"}]
    summaries = {
        "v1": VersionSummary(0, 0, 0, 0.0, 0.0, 0.0),
        "v2": VersionSummary(
            requests=5, errors=1, rows=40, latency_mean_ms=1.5, latency_p50_ms=1.0, latency_p99_ms=4.0
        ),
    }
    message = convert.model_status_to_proto("house", _state(history=history), ["v1", "v2"], summaries)
    assert message.state.serving_version == "v2"
    v1, v2 = message.versions
    assert (v1.version, v1.serving_state, v1.requests) == ("v1", types_pb2.SERVING_STATE_AVAILABLE, 0)
    assert (v2.version, v2.serving_state) == ("v2", types_pb2.SERVING_STATE_SERVING)
    assert (v2.requests, v2.errors, v2.rows) == (5, 1, 40)
    assert (v2.latency_mean_ms, v2.latency_p50_ms, v2.latency_p99_ms) == (1.5, 1.0, 4.0)
    assert [(s.from_version, s.to_version, s.reason) for s in message.history] == [("v1", "v2", "better")]
