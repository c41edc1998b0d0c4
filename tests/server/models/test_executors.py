"""Work submitted to a pool that no longer takes any is run in the caller's thread."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from regserve.server.models.executors import ahead, side_by_side, submit


def test_a_working_pool_runs_the_work_on_its_thread():
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:
        assert submit(pool, lambda: threading.current_thread().name).result().startswith("pool")


def test_a_pool_that_takes_no_more_work_runs_it_here_result_or_exception():
    pool = concurrent.futures.ThreadPoolExecutor(1)
    pool.shutdown()
    assert submit(pool, lambda: threading.current_thread().name).result() == threading.current_thread().name

    def broken():
        raise ValueError("the work failed")

    with pytest.raises(ValueError, match="the work failed"):
        submit(pool, broken).result()


def test_side_by_side_runs_both_and_raises_this_threads_error_first():
    ran: list[str] = []
    side_by_side(lambda: ran.append("here"), lambda: ran.append("there"))
    assert sorted(ran) == ["here", "there"]

    def fails(message):
        def run():
            raise ValueError(message)

        return run

    with pytest.raises(ValueError, match="here"):
        side_by_side(fails("here"), fails("there"))
    with pytest.raises(ValueError, match="there"):
        side_by_side(lambda: None, fails("there"))


def test_ahead_gives_every_item_in_order_taken_on_the_pool():
    taken_on: list[str] = []

    def items():
        for i in range(5):
            taken_on.append(threading.current_thread().name)
            yield i

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ahead") as pool:
        assert list(ahead(pool, items())) == [0, 1, 2, 3, 4]
        assert all(name.startswith("ahead") for name in taken_on)
        # A caller that stops early takes at most one item more than it used.
        counted = iter(range(100))
        for item in ahead(pool, counted):
            if item == 2:
                break
        assert next(counted) <= 4
