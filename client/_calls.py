"""What each client call sends and what it makes of the answer, for the blocking and the asyncio clients alike.

Nothing here touches a channel: a ``Call`` names the stub method, holds the request and
turns the response into the value the client returns, and the streaming calls get their
request messages and predictions from ``BatchStream`` and ``RequestStream``.  The
clients in ``_client``/``_admin`` (blocking) and ``aio`` (asyncio) only send them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2

from regserve.client._exceptions import RegserveError, from_rpc_error
from regserve.v1 import model_service_pb2 as admin_pb
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import types_pb2

__all__ = [
    "BatchStream",
    "Call",
    "Prediction",
    "RequestStream",
    "delete_version",
    "freeze",
    "get_version",
    "frame_names",
    "health",
    "in_model_order",
    "join_values",
    "list_models",
    "list_versions",
    "model_info",
    "predict",
    "predict_named",
    "promote",
    "create_version",
    "rollback",
    "row_blocks",
    "set_split",
    "status",
    "status_response",
    "VersionFeaturesDiffer",
    "same_feature_count",
    "same_features",
    "train_feature_names",
    "train_pairs",
    "train_requests",
    "unfreeze",
]

R = TypeVar("R")

_F8 = np.dtype("<f8")
_KINDS = {
    "linear": types_pb2.MODEL_KIND_LINEAR,
    "ridge": types_pb2.MODEL_KIND_RIDGE,
    "logistic": types_pb2.MODEL_KIND_LOGISTIC,
}
_SOLVERS = {
    "auto": types_pb2.SOLVER_UNSPECIFIED,
    "closed_form": types_pb2.SOLVER_CLOSED_FORM,
    "gd": types_pb2.SOLVER_GRADIENT_DESCENT,
    "sgd": types_pb2.SOLVER_SGD,
    "newton": types_pb2.SOLVER_NEWTON,
}


@dataclass(frozen=True)
class Prediction:
    """Predictions for a block of rows and the version that made them.

    values : ndarray of shape (n_rows,)
        Regression values, or class indices for classifiers.
    labels : list of str, or None
        Predicted class labels, for classifiers.
    probabilities : ndarray of shape (n_rows, n_classes), or None
    classes : list of str, or None
        Class labels in the order of the probability columns.
    mean_lower, mean_upper : ndarray of shape (n_rows,), or None
        With an interval level: the confidence interval of the mean per row (the value of a
        regression, the probability of a binary classifier's second class).
    prediction_lower, prediction_upper : ndarray of shape (n_rows,), or None
        With an interval level, for linear regression: the prediction interval of a new observation.
    """

    model: str
    version: str
    values: np.ndarray
    labels: list[str] | None = None
    probabilities: np.ndarray | None = None
    classes: list[str] | None = None
    mean_lower: np.ndarray | None = None
    mean_upper: np.ndarray | None = None
    prediction_lower: np.ndarray | None = None
    prediction_upper: np.ndarray | None = None


@dataclass(frozen=True)
class Call(Generic[R]):
    """One unary call: the stub's method name, its request, and what the client returns from the response."""

    method: str
    request: Any
    result: Callable[[Any], R]


def _rows(X) -> np.ndarray:
    X = np.asarray(X, dtype=_F8)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_rows, n_features), got shape {X.shape}")
    return X


def _raw_matrix(X) -> types_pb2.Matrix:
    X = _rows(X)
    return types_pb2.Matrix(num_columns=X.shape[1], raw=np.ascontiguousarray(X).tobytes())


def _vector(vector: types_pb2.Vector) -> np.ndarray:
    if vector.raw:
        return np.frombuffer(vector.raw, dtype=_F8)
    return np.array(vector.values, dtype=np.float64)


def _matrix(matrix: types_pb2.Matrix) -> np.ndarray:
    flat = np.frombuffer(matrix.raw, dtype=_F8) if matrix.raw else np.array(matrix.values, dtype=np.float64)
    return flat.reshape(-1, matrix.num_columns or max(flat.size, 1))


