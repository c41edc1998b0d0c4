"""Train reads each next chunk while the trainer absorbs the one before; the reading thread ends with the call."""

import threading
import time

import numpy as np
import pytest

from regserve.client import InvalidArgument


def _receivers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("regserve-receive")]


def _wait_for(condition, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_many_chunks_train_as_one(client, linear_data):
    X, y = linear_data
    whole = client.train("whole", X, y, solver="closed_form")
    chunks = [(X[i : i + 37], y[i : i + 37]) for i in range(0, len(X), 37)]
    chunked = client.train("chunked", chunks=iter(chunks), solver="closed_form")
    assert np.allclose(chunked.model_version.intercepts, whole.model_version.intercepts, rtol=1e-12)
    assert _wait_for(lambda: not _receivers())


def test_a_refused_chunk_leaves_no_reading_thread_while_the_client_holds_the_stream_open(client, linear_data):
    X, y = linear_data
    release = threading.Event()

    def chunks():
        yield X[:100], y[:100]
        yield X[100:200, :3], y[100:200]  # refused: another width
        release.wait(30)  # the server reads ahead for a third chunk that has not come
        yield X[200:], y[200:]

    try:
        with pytest.raises(InvalidArgument):
            client.train("refused", chunks=chunks(), solver="closed_form")
    finally:
        release.set()
    assert _wait_for(lambda: not _receivers())
