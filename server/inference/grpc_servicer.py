"""``inference.GRPCInferenceService``: the Open Inference Protocol over gRPC, on regserve's models.

The servicer decodes the protocol's messages into ``Tensor`` values and answers through
``regserve.server.inference.serving.infer``: the routing, prediction and statistics of
regserve.v1 Predict.  Raw input contents are viewed without copying; the answer comes
back as raw output contents when the request came raw (or an output asks for
``binary_data``), as typed contents otherwise.  The common request, one FP64 or FP32
input of shape [rows, features] asking for every output, goes from its contents
straight to a matrix and from the prediction straight to the reply
(``serving.infer_matrix``).  Any other request, and one whose shape does not fit the
model, is read into ``Tensor`` values, which names what is wrong with it.

The model repository extension maps onto regserve's lifecycle:

* RepositoryIndex lists every stored version of every model: READY when a call can be
  answered by it (serving, in a traffic split, or callable by its version), else
  UNAVAILABLE with the reason (frozen, damaged, not loadable).
* RepositoryModelLoad re-reads the registry (versions trained by other replicas show
  at once) and, with a ``version`` parameter (or a ``config`` whose version policy names
  one version, as tritonclient sends it), promotes that version, unfreezing it first;
  without one it succeeds when the model has a version to serve.
* RepositoryModelUnload with a ``version`` parameter freezes that version, which the
  registry refuses for the serving version or a split arm; without one it is refused,
  since regserve never stops serving a model that has a serving version.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence

import grpc
import numpy as np

from regserve.inference import grpc_service_pb2 as pb
from regserve.inference import grpc_service_pb2_grpc as pb_grpc
from regserve.server import __version__
from regserve.server.errors import FailedPrecondition, InvalidInput, RegserveError
from regserve.server.inference import tensors
from regserve.server.inference.serving import ROUTING_KEY, SERVER_EXTENSIONS, SERVER_NAME, infer, infer_matrix
from regserve.server.inference.tensors import Tensor
from regserve.server.json_objects import unique_keys
from regserve.server.models.prediction import Prediction
from regserve.server.observability.drift import DriftMonitor
from regserve.server.observability.serving_stats import ServingStats
from regserve.server.registry.routes import ServedModel
from regserve.server.registry.store import ModelStore
from regserve.server.registry.text_limits import shown
from regserve.server.rpc.status import maps_errors

__all__ = ["InferenceServicer", "SERVICE_NAME"]

SERVICE_NAME = "inference.GRPCInferenceService"

_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed field of ``InferTensorContents`` for each datatype; FP16 has none and travels raw only."""
_FIELD_DTYPES = {
    "bool_contents": np.dtype(np.bool_),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}
"""The type of the values each typed field holds on the wire."""

_MATRIX_DATATYPES: dict[str, tuple[np.dtype, str]] = {
    "FP64": (np.dtype("<f8"), "fp64_contents"),
    "FP32": (np.dtype("<f4"), "fp32_contents"),
}
"""The datatypes ``_matrix`` reads: their dtype and typed field."""
_SMALL_TYPED = 64
"""Typed contents up to this many values are read through a list: below it that beats NumPy's array protocol."""
_LITTLE_ENDIAN = sys.byteorder == "little"
_INT64 = np.dtype(np.int64)

_READY, _UNAVAILABLE = "READY", "UNAVAILABLE"
_LOAD_REASON = "RepositoryModelLoad"
_UNLOAD_REASON = "RepositoryModelUnload"