TRAIN_METHOD = "/regserve.v1.RegressionService/Train"
_CHUNK_FIELD = pb.TrainRequest.DESCRIPTOR.fields_by_name["chunk"].number
_FEATURES_FIELD = types_pb2.TrainChunk.DESCRIPTOR.fields_by_name["features"].number
_RAW_FIELD = types_pb2.Matrix.DESCRIPTOR.fields_by_name["raw"].number


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(field: int, size: int) -> bytes:
    """The key and length of a length-delimited field (wire type 2) whose ``size`` bytes follow."""
    return _varint(field << 3 | 2) + _varint(size)


def _train_request(X, y, classifier: bool = False) -> bytes:
    """The TrainRequest of one chunk, serialized, its rows' bytes copied once.

    A ``classifier``'s boolean labels go as ``True`` and ``False``, as pandas writes them to a
    file and as ``regserve train`` reads them from one; a regressor's booleans go as 1 and 0.

    protobuf serializes a message holding a large ``bytes`` field several times slower
    than a copy, so the chunk's other fields are serialized by protobuf and the rows
    follow as a second ``features`` field holding only ``raw``: a parser merges the two
    occurrences of a message field, so this parses as the message protobuf would write.
    """
    X, y = np.ascontiguousarray(_rows(X)), np.asarray(y)
    rest = types_pb2.TrainChunk()
    rest.features.num_columns = X.shape[1]
    if classifier and y.dtype.kind == "b":
        rest.labels.extend(np.where(y, "True", "False").tolist())
    elif y.dtype.kind in "USO":
        rest.labels.extend(str(label) for label in y)
    else:
        rest.targets.raw = np.ascontiguousarray(y, dtype=_F8).tobytes()
    head = rest.SerializeToString()
    if not X.nbytes:
        return _delimited(_CHUNK_FIELD, len(head)) + head
    raw = _delimited(_RAW_FIELD, X.nbytes)
    features = _delimited(_FEATURES_FIELD, len(raw) + X.nbytes)
    chunk = _delimited(_CHUNK_FIELD, len(head) + len(features) + len(raw) + X.nbytes)
    return b"".join((chunk, head, features, raw, X.reshape(-1).view(np.uint8)))


def serialize_train_request(request: pb.TrainRequest | bytes) -> bytes:
    """A Train stream's request serializer: its spec message serialized, its chunks (bytes) as they are."""
    return request if isinstance(request, bytes) else request.SerializeToString()


def _bounds(response) -> dict[str, np.ndarray | None]:
    """The interval fields of a Predict or BatchPredict answer, None for those it does not carry."""
    names = ("mean_lower", "mean_upper", "prediction_lower", "prediction_upper")
    return {name: _vector(getattr(response, name)) if response.HasField(name) else None for name in names}


def _prediction(response: pb.PredictResponse) -> Prediction:
    classes = list(response.classes) or None
    return Prediction(
        model=response.model,
        version=response.version,
        values=_vector(response.predictions),
        labels=list(response.labels) or None,
        probabilities=_matrix(response.probabilities) if classes else None,
        classes=classes,
        **_bounds(response),
    )


# RegressionService and health.


def predict(model: str, X, version: str, routing_key: str, interval: float = 0.0) -> Call[Prediction]:
    """Predict X by position, or a table (a DataFrame) by its column names, which the server matches."""
    # An array is told apart without a call, so its request costs what it did before tables were taken.
    names = None if type(X) is np.ndarray else frame_names(X)
    if names is None:
        request = pb.PredictRequest(
            model=model, version=version, inputs=_raw_matrix(X), routing_key=routing_key, interval_level=interval
        )
    else:
        request = pb.PredictRequest(
            model=model,
            version=version,
            named_inputs=_named_rows(X, names),
            routing_key=routing_key,
            interval_level=interval,
        )
    return Call("Predict", request, _prediction)


def frame_names(X) -> list[str] | None:
    """The column names of a table (a pandas DataFrame: anything with ``columns``); None for an array."""
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = [str(name) for name in columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"the table names column {repeated[0]!r} more than once")
    return names


