import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_LINEAR: _ClassVar[ModelKind]
    MODEL_KIND_RIDGE: _ClassVar[ModelKind]
    MODEL_KIND_LOGISTIC: _ClassVar[ModelKind]

class Solver(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOLVER_UNSPECIFIED: _ClassVar[Solver]
    SOLVER_CLOSED_FORM: _ClassVar[Solver]
    SOLVER_GRADIENT_DESCENT: _ClassVar[Solver]
    SOLVER_SGD: _ClassVar[Solver]
    SOLVER_NEWTON: _ClassVar[Solver]

class ServingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVING_STATE_UNSPECIFIED: _ClassVar[ServingState]
    SERVING_STATE_SERVING: _ClassVar[ServingState]
    SERVING_STATE_AVAILABLE: _ClassVar[ServingState]
    SERVING_STATE_IN_SPLIT: _ClassVar[ServingState]
    SERVING_STATE_FROZEN: _ClassVar[ServingState]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_LINEAR: ModelKind
MODEL_KIND_RIDGE: ModelKind
MODEL_KIND_LOGISTIC: ModelKind
SOLVER_UNSPECIFIED: Solver
SOLVER_CLOSED_FORM: Solver
SOLVER_GRADIENT_DESCENT: Solver
SOLVER_SGD: Solver
SOLVER_NEWTON: Solver
SERVING_STATE_UNSPECIFIED: ServingState
SERVING_STATE_SERVING: ServingState
SERVING_STATE_AVAILABLE: ServingState
SERVING_STATE_IN_SPLIT: ServingState
SERVING_STATE_FROZEN: ServingState

class Matrix(_message.Message):
    __slots__ = ("num_columns", "values", "raw")
    NUM_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    num_columns: int
    values: _containers.RepeatedScalarFieldContainer[float]
    raw: bytes
    def __init__(self, num_columns: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., raw: _Optional[bytes] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values", "raw")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    raw: bytes
    def __init__(self, values: _Optional[_Iterable[float]] = ..., raw: _Optional[bytes] = ...) -> None: ...

class NamedRow(_message.Message):
    __slots__ = ("features",)
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.ScalarMap[str, float]
    def __init__(self, features: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class TrainSpec(_message.Message):
    __slots__ = ("model", "kind", "solver", "feature_names", "alpha", "fit_intercept", "standardize", "learning_rate", "epochs", "batch_size", "tolerance", "max_iterations", "validation_fraction", "cv_folds", "seed", "class_labels", "promote", "promotion_gate", "c", "source")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOLVER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    FIT_INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CV_FOLDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABELS_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_GATE_FIELD_NUMBER: _ClassVar[int]
    C_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    kind: ModelKind
    solver: Solver
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    alpha: float
    fit_intercept: bool
    standardize: bool
    learning_rate: float
    epochs: int
    batch_size: int
    tolerance: float
    max_iterations: int
    validation_fraction: float
    cv_folds: int
    seed: int
    class_labels: _containers.RepeatedScalarFieldContainer[str]
    promote: bool
    promotion_gate: bool
    c: float
    source: str
    def __init__(self, model: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., solver: _Optional[_Union[Solver, str]] = ..., feature_names: _Optional[_Iterable[str]] = ..., alpha: _Optional[float] = ..., fit_intercept: _Optional[bool] = ..., standardize: _Optional[bool] = ..., learning_rate: _Optional[float] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., tolerance: _Optional[float] = ..., max_iterations: _Optional[int] = ..., validation_fraction: _Optional[float] = ..., cv_folds: _Optional[int] = ..., seed: _Optional[int] = ..., class_labels: _Optional[_Iterable[str]] = ..., promote: _Optional[bool] = ..., promotion_gate: _Optional[bool] = ..., c: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class TrainChunk(_message.Message):
    __slots__ = ("features", "targets", "labels")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    features: Matrix
    targets: Vector
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, features: _Optional[_Union[Matrix, _Mapping]] = ..., targets: _Optional[_Union[Vector, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class FeatureStatistics(_message.Message):
    __slots__ = ("name", "mean", "std", "min", "max")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    name: str
    mean: float
    std: float
    min: float
    max: float
    def __init__(self, name: _Optional[str] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class Standardization(_message.Message):
    __slots__ = ("enabled", "means", "scales")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MEANS_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    means: _containers.RepeatedScalarFieldContainer[float]
    scales: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, enabled: _Optional[bool] = ..., means: _Optional[_Iterable[float]] = ..., scales: _Optional[_Iterable[float]] = ...) -> None: ...

class ClassMetrics(_message.Message):
    __slots__ = ("label", "precision", "recall", "f1", "support")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    label: str
    precision: float
    recall: float
    f1: float
    support: int
    def __init__(self, label: _Optional[str] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ..., support: _Optional[int] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("metrics", "per_class", "confusion_matrix")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_MATRIX_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.ScalarMap[str, float]
    per_class: _containers.RepeatedCompositeFieldContainer[ClassMetrics]
    confusion_matrix: Matrix
    def __init__(self, metrics: _Optional[_Mapping[str, float]] = ..., per_class: _Optional[_Iterable[_Union[ClassMetrics, _Mapping]]] = ..., confusion_matrix: _Optional[_Union[Matrix, _Mapping]] = ...) -> None: ...

class CrossValidation(_message.Message):
    __slots__ = ("folds", "mean", "std")
    class MeanEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class StdEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    FOLDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    folds: int
    mean: _containers.ScalarMap[str, float]
    std: _containers.ScalarMap[str, float]
    def __init__(self, folds: _Optional[int] = ..., mean: _Optional[_Mapping[str, float]] = ..., std: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SolverReport(_message.Message):
    __slots__ = ("solver", "rank", "condition_number", "least_squares_fallback", "iterations", "converged", "final_loss")
    SOLVER_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    CONDITION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LEAST_SQUARES_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    solver: Solver
    rank: int
    condition_number: float
    least_squares_fallback: bool
    iterations: int
    converged: bool
    final_loss: float
    def __init__(self, solver: _Optional[_Union[Solver, str]] = ..., rank: _Optional[int] = ..., condition_number: _Optional[float] = ..., least_squares_fallback: _Optional[bool] = ..., iterations: _Optional[int] = ..., converged: _Optional[bool] = ..., final_loss: _Optional[float] = ...) -> None: ...

class FitWarning(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("model", "version", "kind", "feature_names", "classes", "coefficients", "intercepts", "standardization", "spec", "training", "validation", "cross_validation", "solver_report", "feature_statistics", "num_samples", "num_train", "num_validation", "data_fingerprint", "checksum", "create_time", "regserve_version", "serving_state", "training_seconds", "problem", "source", "warnings", "statistics")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    INTERCEPTS_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZATION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    CROSS_VALIDATION_FIELD_NUMBER: _ClassVar[int]
    SOLVER_REPORT_FIELD_NUMBER: _ClassVar[int]
    FEATURE_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NUM_TRAIN_FIELD_NUMBER: _ClassVar[int]
    NUM_VALIDATION_FIELD_NUMBER: _ClassVar[int]
    DATA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REGSERVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVING_STATE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    kind: ModelKind
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    classes: _containers.RepeatedScalarFieldContainer[str]
    coefficients: Matrix
    intercepts: _containers.RepeatedScalarFieldContainer[float]
    standardization: Standardization
    spec: TrainSpec
    training: Evaluation
    validation: Evaluation
    cross_validation: CrossValidation
    solver_report: SolverReport
    feature_statistics: _containers.RepeatedCompositeFieldContainer[FeatureStatistics]
    num_samples: int
    num_train: int
    num_validation: int
    data_fingerprint: str
    checksum: str
    create_time: _timestamp_pb2.Timestamp
    regserve_version: str
    serving_state: ServingState
    training_seconds: float
    problem: Problem
    source: str
    warnings: _containers.RepeatedCompositeFieldContainer[FitWarning]
    statistics: ModelStatistics
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., feature_names: _Optional[_Iterable[str]] = ..., classes: _Optional[_Iterable[str]] = ..., coefficients: _Optional[_Union[Matrix, _Mapping]] = ..., intercepts: _Optional[_Iterable[float]] = ..., standardization: _Optional[_Union[Standardization, _Mapping]] = ..., spec: _Optional[_Union[TrainSpec, _Mapping]] = ..., training: _Optional[_Union[Evaluation, _Mapping]] = ..., validation: _Optional[_Union[Evaluation, _Mapping]] = ..., cross_validation: _Optional[_Union[CrossValidation, _Mapping]] = ..., solver_report: _Optional[_Union[SolverReport, _Mapping]] = ..., feature_statistics: _Optional[_Iterable[_Union[FeatureStatistics, _Mapping]]] = ..., num_samples: _Optional[int] = ..., num_train: _Optional[int] = ..., num_validation: _Optional[int] = ..., data_fingerprint: _Optional[str] = ..., checksum: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., regserve_version: _Optional[str] = ..., serving_state: _Optional[_Union[ServingState, str]] = ..., training_seconds: _Optional[float] = ..., problem: _Optional[_Union[Problem, _Mapping]] = ..., source: _Optional[str] = ..., warnings: _Optional[_Iterable[_Union[FitWarning, _Mapping]]] = ..., statistics: _Optional[_Union[ModelStatistics, _Mapping]] = ...) -> None: ...

class CoefficientStatistics(_message.Message):
    __slots__ = ("name", "estimate", "std_error", "statistic", "p_value", "ci_low", "ci_high", "robust_std_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    STD_ERROR_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    ROBUST_STD_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    estimate: float
    std_error: float
    statistic: float
    p_value: float
    ci_low: float
    ci_high: float
    robust_std_error: float
    def __init__(self, name: _Optional[str] = ..., estimate: _Optional[float] = ..., std_error: _Optional[float] = ..., statistic: _Optional[float] = ..., p_value: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., robust_std_error: _Optional[float] = ...) -> None: ...

class ModelStatistics(_message.Message):
    __slots__ = ("note", "confidence_level", "covariance_type", "robust_covariance_type", "distribution", "coefficients", "num_observations", "df_model", "df_resid", "residual_variance", "r_squared", "adjusted_r_squared", "f_statistic", "f_p_value", "log_likelihood", "null_log_likelihood", "pseudo_r_squared", "llr", "llr_p_value", "aic", "bic", "condition_number")
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    COVARIANCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ROBUST_COVARIANCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    NUM_OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    DF_MODEL_FIELD_NUMBER: _ClassVar[int]
    DF_RESID_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_VARIANCE_FIELD_NUMBER: _ClassVar[int]
    R_SQUARED_FIELD_NUMBER: _ClassVar[int]
    ADJUSTED_R_SQUARED_FIELD_NUMBER: _ClassVar[int]
    F_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    F_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    LOG_LIKELIHOOD_FIELD_NUMBER: _ClassVar[int]
    NULL_LOG_LIKELIHOOD_FIELD_NUMBER: _ClassVar[int]
    PSEUDO_R_SQUARED_FIELD_NUMBER: _ClassVar[int]
    LLR_FIELD_NUMBER: _ClassVar[int]
    LLR_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    AIC_FIELD_NUMBER: _ClassVar[int]
    BIC_FIELD_NUMBER: _ClassVar[int]
    CONDITION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    note: str
    confidence_level: float
    covariance_type: str
    robust_covariance_type: str
    distribution: str
    coefficients: _containers.RepeatedCompositeFieldContainer[CoefficientStatistics]
    num_observations: int
    df_model: float
    df_resid: float
    residual_variance: float
    r_squared: float
    adjusted_r_squared: float
    f_statistic: float
    f_p_value: float
    log_likelihood: float
    null_log_likelihood: float
    pseudo_r_squared: float
    llr: float
    llr_p_value: float
    aic: float
    bic: float
    condition_number: float
    def __init__(self, note: _Optional[str] = ..., confidence_level: _Optional[float] = ..., covariance_type: _Optional[str] = ..., robust_covariance_type: _Optional[str] = ..., distribution: _Optional[str] = ..., coefficients: _Optional[_Iterable[_Union[CoefficientStatistics, _Mapping]]] = ..., num_observations: _Optional[int] = ..., df_model: _Optional[float] = ..., df_resid: _Optional[float] = ..., residual_variance: _Optional[float] = ..., r_squared: _Optional[float] = ..., adjusted_r_squared: _Optional[float] = ..., f_statistic: _Optional[float] = ..., f_p_value: _Optional[float] = ..., log_likelihood: _Optional[float] = ..., null_log_likelihood: _Optional[float] = ..., pseudo_r_squared: _Optional[float] = ..., llr: _Optional[float] = ..., llr_p_value: _Optional[float] = ..., aic: _Optional[float] = ..., bic: _Optional[float] = ..., condition_number: _Optional[float] = ...) -> None: ...
