"""Tensors of the Open Inference Protocol as NumPy arrays, and the rows and answers of regserve's models.

Transport-neutral: the gRPC servicer and the REST routes decode their wire format into
``Tensor`` values, and encode the ``Tensor`` values ``output_tensors`` gives.  Every
request that cannot be read raises ``InvalidInput`` (INVALID_ARGUMENT) with a reason,
as regserve.v1 does.  Raw tensor bytes are little-endian and row-major, as the
protocol says; ``decode_raw`` views them without copying.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from regserve.server.errors import InvalidInput
from regserve.server.models.prediction import Prediction
from regserve.server.registry.routes import ServedModel
from regserve.server.registry.text_limits import shown

__all__ = [
    "DATATYPES",
    "INPUT_NAME",
    "NUMERIC_DATATYPES",
    "OUTPUT_NAMES",
    "PLATFORM",
    "Tensor",
    "classified",
    "datatype_of",
    "decode_bytes",
    "decode_raw",
    "encode_bytes",
    "model_metadata",
    "out_of_range",
    "output_names",
    "output_tensors",
    "parse_version",
    "raw_bytes",
    "rows_from_inputs",
    "version_parameter_refused",
]

DATATYPES: Mapping[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
"""The protocol's datatype -> the NumPy dtype of its elements (little-endian, as raw tensors are sent)."""

NUMERIC_DATATYPES = frozenset(name for name in DATATYPES if name not in ("BOOL", "BYTES"))
"""The datatypes a model's features may be sent in (INT64 and UINT64 beyond 2**53 round to float64)."""

INPUT_NAME = "inputs"
"""The name ModelMetadata gives the one input of shape [rows, features]; any name that is not a feature works too."""
OUTPUT_NAMES: Mapping[bool, tuple[str, ...]] = {
    False: ("predictions",),
    True: ("predictions", "labels", "probabilities"),
}
"""The outputs of a regressor (False) and of a classifier (True), in the order they are answered."""
PLATFORM = "regserve_numpy"
"""The ``platform`` ModelMetadata reports: regserve's own NumPy linear models."""

_FP64 = DATATYPES["FP64"]
_KINDS_BY_DTYPE = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """One named tensor of a request or an answer.

    ``data`` holds the elements in ``shape`` (or flat, as many as ``shape`` says); for
    BYTES its items are ``bytes``.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


def datatype_of(dtype: np.dtype) -> str:
    """The protocol's datatype name for a NumPy dtype (object arrays are BYTES)."""
    if dtype.kind in "OSU":
        return "BYTES"
    return _KINDS_BY_DTYPE[dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype]


_MAX_EXTENT = np.iinfo(np.intp).max // 16
"""The largest product of a shape's non-zero dimensions: past it NumPy cannot lay out even an empty array of it."""


def _element_count(shape: Sequence[int], field: str) -> int:
    """The number of elements of ``shape``; a negative dimension, or dimensions no array can have, are refused."""
    if shape and min(shape) < 0:
        raise InvalidInput(
            f"{field} has a negative dimension in shape {list(shape)}",
            reason="INVALID_SHAPE",
            violations=[(f"{field}.shape", "every dimension must be 0 or more")],
            metadata={"shape": list(shape)},
        )
    count = math.prod(shape)
    # [2**32, 2**32, 0] holds no element, yet NumPy refuses to shape any array so; a shape with elements meets
    # the byte or element count of its data first, so only an empty one pays for the second product.
    if count == 0 and math.prod(dimension for dimension in shape if dimension) > _MAX_EXTENT:
        raise InvalidInput(
            f"{field} has shape {list(shape)}, whose dimensions no tensor can have",
            reason="INVALID_SHAPE",
            violations=[(f"{field}.shape", f"the product of the non-zero dimensions must be at most {_MAX_EXTENT}")],
            metadata={"shape": list(shape)},
        )
    return count


def out_of_range(value: object, datatype: str, field: str) -> NoReturn:
    """Refuse a value that ``datatype`` cannot hold (INVALID_TENSOR_DATA); None: one too large to show."""
    text = "a number" if value is None else str(value)
    shown_value = text if len(text) <= 32 else f"{text[:32]}... ({len(text)} digits)"
    raise InvalidInput(
        f"{field} holds {shown_value}, out of the range of {datatype}",
        reason="INVALID_TENSOR_DATA",
        violations=[(field, f"send values that {datatype} holds")],
        metadata={"datatype": datatype},
    )


def _check_datatype(datatype: str, field: str) -> np.dtype:
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"{field} has datatype {shown(datatype)}, which the protocol does not define",
            reason="UNKNOWN_DATATYPE",
            violations=[(f"{field}.datatype", f"one of {', '.join(DATATYPES)}")],
            metadata={"datatype": datatype[:64]},
        )
    return dtype


