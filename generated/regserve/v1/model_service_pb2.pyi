import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from regserve.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VersionView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERSION_VIEW_UNSPECIFIED: _ClassVar[VersionView]
    VERSION_VIEW_BASIC: _ClassVar[VersionView]
    VERSION_VIEW_VALIDATION_SAMPLE: _ClassVar[VersionView]
VERSION_VIEW_UNSPECIFIED: VersionView
VERSION_VIEW_BASIC: VersionView
VERSION_VIEW_VALIDATION_SAMPLE: VersionView

class Switch(_message.Message):
    __slots__ = ("time", "action", "from_version", "to_version", "reason")
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    action: str
    from_version: str
    to_version: str
    reason: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action: _Optional[str] = ..., from_version: _Optional[str] = ..., to_version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ModelState(_message.Message):
    __slots__ = ("model", "serving_version", "previous_versions", "frozen_versions", "traffic_split", "generation", "versions", "problem", "serving_problem")
    class TrafficSplitEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    FROZEN_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_SPLIT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    SERVING_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    model: str
    serving_version: str
    previous_versions: _containers.RepeatedScalarFieldContainer[str]
    frozen_versions: _containers.RepeatedScalarFieldContainer[str]
    traffic_split: _containers.ScalarMap[str, float]
    generation: int
    versions: _containers.RepeatedScalarFieldContainer[str]
    problem: _types_pb2.Problem
    serving_problem: _types_pb2.Problem
    def __init__(self, model: _Optional[str] = ..., serving_version: _Optional[str] = ..., previous_versions: _Optional[_Iterable[str]] = ..., frozen_versions: _Optional[_Iterable[str]] = ..., traffic_split: _Optional[_Mapping[str, float]] = ..., generation: _Optional[int] = ..., versions: _Optional[_Iterable[str]] = ..., problem: _Optional[_Union[_types_pb2.Problem, _Mapping]] = ..., serving_problem: _Optional[_Union[_types_pb2.Problem, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelState]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelState, _Mapping]]] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[_types_pb2.ModelVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[_types_pb2.ModelVersion, _Mapping]]] = ...) -> None: ...

class GetVersionRequest(_message.Message):
    __slots__ = ("model", "version", "view")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    view: VersionView
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., view: _Optional[_Union[VersionView, str]] = ...) -> None: ...

class ValidationSample(_message.Message):
    __slots__ = ("inputs", "targets")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    inputs: _types_pb2.Matrix
    targets: _types_pb2.Vector
    def __init__(self, inputs: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., targets: _Optional[_Union[_types_pb2.Vector, _Mapping]] = ...) -> None: ...

