"""Prometheus metrics of one server, in a registry of its own.

Every ``Application`` owns a ``Metrics`` with its own ``CollectorRegistry`` (never
prometheus-client's global one), so several servers can run in one process.  Per-call
metrics are tallied by the edge (``regserve.server.edge.edge``) in batches off the
request path, into a ``CallTally``, and brought up to date before every scrape;
per-version prediction counts are read from ``ServingStats`` only when Prometheus
scrapes, so the prediction path pays nothing for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from wsgiref.simple_server import WSGIServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from regserve.server.observability.serving_stats import ServingStats
from regserve.server.registry.events import RegistryEvent

__all__ = ["CallTally", "Metrics", "start_metrics_server"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
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
    histogram exists, at zero, from ``add_method`` on.
    """

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = np.array(sorted(buckets), dtype=np.float64)
        self._le = [floatToGoString(bound) for bound in self._bounds.tolist()] + ["+Inf"]
        self._lock = threading.Lock()
        self._codes: dict[tuple[str, str, str], int] = {}
        # (service, method) -> (count per bucket, not cumulative, +Inf last; sum of durations)
        self._durations: dict[tuple[str, str], tuple[np.ndarray, float]] = {}

    def add_method(self, service: str, method: str) -> None:
        with self._lock:
            self._durations.setdefault((service, method), (np.zeros(len(self._le), dtype=np.int64), 0.0))

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


class Metrics:
    """The metrics of one server, in their own registry.

    See the README's metrics table; the edge owns the request metrics, the
    store's statistics feed the prediction metrics.
    """

    def __init__(self, stats: ServingStats | None = None) -> None:
        self.registry = _RefreshingRegistry()
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
