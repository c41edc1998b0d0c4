"""RegressionClient: NumPy in, NumPy out, over regserve's raw float64 path."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from regserve.client._channel import Connection
from regserve.client._exceptions import from_rpc_error
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2

__all__ = ["Prediction", "RegressionClient"]

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
    """

    model: str
    version: str
    values: np.ndarray
    labels: list[str] | None = None
    probabilities: np.ndarray | None = None
    classes: list[str] | None = None


def _raw_matrix(X) -> types_pb2.Matrix:
    X = np.asarray(X, dtype=_F8)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_rows, n_features), got shape {X.shape}")
    return types_pb2.Matrix(num_columns=X.shape[1], raw=np.ascontiguousarray(X).tobytes())


def _vector(vector: types_pb2.Vector) -> np.ndarray:
    if vector.raw:
        return np.frombuffer(vector.raw, dtype=_F8)
    return np.array(vector.values, dtype=np.float64)


def _matrix(matrix: types_pb2.Matrix) -> np.ndarray:
    flat = np.frombuffer(matrix.raw, dtype=_F8) if matrix.raw else np.array(matrix.values, dtype=np.float64)
    return flat.reshape(-1, matrix.num_columns or max(flat.size, 1))


def _train_chunk(X, y) -> types_pb2.TrainChunk:
    y = np.asarray(y)
    chunk = types_pb2.TrainChunk(features=_raw_matrix(X))
    if y.dtype.kind in "USO":
        chunk.labels.extend(str(label) for label in y)
    else:
        chunk.targets.raw = np.ascontiguousarray(y, dtype=_F8).tobytes()
    return chunk