def _typed(tensor: pb.ModelInferRequest.InferInputTensor, field: str) -> np.ndarray:
    """The typed contents of an input as a flat array of its datatype."""
    dtype = tensors.DATATYPES.get(tensor.datatype)
    name = _CONTENTS.get(tensor.datatype)
    if dtype is None or name is None:
        if dtype is None:
            raise InvalidInput(
                f"{field} has datatype {tensor.datatype[:64]!r}, which the protocol does not define",
                reason="UNKNOWN_DATATYPE",
                violations=[(f"{field}.datatype", f"one of {', '.join(tensors.DATATYPES)}")],
                metadata={"datatype": tensor.datatype[:64]},
            )
        raise InvalidInput(
            f"{field} is {tensor.datatype}, which has no typed contents; send it in raw_input_contents",
            reason="RAW_CONTENTS_REQUIRED",
            violations=[(f"{field}.contents", f"send {tensor.datatype} tensors as raw bytes")],
            metadata={"datatype": tensor.datatype},
        )
    values = getattr(tensor.contents, name)
    others = [descriptor.name for descriptor, _ in tensor.contents.ListFields() if descriptor.name != name]
    if others:
        raise InvalidInput(
            f"{field} is {tensor.datatype}, whose elements go in contents.{name}; "
            f"it sends some in contents.{others[0]}",
            reason="INVALID_TENSOR_DATA",
            violations=[(f"{field}.contents.{others[0]}", f"send {tensor.datatype} elements in {name} only")],
            metadata={"datatype": tensor.datatype, "field": others[0]},
        )
    if tensor.datatype == "BYTES":
        return np.array(list(values), dtype=object)
    wide = np.array(values, dtype=_FIELD_DTYPES[name])  # the field's own type: nothing wraps on the way in
    if wide.dtype == dtype or not wide.size:
        return wide.astype(dtype, copy=False)
    info = np.iinfo(dtype)  # INT8, INT16, UINT8 and UINT16 travel in 32-bit fields
    outside = (wide < info.min) | (wide > info.max)
    if outside.any():
        tensors.out_of_range(int(wide[outside][0]), tensor.datatype, f"{field}.contents.{name}")
    return wide.astype(dtype)


def _inputs(request: pb.ModelInferRequest) -> list[Tensor]:
    """The request's input tensors, their data viewed in the raw contents or read from the typed ones."""
    raw = request.raw_input_contents
    inputs = request.inputs
    if raw:
        if len(raw) != len(inputs):
            raise InvalidInput(
                f"the request has {len(inputs)} inputs and {len(raw)} raw_input_contents; send one per input",
                reason="RAW_CONTENTS_MISMATCH",
                violations=[("raw_input_contents", f"send {len(inputs)} entries, one per input, in order")],
                metadata={"inputs": len(inputs), "raw_input_contents": len(raw)},
            )
        out = []
        for i, tensor in enumerate(inputs):
            field = f"inputs[{i}]"
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"{field} sets contents while the request sends raw_input_contents",
                    reason="AMBIGUOUS_CONTENTS",
                    violations=[(f"{field}.contents", "send every input raw, or every input typed")],
                )
            shape = tuple(tensor.shape)
            out.append(
                Tensor(tensor.name, tensor.datatype, shape, tensors.decode_raw(tensor.datatype, shape, raw[i], field))
            )
        return out
    return [
        Tensor(tensor.name, tensor.datatype, tuple(tensor.shape), _typed(tensor, f"inputs[{i}]"))
        for i, tensor in enumerate(inputs)
    ]


def _matrix(tensor: pb.ModelInferRequest.InferInputTensor, raw: Sequence[bytes]) -> np.ndarray | None:
    """The rows of a request whose one input, ``tensor``, is FP64 or FP32 of shape [rows, features]; else None.

    ``raw`` is the request's raw_input_contents.  Raw contents are viewed without
    copying, typed ones copied once.  None for any other input, and for one whose
    contents do not fill its shape: ``_inputs`` reads those.
    """
    kind = _MATRIX_DATATYPES.get(tensor.datatype)
    shape = tensor.shape
    if kind is None or len(shape) != 2:
        return None
    rows = shape[0]  # indexed: unpacking iterates the repeated field, which costs twice as much on upb
    features = shape[1]
    if rows < 0 or features < 0:
        return None
    dtype, field = kind
    if raw:
        if len(raw) != 1 or tensor.HasField("contents"):
            return None
        data = raw[0]
        if len(data) != rows * features * dtype.itemsize:
            return None
        return np.ndarray((rows, features), dtype, data)
    values = getattr(tensor.contents, field)
    count = len(values)
    if count != rows * features or not count:  # no rows: the general way checks the other fields are empty too
        return None
    # Straight to float64: a float32 value widens exactly, as the general path's astype does.
    return np.array(values[:] if count <= _SMALL_TYPED else values, np.float64).reshape(rows, features)


