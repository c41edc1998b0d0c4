"""``regserve serve --workers N``: N real server processes on one port, run as a user would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2

ROOT = Path(__file__).resolve().parents[3]
CONNECTIONS = 24


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError("no run of free ports")


def _channels(target: str) -> list[grpc.Channel]:
    # A local subchannel pool gives each channel its own TCP connection; SO_REUSEPORT
    # spreads connections, not calls, over the workers.
    return [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(CONNECTIONS)]


def _predict(channel: grpc.Channel, model: str, row: np.ndarray) -> pb.PredictResponse:
    request = pb.PredictRequest(model=model, inputs=types_pb2.Matrix(num_columns=row.size, raw=row.tobytes()))
    return pb_grpc.RegressionServiceStub(channel).Predict(request, timeout=10)


def _requests_seen(metrics_port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("regserve_requests_total{") and 'method="Predict"' in line
    )


def _children(pid: int, command: str) -> list[int]:
    """The child processes of ``pid`` running ``regserve <command>``."""
    children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [child for child in children if command in Path(f"/proc/{child}/cmdline").read_text().split("\0")]


def test_two_workers_share_the_port_follow_the_registry_and_stop_on_sigterm(tmp_path, linear_data):
    X, y = linear_data
    port, metrics, gateway = _free_ports(1), _free_ports(2), _free_ports(1)
    target = f"127.0.0.1:{port}"
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--workers", "2", "--port", str(port)]
    command += ["--model-dir", str(tmp_path / "models"), "--metrics-port", str(metrics), "--poll-interval", "0.2"]
    command += ["--gateway-port", str(gateway), "--drain-seconds", "0"]  # test_drain.py drains workers
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    channels = _channels(target)
    try:
        # The parent trains the demo models once; both workers load them and turn SERVING.
        deadline = time.monotonic() + 60
        serving = set()
        while len(serving) < CONNECTIONS and time.monotonic() < deadline:
            for index, channel in enumerate(channels):
                try:
                    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                except grpc.RpcError:
                    continue
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    serving.add(index)
            time.sleep(0.1)
        assert len(serving) == CONNECTIONS
        workers = _children(server.pid, "serve")
        assert len(workers) == 2 and len(_children(server.pid, "gateway")) == 0

        row = np.zeros((1, 10))
        answers = [_predict(channel, "diabetes", row) for channel in channels]
        assert {a.version for a in answers} == {"v1"}
        assert len({a.predictions.raw for a in answers}) == 1  # every worker holds the same model
        # The kernel spread the connections over both workers: each one answered some.
        seen = [_requests_seen(metrics), _requests_seen(metrics + 1)]
        assert sum(seen) == CONNECTIONS and min(seen) > 0, seen

        # A version trained through one connection reaches every worker through the registry.
        from regserve.client import RegressionClient

        with RegressionClient(target) as client:
            client.train("house", X, y)
        deadline = time.monotonic() + 10
        pending = set(range(CONNECTIONS))
        while pending and time.monotonic() < deadline:
            for index in list(pending):
                try:
                    answer = _predict(channels[index], "house", X[:1])
                except grpc.RpcError as exc:
                    # This worker has not polled yet (NOT_FOUND), or polled between the version's
                    # creation and its promotion, two changes of the registry (UNAVAILABLE).
                    assert exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)
                    continue
                assert answer.version == "v1"
                pending.discard(index)
            time.sleep(0.05)
        assert not pending

        # Each worker serves the REST gateway too, on one shared HTTP port; a new
        # connection for each request lets the kernel spread them.
        for _ in range(8):
            request = urllib.request.Request(
                f"http://127.0.0.1:{gateway}/v1/models/house:predict",
                data=json.dumps({"inputs": {"values": X[0].tolist()}}).encode(),
                headers={"Content-Type": "application/json"},
            )
            reply = json.loads(urllib.request.urlopen(request, timeout=10).read())
            assert reply["version"] == "v1" and len(reply["predictions"]["values"]) == 1

        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        for channel in channels:
            channel.close()
        if server.poll() is None:
            server.kill()
        _, log = server.communicate(timeout=10)
    assert "2 workers on" in log and "regserve stopped" in log
    # Every worker's access log reached the shared stderr, whole lines only: 24 gRPC
    # Predict calls on diabetes, 24 on house once every worker had it, 8 over REST.
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    predicted = [a for a in access if a["method"].endswith("/Predict") and a["code"] == "OK"]
    assert len(predicted) == 2 * CONNECTIONS + 8


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--predict-threads", "-1"], "--predict-threads must be 0"),
        (["--workers", "2", "--predict-threads", "-1"], "--predict-threads must be 0"),
    ],
)
def test_thread_and_process_counts_out_of_range_stop_before_anything_is_stored(tmp_path, flag, message):
    command = [sys.executable, "-m", "regserve.server.cli", "serve", *flag, "--port", "0"]
    command += ["--model-dir", str(tmp_path / "models")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and message in done.stderr
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def _allowed_cpus(pid: int) -> set[str]:
    """The CPU lists (``Cpus_allowed_list``) of every thread of process ``pid``."""
    lists = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended after the listing
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                lists.add(line.split(":", 1)[1].strip())
    return lists


def _serve_until_serving(tmp_path, *flags: str) -> subprocess.Popen:
    port = _free_ports(1)
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", str(port), "--no-demo-models"]
    command += ["--model-dir", str(tmp_path / "models"), "--gateway-port", "0", "--drain-seconds", "0", *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        # Every thread has started once a call has been answered (the pool starts threads on demand).
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return server


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_pin_cpus_runs_every_thread_of_a_server_on_one_cpu_and_each_worker_on_its_own(tmp_path):
    first, second = sorted(os.sched_getaffinity(0))[:2]
    single = _serve_until_serving(tmp_path / "one", "--pin-cpus", str(second))
    try:
        assert _allowed_cpus(single.pid) == {str(second)}
    finally:
        single.send_signal(signal.SIGTERM)
        assert single.wait(60) == 0

    workers = _serve_until_serving(tmp_path / "two", "--workers", "2", "--pin-cpus", "auto")
    try:
        deadline = time.monotonic() + 30
        while len(children := _children(workers.pid, "serve")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _allowed_cpus(workers.pid) == _allowed_cpus(os.getpid())  # the parent is not pinned
        assert sorted(_allowed_cpus(child) for child in children) == [{str(first)}, {str(second)}]
    finally:
        workers.send_signal(signal.SIGTERM)
        assert workers.wait(60) == 0


def test_pin_cpus_refuses_a_cpu_this_process_may_not_use(tmp_path):
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", "0", "--pin-cpus", "4096"]
    command += ["--model-dir", str(tmp_path / "models")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "--pin-cpus '4096': this process may run on CPUs" in done.stderr


def test_pin_cpus_values():
    from regserve.server.runtime.cpus import pinned_cpus

    allowed = sorted(os.sched_getaffinity(0))
    assert pinned_cpus(" auto ") == allowed
    assert pinned_cpus(f"{allowed[-1]},{allowed[0]}") == [allowed[-1], allowed[0]]
    for bad, message in [("a", "takes 'auto' or CPU numbers"), (",", "may run on CPUs"), ("-1", "may run on CPUs")]:
        with pytest.raises(ValueError, match=message):
            pinned_cpus(bad)
