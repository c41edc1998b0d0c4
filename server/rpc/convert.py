"""Pure converters between regserve.v1 protobuf messages and NumPy arrays or domain values.

Matrices, vectors, named rows, Train chunks and the training spec.  Every function here
is free of I/O and of gRPC: it takes messages or arrays and returns arrays or messages,
raising ``InvalidInput`` for malformed data with the offending field named, so the
servicers stay "convert, call, convert back".  Registry messages (versions, states,
switches, status) are built in ``registry_messages``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from regserve.server.errors import InvalidInput
from regserve.server.models.estimator import MODEL_KINDS
from regserve.server.models.training import TrainSpec
from regserve.server.registry.text_limits import CLASS_LABEL_MAX, FEATURE_NAME_MAX, check_lengths, too_long
from regserve.v1 import types_pb2

__all__ = [
    "KIND_NAMES",
    "KIND_VALUES",
    "SOLVER_NAMES",
    "SOLVER_VALUES",
    "add_class_fields",
    "labels_to_array",
    "matrix_to_ndarray",
    "named_rows_to_ndarray",
    "ndarray_to_matrix",
    "ndarray_to_vector",
    "read_matrix",
    "require_name",
    "spec_from_proto",
    "spec_to_proto",
    "train_chunk",
    "vector_to_ndarray",
]

_FLOAT64_LE = np.dtype("<f8")
_FLOAT64_NATIVE_LE = np.dtype(np.float64) if sys.byteorder == "little" else None
"""The float64 dtype object NumPy gives computed arrays, where it is little-endian: their bytes go out as they are."""

# The contract names each kind the domain knows MODEL_KIND_<KIND>; a kind without its enum value fails at import.
KIND_NAMES = {types_pb2.ModelKind.Value(f"MODEL_KIND_{kind.upper()}"): kind for kind in MODEL_KINDS}
# ``Value`` is typed as returning an int, the messages' kind fields as taking a ModelKind: at run time both are ints.
KIND_VALUES = cast("dict[str, types_pb2.ModelKind]", {name: value for value, name in KIND_NAMES.items()})

SOLVER_NAMES = {
    types_pb2.SOLVER_UNSPECIFIED: "auto",
    types_pb2.SOLVER_CLOSED_FORM: "closed_form",
    types_pb2.SOLVER_GRADIENT_DESCENT: "gd",
    types_pb2.SOLVER_SGD: "sgd",
    types_pb2.SOLVER_NEWTON: "newton",
}
SOLVER_VALUES = {name: value for value, name in SOLVER_NAMES.items()}


def matrix_to_ndarray(matrix: types_pb2.Matrix, field: str) -> np.ndarray:
    """Turn a Matrix into an array of shape (n_rows, num_columns), float64 (see ``read_matrix``)."""
    return read_matrix(matrix, field)[0]


def read_matrix(matrix: types_pb2.Matrix, field: str) -> tuple[np.ndarray, bool]:
    """A Matrix as an array of shape (n_rows, num_columns), float64, and whether it came as raw bytes.

    Raw bytes become a read-only view of the message's bytes (no per-element
    work); typed values are copied once.  A matrix with ``num_columns == 0``
    is read as a single row.  An empty matrix gives shape (0, num_columns).
    The flag tells how the answer goes back: as raw bytes too, or typed.
    """
    raw = matrix.raw
    if raw:
        if len(matrix.values):
            raise InvalidInput(
                f"{field} sets both values and raw; send one of them",
                reason="AMBIGUOUS_MATRIX",
                violations=[(field, "set either values or raw, not both")],
            )
        if len(raw) % 8:
            raise InvalidInput(
                f"{field}.raw holds {len(raw)} bytes, not a whole number of float64 values",
                reason="MALFORMED_MATRIX",
                violations=[(f"{field}.raw", "length must be a multiple of 8 bytes")],
            )
        size = len(raw) // 8
        cols = matrix.num_columns or size
        if size % cols == 0:
            # One constructor call for the view instead of frombuffer and reshape: fewer Python calls.
            return np.ndarray((size // cols, cols), _FLOAT64_LE, raw), True
        flat = np.frombuffer(raw, dtype=_FLOAT64_LE)  # for the error below
    else:
        flat = np.array(matrix.values, dtype=np.float64)
    cols = matrix.num_columns or flat.size
    if cols == 0:
        return flat.reshape(0, 0), not flat.size
    if flat.size % cols:
        raise InvalidInput(
            f"{field} holds {flat.size} values, not a whole number of rows of {cols} columns",
            reason="MALFORMED_MATRIX",
            violations=[(f"{field}.num_columns", f"{flat.size} values do not fill rows of {cols}")],
        )
    return flat.reshape(-1, cols), False


def vector_to_ndarray(vector: types_pb2.Vector, field: str) -> np.ndarray:
    """Turn a Vector into a float64 array of shape (n,)."""
    if vector.raw and len(vector.values):
        raise InvalidInput(
            f"{field} sets both values and raw; send one of them",
            reason="AMBIGUOUS_VECTOR",
            violations=[(field, "set either values or raw, not both")],
        )
    if vector.raw:
        if len(vector.raw) % 8:
            raise InvalidInput(
                f"{field}.raw holds {len(vector.raw)} bytes, not a whole number of float64 values",
                reason="MALFORMED_VECTOR",
                violations=[(f"{field}.raw", "length must be a multiple of 8 bytes")],
            )
        return np.frombuffer(vector.raw, dtype=_FLOAT64_LE)
    return np.array(vector.values, dtype=np.float64)


def ndarray_to_vector(values: np.ndarray, raw: bool) -> types_pb2.Vector:
    """Wrap a 1-D float64 array as a Vector, as raw bytes or typed values."""
    if raw:
        if values.dtype is not _FLOAT64_NATIVE_LE:
            values = values.astype(_FLOAT64_LE)
        return types_pb2.Vector(raw=values.tobytes())  # C order whatever the strides
    return types_pb2.Vector(values=values.tolist())


def ndarray_to_matrix(values: np.ndarray, raw: bool) -> types_pb2.Matrix:
    """Wrap a 2-D float64 array as a Matrix, as raw bytes or typed values."""
    cols = values.shape[1]
    if raw:
        data = np.ascontiguousarray(values, dtype=_FLOAT64_LE).tobytes()
        return types_pb2.Matrix(num_columns=cols, raw=data)
    return types_pb2.Matrix(num_columns=cols, values=values.ravel().tolist())


def named_rows_to_ndarray(
    rows: Sequence[types_pb2.NamedRow], feature_index: Mapping[str, int], field: str
) -> np.ndarray:
    """Build an (n_rows, n_features) array from rows whose features are keyed by name.

    Every feature of the model must be present in every row, and no unknown
    name may appear; the violation names the row and the feature.
    """
    out = np.empty((len(rows), len(feature_index)), dtype=np.float64)
    for i, row in enumerate(rows):
        features = row.features
        unknown = [name for name in features if name not in feature_index]
        if unknown:
            check_lengths(unknown, f"{field}[{i}].features", FEATURE_NAME_MAX)  # echoed below
            raise InvalidInput(
                f"unknown feature {unknown[0]!r} in {field}[{i}]; the model's features are {', '.join(feature_index)}",
                reason="UNKNOWN_FEATURE",
                # The first few are enough to fix the request; all of them could outgrow the status.
                violations=[(f"{field}[{i}].features[{name}]", "not a feature of the model") for name in unknown[:16]],
                metadata={"row": i, "feature": unknown[0]},
            )
        missing = [name for name in feature_index if name not in features]
        if missing:
            raise InvalidInput(
                f"{field}[{i}] lacks feature {missing[0]!r}",
                reason="MISSING_FEATURE",
                violations=[(f"{field}[{i}].features[{name}]", "required feature is missing") for name in missing],
                metadata={"row": i, "feature": missing[0]},
            )
        for name, column in feature_index.items():
            out[i, column] = features[name]
    return out


def require_name(value: str, field: str, reason: str) -> str:
    """``value`` if it is not empty, else InvalidInput ``reason`` naming ``field``."""
    if not value:
        raise InvalidInput(f"{field} is required", reason=reason, violations=[(field, f"give the {field}")])
    return value


def add_class_fields(response, prediction, raw: bool, classes: Sequence[str] = ()) -> None:
    """Add a classifier's answer to a Predict or BatchPredict response: labels, probabilities, class names.

    The probabilities are encoded like the request (raw bytes or typed values).
    """
    response.labels.extend(prediction.labels)
    response.probabilities.CopyFrom(ndarray_to_matrix(prediction.probabilities, raw))
    response.classes.extend(classes)


def labels_to_array(labels: Sequence[str]) -> np.ndarray:
    """Class labels as a NumPy unicode array of shape (n,)."""
    return np.array(list(labels), dtype=np.str_)


def train_chunk(chunk: types_pb2.TrainChunk, classifier: bool) -> tuple[np.ndarray, np.ndarray]:
    """A Train chunk as (X of shape (n, d), y of shape (n,)).

    Classifiers take string labels from ``labels`` or integer labels from
    ``targets``; regressors take numeric ``targets`` only.
    """
    X = matrix_to_ndarray(chunk.features, "chunk.features")
    if chunk.labels:
        if not classifier:
            raise InvalidInput(
                "string labels were sent for a regression model; send numeric targets",
                reason="LABELS_FOR_REGRESSOR",
                violations=[("chunk.labels", "only classifiers take string labels")],
            )
        if chunk.targets.raw or len(chunk.targets.values):
            raise InvalidInput(
                "a chunk sets both targets and labels; send one of them",
                reason="AMBIGUOUS_TARGETS",
                violations=[("chunk.labels", "set either targets or labels, not both")],
            )
        longest = max(map(len, chunk.labels))
        if longest > CLASS_LABEL_MAX:  # before the array, whose every item is as wide as the longest
            raise too_long("chunk.labels", CLASS_LABEL_MAX, longest, "a class label")
        return X, labels_to_array(chunk.labels)
    return X, vector_to_ndarray(chunk.targets, "chunk.targets")


_OPTIONAL_SPEC_FIELDS = (
    "alpha",
    "c",
    "fit_intercept",
    "standardize",
    "learning_rate",
    "epochs",
    "batch_size",
    "tolerance",
    "max_iterations",
    "validation_fraction",
    "cv_folds",
    "seed",
)
"""TrainSpec fields that are proto3 ``optional`` on the wire and share their name with the domain spec."""


def spec_from_proto(spec: types_pb2.TrainSpec) -> TrainSpec:
    """Translate the wire TrainSpec into the domain TrainSpec, applying defaults for unset fields."""
    if spec.kind not in KIND_NAMES:
        raise InvalidInput(
            "spec.kind must name a model kind (MODEL_KIND_LINEAR, MODEL_KIND_RIDGE or MODEL_KIND_LOGISTIC)",
            reason="INVALID_HYPERPARAMETER",
            violations=[("spec.kind", "a model kind is required")],
        )
    if spec.solver not in SOLVER_NAMES:
        raise InvalidInput(
            f"spec.solver {spec.solver} is not a known solver",
            reason="INVALID_HYPERPARAMETER",
            violations=[("spec.solver", "unknown solver")],
        )
    check_lengths(spec.feature_names, "spec.feature_names", FEATURE_NAME_MAX)
    check_lengths(spec.class_labels, "spec.class_labels", CLASS_LABEL_MAX)
    # An unset alpha or c stays None, so the kind chooses the default penalty (TrainSpec's docstring).
    defaults: dict[str, Any] = {**TrainSpec().to_dict(), "alpha": None, "c": None}
    values = {name: getattr(spec, name) if spec.HasField(name) else defaults[name] for name in _OPTIONAL_SPEC_FIELDS}
    return TrainSpec(
        kind=KIND_NAMES[spec.kind],
        solver=SOLVER_NAMES[spec.solver],
        feature_names=tuple(spec.feature_names),
        class_labels=tuple(spec.class_labels),
        **values,
    )


def spec_to_proto(spec: Mapping[str, Any], model: str) -> types_pb2.TrainSpec:
    """Rebuild a wire TrainSpec from the spec dictionary stored with a version."""
    message = types_pb2.TrainSpec(
        model=model,
        kind=KIND_VALUES.get(str(spec.get("kind")), types_pb2.MODEL_KIND_UNSPECIFIED),
        solver=SOLVER_VALUES.get(str(spec.get("solver")), types_pb2.SOLVER_UNSPECIFIED),
        feature_names=list(spec.get("feature_names") or ()),
        class_labels=list(spec.get("class_labels") or ()),
    )
    for field in _OPTIONAL_SPEC_FIELDS:
        if spec.get(field) is not None:
            setattr(message, field, spec[field])
    return message