def _le_bytes(values: np.ndarray) -> bytes:
    """The raw (little-endian, row-major) bytes of a computed float64 or int64 array."""
    return values.tobytes() if _LITTLE_ENDIAN else values.astype(values.dtype.newbyteorder("<")).tobytes()


def _template(served: ServedModel, prediction: Prediction, raw: bool) -> pb.ModelInferResponse:
    """The reply to one row of ``served`` without its values: names, datatypes and shapes of every output."""
    response = pb.ModelInferResponse(model_name=served.name, model_version=served.version)
    add = response.outputs.add
    probabilities = prediction.probabilities
    if probabilities is None:
        add(name="predictions", datatype="FP64", shape=(1,))
    else:
        add(name="predictions", datatype="INT64", shape=(1,))
        add(name="labels", datatype="BYTES", shape=(1,))
        add(name="probabilities", datatype="FP64", shape=probabilities.shape)
    if not raw:
        for output in response.outputs:
            output.contents.SetInParent()
    return response


_TEMPLATES: dict[tuple[str, str, int, bool], pb.ModelInferResponse] = {}
"""One-row replies by (model, version, classes, raw): copying one costs half of building it field by field on upb."""
_TEMPLATES_KEPT = 4096
"""Past this many, the cache starts afresh, so versions trained and deleted over months do not pile up."""


def _one_row(served: ServedModel, prediction: Prediction, raw: bool) -> pb.ModelInferResponse:
    """A copy of the one-row reply template of ``served``, made the first time it is asked for."""
    probabilities = prediction.probabilities
    key = (served.name, served.version, 0 if probabilities is None else probabilities.shape[1], raw)
    template = _TEMPLATES.get(key)
    if template is None:
        if len(_TEMPLATES) >= _TEMPLATES_KEPT:
            _TEMPLATES.clear()
        template = _TEMPLATES[key] = _template(served, prediction, raw)
    response = pb.ModelInferResponse()
    response.CopyFrom(template)
    return response


def _raw_answer(served: ServedModel, prediction: Prediction) -> pb.ModelInferResponse:
    """Every output of ``served`` for ``prediction``, as raw output contents."""
    values = prediction.values
    labels = prediction.labels
    if len(values) == 1:
        response = _one_row(served, prediction, True)
        if labels is None:
            response.raw_output_contents.append(_le_bytes(values))
            return response
    else:
        rows = (len(values),)
        response = pb.ModelInferResponse(model_name=served.name, model_version=served.version)
        add = response.outputs.add  # made in place: a message passed to the constructor would be copied
        if labels is None:
            add(name="predictions", datatype="FP64", shape=rows)
            response.raw_output_contents.append(_le_bytes(values))
            return response
        add(name="predictions", datatype="INT64", shape=rows)
        add(name="labels", datatype="BYTES", shape=rows)
        add(name="probabilities", datatype="FP64", shape=prediction.probabilities.shape)  # type: ignore[union-attr]
    probabilities = prediction.probabilities
    assert probabilities is not None  # a classifier's prediction always has them
    response.raw_output_contents.extend(
        [
            _le_bytes(values.astype(_INT64)),
            tensors.encode_bytes([label.encode() for label in labels]),
            _le_bytes(probabilities),
        ]
    )
    return response


