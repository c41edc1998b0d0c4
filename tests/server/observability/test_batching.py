"""The batch worker: items handed over in order, from its thread or the caller's, and a handler that fails or sticks."""

from __future__ import annotations

import threading
import time

from regserve.server.observability.batching import BatchWorker


def test_a_batch_worker_hands_items_over_in_order_and_never_fails_its_caller(caplog):
    batches: list[tuple[str, list]] = []

    def handle(items: list) -> None:
        batches.append((threading.current_thread().name, items))
        if "boom" in items:
            raise RuntimeError("the handler broke")

    worker = BatchWorker(handle, name="test-batches", failure="test items lost", interval=3600, max_pending=3)
    worker.add(1)
    worker.add(2)
    assert batches == []  # queued: the thread waits an hour
    worker.add(3)  # max_pending reached: this caller hands the batch over itself
    assert batches == [("MainThread", [1, 2, 3])]
    worker.add("boom")
    assert worker.flush() is True  # the handler raised; the caller did not
    worker.add("boom")
    worker.flush()
    assert [r.getMessage() for r in caplog.records].count("test items lost") == 1  # said once
    worker.close()
    worker.add(4)  # closed: handed over at once
    assert batches[-1] == ("MainThread", [4])


def test_a_batch_worker_flush_with_a_timeout_gives_up_on_a_stuck_handler():
    entered, release = threading.Event(), threading.Event()

    def stuck(items: list) -> None:
        entered.set()
        release.wait(10)

    worker = BatchWorker(stuck, name="test-stuck", failure="lost", interval=3600)
    worker.add(1)
    first = threading.Thread(target=worker.flush)
    first.start()
    assert entered.wait(5)
    worker.add(2)
    started = time.monotonic()
    assert worker.flush(timeout=0.2) is False  # another flush holds the handler
    assert time.monotonic() - started < 5
    release.set()
    first.join(5)
    assert worker.flush(timeout=5) is True
    worker.close()
