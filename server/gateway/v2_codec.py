"""The Open Inference Protocol's REST bodies to and from its gRPC messages.

An infer body is a JSON object, or, with the binary tensor data extension, a JSON
header of ``Inference-Header-Content-Length`` bytes followed by the raw bytes of the
inputs whose ``parameters`` give a ``binary_data_size``, in input order.  Every input
becomes raw bytes in ``raw_input_contents`` (JSON data through one NumPy conversion,
binary data as it came), so the servicer reads every REST request the way it reads
raw gRPC tensors, with the same checks.  An answer is JSON; outputs asked for with
``binary_data`` (or all of them, with the request parameter ``binary_data_output``)
follow the JSON header as raw bytes, and ``Inference-Header-Content-Length`` says
where the header ends.  Bad bodies raise ``InvalidInput`` with a reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regserve.server.errors import InvalidInput
from regserve.server.inference.tensors import (
    DATATYPES,
    decode_raw,
    encode_bytes,
    out_of_range,
    version_parameter_refused,
)
from regserve.server.json_objects import json_error, unique_keys
from regserve.server.registry.text_limits import shown

__all__ = [
    "HEADER_LENGTH",
    "InferAnswer",
    "OutputChoice",
    "answer_body",
    "fill_infer_request",
    "fill_repository_request",
    "metadata_json",
    "parameters_json",
]

HEADER_LENGTH = "inference-header-content-length"
"""The binary extension's header: the length of the JSON part of a body, in bytes."""

_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
# The InferTensorContents field that holds each datatype's elements when an answer is typed.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP16": "fp32_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _bad(message: str, reason: str, where: str, fix: str) -> InvalidInput:
    return InvalidInput(message, reason=reason, violations=[(where, fix)])


def _object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise _bad(f"{where} must be a JSON object", "INVALID_JSON_MESSAGE", where, "send a JSON object")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(f"{where} must be a string", "INVALID_JSON_MESSAGE", where, "send a string")
    return value


def _load_json(data: bytes | memoryview) -> dict:
    try:
        value = json.loads(bytes(data), object_pairs_hook=unique_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"malformed JSON: {json_error(exc)}", "MALFORMED_JSON", "body", "send a JSON object") from None
    except RecursionError:
        raise _bad("malformed JSON: nested too deeply", "MALFORMED_JSON", "body", "send a JSON object") from None
    return _object(value, "the body")


def set_parameters(target, parameters: Mapping[str, object], where: str) -> None:
    """Copy JSON ``parameters`` (strings, numbers, booleans) into a map of ``InferParameter``."""
    for key, value in parameters.items():
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int) and -_INT64_MAX - 1 <= value <= _INT64_MAX:
            slot.int64_param = value
        elif isinstance(value, int) and 0 <= value <= _UINT64_MAX:
            slot.uint64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        elif isinstance(value, str):
            slot.string_param = value
        else:
            name = f"{where}[{shown(key)}]"
            raise _bad(
                f"{name} must be a string, a number or a boolean", "INVALID_PARAMETER", name, "send a scalar value"
            )


def parameters_json(parameters) -> dict[str, object]:
    """A map of ``InferParameter`` as a JSON object."""
    out: dict[str, object] = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        if kind is not None:
            out[key] = getattr(value, kind)
    return out