def decode_raw(datatype: str, shape: Sequence[int], raw: bytes, field: str = "raw_input_contents") -> np.ndarray:
    """The elements of a raw tensor as an array of ``shape``: a read-only view of ``raw`` for fixed-size types.

    BYTES tensors are read from their 4-byte little-endian length prefixes into an
    object array of ``bytes``.  A byte length that does not match the shape is refused
    (RAW_LENGTH_MISMATCH).
    """
    dtype = _check_datatype(datatype, field)
    count = _element_count(shape, field)
    if datatype == "BYTES":
        return decode_bytes(raw, count, field).reshape(tuple(shape))
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"{field} holds {len(raw)} bytes; shape {list(shape)} of {datatype} takes {count * dtype.itemsize}",
            reason="RAW_LENGTH_MISMATCH",
            violations=[(field, f"send {count * dtype.itemsize} bytes for shape {list(shape)} of {datatype}")],
            metadata={"bytes": len(raw), "expected": count * dtype.itemsize},
        )
    # One constructor call for the view, as regserve.v1 reads its raw matrices.
    return np.ndarray(tuple(shape), dtype, raw)


def decode_bytes(raw: bytes, count: int, field: str) -> np.ndarray:
    """``count`` length-prefixed byte strings from ``raw``, as a flat object array.

    Each element takes at least its 4-byte length, so a ``count`` that ``raw`` cannot hold is
    refused before the array is made: a shape alone must not claim the server's memory.
    """
    if count * _LENGTH.size > len(raw):
        raise _not_bytes_elements(raw, count, field)
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            break
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            break
        out[i] = raw[offset : offset + length]
        offset += length
    else:
        if offset == len(raw):
            return out
    raise _not_bytes_elements(raw, count, field)


def _not_bytes_elements(raw: bytes, count: int, field: str) -> InvalidInput:
    return InvalidInput(
        f"{field} does not hold {count} length-prefixed BYTES elements",
        reason="RAW_LENGTH_MISMATCH",
        violations=[(field, f"send {count} elements, each a 4-byte little-endian length and its bytes")],
        metadata={"bytes": len(raw), "elements": count},
    )


def encode_bytes(items: Sequence[bytes]) -> bytes:
    """BYTES elements in the protocol's raw form: each one's 4-byte little-endian length, then its bytes."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def raw_bytes(tensor: Tensor) -> bytes:
    """The raw (little-endian, row-major) form of ``tensor``'s elements."""
    if tensor.datatype == "BYTES":
        return encode_bytes(tensor.data.ravel().tolist())
    dtype = DATATYPES[tensor.datatype]
    data = tensor.data
    if data.dtype != dtype:
        data = data.astype(dtype)
    return data.tobytes()  # C order whatever the strides


def _numeric(tensor: Tensor, field: str) -> None:
    if tensor.datatype not in NUMERIC_DATATYPES:
        _check_datatype(tensor.datatype, field)
        raise InvalidInput(
            f"{field} has datatype {tensor.datatype}; features are numbers",
            reason="UNSUPPORTED_DATATYPE",
            violations=[(f"{field}.datatype", "send an INT, UINT or FP datatype")],
            metadata={"input": tensor.name, "datatype": tensor.datatype},
        )


def _sized(tensor: Tensor, field: str) -> np.ndarray:
    """The tensor's data in its shape; a data size that does not match the shape is refused."""
    data = tensor.data
    if data.shape == tensor.shape:  # raw tensors come viewed in their shape already
        return data
    count = _element_count(tensor.shape, field)
    if data.size != count:
        raise InvalidInput(
            f"{field} holds {data.size} elements; shape {list(tensor.shape)} takes {count}",
            reason="TENSOR_SIZE_MISMATCH",
            violations=[(f"{field}.contents", f"send {count} elements for shape {list(tensor.shape)}")],
            metadata={"input": tensor.name, "elements": data.size, "expected": count},
        )
    return data.reshape(tensor.shape)


def _as_float64(data: np.ndarray) -> np.ndarray:
    """``data`` as float64; FP64 arrays pass as they are, without a copy."""
    return data if data.dtype == _FP64 else data.astype(np.float64)


