"""The transport-neutral tensors of the Open Inference Protocol: decoding, rows, answers, metadata."""

from __future__ import annotations

import numpy as np
import pytest

from regserve.server.errors import InvalidInput
from regserve.server.inference.tensors import (
    DATATYPES,
    Tensor,
    datatype_of,
    decode_raw,
    encode_bytes,
    model_metadata,
    output_tensors,
    parse_version,
    raw_bytes,
    rows_from_inputs,
)
from regserve.server.models.estimator import LinearModel
from regserve.server.models.prediction import predict
from regserve.server.registry.routes import served_model
from regserve.server.registry.state import VersionMetadata

FEATURES = ("a", "b", "c")


def _reason(call) -> str:
    with pytest.raises(InvalidInput) as caught:
        call()
    return caught.value.reason


def _served(classes=None):
    rng = np.random.default_rng(7)
    k = 1 if classes is None or len(classes) == 2 else len(classes)
    coef = rng.normal(size=(3,) if classes is None else (k, 3) if k > 1 else (3,))
    kind = "linear" if classes is None else "logistic"
    intercept = 0.5 if k == 1 else rng.normal(size=k)
    estimator = LinearModel(kind, coef, intercept, classes=classes)
    raw = {"model": "m", "version": "v2", "kind": kind, "feature_names": list(FEATURES), "classes": list(classes or ())}
    return served_model("m", "v2", estimator, VersionMetadata.from_json(raw))


def test_every_datatype_round_trips_through_raw_bytes():
    rng = np.random.default_rng(1)
    for name, dtype in DATATYPES.items():
        if name == "BYTES":
            data = np.array([b"x", b"", b"\xff" * 3, b"yz"], dtype=object).reshape(2, 2)
        else:
            data = rng.integers(0, 100, size=(2, 2)) > 50 if name == "BOOL" else rng.integers(0, 100, size=(2, 2))
            data = data.astype(dtype)
        raw = raw_bytes(Tensor("t", name, (2, 2), data))
        back = decode_raw(name, (2, 2), raw)
        assert back.shape == (2, 2)
        assert back.tolist() == data.tolist()
        assert datatype_of(data.dtype) == name


def test_raw_fp64_is_a_view_of_the_request_bytes():
    raw = np.arange(6, dtype="<f8").tobytes()
    view = decode_raw("FP64", (2, 3), raw)
    assert not view.flags.owndata
    assert not view.flags.writeable
    assert view.base is not None


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "reason"),
    [
        ("FP64", (2, 3), b"\0" * 47, "RAW_LENGTH_MISMATCH"),
        ("FP32", (1, 3), b"\0" * 16, "RAW_LENGTH_MISMATCH"),
        ("BYTES", (2,), encode_bytes([b"a"]), "RAW_LENGTH_MISMATCH"),
        ("BYTES", (1,), encode_bytes([b"a"]) + b"x", "RAW_LENGTH_MISMATCH"),
        ("FP128", (1,), b"", "UNKNOWN_DATATYPE"),
        ("FP64", (-1, 3), b"", "INVALID_SHAPE"),
    ],
)
def test_bad_raw_tensors_are_refused(datatype, shape, raw, reason):
    assert _reason(lambda: decode_raw(datatype, shape, raw)) == reason


def test_one_matrix_input_of_any_numeric_datatype():
    X = np.array([[1, 2, 3], [4, 5, 6]])
    for name in ("INT8", "UINT16", "INT64", "FP16", "FP32", "FP64"):
        data = X.astype(DATATYPES[name])
        rows = rows_from_inputs([Tensor("whatever", name, (2, 3), data.ravel())], FEATURES)
        assert rows.dtype == np.float64
        np.testing.assert_array_equal(rows, X)


def test_an_fp64_matrix_is_not_copied():
    data = np.arange(6, dtype=np.float64).reshape(2, 3)
    assert rows_from_inputs([Tensor("inputs", "FP64", (2, 3), data)], FEATURES) is data


def test_columnar_inputs_are_placed_by_feature_name():
    inputs = [
        Tensor("c", "FP64", (2,), np.array([3.0, 6.0])),
        Tensor("a", "INT32", (2, 1), np.array([1, 4], dtype="<i4")),
        Tensor("b", "FP32", (2,), np.array([2.0, 5.0], dtype="<f4")),
    ]
    np.testing.assert_array_equal(rows_from_inputs(inputs, FEATURES), [[1, 2, 3], [4, 5, 6]])


def test_a_model_without_feature_names_takes_its_width_from_features():
    data = np.zeros((4, 3))
    assert rows_from_inputs([Tensor("x", "FP64", (4, 3), data)], (), 3).shape == (4, 3)


