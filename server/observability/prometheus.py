"""Prometheus metrics and the JSON access log of one server.

Every ``Application`` owns a ``Metrics`` with its own ``CollectorRegistry`` (never
prometheus-client's global one), so several servers can run in one process.  Per-call
metrics are tallied by the edge (``regserve.server.edge.edge``) in batches off the
request path, into a ``CallTally``, and brought up to date before every scrape;
per-version prediction counts are read from ``ServingStats`` only when Prometheus
scrapes, so the prediction path pays nothing for them.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from regserve.server.observability.serving_stats import ServingStats

__all__ = [
    "ACCESS_LOGGER",
    "AccessLogWriter",
    "BatchWorker",
    "CallTally",
    "Metrics",
    "access_writer",
    "configure_access_log",
    "start_metrics_server",
]

ACCESS_LOGGER = "regserve.access"
"""The logger that writes one JSON line per request."""
_ACCESS = logging.getLogger(ACCESS_LOGGER)

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
    histogram, search the buckets on every update: about 1 µs a call.  The edge's
    recorder hands over a whole batch of finished calls instead, which costs one
    dictionary update per (method, code) and one NumPy bucket count per method.
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
        for key, seconds in durations.items():
            values = np.asarray(seconds, dtype=np.float64)
            # A duration equal to a bound belongs to that bound's bucket ("le"): side="left".
            counts = np.bincount(np.searchsorted(self._bounds, values, side="left"), minlength=len(self._le))
            binned[key] = (counts, float(values.sum()))
        with self._lock:
            for key, count in codes.items():
                self._codes[key] = self._codes.get(key, 0) + count
            for key, (counts, total) in binned.items():
                before, before_total = self._durations.get(key, (0, 0.0))
                # A new array, not an update in place: ``collect`` reads its copy without the lock.
                self._durations[key] = (before + counts, before_total + total)

    def collect(self) -> Iterator:
        with self._lock:
            codes = list(self._codes.items())
            durations = list(self._durations.items())
        requests = CounterMetricFamily(
            "regserve_requests",
            "RPCs finished, by service, method and status code.",
            labels=["service", "method", "code"],
        )
        for labels, count in codes:
            requests.add_metric(list(labels), count)
        latency = HistogramMetricFamily(
            "regserve_request_duration_seconds",
            "Time from the call's arrival to its status, by service and method.",
            labels=["service", "method"],
        )
        for labels, (counts, total) in durations:
            latency.add_metric(list(labels), list(zip(self._le, np.cumsum(counts).tolist(), strict=True)), total)
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
        if stats is not None:
            self.registry.register(_ServingStatsCollector(stats))

    def before_collect(self, refresh: Callable[[], None]) -> None:
        """Call ``refresh`` before every collection (each scrape), to bring metrics recorded in batches up to date."""
        self.registry.refreshers.append(refresh)


class _RefreshingRegistry(CollectorRegistry):
    """A registry that runs its ``refreshers`` before it is collected, whole or restricted to some names."""

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self.refreshers: list[Callable[[], None]] = []

    def _refresh(self) -> None:
        for refresh in self.refreshers:
            refresh()

    def collect(self) -> Iterator:
        self._refresh()
        return super().collect()

    def restricted_registry(self, names):
        self._refresh()
        return super().restricted_registry(names)


def start_metrics_server(metrics: Metrics, host: str, port: int):
    """Serve ``/metrics`` over HTTP on ``host:port`` (0 picks a free port); returns (server, port)."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server, server.server_port