def rows_from_inputs(inputs: Sequence[Tensor], feature_names: Sequence[str], features: int | None = None) -> np.ndarray:
    """The rows of a request as a float64 array of shape (rows, features).

    ``features`` is the model's width, by default ``len(feature_names)``; a model whose
    features have no names takes its rows as the matrix only.

    The rows come as one input of shape ``[rows, features]`` (any numeric datatype),
    or as one input per feature, named as the model's features, each of shape
    ``[rows]`` or ``[rows, 1]`` (columnar).  One input whose name is not a feature, or
    whose shape is ``[rows, features]``, is the matrix.  A matrix of FP64 is the
    request's own array (no copy).  NaN and infinite values are refused by ``predict``,
    which every answer goes through and which names the row and column.
    """
    if not inputs:
        raise InvalidInput(
            "the request has no inputs",
            reason="MISSING_INPUTS",
            violations=[("inputs", "send one input of shape [rows, features], or one input per feature")],
        )
    if features is None:
        features = len(feature_names)
    if len(inputs) == 1:
        tensor = inputs[0]
        shape = tensor.shape
        if (len(shape) == 2 and shape[1] == features) or tensor.name not in feature_names:
            return _matrix(tensor, features)
    return _columns(inputs, feature_names)


def _matrix(tensor: Tensor, features: int) -> np.ndarray:
    field = f"inputs[{shown(tensor.name)}]"
    _numeric(tensor, field)
    if len(tensor.shape) != 2 or tensor.shape[1] != features:
        raise InvalidInput(
            f"{field} has shape {list(tensor.shape)}; the model takes [rows, {features}]",
            reason="WRONG_SHAPE",
            violations=[(f"{field}.shape", f"send [rows, {features}]")],
            metadata={"input": tensor.name, "shape": list(tensor.shape), "features": features},
        )
    return _as_float64(_sized(tensor, field))


def _columns(inputs: Sequence[Tensor], feature_names: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(feature_names)}
    columns: list[np.ndarray | None] = [None] * len(feature_names)
    rows = -1
    sent = Counter(tensor.name for tensor in inputs)
    for tensor in inputs:
        field = f"inputs[{shown(tensor.name)}]"
        column = index.get(tensor.name)
        if sent[tensor.name] > 1:
            raise InvalidInput(
                f"{field} is sent twice",
                reason="DUPLICATE_INPUT",
                violations=[(field, "send each input once")],
                metadata={"input": tensor.name[:64]},
            )
        if column is None:
            matrix = tensor.name == INPUT_NAME
            raise InvalidInput(
                (
                    f"{field} is the matrix input, which must be the request's only input"
                    if matrix
                    else f"{field} is not a feature of the model; send one input of shape [rows, features], "
                    f"or one input per feature named {', '.join(feature_names)}"
                ),
                reason="UNKNOWN_INPUT",
                violations=[(field, "send it alone" if matrix else "not a feature of the model")],
                metadata={"input": tensor.name[:64]},
            )
        _numeric(tensor, field)
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidInput(
                f"{field} has shape {list(shape)}; a feature's input takes [rows] or [rows, 1]",
                reason="WRONG_SHAPE",
                violations=[(f"{field}.shape", "send [rows] or [rows, 1]")],
                metadata={"input": tensor.name, "shape": list(shape)},
            )
        if rows >= 0 and shape[0] != rows:
            raise InvalidInput(
                f"{field} has {shape[0]} rows; the inputs before it have {rows}",
                reason="ROWS_MISMATCH",
                violations=[(f"{field}.shape", f"every feature's input must have {rows} rows")],
                metadata={"input": tensor.name, "rows": shape[0], "expected": rows},
            )
        rows = shape[0]
        columns[column] = _sized(tensor, field).reshape(rows)
    missing = [name for name, column in zip(feature_names, columns, strict=True) if column is None]
    if missing:
        raise InvalidInput(
            f"the request lacks the input of feature {missing[0]!r}",
            reason="MISSING_FEATURE",
            violations=[(f"inputs[{name!r}]", "required feature is missing") for name in missing[:16]],
            metadata={"feature": missing[0]},
        )
    out = np.empty((rows, len(feature_names)), dtype=np.float64)
    for i, values in enumerate(columns):
        out[:, i] = values
    return out


def output_names(model: ServedModel) -> tuple[str, ...]:
    """The outputs ``model`` answers, in order."""
    return OUTPUT_NAMES[bool(model.classes)]


