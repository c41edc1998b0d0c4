"""One inference request answered over the store's routing, as regserve.v1 Predict answers it.

The gRPC servicer and the REST routes call ``infer`` after decoding their tensors:
the same routing (frozen versions, traffic splits), the same ``predict`` (finiteness
checks included) and the same serving statistics as Predict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TypeVar

import numpy as np

from regserve.server.errors import InvalidInput
from regserve.server.inference.tensors import Tensor, output_tensors, parse_version, rows_from_inputs
from regserve.server.models.prediction import Prediction, predict
from regserve.server.observability.drift import DriftMonitor
from regserve.server.observability.serving_stats import ServingStats
from regserve.server.registry.routes import ServedModel
from regserve.server.registry.store import ModelStore
from regserve.server.rpc.regression_servicer import refuse_rows

__all__ = ["ROUTING_KEY", "SERVER_EXTENSIONS", "SERVER_NAME", "InferResult", "infer", "infer_matrix"]

ROUTING_KEY = "routing_key"
"""The request parameter that picks a traffic split's arm, as regserve.v1's ``routing_key`` does."""
SERVER_NAME = "regserve"
"""The ``name`` ServerMetadata reports."""
SERVER_EXTENSIONS: tuple[str, ...] = ("classification", "model_repository", "binary_tensor_data")
"""The protocol extensions ServerMetadata reports (Triton's names): a classifier's top classes for an output's
``classification`` parameter, the repository over gRPC and REST, and binary tensor data after the JSON of REST
bodies (``Inference-Header-Content-Length``)."""

_FP64 = np.dtype(np.float64)
_Reply = TypeVar("_Reply")


class InferResult(NamedTuple):
    """The version that answered and its output tensors."""

    model: ServedModel
    outputs: list[Tensor]


def infer(
    store: ModelStore,
    stats: ServingStats,
    model: str,
    version: str,
    inputs: Sequence[Tensor],
    requested: set[str] | None = None,
    classification: Mapping[str, int] | None = None,
    *,
    routing_key: str = "",
    max_rows: int = 1_000_000,
    drift: DriftMonitor | None = None,
) -> InferResult:
    """Answer ``inputs`` with ``model`` at ``version`` (``3``, ``v3``, or empty for the serving one or a split's arm).

    ``requested`` and ``classification`` choose the outputs, as ``output_tensors`` reads them.

    Refuses more than ``max_rows`` rows (TOO_MANY_ROWS), as Predict does, and counts the
    request in ``stats`` against the version that answered it, or failed to; the rows it
    answered go to ``drift`` when given.
    """
    started = time.perf_counter()
    if not model:
        raise InvalidInput(
            "model_name is required", reason="MISSING_MODEL", violations=[("model_name", "give the model_name")]
        )
    served, arm = store.route(model, parse_version(version), routing_key)
    tracked = stats.track(served.name, served.version, arm)
    try:
        # The stored names, when there is one per column (what ``feature_index`` holds), without a copy.
        names = served.metadata.feature_names if served.feature_index else ()
        X = rows_from_inputs(inputs, names, served.estimator.n_features_in_)
        if len(X) > max_rows:
            refuse_rows(len(X), max_rows)
        prediction = predict(served.estimator, X)
        outputs = output_tensors(served, prediction, requested, classification)
    except BaseException:
        tracked.record(time.perf_counter() - started, 0, failed=True)
        raise
    tracked.record(time.perf_counter() - started, len(X))
    if drift is not None:
        drift.observe(served, X, prediction.values)
    return InferResult(served, outputs)


def infer_matrix(
    store: ModelStore,
    stats: ServingStats,
    model: str,
    version: str,
    X: np.ndarray,
    answer: Callable[[ServedModel, Prediction], _Reply],
    *,
    routing_key: str = "",
    max_rows: int = 1_000_000,
    drift: DriftMonitor | None = None,
) -> _Reply | None:
    """Answer the rows ``X`` (2-D, any float dtype) as ``infer`` answers one input of their shape, in fewer steps.

    ``model`` is not empty.  ``answer(served, prediction)`` makes the reply, counted in
    ``stats`` and ``drift`` as ``infer`` counts it.  None, with nothing counted, when the version that
    answers takes another number of features than ``X`` has: ``infer`` then reads the
    request as any other, and says what is wrong with it.
    """
    started = time.perf_counter()
    served, arm = store.route(model, parse_version(version), routing_key)
    if X.shape[1] != served.estimator.n_features_in_:
        return None
    tracked = stats.track(served.name, served.version, arm)
    try:
        if len(X) > max_rows:
            refuse_rows(len(X), max_rows)
        if X.dtype != _FP64:
            X = X.astype(np.float64)
        prediction = predict(served.estimator, X)
        reply = answer(served, prediction)
    except BaseException:
        tracked.record(time.perf_counter() - started, 0, failed=True)
        raise
    tracked.record(time.perf_counter() - started, len(X))
    if drift is not None:
        drift.observe(served, X, prediction.values)
    return reply
