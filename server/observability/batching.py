"""A background thread that takes work off the request path and does it in batches.

The edge hands it each finished call (counted, timed and logged a batch at a time);
the access log hands it each line to write.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

__all__ = ["BatchWorker"]


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
