"""Per-version serving statistics."""

from __future__ import annotations

import numpy as np
import pytest

from regserve.server.observability.serving_stats import WINDOW, ServingStats


def test_counts_rows_errors_and_latency_percentiles():
    stats = ServingStats()
    version = stats.track("m", "v1")
    for ms in range(1, 101):
        version.record(ms / 1000, rows=2)
    version.record(0.5, rows=0, failed=True)
    summary = stats.summary("m", "v1")
    assert (summary.requests, summary.errors, summary.rows) == (101, 1, 200)
    latencies = np.r_[np.arange(1, 101), 500.0]
    assert summary.latency_p50_ms == pytest.approx(np.percentile(latencies, 50))
    assert summary.latency_p99_ms == pytest.approx(np.percentile(latencies, 99))
    assert summary.latency_mean_ms == pytest.approx(latencies.mean())


def test_percentiles_cover_only_the_recent_window():
    stats = ServingStats()
    version = stats.track("m", "v1")
    for _ in range(WINDOW):
        version.record(1.0, rows=1)
    for _ in range(WINDOW):
        version.record(0.001, rows=1)
    summary = stats.summary("m", "v1")
    assert summary.latency_p99_ms == pytest.approx(1.0)
    assert summary.latency_mean_ms == pytest.approx((1000 + 1) / 2)


def test_arms_are_kept_apart_and_summed_per_version():
    stats = ServingStats()
    stats.track("m", "v2", "serving").record(0.002, rows=3)
    stats.track("m", "v2", "v2").record(0.004, rows=5)
    stats.track("m", "v1", "explicit").record(0.001, rows=1, failed=True)
    assert {key for key, _ in stats.items()} == {("m", "v2", "serving"), ("m", "v2", "v2"), ("m", "v1", "explicit")}
    v2 = stats.summary("m", "v2")
    assert (v2.requests, v2.rows, v2.errors) == (2, 8, 0)
    assert v2.latency_mean_ms == pytest.approx(3.0)
    assert stats.summary("m", "v1").errors == 1
    assert stats.summary("m", "v9").requests == 0


def test_calls_recorded_from_many_threads_while_read_are_all_counted():
    import threading

    stats = ServingStats()
    version = stats.track("m", "v1")
    per_thread, threads = 5_000, 8
    done = threading.Event()

    def call() -> None:
        for i in range(per_thread):
            version.record(0.001, rows=2, failed=i % 10 == 0)

    def read() -> None:
        while not done.is_set():
            stats.summary("m", "v1")

    reader = threading.Thread(target=read)
    reader.start()
    workers = [threading.Thread(target=call) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    reader.join()
    summary = stats.summary("m", "v1")
    calls = per_thread * threads
    assert (summary.requests, summary.rows, summary.errors) == (calls, 2 * calls, calls // 10)
    assert (version.requests, version.rows, version.errors) == (calls, 2 * calls, calls // 10)
    assert summary.latency_mean_ms == pytest.approx(1.0)
