"""How a server process learns it must stop: SIGTERM and SIGINT, or its parent going away."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

__all__ = ["StopRequests", "exit_with_parent", "stop_on_signals"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StopRequests:
    """What the signals asked for: the first SIGTERM or SIGINT a drain, any later one a stop at once."""

    drain: threading.Event = field(default_factory=threading.Event)
    at_once: threading.Event = field(default_factory=threading.Event)


def stop_on_signals(action: str) -> StopRequests:
    """Requests that SIGTERM and SIGINT make, each logged as received with ``action`` said after the first."""
    requests = StopRequests()

    def _on_signal(signum, frame):
        name = signal.Signals(signum).name
        if requests.drain.is_set():
            logger.warning("received %s again; stopping at once, cancelling the calls in flight", name)
            requests.at_once.set()
        else:
            logger.info("received %s; %s", name, action)
            requests.drain.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return requests


def exit_with_parent(parent_pid: int) -> None:
    """Stop this process (SIGTERM to itself) once its parent, ``parent_pid``, is gone, even if it was killed."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="regserve-parent-watch", daemon=True).start()