class RegressionClient(Connection):
    """A client of regserve's RegressionService.

    Parameters are those of ``Connection``: ``target`` (``host:port``, ``dns:///host:port``,
    ``ipv4:addr:port,addr:port``), ``timeout`` (seconds per call, retries included,
    ``None`` waits forever), ``credentials`` (TLS; plaintext when omitted), ``metadata``
    (sent with every call), ``max_message_mb``, ``tls_ca``/``tls_cert``/``tls_key`` (PEM
    files, used when ``credentials`` is not given), ``token`` (sent as ``authorization:
    Bearer <token>``), ``options`` (gRPC channel options) and ``service_config`` (replaces
    the default: ``round_robin``, and Predict, BatchPredict, ModelInfo and health checks
    retried on UNAVAILABLE; Train is never retried).  Failed calls raise the typed
    exceptions of ``regserve.client``, with the call's ``request_id``.
    """

    def __init__(self, target: str = "127.0.0.1:50051", **connection) -> None:
        super().__init__(target, **connection)
        self._stub = pb_grpc.RegressionServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def predict(self, model: str, X, *, version: str = "", routing_key: str = "") -> Prediction:
        """Predict for X, of shape (n_rows, n_features) or (n_features,) for one row."""
        request = pb.PredictRequest(model=model, version=version, inputs=_raw_matrix(X), routing_key=routing_key)
        return self._prediction(self._unary(self._stub.Predict, request))

    def predict_named(
        self, model: str, rows: Sequence[Mapping[str, float]], *, version: str = "", routing_key: str = ""
    ) -> Prediction:
        """Predict for rows whose features are given by name, e.g. ``[{"age": 52, ...}]``."""
        request = pb.PredictRequest(
            model=model,
            version=version,
            named_inputs=[types_pb2.NamedRow(features=row) for row in rows],
            routing_key=routing_key,
        )
        return self._prediction(self._unary(self._stub.Predict, request))

    @staticmethod
    def _prediction(response) -> Prediction:
        classes = list(response.classes) or None
        return Prediction(
            model=response.model,
            version=response.version,
            values=_vector(response.predictions),
            labels=list(response.labels) or None,
            probabilities=_matrix(response.probabilities) if classes else None,
            classes=classes,
        )

    def iter_batch_predict(
        self, model: str, chunks: Iterable, *, version: str = "", routing_key: str = ""
    ) -> Iterator[Prediction]:
        """Stream chunks of rows (each of shape (n_rows, n_features)); yield one Prediction per chunk, in order."""

        def requests():
            first = True
            for chunk in chunks:
                if first:
                    yield pb.BatchPredictRequest(
                        model=model, version=version, routing_key=routing_key, inputs=_raw_matrix(chunk)
                    )
                    first = False
                else:
                    yield pb.BatchPredictRequest(inputs=_raw_matrix(chunk))

        classes = None  # sent with the first chunk's answer only
        metadata, request_id = self._call_metadata()
        try:
            for response in self._stub.BatchPredict(requests(), timeout=self.timeout, metadata=metadata):
                classes = list(response.classes) or classes
                probabilities = _matrix(response.probabilities) if response.labels else None
                yield Prediction(
                    response.model,
                    response.version,
                    _vector(response.predictions),
                    list(response.labels) or None,
                    probabilities,
                    classes if response.labels else None,
                )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, request_id) from exc

    def batch_predict(self, model: str, X, *, chunk_rows: int = 10_000, version: str = "") -> np.ndarray:
        """Predict for a large X of shape (n_rows, n_features) through BatchPredict; returns shape (n_rows,)."""
        X = np.asarray(X, dtype=_F8)
        chunks = (X[start : start + chunk_rows] for start in range(0, X.shape[0], chunk_rows))
        parts = [p.values for p in self.iter_batch_predict(model, chunks, version=version)]
        return np.concatenate(parts) if parts else np.empty(0)

    def train(
        self,
        model: str,
        X=None,
        y=None,
        *,
        chunks: Iterable[tuple] | None = None,
        kind: str = "linear",
        solver: str = "auto",
        feature_names: Sequence[str] = (),
        class_labels: Sequence[str] = (),
        chunk_rows: int = 65536,
        **options,
    ) -> pb.TrainResponse:
        """Train a new version of ``model`` and return the TrainResponse.

        Give either ``X`` (n_rows, n_features) and ``y`` (n_rows,) or ``chunks``,
        an iterable of ``(X_chunk, y_chunk)`` pairs.  String labels in ``y`` are
        sent as class labels.  ``options`` are TrainSpec fields (alpha,
        standardize, learning_rate, epochs, batch_size, tolerance, max_iterations,
        validation_fraction, cv_folds, seed, promote, promotion_gate, fit_intercept).
        """
        if (chunks is None) == (X is None):
            raise ValueError("give either X and y, or chunks")
        if chunks is None:
            X = np.asarray(X)
            y = np.asarray(y)
            chunks = ((X[i : i + chunk_rows], y[i : i + chunk_rows]) for i in range(0, len(X), chunk_rows))
        spec = types_pb2.TrainSpec(
            model=model,
            kind=_KINDS[kind],
            solver=_SOLVERS[solver],
            feature_names=list(feature_names),
            class_labels=[str(c) for c in class_labels],
            **options,
        )

        failures: list[BaseException] = []

        def requests():
            yield pb.TrainRequest(spec=spec)
            try:
                yield from (pb.TrainRequest(chunk=_train_chunk(X_chunk, y_chunk)) for X_chunk, y_chunk in chunks)
            except BaseException as exc:
                # gRPC cancels the call when the request iterator raises, so the
                # server stores nothing; the caller gets this exception, not CANCELLED.
                failures.append(exc)
                raise

        metadata, request_id = self._call_metadata()
        try:
            return self._stub.Train(requests(), timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            if failures:
                raise failures[0] from None
            raise from_rpc_error(exc, request_id) from exc

    def model_info(self, model: str, version: str = "") -> types_pb2.ModelVersion:
        """Describe a version of ``model`` (the serving one when ``version`` is empty)."""
        request = pb.ModelInfoRequest(model=model, version=version)
        return self._unary(self._stub.ModelInfo, request).model_version

    def health(self, service: str = "") -> str:
        """The health status name (``SERVING``, ``NOT_SERVING``, ...) of the server or one service."""
        # types-grpcio-health-checking declares HealthStub without its methods.
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._unary(self._health.Check, request)  # type: ignore[attr-defined]
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
