"""The RegressionService servicer: convert the request, call the domain, convert the reply."""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

import grpc

from regserve.server import __version__
from regserve.server.errors import Cancelled, DeadlineExceeded, InvalidInput, RegserveError, Unavailable
from regserve.server.models.executors import ahead
from regserve.server.models.prediction import predict
from regserve.server.models.training import DEFAULT_LIMITS, Trainer, TrainingLimits, process_spool_dir
from regserve.server.observability.drift import DriftMonitor
from regserve.server.observability.serving_stats import ServingStats
from regserve.server.registry.store import ModelStore
from regserve.server.registry.text_limits import SOURCE_MAX, check_length, shown
from regserve.server.rpc import convert, registry_messages, statistics_messages
from regserve.server.rpc.status import maps_errors
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc

__all__ = ["RegressionServicer"]

logger = logging.getLogger(__name__)


def _read_ahead(requests: Iterator[pb.TrainRequest]) -> Iterator[pb.TrainRequest]:
    """The messages of ``requests``, each next one received and parsed in a thread of its own.

    gRPC reads a large message off the connection only once the handler asks for it, so
    without this the transfer and the parsing of every chunk would wait for the trainer
    to absorb the one before.  At most one message waits beyond the one being handled.
    """
    reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="regserve-receive")
    try:
        yield from ahead(reader, requests)
    finally:
        # Not waited for: after a refused chunk the read ends when the call does.
        reader.shutdown(wait=False, cancel_futures=True)


def _require_model(name: str, field: str = "model") -> str:
    return convert.require_name(name, field, "MISSING_MODEL")


def _positional_rows(request: pb.PredictRequest, limit: int) -> tuple:
    """The request's rows by position as an array, and whether the answer goes back as raw bytes.

    The array is None when the request sends named rows: those are converted once
    the model, which knows the feature names, is looked up.  Refuses more than
    ``limit`` rows either way, before that.
    """
    named = request.named_inputs
    if named:
        if request.HasField("inputs"):
            raise InvalidInput(
                "set inputs or named_inputs, not both",
                reason="AMBIGUOUS_INPUTS",
                violations=[("named_inputs", "send rows either by position or by name")],
            )
        if len(named) > limit:
            refuse_rows(len(named), limit)
        return None, False
    X, raw = convert.read_matrix(request.inputs, "inputs")
    if len(X) > limit:
        refuse_rows(len(X), limit)
    return X, raw


def refuse_rows(rows: int, limit: int) -> None:
    """Refuse a message of ``rows`` rows, more than the ``limit`` this server takes."""
    raise InvalidInput(
        f"The request has {rows} rows; this server takes at most {limit} per message.",
        reason="TOO_MANY_ROWS",
        violations=[("inputs", f"send at most {limit} rows per message")],
        metadata={"rows": rows, "limit": limit},
    )


_LIVENESS_INTERVAL = 0.01
"""Seconds between two looks at whether a Train's caller is still there (each look takes a lock in grpc)."""
_DEADLINE_MARGIN = 0.1
"""Seconds: a caller gone this close to the deadline gave up at its own, which comes a little before the server's."""


class _TrainingInterrupt:
    """The ``Interrupt`` of one Train call: stops the training once the call's deadline passes,
    its caller goes away or the server starts shutting down; nothing is stored then.

    Training calls it between any two steps, so a call reads a clock and a flag,
    and asks gRPC whether the call is still active at most every ``_LIVENESS_INTERVAL`` s.
    """

    def __init__(self, context: grpc.ServicerContext, shutting_down: threading.Event, model: str) -> None:
        remaining = context.time_remaining()
        self._deadline = math.inf if remaining is None else time.monotonic() + remaining
        self._context, self._shutting_down, self._model = context, shutting_down, model
        self._next_look = 0.0
        self._stopped = False

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self._deadline:
            self._stop(DeadlineExceeded("the deadline passed before training finished; nothing was stored"))
        if self._shutting_down.is_set():
            self._stop(
                Unavailable(
                    "the server is shutting down; the training was stopped and nothing was stored",
                    reason="SHUTTING_DOWN",
                )
            )
        if now >= self._next_look:
            self._next_look = now + _LIVENESS_INTERVAL
            if not self._context.is_active():
                if self._deadline - now < _DEADLINE_MARGIN:
                    self._stop(DeadlineExceeded("the deadline passed before training finished; nothing was stored"))
                self._stop(Cancelled("the call was cancelled before training finished; nothing was stored"))

    def check_now(self) -> None:
        """Check everything, the caller's presence included, whenever it was last looked at."""
        self._next_look = 0.0
        self()

    def _stop(self, error: RegserveError) -> NoReturn:
        if not self._stopped:
            self._stopped = True
            logger.info("stopped training model %s: %s", self._model, error.message)
        raise error


