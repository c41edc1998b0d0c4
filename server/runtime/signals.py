"""How a server process learns it must stop: SIGTERM and SIGINT, or its parent going away."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

__all__ = ["exit_with_parent", "stop_on_signals"]

logger = logging.getLogger(__name__)


def stop_on_signals(action: str) -> threading.Event:
    """An event that SIGTERM and SIGINT set, each logged as received with ``action`` said next."""
    stopping = threading.Event()

    def _on_signal(signum, frame):
        logger.info("received %s; %s", signal.Signals(signum).name, action)
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return stopping


def exit_with_parent(parent_pid: int) -> None:
    """Stop this process (SIGTERM to itself) once its parent, ``parent_pid``, is gone, even if it was killed."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="regserve-parent-watch", daemon=True).start()