def train_feature_names(X, feature_names: Sequence[str]) -> Sequence[str]:
    """The feature names a Train sends: those given, else a table's column names, else none (x0, x1, ...)."""
    if feature_names or X is None:
        return feature_names
    return frame_names(X) or ()


def _named_rows(X, names: list[str]) -> list[types_pb2.NamedRow]:
    values = np.asarray(X, dtype=_F8)
    return [types_pb2.NamedRow(features=dict(zip(names, row, strict=True))) for row in values.tolist()]


def in_model_order(X, names: list[str], described: types_pb2.ModelVersion) -> np.ndarray:
    """A table's columns as an array in the order of ``described``'s features; ValueError unless they match.

    As with Predict's named rows, every feature must be a column and every column a feature.
    """
    features = list(described.feature_names)
    unknown = [name for name in names if name not in features]
    missing = [name for name in features if name not in names]
    if unknown or missing:
        problems = [f"the model has no feature {', '.join(map(repr, unknown))}"] if unknown else []
        problems += [f"the table has no column {', '.join(map(repr, missing))}"] if missing else []
        raise ValueError(
            f"the table's columns ({', '.join(names)}) are not the features of {described.model} "
            f"{described.version} ({', '.join(features)}): {'; '.join(problems)}"
        )
    return np.asarray(X, dtype=_F8)[:, [names.index(name) for name in features]]


def predict_named(model: str, rows: Sequence[Mapping[str, float]], version: str, routing_key: str) -> Call[Prediction]:
    request = pb.PredictRequest(
        model=model,
        version=version,
        named_inputs=[types_pb2.NamedRow(features=row) for row in rows],
        routing_key=routing_key,
    )
    return Call("Predict", request, _prediction)


def model_info(model: str, version: str, confidence_level: float = 0.0) -> Call[types_pb2.ModelVersion]:
    request = pb.ModelInfoRequest(model=model, version=version, confidence_level=confidence_level)
    return Call("ModelInfo", request, lambda r: r.model_version)


def health(service: str) -> Call[str]:
    return Call(
        "Check",
        health_pb2.HealthCheckRequest(service=service),
        lambda r: health_pb2.HealthCheckResponse.ServingStatus.Name(r.status),
    )


class BatchStream:
    """One BatchPredict call: a request per chunk of rows, the first naming the model, and a Prediction per answer."""

    def __init__(self, model: str, version: str, routing_key: str, interval: float = 0.0) -> None:
        self._head: tuple[str, str, str] | None = (model, version, routing_key)
        self._interval = interval
        self._classes: list[str] | None = None

    def request(self, chunk) -> pb.BatchPredictRequest:
        """The request for ``chunk``, of shape (n_rows, n_features)."""
        if self._head is None:
            return pb.BatchPredictRequest(inputs=_raw_matrix(chunk))
        (model, version, routing_key), self._head = self._head, None
        return pb.BatchPredictRequest(
            model=model,
            version=version,
            routing_key=routing_key,
            inputs=_raw_matrix(chunk),
            interval_level=self._interval,
        )

    def prediction(self, response: pb.BatchPredictResponse) -> Prediction:
        """The Prediction of one answer, in the order of the chunks."""
        # The server sends the class labels with the first answer only.
        self._classes = list(response.classes) or self._classes
        return Prediction(
            response.model,
            response.version,
            _vector(response.predictions),
            list(response.labels) or None,
            _matrix(response.probabilities) if response.labels else None,
            self._classes if response.labels else None,
            **_bounds(response),
        )


def row_blocks(X, chunk_rows: int) -> Iterator[np.ndarray]:
    """X, of shape (n_rows, n_features), in blocks of at most ``chunk_rows`` rows."""
    X = np.asarray(X, dtype=_F8)
    return (X[start : start + chunk_rows] for start in range(0, X.shape[0], chunk_rows))


