"""Training's helper threads: a second lane for a pass over the rows, and reading ahead.

Work is submitted through ``submit``, which goes on while the interpreter exits.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["SECOND_LANE", "ahead", "side_by_side", "submit"]

T = TypeVar("T")

SECOND_LANE = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="regserve-pass")
"""The thread that takes a share of a pass over the rows (Newton's passes, training's scoring
pass): NumPy and BLAS release the GIL while they compute."""

_END = object()


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


def side_by_side(here: Callable[[], None], there: Callable[[], None] | None) -> None:
    """Run ``there`` (if any) on ``SECOND_LANE`` while ``here`` runs in this thread; return when both have.

    Both are waited for; ``here``'s exception is raised first, then ``there``'s.
    """
    other = submit(SECOND_LANE, there) if there is not None else None
    try:
        here()
    finally:
        if other is not None:
            other.exception()  # waited for, without raising over this thread's own exception
    if other is not None:
        other.result()


def ahead(executor: concurrent.futures.ThreadPoolExecutor, items: Iterator[T]) -> Iterator[T]:
    """The items of ``items``, each next one taken on ``executor`` while the caller uses the one before.

    At most one item waits beyond the one in use; a caller that stops early leaves at most
    the item being taken, which is dropped.
    """
    pending = submit(executor, next, items, _END)
    try:
        while (item := pending.result()) is not _END:
            pending = submit(executor, next, items, _END)
            yield item
    finally:
        pending.cancel()
