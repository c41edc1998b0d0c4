"""``grpc.health.v1``: grpc_health's servicer, changed so that no status change waits on a watcher.

grpc_health sends each change to every Watch stream while it holds its lock, on the
thread that made the change, and grpcio's send waits until the message has left.  A
Watch stream that closes meanwhile runs its close callback on grpcio's polling
thread, which then waits for that lock: the send can never complete, and the whole
server stops (seen when the drain turned health NOT_SERVING with watchers open).  A
watcher that stops reading would likewise block whoever changed the status, such as
the registry's polling thread.  Here a change updates the status under the lock and
hands the sends to a thread of their own.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2

__all__ = ["HealthServicer"]

logger = logging.getLogger(__name__)

_Send = Callable[[health_pb2.HealthCheckResponse | None], object]


class HealthServicer(health.HealthServicer):
    """Check and Watch for the server and each service; status changes never block their caller."""

    # grpc_health's own state, which its type stubs leave out.
    _lock: threading.RLock
    _server_status: dict[str, int]
    _send_response_callbacks: dict[str, set[_Send]]
    _gracefully_shutting_down: bool

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._outbox: queue.SimpleQueue[tuple[_Send, health_pb2.HealthCheckResponse | None]] = queue.SimpleQueue()
        threading.Thread(target=self._deliver, name="regserve-health-watch", daemon=True).start()

    def set(self, service: str, status: int) -> None:
        """Set the status of ``service`` and queue the change for its watchers."""
        with self._lock:
            if self._gracefully_shutting_down:
                return
            self._server_status[service] = status
            watchers = tuple(self._send_response_callbacks.get(service, ()))
        response = health_pb2.HealthCheckResponse(status=status)
        for send in watchers:
            self._outbox.put((send, response))

    def end_watches(self) -> None:
        """End every open Watch stream (status OK) after the changes queued for it.

        A server whose listener has closed waits for its calls in flight; watchers
        never end by themselves, and would hold it for the whole grace period.
        """
        with self._lock:
            watchers = [send for sends in self._send_response_callbacks.values() for send in sends]
        for send in watchers:
            self._outbox.put((send, None))  # None ends the stream, in grpcio and in grpc_health alike

    def _deliver(self) -> None:
        while True:
            send, response = self._outbox.get()
            try:
                send(response)
            except Exception:  # a watcher that went away meanwhile: nothing to tell it
                logger.debug("a health watcher could not be sent a status change", exc_info=True)
