"""Prometheus metrics and the JSON access log of one server.

Every ``Application`` owns a ``Metrics`` with its own ``CollectorRegistry`` (never
prometheus-client's global one), so several servers can run in one process.  Per-call
metrics are updated by the edge interceptor (``regserve.server.interceptors``);
per-version prediction counts are read from ``ServingStats`` only when Prometheus
scrapes, so the prediction path pays nothing for them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from regserve.server.stats import ServingStats

__all__ = ["ACCESS_LOGGER", "Metrics", "configure_access_log", "start_metrics_server"]

ACCESS_LOGGER = "regserve.access"
"""The logger that writes one JSON line per request."""

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


class Metrics:
    """The metrics of one server, in their own registry.

    See the README's metrics table; the interceptor owns the request metrics, the
    store's statistics feed the prediction metrics.
    """

    def __init__(self, stats: ServingStats | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "regserve_requests",
            "RPCs finished, by service, method and status code.",
            ["service", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "regserve_request_duration_seconds",
            "Time from the call's arrival to its status, by service and method.",
            ["service", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
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
        if stats is not None:
            self.registry.register(_ServingStatsCollector(stats))


def start_metrics_server(metrics: Metrics, host: str, port: int):
    """Serve ``/metrics`` over HTTP on ``host:port`` (0 picks a free port); returns (server, port)."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server, server.server_port


class _JsonLineFormatter(logging.Formatter):
    # The access logger's messages are JSON documents already; write them as they are, one per line.
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def configure_access_log(stream=None) -> None:
    """Write the access log as bare JSON lines to ``stream`` (stderr), apart from the text log."""
    access = logging.getLogger(ACCESS_LOGGER)
    if any(getattr(h, "_regserve_access", False) for h in access.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonLineFormatter())
    handler._regserve_access = True
    access.addHandler(handler)
    access.propagate = False
