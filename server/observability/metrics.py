"""Prometheus metrics of one server, in a registry of its own.

Every ``Application`` owns a ``Metrics`` with its own ``CollectorRegistry`` (never
prometheus-client's global one), so several servers can run in one process.  Per-call
metrics are tallied by the edge (``regserve.server.edge.edge``) in batches off the
request path, into a ``CallTally``, and brought up to date before every scrape;
per-version prediction counts are read from ``ServingStats`` only when Prometheus
scrapes, so the prediction path pays nothing for them.

The same tally also gives the series go-grpc-prometheus and py-grpc-prometheus export
(``grpc_server_started_total``, ``grpc_server_handled_total``, ``grpc_server_msg_received_total``,
``grpc_server_msg_sent_total``, ``grpc_server_handling_seconds``), which stock gRPC dashboards
and alerts read: they are derived at scrape time from counts the edge keeps anyway, so a
call pays nothing more for them.  The registry also holds prometheus-client's process and
Python collectors (``process_*``, ``python_*``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from regserve.server.observability.serving_stats import ServingStats
from regserve.server.registry.events import RegistryEvent

__all__ = ["GRPC_CODES", "CallTally", "GrpcMethod", "Metrics", "start_metrics_server"]

# Every bound of prometheus-client's and Go's default buckets (0.005 ... 10) is here too, so the
# ``le`` values a stock dashboard names exist in grpc_server_handling_seconds as well.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

GRPC_CODES = {
    "OK": "OK",
    "CANCELLED": "Canceled",
    "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument",
    "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound",
    "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied",
    "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition",
    "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange",
    "UNIMPLEMENTED": "Unimplemented",
    "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable",
    "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}
"""grpc_code label values by status code name: Go's spelling (``codes.Code.String()``), which
go-grpc-prometheus writes and the common gRPC alerts match (``grpc_code=~"Unavailable|..."``)."""


@dataclass(frozen=True)
class GrpcMethod:
    """One method's labels in the go-grpc-prometheus series, and where its message counts come from.

    ``received`` and ``sent`` count a stream's messages; None for the side that carries one
    message: a request is then counted as the call starts, an answer as the call ends OK.
    """

    grpc_type: str
    """``unary``, ``client_stream``, ``server_stream`` or ``bidi_stream``."""
    started: Callable[[], int]
    received: Callable[[], int] | None = None
    sent: Callable[[], int] | None = None


_TRAINING_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class _ServingStatsCollector(Collector):
    """Reads the per-version counters of ``ServingStats`` at scrape time."""

    def __init__(self, stats: ServingStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        # The arm is "serving", "explicit" (the request named the version) or, under a
        # traffic split, the version the split chose.
        labels = ["model", "version", "arm"]
        calls = CounterMetricFamily(
            "regserve_predictions", "Predict calls and BatchPredict chunks answered, by version and arm.", labels=labels
        )
        rows = CounterMetricFamily("regserve_predicted_rows", "Rows predicted, by version and arm.", labels=labels)
        failed = CounterMetricFamily(
            "regserve_prediction_errors", "Predictions that failed after their version was chosen.", labels=labels
        )
        for key, version_stats in self._stats.items():
            calls.add_metric(list(key), version_stats.requests)
            rows.add_metric(list(key), version_stats.rows)
            failed.add_metric(list(key), version_stats.errors)
        yield calls
        yield rows
        yield failed


class CallTally(Collector):
    """``regserve_requests_total`` and ``regserve_request_duration_seconds``, added to a batch at a time.

    prometheus-client's ``Counter`` and ``Histogram`` take a lock and, for the
    histogram, search the buckets on every update.  The edge's recorder hands over
    a whole batch of finished calls instead, which costs one dictionary update per
    (method, code) and one NumPy bucket count per method.
    Series are labelled (service, method, code) and (service, method); a method's
    histogram exists, at zero, from ``add_method`` on.  A method added with a ``GrpcMethod``
    also has the go-grpc-prometheus series, every code of grpc_server_handled_total at zero
    from the start, as go-grpc-prometheus's ``InitializeMetrics`` gives them.
    """

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = np.array(sorted(buckets), dtype=np.float64)
        self._le = [floatToGoString(bound) for bound in self._bounds.tolist()] + ["+Inf"]
        self._lock = threading.Lock()
        self._codes: dict[tuple[str, str, str], int] = {}
        # (service, method) -> (count per bucket, not cumulative, +Inf last; sum of durations)
        self._durations: dict[tuple[str, str], tuple[np.ndarray, float]] = {}
        self._grpc: dict[tuple[str, str], GrpcMethod] = {}

    def add_method(self, service: str, method: str, grpc: GrpcMethod | None = None) -> None:
        with self._lock:
            self._durations.setdefault((service, method), (np.zeros(len(self._le), dtype=np.int64), 0.0))
            if grpc is not None:
                self._grpc[(service, method)] = grpc

    def add(
        self, codes: Mapping[tuple[str, str, str], int], durations: Mapping[tuple[str, str], Sequence[float]]
    ) -> None:
        """Count ``codes`` (calls by service, method and code); observe ``durations`` (by service and method)."""
        binned = {}
        for method_key, seconds in durations.items():
            values = np.asarray(seconds, dtype=np.float64)
            # A duration equal to a bound belongs to that bound's bucket ("le"): side="left".
            counts = np.bincount(np.searchsorted(self._bounds, values, side="left"), minlength=len(self._le))
            binned[method_key] = (counts, float(values.sum()))
        with self._lock:
            for code_key, count in codes.items():
                self._codes[code_key] = self._codes.get(code_key, 0) + count
            for method_key, (counts, total) in binned.items():
                before, before_total = self._durations.get(method_key, (0, 0.0))
                # A new array, not an update in place: ``collect`` reads its copy without the lock.
                self._durations[method_key] = (before + counts, before_total + total)

    def collect(self) -> Iterator:
        with self._lock:
            codes = list(self._codes.items())
            durations = list(self._durations.items())
            grpc_methods = list(self._grpc.items())
        requests = CounterMetricFamily(
            "regserve_requests",
            "RPCs finished, by service, method and status code.",
            labels=["service", "method", "code"],
        )
        for code_labels, count in codes:
            requests.add_metric(list(code_labels), count)
        latency = HistogramMetricFamily(
            "regserve_request_duration_seconds",
            "Time from the call's arrival to its status, by service and method.",
            labels=["service", "method"],
        )
        for method_labels, (counts, total) in durations:
            latency.add_metric(list(method_labels), list(zip(self._le, np.cumsum(counts).tolist(), strict=True)), total)
        yield requests
        yield latency
        if grpc_methods:
            yield from self._grpc_families(grpc_methods, dict(codes), dict(durations))

    def _grpc_families(
        self,
        grpc_methods: list[tuple[tuple[str, str], GrpcMethod]],
        codes: Mapping[tuple[str, str, str], int],
        durations: Mapping[tuple[str, str], tuple[np.ndarray, float]],
    ) -> Iterator[Metric]:
        """The go-grpc-prometheus series, with its names, help texts and labels."""
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        started = CounterMetricFamily(
            "grpc_server_started", "Total number of RPCs started on the server.", labels=labels
        )
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=[*labels, "grpc_code"],
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received", "Total number of RPC stream messages received on the server.", labels=labels
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent", "Total number of gRPC stream messages sent by the server.", labels=labels
        )
        handling = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            labels=labels,
        )
        for (service, method), grpc in grpc_methods:
            values = [grpc.grpc_type, service, method]
            begun = grpc.started()
            started.add_metric(values, begun)
            ok = codes.get((service, method, "OK"), 0)
            for name, go_name in GRPC_CODES.items():
                handled.add_metric([*values, go_name], codes.get((service, method, name), 0))
            received.add_metric(values, grpc.received() if grpc.received is not None else begun)
            sent.add_metric(values, grpc.sent() if grpc.sent is not None else ok)
            counts, total = durations[(service, method)]
            handling.add_metric(values, list(zip(self._le, np.cumsum(counts).tolist(), strict=True)), total)
        yield started
        yield handled
        yield received
        yield sent
        yield handling


class Metrics:
    """The metrics of one server, in their own registry.

    See the README's metrics table; the edge owns the request metrics, the
    store's statistics feed the prediction metrics.
    """

    def __init__(self, stats: ServingStats | None = None) -> None:
        self.registry = _RefreshingRegistry()
        # The default registry's collectors, in this one: process_* (CPU, memory, open files), python_*.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.calls = CallTally(_LATENCY_BUCKETS)
        self.registry.register(self.calls)
        self.in_flight = Gauge(
            "regserve_requests_in_flight", "RPCs being answered now.", ["service", "method"], registry=self.registry
        )
        self.training_runs = Counter(
            "regserve_training_runs",
            "Train calls finished, by status code; model is set for the ones that stored a version.",
            ["model", "code"],
            registry=self.registry,
        )
        self.training_duration = Histogram(
            "regserve_training_duration_seconds",
            "Duration of Train calls that stored a version.",
            ["model"],
            buckets=_TRAINING_BUCKETS,
            registry=self.registry,
        )
        self.registry_events = Counter(
            "regserve_registry_events",
            "Registry changes made through this server: create, promote, rollback, freeze, unfreeze, split, delete.",
            ["model", "event"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "regserve_rate_limited", "Calls refused by the per-client rate limit.", registry=self.registry
        )
        self.streams_limited = Counter(
            "regserve_streams_limited",
            "Streams refused because their peer host had --max-streams-per-peer open (TOO_MANY_STREAMS), "
            "or ended after waiting --stream-idle-timeout on their client (STREAM_IDLE).",
            ["service", "method", "reason"],
            registry=self.registry,
        )
        self.malformed_messages = Counter(
            "regserve_malformed_messages",
            "Request messages that were not a valid encoding of their type, refused INVALID_ARGUMENT.",
            ["service", "method"],
            registry=self.registry,
        )
        if stats is not None:
            self.registry.register(_ServingStatsCollector(stats))

    def record_event(self, event: RegistryEvent) -> None:
        """Count a change to the registry (a ``ModelStore`` listener)."""
        self.registry_events.labels(event.model, event.action).inc()

    def record_training(self, model: str, seconds: float) -> None:
        """Count a Train that stored a version of ``model``, and its duration in seconds."""
        self.training_runs.labels(model, "OK").inc()
        self.training_duration.labels(model).observe(seconds)

    def before_collect(self, refresh: Callable[[], object]) -> None:
        """Call ``refresh`` before every collection (each scrape), to bring metrics recorded in batches up to date."""
        self.registry.refreshers.append(refresh)


class _RefreshingRegistry(CollectorRegistry):
    """A registry that runs its ``refreshers`` before it is collected, whole or restricted to some names."""

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self.refreshers: list[Callable[[], object]] = []

    def _refresh(self) -> None:
        for refresh in self.refreshers:
            refresh()

    def collect(self) -> Iterable[Metric]:
        self._refresh()
        return super().collect()

    def restricted_registry(self, names):
        self._refresh()
        return super().restricted_registry(names)


def start_metrics_server(metrics: Metrics, host: str, port: int) -> tuple[WSGIServer, int]:
    """Serve ``/metrics`` over HTTP on ``host:port`` (0 picks a free port); returns (server, port)."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server, server.server_port