def _typed_answer(served: ServedModel, prediction: Prediction) -> pb.ModelInferResponse:
    """Every output of ``served`` for ``prediction``, as typed contents."""
    values = prediction.values
    labels = prediction.labels
    if len(values) == 1:
        response = _one_row(served, prediction, False)
        outputs = response.outputs
        if labels is None:
            outputs[0].contents.fp64_contents.append(float(values[0]))
            return response
        probabilities = prediction.probabilities
        assert probabilities is not None
        outputs[0].contents.int64_contents.append(int(values[0]))
        outputs[1].contents.bytes_contents.append(labels[0].encode())
        outputs[2].contents.fp64_contents.extend(probabilities.ravel().tolist())
        return response
    rows = (len(values),)
    response = pb.ModelInferResponse(model_name=served.name, model_version=served.version)
    add = response.outputs.add
    if labels is None:
        add(name="predictions", datatype="FP64", shape=rows).contents.fp64_contents.extend(values.tolist())
        return response
    probabilities = prediction.probabilities
    assert probabilities is not None
    add(name="predictions", datatype="INT64", shape=rows).contents.int64_contents.extend(values.astype(_INT64).tolist())
    add(name="labels", datatype="BYTES", shape=rows).contents.bytes_contents.extend(
        [label.encode() for label in labels]
    )
    add(name="probabilities", datatype="FP64", shape=probabilities.shape).contents.fp64_contents.extend(
        probabilities.ravel().tolist()
    )
    return response


def _string_parameter(parameters, name: str) -> str:
    """A string (or integer) parameter's value; empty when it is absent."""
    if name not in parameters:
        return ""
    value = parameters[name]
    kind = value.WhichOneof("parameter_choice")
    if kind == "string_param":
        return value.string_param
    if kind in ("int64_param", "uint64_param"):
        return str(getattr(value, kind))
    raise InvalidInput(
        f"parameter {name!r} must be a string or an integer",
        reason="INVALID_PARAMETER",
        violations=[(f"parameters[{name}]", "send a string or an integer")],
    )


def _classification(outputs) -> dict[str, int]:
    """The ``classification`` count of each requested output that has one (Triton's classification extension)."""
    counts = {}
    for output in outputs:
        if "classification" not in output.parameters:
            continue
        value = output.parameters["classification"]
        kind = value.WhichOneof("parameter_choice")
        if kind not in ("int64_param", "uint64_param"):
            field = f"outputs[{shown(output.name)}].parameters[classification]"
            raise InvalidInput(
                f"{field} must be an integer, the count of classes to answer",
                reason="INVALID_PARAMETER",
                violations=[(field, "send a positive integer")],
            )
        counts[output.name] = getattr(value, kind)
    return counts


def _wants_raw(request: pb.ModelInferRequest) -> bool:
    if request.raw_input_contents:
        return True
    for output in request.outputs:
        if "binary_data" in output.parameters and output.parameters["binary_data"].bool_param:
            return True
    return False


def _repository_parameters(parameters, known: Sequence[str], call: str) -> str:
    """The ``version`` parameter of a repository call; parameters not in ``known`` are refused."""
    unknown = sorted(set(parameters).difference(known))
    if unknown:
        raise InvalidInput(
            f"{call} takes only the parameter{'s' if len(known) > 1 else ''} "
            f"{' and '.join(repr(name) for name in known)}; regserve trains models with Train",
            reason="UNSUPPORTED_PARAMETER",
            violations=[(f"parameters[{name[:64]}]", "not a parameter regserve reads") for name in unknown[:16]],
            metadata={"parameter": unknown[0][:64]},
        )
    if "version" not in parameters:
        return ""
    value = parameters["version"]
    kind = value.WhichOneof("parameter_choice")
    if kind == "string_param":
        return tensors.parse_version(value.string_param)
    if kind == "int64_param":
        return tensors.parse_version(str(value.int64_param))
    raise tensors.version_parameter_refused()


_POLICY_HELP = 'send {"version_policy": {"specific": {"versions": [N]}}}'


def _only(value: object, key: str) -> object:
    """``value[key]`` when ``value`` is an object holding ``key`` and nothing else, else None."""
    return value[key] if isinstance(value, dict) and value.keys() == {key} else None


