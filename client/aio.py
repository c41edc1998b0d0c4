"""The asyncio client of regserve, on grpc.aio: the calls of ``regserve.client``, awaited.

from regserve.client.aio import AsyncRegressionClient

async with AsyncRegressionClient("127.0.0.1:50051") as client:
    prediction = await client.predict("diabetes", X)   # X: ndarray (n_rows, 10)
    async for part in client.iter_batch_predict("diabetes", chunks):
        ...

The clients take the parameters of the blocking ones (target, timeout, credentials,
metadata, TLS files, token, options, service_config), balance and retry the same way,
send every call with an ``x-request-id``, and raise the same typed exceptions of
``regserve.client``.  Open and use a client inside the event loop that runs it:
grpc.aio binds a channel to the loop it was made in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2_grpc

from regserve.client import _calls
from regserve.client._calls import BatchStream, Call, Prediction, RequestStream
from regserve.client._channel import BaseConnection, channel_options
from regserve.client._exceptions import InvalidArgument, from_rpc_error
from regserve.v1 import model_service_pb2 as admin_pb
from regserve.v1 import model_service_pb2_grpc as admin_grpc
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2

__all__ = ["AsyncConnection", "AsyncModelAdminClient", "AsyncRegressionClient", "open_channel"]

R = TypeVar("R")

_LOST_STATUS = "Internal error from Core"
"""The details of the INTERNAL status grpc.aio puts in place of a stream call's own when a send fails."""


class _FirstStatus:
    """The status a stream call ended with, kept before grpc.aio overwrites it.

    When a call ends (the server answered early or refused, or the deadline passed) while
    a request is being sent, grpc.aio first sets the call's own status and then, as the
    failed send comes back, replaces it with INTERNAL "Internal error from Core"
    (grpc/grpc#36066); the blocking client reports the call's own status.  A send refused
    at once, as when the deadline had passed before the call began, leaves no other
    status: then ``deadline`` (a ``time.monotonic()`` no later than gRPC's own deadline)
    tells whether the call ran out of time.
    """

    def __init__(self, call: grpc.aio.Call, deadline: float) -> None:
        self.error: grpc.aio.AioRpcError | None = None
        self.deadline = deadline
        call.add_done_callback(self._keep)

    def _keep(self, call) -> None:
        # Done callbacks run as the first status is set, so each of these returns at once.
        code, initial, trailing = (
            _result(call.code()),
            _result(call.initial_metadata()),
            _result(call.trailing_metadata()),
        )
        if code is not None and initial is not None and trailing is not None:
            details, debug = _result(call.details()), _result(call.debug_error_string())
            self.error = grpc.aio.AioRpcError(code, initial, trailing, details, debug)

    def of(self, exc: grpc.RpcError) -> grpc.RpcError:
        """The error the call ended with: ``exc``, or the status it overwrote."""
        if not _lost(exc):
            return exc
        if self.error is not None and not _lost(self.error):
            return self.error
        if time.monotonic() >= self.deadline:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "Deadline Exceeded")
        return exc


def _lost(exc: grpc.RpcError) -> bool:
    """True for the INTERNAL status grpc.aio sets in place of a stream call's own."""
    return (
        isinstance(exc, grpc.aio.AioRpcError)
        and exc.code() == grpc.StatusCode.INTERNAL
        and exc.details() == _LOST_STATUS
    )


