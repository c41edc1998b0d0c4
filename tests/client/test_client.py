"""The client library: typed exceptions, deadlines, context manager, against a real server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import grpc
import numpy as np
import pytest

from regserve.client import DeadlineExceeded, InvalidArgument, NotFound, RegressionClient, RegserveError, Unavailable


def test_exceptions_carry_code_reason_and_violations(client, linear_data):
    client.train("house", *linear_data)
    with pytest.raises(InvalidArgument) as info:
        client.predict("house", np.ones((1, 3)))
    error = info.value
    assert isinstance(error, RegserveError)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "FEATURE_COUNT_MISMATCH"
    assert error.field_violations[0][0] == "inputs"
    assert isinstance(error.__cause__, grpc.RpcError)


def test_not_found_is_typed(client):
    with pytest.raises(NotFound):
        client.model_info("nothing")


def test_an_unreachable_server_is_unavailable():
    with RegressionClient("127.0.0.1:1", timeout=2) as client:
        with pytest.raises((Unavailable, DeadlineExceeded)):
            client.predict("m", np.ones((1, 1)))


def test_a_tiny_deadline_is_exceeded(client, linear_data):
    client.train("house", *linear_data)
    client.timeout = 1e-6
    with pytest.raises(DeadlineExceeded):
        client.batch_predict("house", np.ones((200_000, 5)))


def test_context_manager_closes_the_channel(target):
    with RegressionClient(target) as client:
        pass
    with pytest.raises(ValueError):
        client.predict("m", np.ones((1, 1)))


def test_one_dimensional_input_is_one_row(client, linear_data):
    X, y = linear_data
    client.train("house", X, y)
    np.testing.assert_array_equal(client.predict("house", X[0]).values, client.predict("house", X[:1]).values)


def test_a_failing_chunk_source_raises_its_own_error_and_stores_nothing(client, linear_data):
    X, y = linear_data

    def chunks():
        yield X[:200], y[:200]
        raise ValueError("the source broke")

    with pytest.raises(ValueError, match="the source broke"):
        client.train("broken", chunks=chunks())
    with pytest.raises(TypeError):
        client.train("broken", chunks=5)
    with pytest.raises(NotFound):
        client.model_info("broken")


def test_a_refused_call_waits_for_the_read_ahead_to_finish_its_chunk(client, linear_data):
    # A process that exits on the error must not leave the thread inside a reader's native code.
    X, y = linear_data

    def chunks():
        for start in range(0, len(X), 100):
            time.sleep(0.2)  # a slow reader: the server refuses the spec before the first chunk is made
            yield X[start : start + 100], y[start : start + 100]

    before = set(threading.enumerate())
    with pytest.raises(InvalidArgument):
        client.train("refused", chunks=chunks(), cv_folds=1)
    assert not [t for t in threading.enumerate() if t.name == "regserve-request" and t.is_alive()]

    def callers_threads():  # the server in this process starts threads of its own, all named regserve-
        return [t.name for t in set(threading.enumerate()) - before if not t.name.startswith("regserve-")]

    # grpcio's own request thread, which waited on the read-ahead, is handed the end and ends too.
    deadline = time.monotonic() + 5
    while callers_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not callers_threads()


def test_answers_left_unread_end_the_call_and_the_reading_of_chunks(client, linear_data):
    # ``regserve predict ... | head``: the pipe closes, the caller stops; no thread may stay in its reader.
    X, y = linear_data
    client.train("house", X, y)
    reading = threading.Event()

    def chunks():
        for start in range(0, len(X), 50):
            reading.set()
            time.sleep(0.2)  # a slow reader: the thread is inside it when the caller stops
            yield X[start : start + 50]

    answers = client.iter_batch_predict("house", chunks())
    first = next(answers)
    assert first.values.shape == (50,) and reading.wait(5)
    answers.close()
    assert not [t for t in threading.enumerate() if t.name == "regserve-request" and t.is_alive()]


def test_a_stalled_chunk_source_does_not_hold_the_process_open(target, tmp_path):
    # The chunks are read ahead in a thread; one still waiting on a source after the call has
    # ended (here by its deadline) must not keep the interpreter from exiting.
    script = tmp_path / "stalled.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import threading
            import numpy as np
            from regserve.client import RegressionClient, RegserveError

            def chunks():
                yield np.ones((10, 2)), np.arange(10.0)
                threading.Event().wait()  # never set

            with RegressionClient({target!r}, timeout=1.0) as client:
                try:
                    client.train("stalled", chunks=chunks())
                except RegserveError as error:
                    print(type(error).__name__)
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "DeadlineExceeded"