def _policy_version(value) -> str:
    """The one version a load's ``config`` parameter names, as Triton's model configuration does.

    tritonclient's ``load_model(name, config=...)`` has no other way to name a version;
    regserve reads only ``version_policy.specific.versions``, holding exactly one version,
    since it serves one version of a model at a time (or a traffic split, set with regserve.v1).
    """
    field = "parameters[config]"
    try:
        text = value.string_param if value.WhichOneof("parameter_choice") == "string_param" else "null"
        document = json.loads(text, object_pairs_hook=unique_keys)
    except ValueError:  # DuplicateKey among them
        document = None
    versions = _only(_only(_only(document, "version_policy"), "specific"), "versions")
    if not isinstance(versions, list) or len(versions) != 1:
        raise InvalidInput(
            "RepositoryModelLoad reads from 'config' only a version_policy that names one version, "
            "the version to serve; regserve trains models with Train",
            reason="UNSUPPORTED_PARAMETER",
            violations=[(field, _POLICY_HELP)],
        )
    (version,) = versions
    if isinstance(version, bool) or not isinstance(version, int | str) or not str(version):
        raise InvalidInput(
            "the version in config's version_policy must be an integer or a string such as v3",
            reason="INVALID_PARAMETER",
            violations=[(field, _POLICY_HELP)],
        )
    return tensors.parse_version(str(version))


def _rename_fields(error: RegserveError, names: dict[str, str]) -> None:
    """Name the fields of ``error``'s violations as ``names`` maps them."""
    error.violations = tuple((names.get(field, field), text) for field, text in error.violations)


_INFER_FIELDS = {"model": "model_name", "version": "model_version"}


def _naming(model: str, version: str) -> Callable:
    """Method decorator: the registry's refusals name regserve.v1's fields (``model``, ``version``); a
    refusal of this call names the fields of this protocol's request (``model_name``, ...) instead."""
    names = {"model": model, "version": version}

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def call(self, request, context):
            try:
                return method(self, request, context)
            except RegserveError as error:
                _rename_fields(error, names)
                raise

        return call

    return decorate


def _required_model(name: str, field: str) -> str:
    if not name:
        raise InvalidInput(f"{field} is required", reason="MISSING_MODEL", violations=[(field, f"give the {field}")])
    return name