class VersionFeaturesDiffer(ValueError):
    """A traffic split answered with a version that reads other features than the one the rows were ordered for."""


def same_features(described: types_pb2.ModelVersion, answered: types_pb2.ModelVersion) -> None:
    """VersionFeaturesDiffer when the version that answered (under a traffic split) reads other features than
    ``described``."""
    if list(answered.feature_names) != list(described.feature_names):
        raise VersionFeaturesDiffer(
            f"{answered.model} {answered.version} answered, whose features ({', '.join(answered.feature_names)}) "
            f"are not those of {described.version} ({', '.join(described.feature_names)}) the columns were put "
            "in order for; name a version"
        )


def same_feature_count(error: RegserveError, described: types_pb2.ModelVersion) -> None:
    """VersionFeaturesDiffer when ``error`` refuses rows put in order for ``described`` for their count, and the
    count it expected is not ``described``'s: a traffic split's other version, which refuses a stream's first
    chunk before its answer could be compared (``same_features``)."""
    count = error.metadata.get("expected")
    if error.reason == "FEATURE_COUNT_MISMATCH" and count is not None and count != str(len(described.feature_names)):
        raise VersionFeaturesDiffer(
            f"{described.model} answered with a version of {count} features, not {described.version} "
            f"({', '.join(described.feature_names)}) the columns were put in order for; name a version"
        ) from error


def join_values(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The values of the chunks' predictions as one array of shape (n_rows,)."""
    return np.concatenate(parts) if parts else np.empty(0)


def train_pairs(X, y, chunks, chunk_rows: int):
    """The ``(X_chunk, y_chunk)`` pairs to send: ``chunks`` as given, or X and y cut into blocks of ``chunk_rows``."""
    if (chunks is None) == (X is None):
        raise ValueError("give either X and y, or chunks")
    if chunks is not None:
        return chunks
    X = np.asarray(X)
    y = np.asarray(y)
    return ((X[i : i + chunk_rows], y[i : i + chunk_rows]) for i in range(0, len(X), chunk_rows))


def train_requests(
    model: str,
    kind: str,
    solver: str,
    feature_names: Sequence[str],
    class_labels: Sequence[str],
    options: Mapping[str, Any],
) -> tuple[pb.TrainRequest, Callable[[tuple], bytes]]:
    """The first request of a Train call (its TrainSpec) and the function that makes a request of a chunk pair.

    Chunk requests come serialized: send them with ``serialize_train_request``.
    """
    spec = types_pb2.TrainSpec(
        model=model,
        kind=_KINDS[kind],
        solver=_SOLVERS[solver],
        feature_names=list(feature_names),
        class_labels=[str(c) for c in class_labels],
        **options,
    )
    classifier = kind == "logistic"
    return pb.TrainRequest(spec=spec), lambda pair: _train_request(pair[0], pair[1], classifier)


class _ReadAhead:
    """``make(item)`` for each item of ``items``, each made in a daemon thread while the one before is used.

    The thread hands over one message at a time (or the exception that ended the
    iterable); ``stop`` lets it end once its current item is made.
    """

    _END = object()

    def __init__(self, make: Callable[[Any], Any], items) -> None:
        self._slot: queue.Queue = queue.Queue(maxsize=1)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make, items), name="regserve-request", daemon=True)
        self._thread.start()

    def _run(self, make: Callable[[Any], Any], items) -> None:
        try:
            for item in items:
                if not self._hand_over((make(item), None)):
                    return
        except BaseException as exc:  # handed to the caller's thread, which raises it
            self._hand_over((self._END, exc))
            return
        self._hand_over((self._END, None))

    def _hand_over(self, entry: tuple) -> bool:
        """Put ``entry`` in the slot; False once the reader has stopped."""
        while not self._stopped.is_set():
            try:
                self._slot.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator:
        while True:
            message, error = self._slot.get()
            if error is not None:
                raise error
            if message is self._END:
                return
            yield message

    def stop(self, wait: float | None = None) -> None:
        """Let the thread end once its current item is made; with ``wait``, wait that many seconds for it.

        A reader still waiting on the slot (grpcio's request thread) is then handed the end,
        since the stopped thread hands over nothing more.
        """
        self._stopped.set()
        if wait is not None:
            self._thread.join(wait)
            try:
                self._slot.put_nowait((self._END, None))
            except queue.Full:  # a message waits: the reader takes it, and grpcio asks no further
                pass


