"""`regserve serve` processes and training: SIGTERM stops a runaway Train within the grace period, and the
spool file a SIGKILL leaves behind is gone after the next start."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

from regserve.client import RegressionClient, RegserveError
from regserve.server.registry.disk import ModelRegistry

ROOT = Path(__file__).resolve().parents[3]
GRACE = 2.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _serving(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A `regserve serve` process whose system temporary directory (and so spool root) is ``tmp_path``."""
    port = _free_port()
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", str(port), "--no-demo-models"]
    command += ["--model-dir", str(tmp_path / "models"), "--grace-seconds", str(GRACE), "--no-access-log"]
    command += ["--drain-seconds", "0"]  # the listener closes as SIGTERM comes; the grace period starts
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    target = f"127.0.0.1:{port}"
    try:
        with RegressionClient(target, timeout=5) as probe:
            for _ in range(400):
                try:
                    probe.health()
                    break
                except RegserveError:
                    time.sleep(0.05)
        yield server, target
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=10)


def _spool_files(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob(f"regserve-spool-{os.getuid()}/*/regserve-spool-*.f64"))


def _wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(condition())


def _runaway_train(
    target: str, tmp_path: Path, X: np.ndarray, y: np.ndarray
) -> tuple[threading.Thread, list[RegserveError]]:
    """A Train of gradient descent that never converges, in a thread, and the list its refusal lands in;
    returns once the server (spooling under ``tmp_path``) has the rows and runs gradient descent."""
    outcome: list[RegserveError] = []

    def train() -> None:
        with RegressionClient(target, timeout=60) as client:
            try:
                client.train("runaway", X, y, solver="gd", epochs=500_000, tolerance=0.0)
            except RegserveError as exc:
                outcome.append(exc)

    caller = threading.Thread(target=train)
    caller.start()
    assert _wait_for(lambda: bool(_spool_files(tmp_path)))
    time.sleep(0.3)
    return caller, outcome


def test_sigterm_stops_a_runaway_train_and_the_server_exits_within_the_grace_period(tmp_path, linear_data):
    X, y = linear_data
    with _serving(tmp_path) as (server, target):
        caller, outcome = _runaway_train(target, tmp_path, X, y)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        code = server.wait(GRACE + 10)
        took = time.monotonic() - signalled
        caller.join(10)
        _, log = server.communicate(timeout=10)
    # Bounded by the grace period, not by the 500,000 epochs (generous: the machine may be busy).
    assert code == 0 and took < GRACE + 5.0, f"exit {code} after {took:.2f} s"
    # A Train in flight runs on through the grace period like any call; at its end grpc cancels every
    # call, which the client sees as UNAVAILABLE ("Cancelling all calls"), or CANCELLED in a race.
    assert outcome and outcome[0].code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert "stopped training model runaway" in log
    assert ModelRegistry(tmp_path / "models").list_models() == []
    assert _spool_files(tmp_path) == []


def test_a_train_stopped_by_a_second_signal_says_the_server_is_shutting_down(tmp_path, linear_data):
    X, y = linear_data
    with _serving(tmp_path) as (server, target):
        caller, outcome = _runaway_train(target, tmp_path, X, y)
        server.send_signal(signal.SIGTERM)  # the grace period starts: the Train runs on
        time.sleep(0.3)
        server.send_signal(signal.SIGTERM)  # at once: every call is stopped
        assert server.wait(GRACE + 10) == 1
        caller.join(10)
    assert outcome and outcome[0].code == grpc.StatusCode.UNAVAILABLE and outcome[0].reason == "SHUTTING_DOWN"
    assert ModelRegistry(tmp_path / "models").list_models() == []


def test_the_spool_file_a_sigkill_leaves_is_gone_after_the_next_start(tmp_path):
    rng = np.random.default_rng(41)
    X, y = rng.normal(size=(1000, 4)), rng.normal(size=1000)
    release = threading.Event()

    def chunks():
        yield X, y
        release.wait(30)  # holds the stream, and the spool file, open

    with _serving(tmp_path) as (server, target), RegressionClient(target, timeout=60) as client:

        def train() -> None:
            with contextlib.suppress(RegserveError):
                client.train("killed", chunks=chunks())

        caller = threading.Thread(target=train)
        caller.start()
        try:
            # The file is made before the chunk is written to it: wait for the rows, not the name.
            rows_bytes = 1000 * 6 * 8  # [x, y, group] per row
            assert _wait_for(lambda: [p.stat().st_size for p in _spool_files(tmp_path)] == [rows_bytes])
            left = _spool_files(tmp_path)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
        finally:
            release.set()
            caller.join(10)
    assert [path.exists() for path in left] == [True]
    assert left[0].stat().st_size == rows_bytes
    with _serving(tmp_path) as (server, _):
        assert not left[0].exists() and not left[0].parent.exists()
        server.send_signal(signal.SIGTERM)
        assert server.wait(GRACE + 10) == 0