@maps_errors(SERVICE_NAME)
class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Answers the Open Inference Protocol from the models of ``store``.

    ``ready`` says whether the server is ready (its gRPC health is SERVING: a model can
    answer and the server is not draining); ModelInfer counts in ``stats`` as Predict does and refuses more than
    ``max_rows`` rows (TOO_MANY_ROWS); the rows it answers go to ``drift`` when given.  ``on_change``
    is called after a repository call changed the registry, so the server can update its health status.
    """

    def __init__(
        self,
        store: ModelStore,
        stats: ServingStats,
        ready: Callable[[], bool],
        *,
        max_rows: int = 1_000_000,
        on_change: Callable[[], None] = lambda: None,
        drift: DriftMonitor | None = None,
    ) -> None:
        self._store = store
        self._stats = stats
        self._drift = drift if drift is not None and drift.window_rows > 0 else None  # off: no hand-over per call
        self._ready = ready
        self._max_rows = max_rows
        self._on_change = on_change

    def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._ready())

    @_naming("name", "version")
    def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        model = _required_model(request.name, "name")
        try:
            self._store.route(model, tensors.parse_version(request.version))
        except InvalidInput:
            raise
        except RegserveError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=SERVER_EXTENSIONS)

    @_naming("name", "version")
    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        model = _required_model(request.name, "name")
        served = self._store.describe(model, tensors.parse_version(request.version))
        report = self._store.report(model)
        # The protocol's ``versions`` are those a request may name: neither frozen nor unloadable.
        versions = [v for v in report.version_names if v not in report.state.frozen and not report.version_problem(v)]
        meta = tensors.model_metadata(served, versions)
        properties = {
            name: value if isinstance(value, str) else json.dumps(value) for name, value in meta["parameters"].items()
        }
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in meta["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in meta["outputs"]],
            properties=properties,
        )

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        # The fields renamed in place, as ``_naming`` does, without its frame on the hottest path.
        try:
            model = request.model_name
            inputs = request.inputs
            if model and len(inputs) == 1 and not request.outputs:
                raw = request.raw_input_contents
                X = _matrix(inputs[0], raw)
                if X is not None:
                    parameters = request.parameters
                    response = infer_matrix(
                        self._store,
                        self._stats,
                        model,
                        request.model_version,
                        X,
                        _raw_answer if raw else _typed_answer,
                        routing_key=_string_parameter(parameters, ROUTING_KEY) if parameters else "",
                        max_rows=self._max_rows,
                        drift=self._drift,
                    )
                    if response is not None:
                        request_id = request.id
                        if request_id:
                            response.id = request_id
                        return response
            return self._infer_tensors(request)
        except RegserveError as error:
            _rename_fields(error, _INFER_FIELDS)
            raise

    def _infer_tensors(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """ModelInfer on any request, read into ``Tensor`` values."""
        requested = {output.name for output in request.outputs} if request.outputs else None
        result = infer(
            self._store,
            self._stats,
            _required_model(request.model_name, "model_name"),
            request.model_version,
            _inputs(request),
            requested,
            _classification(request.outputs),
            routing_key=_string_parameter(request.parameters, ROUTING_KEY),
            max_rows=self._max_rows,
            drift=self._drift,
        )
        raw = _wants_raw(request)
        served = result.model
        response = pb.ModelInferResponse(model_name=served.name, model_version=served.version, id=request.id)
        add = response.outputs.add  # made in place: a message passed to the constructor would be copied
        for tensor in result.outputs:
            out = add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            if not raw:
                getattr(out.contents, _CONTENTS[tensor.datatype]).extend(tensor.data.ravel().tolist())
        if raw:
            response.raw_output_contents.extend([tensors.raw_bytes(tensor) for tensor in result.outputs])
        return response

    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        entries = []
        for report in self._store.reports():
            routed = {report.state.serving, *report.state.split} - {None}
            for version in report.version_names or ("",):
                problem = report.version_problem(version) if version else report.problem
                if not version:
                    state, reason = _UNAVAILABLE, problem.message if problem else "the model has no usable version"
                elif problem is not None:
                    state, reason = _UNAVAILABLE, problem.message
                elif version in report.state.frozen:
                    state, reason = _UNAVAILABLE, "frozen"
                elif version == report.state.serving:
                    state, reason = _READY, "serving"
                elif version in routed:
                    state, reason = _READY, "in the traffic split"
                else:
                    state, reason = _READY, "answers calls that name its version"
                if request.ready and state != _READY:
                    continue
                entry = pb.RepositoryIndexResponse.ModelIndex(
                    name=report.model, version=version, state=state, reason=reason
                )
                entries.append(entry)
        return pb.RepositoryIndexResponse(models=entries)

    @_naming("model_name", "parameters[version]")
    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        model = _required_model(request.model_name, "model_name")
        parameters = request.parameters
        version = _repository_parameters(parameters, ("version", "config"), "RepositoryModelLoad")
        if "config" in parameters:
            if version:
                raise InvalidInput(
                    "RepositoryModelLoad takes the version in the parameter 'version' or in 'config', not both",
                    reason="INVALID_PARAMETER",
                    violations=[("parameters[config]", "send the version once")],
                )
            version = _policy_version(parameters["config"])
        if self._store.refresh():
            self._on_change()
        if version:
            if version in self._store.read_state(model).frozen:
                self._store.unfreeze(model, version, _LOAD_REASON)
            self._store.promote(model, version, _LOAD_REASON)
            self._on_change()
        else:
            self._store.route(model)  # raises UNKNOWN_MODEL or NO_SERVING_VERSION
        return pb.RepositoryModelLoadResponse()

    @_naming("model_name", "parameters[version]")
    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        model = _required_model(request.model_name, "model_name")
        version = _repository_parameters(request.parameters, ("version", "unload_dependents"), "RepositoryModelUnload")
        if not version:
            self._store.read_state(model)  # an unknown model is NOT_FOUND, as for every call
            raise FailedPrecondition(
                f"Model {model!r} stays served while it has a serving version; unload one version by "
                "passing the parameter 'version' (it is frozen), or delete versions with regserve.v1.ModelService.",
                reason="MODEL_STAYS_SERVED",
                violations=[("parameters[version]", "name the version to unload")],
                metadata={"model": model},
            )
        self._store.freeze(model, version, _UNLOAD_REASON)
        self._on_change()
        return pb.RepositoryModelUnloadResponse()
