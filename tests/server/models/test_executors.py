"""Work submitted to a pool that no longer takes any is run in the caller's thread."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from regserve.server.models.executors import submit


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