def output_tensors(
    model: ServedModel,
    prediction: Prediction,
    requested: set[str] | None = None,
    classification: Mapping[str, int] | None = None,
) -> list[Tensor]:
    """The answer of ``model`` as tensors: all its outputs, or the ``requested`` ones in the model's order.

    Regressors answer ``predictions`` (FP64 [rows]); classifiers answer ``predictions``
    (INT64 class index [rows]), ``labels`` (BYTES [rows]) and ``probabilities``
    (FP64 [rows, classes]).  A requested name the model does not answer is refused
    (UNKNOWN_OUTPUT).  ``classification`` maps an output to the count of Triton's
    classification extension: a classifier's ``probabilities`` then come as the top
    classes of each row (``classified``); any other output is refused (UNSUPPORTED_PARAMETER).
    """
    names = output_names(model)
    if classification:
        _check_classification(model, classification)
    if requested is not None:
        unknown = sorted(requested.difference(names))
        if unknown:
            raise InvalidInput(
                f"the model has no output {shown(unknown[0])}; its outputs are {', '.join(names)}",
                reason="UNKNOWN_OUTPUT",
                violations=[(f"outputs[{shown(name)}]", "not an output of the model") for name in unknown[:16]],
                metadata={"output": unknown[0][:64]},
            )
        names = tuple(name for name in names if name in requested)
    rows = len(prediction.values)
    out = []
    for name in names:
        if name == "predictions" and prediction.labels is None:
            out.append(Tensor(name, "FP64", (rows,), prediction.values))
        elif name == "predictions":
            out.append(Tensor(name, "INT64", (rows,), prediction.values.astype(np.int64)))
        elif name == "labels":
            labels = np.array([label.encode() for label in prediction.labels or ()], dtype=object)
            out.append(Tensor(name, "BYTES", (rows,), labels))
        else:
            probabilities = prediction.probabilities
            assert probabilities is not None  # a classifier's prediction always has them
            count = classification.get(name) if classification else None
            if count is None:
                out.append(Tensor(name, "FP64", tuple(probabilities.shape), probabilities))
            else:
                out.append(classified(name, probabilities, model.classes, count))
    return out


def _check_classification(model: ServedModel, classification: Mapping[str, int]) -> None:
    for name, count in classification.items():
        field = f"outputs[{shown(name)}].parameters[classification]"
        if name != "probabilities" or not model.classes:
            where = "a classifier's output probabilities" if model.classes else "classifiers' output probabilities"
            raise InvalidInput(
                f"the parameter classification applies to {where} only, not to the output {shown(name)}",
                reason="UNSUPPORTED_PARAMETER",
                violations=[(field, "ask for it on the output probabilities of a classifier")],
                metadata={"output": name[:64]},
            )
        if count < 1:
            raise InvalidInput(
                f"the parameter classification of output {shown(name)} is {count}; it counts classes, from 1",
                reason="INVALID_PARAMETER",
                violations=[(field, "send a positive integer")],
            )


def classified(name: str, probabilities: np.ndarray, classes: Sequence[str], count: int) -> Tensor:
    """Triton's classification extension: each row's ``count`` likeliest classes (at most every class).

    A BYTES tensor of shape [rows, count], each element ``probability:index:label``, the
    likeliest first; ties keep the classes' order.
    """
    count = min(count, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :count]
    values = np.take_along_axis(probabilities, top, axis=1)
    items = [
        f"{value!r}:{index}:{classes[index]}".encode()
        for value, index in zip(values.ravel().tolist(), top.ravel().tolist(), strict=True)
    ]
    return Tensor(name, "BYTES", (probabilities.shape[0], count), np.array(items, dtype=object))


def parse_version(version: str) -> str:
    """A requested ``model_version`` as regserve names versions: ``3`` is ``v3``; ``v3`` and ``""`` stay.

    The empty version means the serving version, or a traffic split's arm.
    """
    if version.isdecimal() and version.isascii():
        return f"v{int(version)}"
    return version


def version_parameter_refused() -> InvalidInput:
    """The refusal of a repository call's ``version`` parameter that is neither a string nor an integer."""
    return InvalidInput(
        "parameter 'version' must be a string or an integer of at most 64 bits",
        reason="INVALID_PARAMETER",
        violations=[("parameters[version]", "send a string such as v3, or an integer")],
    )


def model_metadata(model: ServedModel, versions: Sequence[str]) -> dict[str, Any]:
    """ModelMetadata of ``model`` (the version that answers without a version, or the one named).

    ``versions`` lists the versions a request may name.  Shapes give -1 for rows.  The
    feature names, kind, class labels and described version go in ``parameters``.
    """
    features = model.estimator.n_features_in_
    classifier = bool(model.classes)
    outputs: list[dict[str, Any]] = [
        {"name": "predictions", "datatype": "INT64" if classifier else "FP64", "shape": [-1]},
    ]
    if classifier:
        outputs.append({"name": "labels", "datatype": "BYTES", "shape": [-1]})
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, len(model.classes)]})
    parameters: dict[str, Any] = {
        "version": model.version,
        "kind": model.metadata.kind,
        "feature_names": list(model.metadata.feature_names),
    }
    if classifier:
        parameters["classes"] = list(model.classes)
    return {
        "name": model.name,
        "versions": list(versions),
        "platform": PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP64", "shape": [-1, features]}],
        "outputs": outputs,
        "parameters": parameters,
    }
