"""RegressionClient: NumPy in, NumPy out, over regserve's raw float64 path."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2_grpc

from regserve.client import _calls
from regserve.client._calls import BatchStream, Prediction, RequestStream
from regserve.client._channel import Connection
from regserve.client._exceptions import InvalidArgument
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2

__all__ = ["RegressionClient"]


class RegressionClient(Connection):
    """A client of regserve's RegressionService.

    Parameters are those of ``Connection``: ``target`` (``host:port``, ``dns:///host:port``,
    ``ipv4:addr:port,addr:port``), ``timeout`` (seconds per call, retries included,
    ``None`` waits forever), ``credentials`` (TLS; plaintext when omitted), ``metadata``
    (sent with every call), ``max_message_mb``, ``tls_ca``/``tls_cert``/``tls_key`` (PEM
    files, used when ``credentials`` is not given), ``token`` (sent as ``authorization:
    Bearer <token>``), ``options`` (gRPC channel options) and ``service_config`` (replaces
    the default: ``round_robin``, and Predict, BatchPredict, ModelInfo and health checks
    retried on UNAVAILABLE and CANCELLED; Train is never retried).  Failed calls raise the typed
    exceptions of ``regserve.client``, with the call's ``request_id``.
    """

    def __init__(self, target: str = "127.0.0.1:50051", **connection) -> None:
        super().__init__(target, **connection)
        self._stub = pb_grpc.RegressionServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        # Train's chunks travel serialized by ``_calls.train_requests``, the stub's serializer bypassed.
        self._train = self._channel.stream_unary(
            _calls.TRAIN_METHOD,
            request_serializer=_calls.serialize_train_request,
            response_deserializer=pb.TrainResponse.FromString,
        )

    def predict(self, model: str, X, *, version: str = "", routing_key: str = "", interval: float = 0.0) -> Prediction:
        """Predict for X, of shape (n_rows, n_features) or (n_features,) for one row.

        A table (a pandas DataFrame: anything with ``columns``) is sent by name, its rows
        as named rows that the server matches to the version's features, whatever the
        columns' order; every column must be a feature and every feature a column.

        With ``interval`` (a level such as 0.95) the answer carries per-row bounds: ``mean_lower``,
        ``mean_upper`` and, for linear regression, ``prediction_lower``, ``prediction_upper``.
        """
        return self._send(self._stub, _calls.predict(model, X, version, routing_key, interval))

    def predict_named(
        self, model: str, rows: Sequence[Mapping[str, float]], *, version: str = "", routing_key: str = ""
    ) -> Prediction:
        """Predict for rows whose features are given by name, e.g. ``[{"age": 52, ...}]``."""
        return self._send(self._stub, _calls.predict_named(model, rows, version, routing_key))

    def iter_batch_predict(
        self, model: str, chunks: Iterable, *, version: str = "", routing_key: str = "", interval: float = 0.0
    ) -> Iterator[Prediction]:
        """Stream chunks of rows (each of shape (n_rows, n_features)); yield one Prediction per chunk, in order.

        When ``chunks`` raises, the call is cancelled and that exception reaches the caller.
        Closing the iterator early (a ``break``) cancels the call and stops reading ``chunks``.
        """
        batch = BatchStream(model, version, routing_key, interval)
        requests = RequestStream(None, batch.request, chunks)
        metadata, request_id = self._call_metadata()
        call = self._stub.BatchPredict(iter(requests), timeout=self.timeout, metadata=metadata)
        try:
            for response in call:
                yield batch.prediction(response)
        except grpc.RpcError as exc:
            requests.raise_error(exc, request_id)
        finally:
            # A caller that stops reading early (a break, a closed pipe) ends the call and the reading of chunks.
            call.cancel()
            requests.end()

    def batch_predict(self, model: str, X, *, chunk_rows: int = 10_000, version: str = "") -> np.ndarray:
        """Predict for a large X of shape (n_rows, n_features) through BatchPredict; returns shape (n_rows,).

        A table (a pandas DataFrame) is sent in the order of the version's features, which
        ModelInfo names: its columns must be exactly those features, in any order.
        """
        names = _calls.frame_names(X)
        if names is None:
            chunks = _calls.row_blocks(X, chunk_rows)
            return _calls.join_values([p.values for p in self.iter_batch_predict(model, chunks, version=version)])
        described = self.model_info(model, version)
        chunks = _calls.row_blocks(_calls.in_model_order(X, names, described), chunk_rows)
        parts: list[np.ndarray] = []
        try:
            for prediction in self.iter_batch_predict(model, chunks, version=version):
                if not parts and prediction.version != described.version:
                    _calls.same_features(described, self.model_info(model, prediction.version))
                parts.append(prediction.values)
        except InvalidArgument as exc:
            _calls.same_feature_count(exc, described)
            raise
        return _calls.join_values(parts)

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
        sent as class labels, and a classifier's booleans as the labels
        ``True`` and ``False`` (as ``regserve train`` reads them from a file).
        Without ``feature_names``, a table ``X`` (a pandas DataFrame) names the
        features by its columns.  ``options`` are TrainSpec
        fields (alpha, c, standardize, learning_rate, epochs, batch_size, tolerance,
        max_iterations, validation_fraction, cv_folds, seed, promote, promotion_gate,
        fit_intercept, and source: where the rows were read, stored as the version's source).
        When ``chunks`` raises, the call is cancelled, nothing is stored, and that
        exception reaches the caller.
        """
        pairs = _calls.train_pairs(X, y, chunks, chunk_rows)
        names = _calls.train_feature_names(X, feature_names)
        spec, chunk = _calls.train_requests(model, kind, solver, names, class_labels, options)
        requests = RequestStream(spec, chunk, pairs)
        metadata, request_id = self._call_metadata()
        try:
            return self._train(iter(requests), timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            requests.raise_error(exc, request_id)

    def model_info(self, model: str, version: str = "", *, confidence_level: float = 0.0) -> types_pb2.ModelVersion:
        """Describe a version of ``model`` (the serving one when ``version`` is empty).

        ``statistics`` carries confidence intervals at ``confidence_level`` (0.95 when 0).
        """
        return self._send(self._stub, _calls.model_info(model, version, confidence_level))

    def health(self, service: str = "") -> str:
        """The health status name (``SERVING``, ``NOT_SERVING``, ...) of the server or one service."""
        return self._send(self._health, _calls.health(service))