_STOP_WAIT = 5.0
"""Seconds a failed call waits for the read-ahead thread to finish the item it is making."""


class RequestStream:
    """The request messages of one client-streaming call, made from the caller's iterable.

    gRPC cancels the call when that iterable raises, so the server stores nothing; the
    stream keeps the exception, and ``raise_error`` raises it to the caller in place of the
    CANCELLED that the call ends with.

    Iterated (grpcio's sync calls), each next message is read from the iterable and made
    in a thread of its own while gRPC serializes and sends the one before: reading a file
    and sending overlap.  At most one message waits beyond the one being sent, so a call
    that fails has taken one item more from the iterable than it sent.  The thread is a
    daemon, as grpcio's own request thread is: an iterable that blocks after the call has
    ended does not hold the process open.
    """

    def __init__(self, first: Any | None, make: Callable[[Any], Any], items) -> None:
        self._first = first
        self._make = make
        self._items = items
        self._ahead: _ReadAhead | None = None
        self._ended = False  # the call has failed: no read-ahead may start any more
        self._lock = threading.Lock()
        self.failure: Exception | None = None

    def __iter__(self) -> Iterator:
        if self._first is not None:
            yield self._first
        with self._lock:
            if self._ended:
                return
            ahead = self._ahead = _ReadAhead(self._make, self._items)
        try:
            yield from ahead
        except Exception as exc:
            self.failure = exc
            raise
        finally:
            ahead.stop()

    async def __aiter__(self) -> AsyncIterator:
        """The messages from an iterable or an async iterable."""
        if self._first is not None:
            yield self._first
        try:
            if isinstance(self._items, AsyncIterable):
                async for item in self._items:
                    yield self._make(item)
            else:
                for item in self._items:
                    yield self._make(item)
        except Exception as exc:
            self.failure = exc
            raise

    def end(self) -> None:
        """Stop the read-ahead thread and wait for it to finish the item it is making.

        Left inside a reader's native code (pyarrow's, say), the thread could outlive the
        interpreter of a process that exits, on an error or once its caller stopped reading
        answers (``regserve predict ... | head``), and the process would then abort.
        """
        with self._lock:
            self._ended = True
            ahead = self._ahead
        if ahead is not None:
            ahead.stop(wait=_STOP_WAIT)

    def raise_error(self, exc: grpc.RpcError, request_id: str) -> NoReturn:
        """Raise what the caller gets for the failed call: its own iterable's exception, or the typed one,
        once the read-ahead thread has ended (``end``)."""
        self.end()
        if self.failure is not None:
            raise self.failure from None
        raise from_rpc_error(exc, request_id) from exc


# ModelService.


def list_models() -> Call[list[admin_pb.ModelState]]:
    return Call("ListModels", admin_pb.ListModelsRequest(), lambda r: list(r.models))


def list_versions(model: str) -> Call[list[types_pb2.ModelVersion]]:
    return Call("ListVersions", admin_pb.ListVersionsRequest(model=model), lambda r: list(r.versions))


def get_version(model: str, version: str) -> Call[types_pb2.ModelVersion]:
    return Call("GetVersion", admin_pb.GetVersionRequest(model=model, version=version), lambda r: r.model_version)


def _state(response) -> admin_pb.ModelState:
    return response.state


