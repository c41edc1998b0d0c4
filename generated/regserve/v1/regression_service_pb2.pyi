from google.api import annotations_pb2 as _annotations_pb2
from regserve.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainRequest(_message.Message):
    __slots__ = ("spec", "chunk")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    spec: _types_pb2.TrainSpec
    chunk: _types_pb2.TrainChunk
    def __init__(self, spec: _Optional[_Union[_types_pb2.TrainSpec, _Mapping]] = ..., chunk: _Optional[_Union[_types_pb2.TrainChunk, _Mapping]] = ...) -> None: ...

class TrainResponse(_message.Message):
    __slots__ = ("model_version", "promoted", "promotion_reason")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_REASON_FIELD_NUMBER: _ClassVar[int]
    model_version: _types_pb2.ModelVersion
    promoted: bool
    promotion_reason: str
    def __init__(self, model_version: _Optional[_Union[_types_pb2.ModelVersion, _Mapping]] = ..., promoted: _Optional[bool] = ..., promotion_reason: _Optional[str] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "version", "inputs", "named_inputs", "routing_key", "interval_level")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    NAMED_INPUTS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    inputs: _types_pb2.Matrix
    named_inputs: _containers.RepeatedCompositeFieldContainer[_types_pb2.NamedRow]
    routing_key: str
    interval_level: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., inputs: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., named_inputs: _Optional[_Iterable[_Union[_types_pb2.NamedRow, _Mapping]]] = ..., routing_key: _Optional[str] = ..., interval_level: _Optional[float] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "version", "predictions", "labels", "probabilities", "classes", "mean_lower", "mean_upper", "prediction_lower", "prediction_upper")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOWER_FIELD_NUMBER: _ClassVar[int]
    MEAN_UPPER_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_LOWER_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_UPPER_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    predictions: _types_pb2.Vector
    labels: _containers.RepeatedScalarFieldContainer[str]
    probabilities: _types_pb2.Matrix
    classes: _containers.RepeatedScalarFieldContainer[str]
    mean_lower: _types_pb2.Vector
    mean_upper: _types_pb2.Vector
    prediction_lower: _types_pb2.Vector
    prediction_upper: _types_pb2.Vector
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., predictions: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., classes: _Optional[_Iterable[str]] = ..., mean_lower: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., mean_upper: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., prediction_lower: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., prediction_upper: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ...) -> None: ...

class BatchPredictRequest(_message.Message):
    __slots__ = ("model", "version", "inputs", "routing_key", "interval_level")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    inputs: _types_pb2.Matrix
    routing_key: str
    interval_level: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., inputs: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., routing_key: _Optional[str] = ..., interval_level: _Optional[float] = ...) -> None: ...

class BatchPredictResponse(_message.Message):
    __slots__ = ("model", "version", "chunk_index", "row_offset", "predictions", "labels", "probabilities", "classes", "mean_lower", "mean_upper", "prediction_lower", "prediction_upper")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    ROW_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOWER_FIELD_NUMBER: _ClassVar[int]
    MEAN_UPPER_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_LOWER_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_UPPER_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    chunk_index: int
    row_offset: int
    predictions: _types_pb2.Vector
    labels: _containers.RepeatedScalarFieldContainer[str]
    probabilities: _types_pb2.Matrix
    classes: _containers.RepeatedScalarFieldContainer[str]
    mean_lower: _types_pb2.Vector
    mean_upper: _types_pb2.Vector
    prediction_lower: _types_pb2.Vector
    prediction_upper: _types_pb2.Vector
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., chunk_index: _Optional[int] = ..., row_offset: _Optional[int] = ..., predictions: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., classes: _Optional[_Iterable[str]] = ..., mean_lower: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., mean_upper: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., prediction_lower: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ..., prediction_upper: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ("model", "version", "confidence_level")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    confidence_level: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., confidence_level: _Optional[float] = ...) -> None: ...

class ModelInfoResponse(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: _types_pb2.ModelVersion
    def __init__(self, model_version: _Optional[_Union[_types_pb2.ModelVersion, _Mapping]] = ...) -> None: ...
