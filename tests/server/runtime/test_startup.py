"""Starting `regserve serve`: a listener that cannot bind ends the start cleanly, before anything is written."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from regserve.server.config import Settings
from regserve.server.runtime.application import create_server
from regserve.server.runtime.sockets import GATEWAY, GRPC, METRICS, ListenerError

ROOT = Path(__file__).resolve().parents[3]


@contextlib.contextmanager
def _taken_port() -> Iterator[int]:
    """A loopback port something else listens on, for as long as the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _serve(model_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    """`regserve serve` with the demo models on (the default), run until it exits."""
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--host", "127.0.0.1"]
    command += ["--model-dir", str(model_dir), *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


LISTENERS = {
    "grpc": (["--port", "{taken}"], GRPC),
    "gateway": (["--port", "0", "--gateway-port", "{taken}"], GATEWAY),
    "metrics": (["--port", "0", "--metrics-port", "{taken}"], METRICS),
}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("listener", sorted(LISTENERS))
def test_a_listener_that_cannot_bind_ends_the_start_with_one_line_and_writes_nothing(tmp_path, listener, workers):
    flags, name = LISTENERS[listener]
    model_dir = tmp_path / "models"
    with _taken_port() as taken:
        done = _serve(model_dir, *(flag.format(taken=taken) for flag in flags), "--workers", str(workers))
    if listener == "metrics" and workers > 1:
        name += " of worker 0"  # each worker has a metrics port of its own: --metrics-port plus its index
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"regserve: {name} cannot bind 127.0.0.1:{taken}: Address already in use"]
    assert not model_dir.exists()  # no demo models, not even the directory


def test_the_metrics_port_of_a_later_worker_is_checked_too(tmp_path):
    model_dir = tmp_path / "models"
    with _taken_port() as taken:
        done = _serve(model_dir, "--port", "0", "--metrics-port", str(taken - 1), "--workers", "2")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"regserve: {METRICS} of worker 1 cannot bind 127.0.0.1:{taken}: Address already in use"
    ]
    assert not model_dir.exists()


def test_two_listeners_given_one_port_are_refused_before_anything_binds(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model_dir = tmp_path / "models"
    done = _serve(model_dir, "--port", "0", "--gateway-port", str(port), "--metrics-port", str(port))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"regserve: {METRICS} cannot bind 127.0.0.1:{port}: {GATEWAY} is given that port too"
    ]
    assert not model_dir.exists()


def test_grpc_failing_to_bind_is_a_listener_error_with_the_kernels_reason(tmp_path):
    """The port is free when `serve` checks it and taken when grpc binds it: the error still says why."""
    with _taken_port() as taken:
        settings = Settings(host="127.0.0.1", port=taken, model_dir=tmp_path / "models", demo_models=False)
        with pytest.raises(ListenerError) as caught:
            create_server(settings)
    assert str(caught.value) == f"{GRPC} cannot bind 127.0.0.1:{taken}: Address already in use"


def test_the_metrics_endpoint_failing_to_bind_is_a_listener_error(tmp_path):
    with _taken_port() as taken:
        settings = Settings(
            host="127.0.0.1", port=0, metrics_port=taken, model_dir=tmp_path / "models", demo_models=False
        )
        app = create_server(settings)
        try:
            with pytest.raises(ListenerError) as caught:
                app.start()
        finally:
            app.release()
    assert str(caught.value) == f"{METRICS} cannot bind 127.0.0.1:{taken}: Address already in use"
