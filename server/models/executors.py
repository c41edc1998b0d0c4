"""Submitting work to a thread pool that goes on while the interpreter exits."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

__all__ = ["submit"]


def submit(
    executor: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], *args: Any
) -> concurrent.futures.Future:
    """``fn(*args)`` on ``executor``, or run here once the interpreter is exiting.

    Executors take no new work once the interpreter has begun to exit, while a Train
    still running in a server draining to its end goes on until its interruption is
    next checked: it must get there, not stop at a refused submit.  (An executor shut
    down by its owner is refused the same way, and its work is run here too.)
    """
    try:
        return executor.submit(fn, *args)
    except RuntimeError:  # "cannot schedule new futures after shutdown": its workers saw the exit begin
        done: concurrent.futures.Future = concurrent.futures.Future()
        try:
            done.set_result(fn(*args))
        except Exception as error:
            done.set_exception(error)
        return done