@pytest.mark.parametrize(
    ("inputs", "reason"),
    [
        ([], "MISSING_INPUTS"),
        ([Tensor("inputs", "FP64", (2, 2), np.zeros(4))], "WRONG_SHAPE"),
        ([Tensor("inputs", "FP64", (6,), np.zeros(6))], "WRONG_SHAPE"),
        ([Tensor("inputs", "FP64", (2, 3), np.zeros(5))], "TENSOR_SIZE_MISMATCH"),
        ([Tensor("inputs", "BYTES", (1, 3), np.array([b"1", b"2", b"3"], dtype=object))], "UNSUPPORTED_DATATYPE"),
        ([Tensor("inputs", "BOOL", (1, 3), np.ones(3, dtype=bool))], "UNSUPPORTED_DATATYPE"),
        ([Tensor("inputs", "FP8", (1, 3), np.ones(3))], "UNKNOWN_DATATYPE"),
        ([Tensor("a", "FP64", (1,), np.ones(1)), Tensor("zz", "FP64", (1,), np.ones(1))], "UNKNOWN_INPUT"),
        ([Tensor("a", "FP64", (1,), np.ones(1)), Tensor("a", "FP64", (1,), np.ones(1))], "DUPLICATE_INPUT"),
        ([Tensor("a", "FP64", (1,), np.ones(1)), Tensor("b", "FP64", (1,), np.ones(1))], "MISSING_FEATURE"),
        ([Tensor("a", "FP64", (1,), np.ones(1)), Tensor("b", "FP64", (2,), np.ones(2))], "ROWS_MISMATCH"),
        ([Tensor("a", "FP64", (1, 2), np.ones(2)), Tensor("b", "FP64", (1,), np.ones(1))], "WRONG_SHAPE"),
    ],
)
def test_bad_inputs_are_refused_with_a_reason(inputs, reason):
    assert _reason(lambda: rows_from_inputs(inputs, FEATURES)) == reason


def test_nan_is_refused_by_the_shared_prediction_path():
    served = _served()
    X = rows_from_inputs([Tensor("inputs", "FP64", (2, 3), np.array([1.0, 2, 3, 4, np.nan, 6]))], FEATURES)
    with pytest.raises(InvalidInput) as caught:
        predict(served.estimator, X)
    assert caught.value.reason == "NON_FINITE_VALUE"
    assert caught.value.metadata == {"row": "1", "column": "1"}


def test_a_regressor_answers_fp64_predictions():
    served = _served()
    X = np.arange(6, dtype=np.float64).reshape(2, 3)
    (out,) = output_tensors(served, predict(served.estimator, X))
    assert (out.name, out.datatype, out.shape) == ("predictions", "FP64", (2,))
    np.testing.assert_array_equal(out.data, served.estimator.predict(X))


def test_a_classifier_answers_index_labels_and_probabilities():
    served = _served(classes=("x", "y", "z"))
    X = np.random.default_rng(3).normal(size=(5, 3))
    prediction = predict(served.estimator, X)
    index, labels, probabilities = output_tensors(served, prediction)
    assert (index.datatype, index.shape) == ("INT64", (5,))
    assert (labels.datatype, labels.shape) == ("BYTES", (5,))
    assert (probabilities.datatype, probabilities.shape) == ("FP64", (5, 3))
    assert [("x", "y", "z")[i] for i in index.data] == [label.decode() for label in labels.data]
    np.testing.assert_array_equal(probabilities.data, served.estimator.predict_proba(X))


def test_requested_outputs_are_answered_in_the_models_order_and_unknown_ones_refused():
    served = _served(classes=("x", "y"))
    prediction = predict(served.estimator, np.ones((1, 3)))
    names = [t.name for t in output_tensors(served, prediction, {"probabilities", "predictions"})]
    assert names == ["predictions", "probabilities"]
    assert _reason(lambda: output_tensors(served, prediction, {"scores"})) == "UNKNOWN_OUTPUT"


def test_versions_are_read_as_regserve_names_them():
    assert parse_version("3") == "v3"
    assert parse_version("v3") == "v3"
    assert parse_version("") == ""


def test_metadata_describes_shapes_with_minus_one_for_rows():
    served = _served(classes=("x", "y", "z"))
    meta = model_metadata(served, ["v1", "v2"])
    assert meta["name"] == "m" and meta["versions"] == ["v1", "v2"]
    assert meta["inputs"] == [{"name": "inputs", "datatype": "FP64", "shape": [-1, 3]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("predictions", "INT64", [-1]),
        ("labels", "BYTES", [-1]),
        ("probabilities", "FP64", [-1, 3]),
    ]
    assert meta["parameters"]["feature_names"] == list(FEATURES)
    assert meta["parameters"]["classes"] == ["x", "y", "z"]