def _report_trained(on_trained: Callable[[str, float], None], model: str, seconds: float) -> None:
    """Tell ``on_trained``; the version is stored, so its failure must not fail the call."""
    try:
        on_trained(model, seconds)
    except Exception:
        logger.exception("the on_trained callback failed for model %s", model)


@maps_errors("regserve.v1.RegressionService")
class RegressionServicer(pb_grpc.RegressionServiceServicer):
    """Answers RegressionService calls from the models held in a ``ModelStore``.

    A Predict request or BatchPredict message of more than ``max_rows`` rows is
    refused (INVALID_ARGUMENT ``TOO_MANY_ROWS``), like rows that cannot be read,
    before a version is chosen.  Every other Predict and BatchPredict message is
    counted in ``stats`` against the version that answered it, or failed to, and
    the rows it answered are handed to ``drift`` (``DriftMonitor.observe``).
    ``on_change`` is called after a Train stores a version, so the server can
    update its health status; then ``on_trained(model, seconds)``, with the
    seconds the Train call took until the version was stored.  An exception
    from ``on_trained`` is logged, never sent to the caller.

    A Train is refused past ``training_limits`` (RESOURCE_EXHAUSTED
    ``TRAINING_TOO_LARGE``) and stopped, storing nothing, once its deadline
    passes, its caller goes away or ``shutting_down`` is set (UNAVAILABLE
    ``SHUTTING_DOWN``).  Its rows are spooled to this process's subdirectory of
    ``spool_dir`` (default: ``regserve-spool-<uid>`` in the system's temporary
    directory), claimed on construction, when the leftovers of processes that
    are gone are removed.
    """

    def __init__(
        self,
        store: ModelStore,
        stats: ServingStats,
        on_change: Callable[[], None] = lambda: None,
        *,
        max_rows: int = 1_000_000,
        on_trained: Callable[[str, float], None] | None = None,
        training_limits: TrainingLimits = DEFAULT_LIMITS,
        spool_dir: str | os.PathLike[str] = "",
        shutting_down: threading.Event | None = None,
        drift: DriftMonitor | None = None,
    ) -> None:
        self._store = store
        self._stats = stats
        # With drift off the request path skips the hand-over altogether: a test is cheaper than a call.
        self._observe = drift.observe if drift is not None and drift.window_rows > 0 else None
        self._on_change = on_change
        self._on_trained = on_trained
        self._max_rows = max_rows
        self._training_limits = training_limits
        self._spool_dir = process_spool_dir(spool_dir or None)
        self._shutting_down = shutting_down if shutting_down is not None else threading.Event()

    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        started = time.perf_counter()
        model = request.model
        if not model:
            _require_model(model)
        X, raw = _positional_rows(request, self._max_rows)
        served, arm = self._store.route(model, request.version, request.routing_key)
        stats = self._stats.track(served.name, served.version, arm)
        try:
            if X is None:
                X = convert.named_rows_to_ndarray(request.named_inputs, served.feature_index, "named_inputs")
            result = predict(served.estimator, X)
            response = pb.PredictResponse(
                model=served.name, version=served.version, predictions=convert.ndarray_to_vector(result.values, raw)
            )
            if result.labels is not None:
                convert.add_class_fields(response, result, raw, served.classes)
            if request.interval_level:
                statistics_messages.add_intervals(
                    response, served.estimator, X, request.interval_level, raw, served.metadata
                )
        except BaseException:
            stats.record(time.perf_counter() - started, 0, failed=True)
            raise
        stats.record(time.perf_counter() - started, len(X))
        if self._observe is not None:
            self._observe(served, X, result.values)
        return response

    def BatchPredict(
        self, request_iterator: Iterator[pb.BatchPredictRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.BatchPredictResponse]:
        served, arm = None, ""
        offset, level = 0, 0.0
        for index, request in enumerate(request_iterator):
            started = time.perf_counter()
            X, raw = convert.read_matrix(request.inputs, "inputs")
            if len(X) > self._max_rows:
                refuse_rows(len(X), self._max_rows)
            if served is None:
                served, arm = self._store.route(_require_model(request.model), request.version, request.routing_key)
                level = request.interval_level
            elif request.model and request.model != served.name:
                raise InvalidInput(
                    f"chunk {index} names model {shown(request.model)}, but the stream is for {served.name!r}",
                    reason="MODEL_CHANGED_IN_STREAM",
                    violations=[("model", "must be empty or the same in every message of a stream")],
                    metadata={"chunk": index},
                )
            stats = self._stats.track(served.name, served.version, arm)
            try:
                result = predict(served.estimator, X)
                response = pb.BatchPredictResponse(
                    model=served.name,
                    version=served.version,
                    chunk_index=index,
                    row_offset=offset,
                    predictions=convert.ndarray_to_vector(result.values, raw),
                )
                if result.labels is not None:
                    convert.add_class_fields(response, result, raw, served.classes if index == 0 else ())
                if level:
                    statistics_messages.add_intervals(response, served.estimator, X, level, raw, served.metadata)
            except BaseException:
                stats.record(time.perf_counter() - started, 0, failed=True)
                raise
            stats.record(time.perf_counter() - started, X.shape[0])
            if self._observe is not None:
                self._observe(served, X, result.values)
            offset += X.shape[0]
            yield response

    def Train(self, request_iterator: Iterator[pb.TrainRequest], context: grpc.ServicerContext) -> pb.TrainResponse:
        started = time.perf_counter()
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("payload") != "spec":
            raise InvalidInput(
                "the first message of a Train stream must carry the spec",
                reason="MISSING_SPEC",
                violations=[("spec", "send a TrainSpec before any chunk")],
            )
        model = _require_model(first.spec.model, "spec.model")
        spec = convert.spec_from_proto(first.spec)
        source = check_length(first.spec.source, "spec.source", SOURCE_MAX)
        self._store.check_model_name(model)
        interrupt = _TrainingInterrupt(context, self._shutting_down, model)
        with Trainer(spec, spool_dir=self._spool_dir, limits=self._training_limits, interrupt=interrupt) as trainer:
            for index, request in enumerate(_read_ahead(request_iterator), start=1):
                if request.WhichOneof("payload") != "chunk":
                    raise InvalidInput(
                        f"message {index} of the Train stream repeats the spec",
                        reason="UNEXPECTED_SPEC",
                        violations=[("spec", "only the first message carries the spec")],
                        metadata={"message": index},
                    )
                trainer.add_chunk(*convert.train_chunk(request.chunk, spec.kind == "logistic"))
            result = trainer.finish()
        interrupt.check_now()
        metadata = {**result.metadata, "regserve_version": __version__, **({"source": source} if source else {})}
        promote = first.spec.promote if first.spec.HasField("promote") else True
        stored, promoted, reason = self._store.add_version(
            model,
            result.model,
            metadata,
            promote=promote,
            gate=first.spec.promotion_gate,
            sample=result.validation_sample,
            drift=result.drift_reference,
        )
        self._on_change()
        if self._on_trained is not None:
            _report_trained(self._on_trained, model, time.perf_counter() - started)
        role = self._store.serving_state(model, stored.version)
        return pb.TrainResponse(
            model_version=registry_messages.model_version_to_proto(stored, result.model, role),
            promoted=promoted,
            promotion_reason=reason,
        )

    def ModelInfo(self, request: pb.ModelInfoRequest, context: grpc.ServicerContext) -> pb.ModelInfoResponse:
        served = self._store.describe(_require_model(request.model), request.version)
        role = self._store.serving_state(served.name, served.version)
        described = registry_messages.model_version_to_proto(served.metadata, served.estimator, role)
        described.statistics.CopyFrom(
            statistics_messages.statistics_to_proto(served.estimator, served.metadata, request.confidence_level)
        )
        return pb.ModelInfoResponse(model_version=described)