class BatchWorker:
    """Hands the items added on the request path to ``handle``, in batches, from a background thread.

    ``add`` only appends to a deque; every ``interval`` seconds the thread takes what
    is pending and calls ``handle(items)`` with it, in the order added.  Work done
    per call on the request path is paid for in GIL handovers and cold caches as
    much as in CPU time, so what can wait a moment is done here, in one tight loop
    per batch.  ``flush`` hands over what is pending at once, from the caller's thread.

    Once closed, or when ``max_pending`` items wait (``handle`` is not keeping up),
    ``add`` flushes itself: nothing is dropped, and a slow handler slows the calls
    down rather than filling the memory.  A ``handle`` that raises never fails the
    caller: that batch is lost, and ``failure`` is logged (once per worker).
    """

    def __init__(
        self,
        handle: Callable[[list], None],
        *,
        name: str,
        failure: str,
        interval: float = 0.1,
        max_pending: int = 100_000,
    ) -> None:
        self.interval = interval
        self.max_pending = max_pending
        self._handle = handle
        self._failure = failure
        self._pending: collections.deque = collections.deque()
        self._handling = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._failed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, item) -> None:
        pending = self._pending
        pending.append(item)
        if self._closed or len(pending) >= self.max_pending:
            self.flush()

    def add_all(self, items: list) -> None:
        """Add ``items`` and hand everything pending over now, from the caller's thread (one that batches already)."""
        self._pending.extend(items)
        self.flush()

    def flush(self, timeout: float | None = None) -> bool:
        """Hand what is pending to ``handle`` now; a failure is logged, never raised.

        With ``timeout``, give up (returning False) when another flush has held the
        handler that long, for example one stuck writing to a stream that stopped
        draining; without, wait for it.
        """
        if not self._handling.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            self._flush_pending()
        finally:
            self._handling.release()
        return True

    def _flush_pending(self) -> None:
        pending = self._pending
        items = []
        try:
            while True:  # popleft is atomic: an item added meanwhile is taken now or next time
                items.append(pending.popleft())
        except IndexError:
            pass
        if not items:
            return
        try:
            self._handle(items)
        except Exception:  # noqa: BLE001 - the request path must not break
            if not self._failed:
                self._failed = True
                logging.getLogger(__name__).exception(self._failure)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Stop the thread and hand over what is pending; later ``add`` calls flush at once."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()


class AccessLogWriter(logging.Handler):
    """Writes access-log lines to a stream in batches, from a background thread (a ``BatchWorker``).

    A finished line is queued (``write_line``, or ``emit`` for records that come
    through the logging module) and the worker joins the lines and writes them in
    pieces of at most 4 KiB (atomic on a pipe shared by workers); the edge, which
    batches its lines already, writes them at once with ``write_lines``.
    ``flush`` and ``close`` (called by ``logging.shutdown`` at exit) write what is
    pending; a process killed outright loses at most the last interval's lines.
    A stream that fails (closed pipe, closed file) never fails the call that logs.
    """

    def __init__(self, stream, interval: float = 0.1, max_pending: int = 100_000) -> None:
        super().__init__()
        self.stream = stream
        self._lines = BatchWorker(
            self._write,
            name="regserve-access-log",
            failure="the access log could not be written",
            interval=interval,
            max_pending=max_pending,
        )

    def write_line(self, line: str) -> None:
        """Queue one finished line (without its newline)."""
        self._lines.add(line)

    def write_lines(self, lines: list[str]) -> None:
        """Write finished lines now, after any still queued: for a caller that batches already."""
        self._lines.add_all(lines)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)

    def flush(self) -> None:
        self._lines.flush()

    def _write(self, lines: list[str]) -> None:
        for chunk in _chunks(lines):
            self.stream.write(chunk)
            self.stream.flush()

    def close(self) -> None:
        try:
            self._lines.close()
        finally:
            super().close()


_PIPE_BUF = 4096
"""Writes up to this size to a pipe are atomic: lines of workers sharing a stderr pipe never mix."""


def _chunks(lines: list[str]) -> Iterator[str]:
    """``lines`` joined with newlines into pieces of at most ``_PIPE_BUF`` UTF-8 bytes (a longer line alone)."""
    piece: list[str] = []
    size = 0
    for line in lines:
        length = len(line) + 1 if line.isascii() else len(line.encode("utf-8", "replace")) + 1
        if piece and size + length > _PIPE_BUF:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line + "\n")
        size += length
    if piece:
        yield "".join(piece)


_access_writer: AccessLogWriter | None = None


def access_writer() -> AccessLogWriter | None:
    """The writer installed by ``configure_access_log``, when it is the access logger's only handler.

    The edge then hands it finished lines directly, skipping the
    logging module's record building; any other logging set-up gets records.
    """
    writer = _access_writer
    if writer is None or _ACCESS.handlers != [writer]:
        return None
    return writer


class _JsonLineFormatter(logging.Formatter):
    # The access logger's messages are JSON documents already; write them as they are, one per line.
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def configure_access_log(stream=None, interval: float = 0.1) -> AccessLogWriter:
    """Write the access log as bare JSON lines to ``stream`` (stderr), apart from the text log.

    Lines are written in batches by an ``AccessLogWriter``, at most ``interval``
    seconds after their call ended.
    """
    global _access_writer
    access = logging.getLogger(ACCESS_LOGGER)
    if _access_writer is not None and _access_writer in access.handlers:
        return _access_writer
    handler = AccessLogWriter(stream or sys.stderr, interval)
    handler.setFormatter(_JsonLineFormatter())
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    _access_writer = handler
    return handler
