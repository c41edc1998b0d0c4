"""Per-version serving statistics: request and error counts, rows, latency.

``ServingStats.track(model, version)`` returns the ``VersionStats`` of one
version (created on first use); its ``record`` is called once per answered
call on the request path, so it only appends the call to a queue (atomic under
the GIL, no lock).  The queue is folded into the counters and the ring of recent
latencies when someone reads them (``summary``, the counters, a metrics
scrape), or on the request path once ``WINDOW`` calls wait.  Percentiles are
computed only when someone asks (``summary``).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["ServingStats", "VersionStats", "VersionSummary"]

WINDOW = 2048
"""How many recent latencies each version keeps for its percentiles."""


@dataclass(frozen=True)
class VersionSummary:
    """What ``GetStatus`` reports for one version; latencies in milliseconds."""

    requests: int
    errors: int
    rows: int
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p99_ms: float


class VersionStats:
    """Counters and a ring of recent latencies (seconds) for one model version."""

    __slots__ = ("_errors", "_lock", "_pending", "_recent", "_requests", "_rows", "_total_seconds")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: collections.deque = collections.deque()
        self._recent = [0.0] * WINDOW  # a list: a float is stored in it without boxing a NumPy scalar
        self._requests = 0
        self._errors = 0
        self._rows = 0
        self._total_seconds = 0.0

    def record(self, seconds: float, rows: int, failed: bool = False) -> None:
        """Count one call that took ``seconds`` and answered ``rows`` rows."""
        pending = self._pending
        pending.append((seconds, rows, failed))
        if len(pending) >= WINDOW:
            self._fold()

    def _fold(self) -> None:
        """Add the queued calls to the counters, in the order they were recorded."""
        with self._lock:
            pending, recent = self._pending, self._recent
            requests, errors, rows, total = self._requests, self._errors, self._rows, self._total_seconds
            try:
                while True:  # popleft is atomic: a call recorded meanwhile is taken now or next time
                    seconds, answered, failed = pending.popleft()
                    recent[requests % WINDOW] = seconds
                    requests += 1
                    errors += failed
                    rows += answered
                    total += seconds
            except IndexError:
                pass
            self._requests, self._errors, self._rows, self._total_seconds = requests, errors, rows, total

    @property
    def requests(self) -> int:
        """Calls counted so far."""
        self._fold()
        return self._requests

    @property
    def errors(self) -> int:
        """Calls that failed after their version was chosen."""
        self._fold()
        return self._errors

    @property
    def rows(self) -> int:
        """Rows answered."""
        self._fold()
        return self._rows

    def summary(self) -> VersionSummary:
        self._fold()
        with self._lock:
            count = self._requests
            recent = np.array(self._recent[: min(count, WINDOW)])
            mean = self._total_seconds / count if count else 0.0
            errors, rows = self._errors, self._rows
        p50, p99 = np.percentile(recent, [50, 99]) if recent.size else (0.0, 0.0)
        return VersionSummary(count, errors, rows, mean * 1e3, float(p50) * 1e3, float(p99) * 1e3)


class ServingStats:
    """The ``VersionStats`` of every (model, version, traffic arm) this process has served.

    The arm says how the version was chosen: ``"serving"``, ``"explicit"`` (named
    by the request) or the version itself when a traffic split picked it.
    """

    def __init__(self) -> None:
        self._by_arm: dict[tuple[str, str, str], VersionStats] = {}
        self._lock = threading.Lock()

    def track(self, model: str, version: str, arm: str = "serving") -> VersionStats:
        """The statistics of one version reached through one arm, created on first use."""
        stats = self._by_arm.get((model, version, arm))
        if stats is None:
            with self._lock:
                stats = self._by_arm.setdefault((model, version, arm), VersionStats())
        return stats

    def items(self) -> list[tuple[tuple[str, str, str], VersionStats]]:
        """Every ((model, version, arm), stats) pair, for exporters."""
        return list(self._by_arm.items())

    def summary(self, model: str, version: str) -> VersionSummary:
        """The summary of one version over all its arms; zeros when it has not served yet."""
        parts = [stats.summary() for (m, v, _), stats in self.items() if (m, v) == (model, version)]
        if not parts:
            return VersionSummary(0, 0, 0, 0.0, 0.0, 0.0)
        if len(parts) == 1:
            return parts[0]
        requests = sum(p.requests for p in parts)
        # Percentiles of different arms cannot be merged exactly; the busiest arm's stand in.
        busiest = max(parts, key=lambda p: p.requests)
        mean = sum(p.latency_mean_ms * p.requests for p in parts) / requests if requests else 0.0
        return VersionSummary(
            requests,
            sum(p.errors for p in parts),
            sum(p.rows for p in parts),
            mean,
            busiest.latency_p50_ms,
            busiest.latency_p99_ms,
        )