def _shape(value: object, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise _bad(f"{where} must be a list of integers", "INVALID_SHAPE", where, "send [rows, features] or [rows]")
    if any(d < 0 for d in value):
        raise _bad(f"{where} has a negative dimension", "INVALID_SHAPE", where, "every dimension must be 0 or more")
    if any(d > _INT64_MAX for d in value):
        raise _bad(f"{where} has a dimension past 2^63 - 1", "INVALID_SHAPE", where, "send dimensions int64 holds")
    return value


def _leaves(data: object) -> list:
    """The elements of ``data`` (a scalar, or lists nested to any depth), row-major."""
    out = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _flat_strings(data: object, where: str) -> list[bytes]:
    """The elements of BYTES ``data`` (strings, nested lists of them) as UTF-8 bytes, row-major."""
    items = _leaves(data)
    if not all(isinstance(item, str) for item in items):
        raise _bad(f"{where} of BYTES must hold strings", "INVALID_TENSOR_DATA", where, "send strings")
    return [item.encode() for item in items]


def _json_raw(datatype: str, shape: list[int], data: object, where: str, booleans: bool) -> bytes:
    """The raw bytes of a JSON input's ``data``, flat or nested, checked against its datatype and shape.

    ``booleans`` says the body holds a ``true`` or ``false`` somewhere, so numbers must be told from them.
    """
    count = math.prod(shape)
    if datatype == "BYTES":
        items = _flat_strings(data, where)
        size = len(items)
        raw = encode_bytes(items)
    else:
        dtype = DATATYPES.get(datatype)
        if dtype is None:
            raise _bad(
                f"{where} has datatype {shown(datatype)}, which the protocol does not define",
                "UNKNOWN_DATATYPE",
                where,
                f"one of {', '.join(DATATYPES)}",
            )
        values = _numbers(data, dtype, datatype, where, booleans)
        raw = values.tobytes()
        size = values.size
    if size != count:
        raise InvalidInput(
            f"{where} holds {size} elements; shape {shape} takes {count}",
            reason="TENSOR_SIZE_MISMATCH",
            violations=[(where, f"send {count} elements for shape {shape}")],
            metadata={"elements": size, "expected": count},
        )
    return raw


def _holds_booleans(data: object) -> bool:
    """True when nested lists ``data`` hold a ``true`` or ``false`` (which NumPy reads as 1 and 0)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            kinds = set(map(type, item))  # one pass in C over a list of numbers, tritonclient's flat data
            if bool in kinds:
                return True
            if list in kinds:
                stack.extend(value for value in item if isinstance(value, list))
    return False


def _numbers(data: object, dtype: np.dtype, datatype: str, where: str, booleans: bool) -> np.ndarray:
    """JSON ``data`` as a flat array of ``dtype``; values of another kind, or out of its range, are refused.

    One NumPy conversion reads the common body.  Integers past int64 (which NumPy reads as
    floats or objects) and bodies that hold booleans take a slower way, element by element.
    """
    try:
        values = np.asarray(data)
    except (ValueError, TypeError, RecursionError):
        raise _bad(
            f"{where} is not a list of {datatype} values in the tensor's shape: its lists differ in length",
            "INVALID_TENSOR_DATA",
            where,
            "send a flat list, or nested lists of equal length",
        ) from None
    if values.size == 0:
        return values.astype(dtype).ravel()
    if datatype == "BOOL":
        if values.dtype.kind != "b":
            raise _bad(f"{where} does not hold BOOL values", "INVALID_TENSOR_DATA", where, "send true and false")
        return values.ravel()
    integers = dtype.kind in "iu"
    if values.dtype.kind not in ("iu" if integers else "iuf") or (booleans and _holds_booleans(data)):
        values = _numbers_one_by_one(data, dtype, datatype, where)
    elif integers:
        info = np.iinfo(dtype)
        low, high = int(values.min()), int(values.max())
        if low < info.min or high > info.max:
            out_of_range(low if low < info.min else high, datatype, where)
    if dtype.itemsize < 8 and not integers:
        with np.errstate(over="ignore"):
            narrow = values.astype(dtype)
        overflowed = np.isinf(narrow) & np.isfinite(values)
        if overflowed.any():
            out_of_range(values[overflowed][0], datatype, where)
        return narrow.ravel()
    return values.astype(dtype, copy=False).ravel()


def _numbers_one_by_one(data: object, dtype: np.dtype, datatype: str, where: str) -> np.ndarray:
    """``_numbers``'s slow way: integers of any size, booleans told from numbers; a float64 or ``dtype`` array."""
    flat = _leaves(data)
    integers = dtype.kind in "iu"
    # Exact types: true and false are not numbers here, though Python counts them as integers.
    allowed = (int,) if integers else (int, float)
    if not all(type(v) in allowed for v in flat):
        kinds = "integers" if integers else "numbers"
        raise _bad(f"{where} does not hold {datatype} values", "INVALID_TENSOR_DATA", where, f"send a list of {kinds}")
    if integers:
        info = np.iinfo(dtype)
        for value in flat:
            if not info.min <= value <= info.max:
                out_of_range(value, datatype, where)
        return np.array(flat, dtype)
    try:
        return np.array([float(value) for value in flat], np.float64)
    except OverflowError:
        out_of_range(None, datatype, where)


@dataclass
class OutputChoice:
    """Which outputs an answer carries as binary data: the named ones, else all when ``default``."""

    default: bool = False
    named: dict[str, bool] = field(default_factory=dict)

    def binary(self, name: str) -> bool:
        return self.named.get(name, self.default)


def _binary_flag(parameters: dict, key: str, where: str) -> bool:
    value = parameters.pop(key, False)
    if not isinstance(value, bool):
        raise _bad(f"{where}.{key} must be a boolean", "INVALID_PARAMETER", f"{where}.{key}", "send true or false")
    return value


def fill_infer_request(request, body: bytes, header_length: int | None) -> OutputChoice:
    """Fill ``request`` (a ModelInferRequest with its model set) from an infer body; which outputs go binary.

    ``header_length`` is the binary extension's JSON length, None when the whole body is JSON.
    """
    if header_length is None:
        header, binary = memoryview(body), memoryview(b"")
    elif 0 <= header_length <= len(body):
        header, binary = memoryview(body)[:header_length], memoryview(body)[header_length:]
    else:
        raise _bad(
            f"Inference-Header-Content-Length is {header_length}; the body has {len(body)} bytes",
            "INVALID_HEADER_LENGTH",
            "Inference-Header-Content-Length",
            "give the length of the JSON part of the body",
        )
    text = bytes(header)
    document = _load_json(text)
    # Python reads true and false as integers; only a body that has either needs them told from numbers.
    booleans = b"true" in text or b"false" in text or b"\x00" in text[:4]  # UTF-16 and -32 hide the words
    if "id" in document:
        request.id = _string(document["id"], "id")
    parameters = dict(_object(document.get("parameters", {}), "parameters"))
    choice = OutputChoice(_binary_flag(parameters, "binary_data_output", "parameters"))
    set_parameters(request.parameters, parameters, "parameters")
    inputs = document.get("inputs")
    if not isinstance(inputs, list):
        raise _bad("inputs must be a list of tensors", "MISSING_INPUTS", "inputs", "send a list of input tensors")
    offset = 0
    for i, value in enumerate(inputs):
        where = f"inputs[{i}]"
        tensor = _object(value, where)
        name = _string(tensor.get("name"), f"{where}.name")
        where = f"inputs[{shown(name)}]"
        datatype = _string(tensor.get("datatype"), f"{where}.datatype")
        shape = _shape(tensor.get("shape"), f"{where}.shape")
        own = dict(_object(tensor.get("parameters", {}), f"{where}.parameters"))
        size = own.pop("binary_data_size", None)
        if size is not None:
            if "data" in tensor:
                raise _bad(
                    f"{where} has both data and a binary_data_size; send its elements one way",
                    "AMBIGUOUS_CONTENTS",
                    f"{where}.data",
                    "send data or binary data, not both",
                )
            if not isinstance(size, int) or isinstance(size, bool):
                raise _bad(
                    f"{where}.parameters.binary_data_size must be an integer",
                    "INVALID_BINARY_DATA_SIZE",
                    f"{where}.parameters.binary_data_size",
                    "give the length of the input's bytes after the JSON header, as an integer",
                )
            if not 0 <= size <= len(binary) - offset:
                raise _bad(
                    f"{where}.parameters.binary_data_size is {size}; "
                    f"{len(binary) - offset} bytes of binary data are left",
                    "INVALID_BINARY_DATA_SIZE",
                    f"{where}.parameters.binary_data_size",
                    "give the length of the input's bytes after the JSON header",
                )
            raw = bytes(binary[offset : offset + size])
            offset += size
        elif "data" in tensor:
            raw = _json_raw(datatype, shape, tensor["data"], f"{where}.data", booleans)
        else:
            raise _bad(f"{where} has no data", "MISSING_TENSOR_DATA", f"{where}.data", "send data or binary data")
        added = request.inputs.add(name=name, datatype=datatype, shape=shape)
        set_parameters(added.parameters, own, f"{where}.parameters")
        request.raw_input_contents.append(raw)
    if offset != len(binary):
        raise _bad(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims",
            "INVALID_BINARY_DATA_SIZE",
            "body",
            "give every binary input its binary_data_size",
        )
    for i, value in enumerate(_list(document.get("outputs", []), "outputs")):
        where = f"outputs[{i}]"
        output = _object(value, where)
        name = _string(output.get("name"), f"{where}.name")
        own = dict(_object(output.get("parameters", {}), f"{where}.parameters"))
        choice.named[name] = _binary_flag(own, "binary_data", f"{where}.parameters")
        added = request.outputs.add(name=name)
        set_parameters(added.parameters, own, f"{where}.parameters")
    return choice


def fill_repository_request(request, body: bytes) -> None:
    """Fill a repository extension request from its optional JSON body.

    RepositoryIndex reads ``{"ready": bool}``; RepositoryModelLoad and RepositoryModelUnload
    read ``{"parameters": {name: string, number or boolean}}``, as Triton's REST API takes them.
    """
    if not body.strip():
        return
    document = _load_json(body)
    if "ready" in document:
        ready = document["ready"]
        if not isinstance(ready, bool) or not hasattr(request, "ready"):
            raise _bad(
                "ready must be a boolean of RepositoryIndex", "INVALID_JSON_MESSAGE", "ready", "send true or false"
            )
        request.ready = ready
    if "parameters" in document:
        if not hasattr(request, "parameters"):
            raise _bad("RepositoryIndex takes no parameters", "INVALID_JSON_MESSAGE", "parameters", "send none")
        for key, value in _object(document["parameters"], "parameters").items():
            slot = request.parameters[key]
            if isinstance(value, bool):
                slot.bool_param = value
            elif isinstance(value, int) and -_INT64_MAX - 1 <= value <= _INT64_MAX:
                slot.int64_param = value
            elif isinstance(value, str):
                slot.string_param = value
            elif key == "version":
                raise version_parameter_refused()
            else:
                name = f"parameters[{shown(key)}]"
                raise _bad(f"{name} must be a string, an integer or a boolean", "INVALID_PARAMETER", name, "send one")


def _list(value: object, where: str) -> list:
    if not isinstance(value, list):
        raise _bad(f"{where} must be a list", "INVALID_JSON_MESSAGE", where, "send a list")
    return value


def _output_raw(output, response, index: int) -> bytes:
    """The raw bytes of one output of a ModelInferResponse, whether it came raw or typed."""
    if len(response.raw_output_contents) > index:
        return response.raw_output_contents[index]
    values = getattr(output.contents, _CONTENTS_FIELD.get(output.datatype, "bytes_contents"))
    if output.datatype == "BYTES":
        return encode_bytes(list(values))
    return np.asarray(values).astype(DATATYPES[output.datatype]).tobytes()


def _json_data(datatype: str, shape: list[int], raw: bytes, where: str) -> list:
    values = decode_raw(datatype, shape, raw, where).ravel()
    if datatype == "BYTES":
        return [item.decode("utf-8", "replace") for item in values.tolist()]
    return values.tolist()


@dataclass(frozen=True)
class InferAnswer:
    """An infer answer's body, and the length of its JSON part when binary data follows it (else None)."""

    body: bytes
    header_length: int | None


def answer_body(response, choice: OutputChoice) -> InferAnswer:
    """The REST answer to a ModelInferResponse: JSON, then the binary outputs ``choice`` asks for."""
    outputs: list[dict[str, Any]] = []
    binaries: list[bytes] = []
    for index, output in enumerate(response.outputs):
        shape = list(output.shape)
        raw = _output_raw(output, response, index)
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": shape}
        parameters = parameters_json(output.parameters)
        if choice.binary(output.name):
            parameters["binary_data_size"] = len(raw)
            binaries.append(raw)
        else:
            entry["data"] = _json_data(output.datatype, shape, raw, f"outputs[{shown(output.name)}]")
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    parameters = parameters_json(response.parameters)
    if parameters:
        document["parameters"] = parameters
    document["outputs"] = outputs
    header = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    if not binaries:
        return InferAnswer(header, None)
    return InferAnswer(b"".join((header, *binaries)), len(header))


def metadata_json(response) -> dict[str, Any]:
    """A ModelMetadataResponse as the protocol's ``$metadata_model_response``."""

    def tensors(items) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    document: dict[str, Any] = {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": tensors(response.inputs),
        "outputs": tensors(response.outputs),
    }
    if response.properties:
        document["properties"] = dict(response.properties)
    return document