class GetVersionResponse(_message.Message):
    __slots__ = ("model_version", "validation_sample")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    model_version: _types_pb2.ModelVersion
    validation_sample: ValidationSample
    def __init__(self, model_version: _Optional[_Union[_types_pb2.ModelVersion, _Mapping]] = ..., validation_sample: _Optional[_Union[ValidationSample, _Mapping]] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("source", "data_fingerprint")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DATA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    source: str
    data_fingerprint: str
    def __init__(self, source: _Optional[str] = ..., data_fingerprint: _Optional[str] = ...) -> None: ...

class CreateVersionRequest(_message.Message):
    __slots__ = ("model", "kind", "feature_names", "classes", "coefficients", "intercepts", "standardization", "training", "validation", "solver_report", "feature_statistics", "lineage", "promote", "promotion_gate", "num_train", "num_validation", "spec", "warnings")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    INTERCEPTS_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZATION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    SOLVER_REPORT_FIELD_NUMBER: _ClassVar[int]
    FEATURE_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_GATE_FIELD_NUMBER: _ClassVar[int]
    NUM_TRAIN_FIELD_NUMBER: _ClassVar[int]
    NUM_VALIDATION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    model: str
    kind: _types_pb2.ModelKind
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    classes: _containers.RepeatedScalarFieldContainer[str]
    coefficients: _types_pb2.Matrix
    intercepts: _containers.RepeatedScalarFieldContainer[float]
    standardization: _types_pb2.Standardization
    training: _types_pb2.Evaluation
    validation: _types_pb2.Evaluation
    solver_report: _types_pb2.SolverReport
    feature_statistics: _containers.RepeatedCompositeFieldContainer[_types_pb2.FeatureStatistics]
    lineage: Lineage
    promote: bool
    promotion_gate: bool
    num_train: int
    num_validation: int
    spec: _types_pb2.TrainSpec
    warnings: _containers.RepeatedCompositeFieldContainer[_types_pb2.FitWarning]
    def __init__(self, model: _Optional[str] = ..., kind: _Optional[_Union[_types_pb2.ModelKind, str]] = ..., feature_names: _Optional[_Iterable[str]] = ..., classes: _Optional[_Iterable[str]] = ..., coefficients: _Optional[_Union[_types_pb2.Matrix, _Mapping]] = ..., intercepts: _Optional[_Iterable[float]] = ..., standardization: _Optional[_Union[_types_pb2.Standardization, _Mapping]] = ..., training: _Optional[_Union[_types_pb2.Evaluation, _Mapping]] = ..., validation: _Optional[_Union[_types_pb2.Evaluation, _Mapping]] = ..., solver_report: _Optional[_Union[_types_pb2.SolverReport, _Mapping]] = ..., feature_statistics: _Optional[_Iterable[_Union[_types_pb2.FeatureStatistics, _Mapping]]] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., promote: _Optional[bool] = ..., promotion_gate: _Optional[bool] = ..., num_train: _Optional[int] = ..., num_validation: _Optional[int] = ..., spec: _Optional[_Union[_types_pb2.TrainSpec, _Mapping]] = ..., warnings: _Optional[_Iterable[_Union[_types_pb2.FitWarning, _Mapping]]] = ...) -> None: ...

class CreateVersionResponse(_message.Message):
    __slots__ = ("model_version", "promoted", "promotion_reason")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_REASON_FIELD_NUMBER: _ClassVar[int]
    model_version: _types_pb2.ModelVersion
    promoted: bool
    promotion_reason: str
    def __init__(self, model_version: _Optional[_Union[_types_pb2.ModelVersion, _Mapping]] = ..., promoted: _Optional[bool] = ..., promotion_reason: _Optional[str] = ...) -> None: ...

class PromoteVersionRequest(_message.Message):
    __slots__ = ("model", "version", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PromoteVersionResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ModelState
    def __init__(self, state: _Optional[_Union[ModelState, _Mapping]] = ...) -> None: ...

class RollbackModelRequest(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackModelResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ModelState
    def __init__(self, state: _Optional[_Union[ModelState, _Mapping]] = ...) -> None: ...

class FreezeVersionRequest(_message.Message):
    __slots__ = ("model", "version", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FreezeVersionResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ModelState
    def __init__(self, state: _Optional[_Union[ModelState, _Mapping]] = ...) -> None: ...

class UnfreezeVersionRequest(_message.Message):
    __slots__ = ("model", "version", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UnfreezeVersionResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ModelState
    def __init__(self, state: _Optional[_Union[ModelState, _Mapping]] = ...) -> None: ...

class SetTrafficSplitRequest(_message.Message):
    __slots__ = ("model", "weights", "reason")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights: _containers.ScalarMap[str, float]
    reason: str
    def __init__(self, model: _Optional[str] = ..., weights: _Optional[_Mapping[str, float]] = ..., reason: _Optional[str] = ...) -> None: ...

class SetTrafficSplitResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ModelState
    def __init__(self, state: _Optional[_Union[ModelState, _Mapping]] = ...) -> None: ...

class DeleteVersionRequest(_message.Message):
    __slots__ = ("model", "version", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeleteVersionResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ModelState
    def __init__(self, state: _Optional[_Union[ModelState, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "serving_state", "requests", "errors", "rows", "latency_mean_ms", "latency_p50_ms", "latency_p99_ms", "problem", "drift")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVING_STATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    version: str
    serving_state: _types_pb2.ServingState
    requests: int
    errors: int
    rows: int
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    problem: _types_pb2.Problem
    drift: VersionDrift
    def __init__(self, version: _Optional[str] = ..., serving_state: _Optional[_Union[_types_pb2.ServingState, str]] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., rows: _Optional[int] = ..., latency_mean_ms: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., problem: _Optional[_Union[_types_pb2.Problem, _Mapping]] = ..., drift: _Optional[_Union[VersionDrift, _Mapping]] = ...) -> None: ...

class VersionDrift(_message.Message):
    __slots__ = ("window_rows", "threshold", "features", "flagged_features", "class_psi", "class_flagged")
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FEATURES_FIELD_NUMBER: _ClassVar[int]
    CLASS_PSI_FIELD_NUMBER: _ClassVar[int]
    CLASS_FLAGGED_FIELD_NUMBER: _ClassVar[int]
    window_rows: int
    threshold: float
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    flagged_features: int
    class_psi: float
    class_flagged: bool
    def __init__(self, window_rows: _Optional[int] = ..., threshold: _Optional[float] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., flagged_features: _Optional[int] = ..., class_psi: _Optional[float] = ..., class_flagged: _Optional[bool] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "psi", "mean_shift", "flagged")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    MEAN_SHIFT_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    feature: str
    psi: float
    mean_shift: float
    flagged: bool
    def __init__(self, feature: _Optional[str] = ..., psi: _Optional[float] = ..., mean_shift: _Optional[float] = ..., flagged: _Optional[bool] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("state", "versions", "history", "served_generation")
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    SERVED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    state: ModelState
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    history: _containers.RepeatedCompositeFieldContainer[Switch]
    served_generation: int
    def __init__(self, state: _Optional[_Union[ModelState, _Mapping]] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., history: _Optional[_Iterable[_Union[Switch, _Mapping]]] = ..., served_generation: _Optional[int] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("models", "replica")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    replica: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., replica: _Optional[str] = ...) -> None: ...