def _result(coroutine):
    """The value of a coroutine that returns without waiting, or None when it would wait."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    return None


def open_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    service_config: Mapping[str, Any] | str | None = None,
    max_message_mb: int = 64,
) -> grpc.aio.Channel:
    """A grpc.aio channel to ``target`` with the options of ``regserve.client.open_channel``."""
    merged = channel_options(options, service_config, max_message_mb)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=merged)
    return grpc.aio.secure_channel(target, credentials, options=merged)


class AsyncConnection(BaseConnection[grpc.aio.Channel]):
    """A grpc.aio channel to regserve and an async context manager.

    Its parameters are those of ``regserve.client.Connection``.  Failed calls raise the
    typed exceptions of ``regserve.client`` with the call's ``request_id``.
    """

    def _open_channel(self, target: str, **channel: Any) -> grpc.aio.Channel:
        return open_channel(target, **channel)

    async def _unary(self, rpc: grpc.aio.UnaryUnaryMultiCallable, request):
        """Call a unary method with the deadline and metadata; a failure raises the typed exception."""
        metadata, request_id = self._call_metadata()
        try:
            return await rpc(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, request_id) from exc

    def _deadline(self) -> float:
        """The ``time.monotonic()`` by which a call started now has used its timeout (never after gRPC's deadline)."""
        return float("inf") if self.timeout is None else time.monotonic() + self.timeout

    async def _send(self, stub, call: Call[R]) -> R:
        """Send ``call`` through the method of ``stub`` it names; return what it makes of the response."""
        return call.result(await self._unary(getattr(stub, call.method), call.request))

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls still running are cancelled."""
        await self._channel.close()


class AsyncRegressionClient(AsyncConnection):
    """A client of regserve's RegressionService for asyncio; the methods of ``RegressionClient``, awaited.

    ``iter_batch_predict`` is an async iterator, and ``iter_batch_predict`` and ``train``
    read their chunks from an iterable or an async iterable.
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

    async def predict(
        self, model: str, X, *, version: str = "", routing_key: str = "", interval: float = 0.0
    ) -> Prediction:
        """Predict for X, of shape (n_rows, n_features) or (n_features,) for one row.

        A table (a pandas DataFrame: anything with ``columns``) is sent by name, its rows
        as named rows that the server matches to the version's features, whatever the
        columns' order; every column must be a feature and every feature a column.

        With ``interval`` (a level such as 0.95) the answer carries per-row bounds: ``mean_lower``,
        ``mean_upper`` and, for linear regression, ``prediction_lower``, ``prediction_upper``.
        """
        return await self._send(self._stub, _calls.predict(model, X, version, routing_key, interval))

    async def predict_named(
        self, model: str, rows: Sequence[Mapping[str, float]], *, version: str = "", routing_key: str = ""
    ) -> Prediction:
        """Predict for rows whose features are given by name, e.g. ``[{"age": 52, ...}]``."""
        return await self._send(self._stub, _calls.predict_named(model, rows, version, routing_key))

    async def iter_batch_predict(
        self,
        model: str,
        chunks: Iterable | AsyncIterable,
        *,
        version: str = "",
        routing_key: str = "",
        interval: float = 0.0,
    ) -> AsyncIterator[Prediction]:
        """Stream chunks of rows (each of shape (n_rows, n_features)); yield one Prediction per chunk, in order.

        When ``chunks`` raises, the call is cancelled and that exception reaches the caller;
        leaving the loop early cancels the call.
        """
        batch = BatchStream(model, version, routing_key, interval)
        requests = RequestStream(None, batch.request, chunks)
        metadata, request_id = self._call_metadata()
        deadline = self._deadline()
        call = self._stub.BatchPredict(aiter(requests), timeout=self.timeout, metadata=metadata)
        status = _FirstStatus(call, deadline)
        try:
            async for response in call:
                yield batch.prediction(response)
        except grpc.RpcError as exc:
            requests.raise_error(status.of(exc), request_id)
        except asyncio.CancelledError:
            _raise_failure(requests)
            raise
        finally:
            call.cancel()

    async def batch_predict(self, model: str, X, *, chunk_rows: int = 10_000, version: str = "") -> np.ndarray:
        """Predict for a large X of shape (n_rows, n_features) through BatchPredict; returns shape (n_rows,).

        A table (a pandas DataFrame) is sent in the order of the version's features, as in
        ``RegressionClient.batch_predict``.
        """
        names = _calls.frame_names(X)
        if names is None:
            chunks = _calls.row_blocks(X, chunk_rows)
            return _calls.join_values([p.values async for p in self.iter_batch_predict(model, chunks, version=version)])
        described = await self.model_info(model, version)
        chunks = _calls.row_blocks(_calls.in_model_order(X, names, described), chunk_rows)
        parts: list[np.ndarray] = []
        try:
            async for prediction in self.iter_batch_predict(model, chunks, version=version):
                if not parts and prediction.version != described.version:
                    _calls.same_features(described, await self.model_info(model, prediction.version))
                parts.append(prediction.values)
        except InvalidArgument as exc:
            _calls.same_feature_count(exc, described)
            raise
        return _calls.join_values(parts)

    async def train(
        self,
        model: str,
        X=None,
        y=None,
        *,
        chunks: Iterable[tuple] | AsyncIterable[tuple] | None = None,
        kind: str = "linear",
        solver: str = "auto",
        feature_names: Sequence[str] = (),
        class_labels: Sequence[str] = (),
        chunk_rows: int = 65536,
        **options,
    ) -> pb.TrainResponse:
        """Train a new version of ``model`` and return the TrainResponse.

        Give either ``X`` (n_rows, n_features) and ``y`` (n_rows,) or ``chunks``, an
        iterable or async iterable of ``(X_chunk, y_chunk)`` pairs; the rest is as in
        ``RegressionClient.train``.  When ``chunks`` raises, the call is cancelled,
        nothing is stored, and that exception reaches the caller.
        """
        pairs = _calls.train_pairs(X, y, chunks, chunk_rows)
        names = _calls.train_feature_names(X, feature_names)
        spec, chunk = _calls.train_requests(model, kind, solver, names, class_labels, options)
        requests = RequestStream(spec, chunk, pairs)
        metadata, request_id = self._call_metadata()
        deadline = self._deadline()
        call = self._train(aiter(requests), timeout=self.timeout, metadata=metadata)
        status = _FirstStatus(call, deadline)
        try:
            return await call
        except grpc.RpcError as exc:
            requests.raise_error(status.of(exc), request_id)
        except asyncio.CancelledError:
            _raise_failure(requests)
            raise

    async def model_info(
        self, model: str, version: str = "", *, confidence_level: float = 0.0
    ) -> types_pb2.ModelVersion:
        """Describe a version of ``model`` (the serving one when ``version`` is empty).

        ``statistics`` carries confidence intervals at ``confidence_level`` (0.95 when 0).
        """
        return await self._send(self._stub, _calls.model_info(model, version, confidence_level))

    async def health(self, service: str = "") -> str:
        """The health status name (``SERVING``, ``NOT_SERVING``, ...) of the server or one service."""
        return await self._send(self._health, _calls.health(service))


def _raise_failure(requests: RequestStream) -> None:
    """Raise the exception of the caller's chunks, for which grpc.aio cancelled the call; else return."""
    # grpc.aio cancels a call whose request iterator raised, and awaiting it then raises CancelledError.
    if requests.failure is not None:
        raise requests.failure from None


class AsyncModelAdminClient(AsyncConnection):
    """A client of regserve's ModelService for asyncio; the methods of ``ModelAdminClient``, awaited."""

    def __init__(self, target: str = "127.0.0.1:50051", **connection) -> None:
        super().__init__(target, **connection)
        self._stub = admin_grpc.ModelServiceStub(self._channel)

    async def list_models(self) -> list[admin_pb.ModelState]:
        """The routing state of every model, by name (see ``ModelAdminClient.list_models``)."""
        return await self._send(self._stub, _calls.list_models())

    async def list_versions(self, model: str) -> list[types_pb2.ModelVersion]:
        """The stored versions of ``model``, oldest first (without their coefficients)."""
        return await self._send(self._stub, _calls.list_versions(model))

    async def get_version(self, model: str, version: str) -> types_pb2.ModelVersion:
        """The full description of one version, coefficients included."""
        return await self._send(self._stub, _calls.get_version(model, version))

    async def create_version(
        self, model: str, kind: str, coefficients, intercepts, **fitted
    ) -> admin_pb.CreateVersionResponse:
        """Store a new version from fitted parameters; keyword arguments as ``ModelAdminClient.create_version``."""
        return await self._send(self._stub, _calls.create_version(model, kind, coefficients, intercepts, **fitted))

    async def promote(self, model: str, version: str, reason: str = "") -> admin_pb.ModelState:
        """Make ``version`` serve requests naming no version, once it passed its checks; ends any split."""
        return await self._send(self._stub, _calls.promote(model, version, reason))

    async def rollback(self, model: str, reason: str = "") -> admin_pb.ModelState:
        """Serve the version that served before the current one again."""
        return await self._send(self._stub, _calls.rollback(model, reason))

    async def freeze(self, model: str, version: str, reason: str = "") -> admin_pb.ModelState:
        """Exclude ``version`` from routing and refuse requests naming it."""
        return await self._send(self._stub, _calls.freeze(model, version, reason))

    async def unfreeze(self, model: str, version: str, reason: str = "") -> admin_pb.ModelState:
        """Make a frozen version usable again."""
        return await self._send(self._stub, _calls.unfreeze(model, version, reason))

    async def set_split(self, model: str, weights: Mapping[str, float], reason: str = "") -> admin_pb.ModelState:
        """Route requests between versions by relative weight, e.g. ``{"v1": 90, "v2": 10}``; ``{}`` ends the split."""
        return await self._send(self._stub, _calls.set_split(model, weights, reason))

    async def delete_version(self, model: str, version: str, reason: str = "") -> admin_pb.ModelState:
        """Delete a version that is neither serving nor in the split."""
        return await self._send(self._stub, _calls.delete_version(model, version, reason))

    async def status(self, model: str = "") -> list[admin_pb.ModelStatus]:
        """State, per-version traffic, errors and latency, and switch history of ``model`` (every model when "")."""
        return await self._send(self._stub, _calls.status(model))

    async def status_response(self, model: str = "") -> admin_pb.GetStatusResponse:
        """The whole GetStatus answer: the ``models`` of ``status`` and the ``replica`` (host:pid) that answered."""
        return await self._send(self._stub, _calls.status_response(model))