def create_version(
    model: str,
    kind: str,
    coefficients,
    intercepts,
    *,
    feature_names: Sequence[str] = (),
    classes: Sequence[str] = (),
    means=None,
    scales=None,
    training: Mapping[str, float] | None = None,
    validation: Mapping[str, float] | None = None,
    source: str = "",
    data_fingerprint: str = "",
    promote: bool = True,
    promotion_gate: bool = False,
    solver_report: types_pb2.SolverReport | None = None,
    feature_statistics: Sequence[Mapping[str, Any]] = (),
    num_train: int | None = None,
    num_validation: int | None = None,
    spec: Mapping[str, Any] | None = None,
    warnings: Sequence[Mapping[str, str]] = (),
) -> Call[admin_pb.CreateVersionResponse]:
    if kind not in _KINDS:
        raise ValueError(f"kind must be {', '.join(_KINDS)}, not {kind!r}")
    coef = np.asarray(coefficients, dtype=_F8)
    request = admin_pb.CreateVersionRequest(
        model=model,
        kind=_KINDS[kind],
        feature_names=list(feature_names),
        classes=[str(c) for c in classes],
        coefficients=_raw_matrix(coef.reshape(1, -1) if coef.ndim == 1 else coef),
        intercepts=np.ravel(np.asarray(intercepts, dtype=_F8)).tolist(),
        lineage=admin_pb.Lineage(source=source, data_fingerprint=data_fingerprint),
        promote=promote,
        promotion_gate=promotion_gate,
        num_train=num_train,
        num_validation=num_validation,
    )
    if means is not None or scales is not None:
        request.standardization.enabled = True
        # One given without the other is sent empty, for the server to name; NumPy would make None a NaN.
        for values, field in ((means, request.standardization.means), (scales, request.standardization.scales)):
            if values is not None:
                field.extend(np.ravel(np.asarray(values, dtype=_F8)).tolist())
    for metrics, evaluation in ((training, request.training), (validation, request.validation)):
        evaluation.metrics.update(metrics or {})
    if solver_report is not None:
        request.solver_report.CopyFrom(solver_report)
    for row in feature_statistics:
        request.feature_statistics.add(**row)
    for warning in warnings:
        request.warnings.add(reason=warning["reason"], message=warning["message"])
    if spec is not None:
        settings = dict(spec)
        solver = settings.pop("solver", "auto")
        if solver not in _SOLVERS:
            raise ValueError(f"spec's solver must be {', '.join(_SOLVERS)}, not {solver!r}")
        request.spec.CopyFrom(types_pb2.TrainSpec(solver=_SOLVERS[solver], **settings))
    return Call("CreateVersion", request, lambda r: r)


def promote(model: str, version: str, reason: str) -> Call[admin_pb.ModelState]:
    return Call("PromoteVersion", admin_pb.PromoteVersionRequest(model=model, version=version, reason=reason), _state)


def rollback(model: str, reason: str) -> Call[admin_pb.ModelState]:
    return Call("RollbackModel", admin_pb.RollbackModelRequest(model=model, reason=reason), _state)


def freeze(model: str, version: str, reason: str) -> Call[admin_pb.ModelState]:
    return Call("FreezeVersion", admin_pb.FreezeVersionRequest(model=model, version=version, reason=reason), _state)


def unfreeze(model: str, version: str, reason: str) -> Call[admin_pb.ModelState]:
    request = admin_pb.UnfreezeVersionRequest(model=model, version=version, reason=reason)
    return Call("UnfreezeVersion", request, _state)


def set_split(model: str, weights: Mapping[str, float], reason: str) -> Call[admin_pb.ModelState]:
    request = admin_pb.SetTrafficSplitRequest(model=model, weights=dict(weights), reason=reason)
    return Call("SetTrafficSplit", request, _state)


def delete_version(model: str, version: str, reason: str) -> Call[admin_pb.ModelState]:
    request = admin_pb.DeleteVersionRequest(model=model, version=version, reason=reason)
    return Call("DeleteVersion", request, _state)


def status(model: str) -> Call[list[admin_pb.ModelStatus]]:
    return Call("GetStatus", admin_pb.GetStatusRequest(model=model), lambda r: list(r.models))


def status_response(model: str) -> Call[admin_pb.GetStatusResponse]:
    return Call("GetStatus", admin_pb.GetStatusRequest(model=model), lambda r: r)
