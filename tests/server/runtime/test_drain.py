"""`regserve serve` drains as Kubernetes expects: after SIGTERM health is NOT_SERVING while both ports still
answer for --drain-seconds, then the listeners close and the calls in flight get --grace-seconds; a second
signal stops at once.  Real server processes on port 0, run as a user would, single and with --workers 2."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from regserve.client import RegressionClient
from regserve.server.config import Settings
from regserve.server.registry.disk import ModelRegistry
from regserve.server.rpc.methods import SERVICE_NAMES
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2

ROOT = Path(__file__).resolve().parents[3]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DRAIN = 3.0
"""Long enough for the checks made during the drain on a busy machine; they take well under a second."""
LONG = 60.0
"""A drain or grace period that no test waits out: a process that stops before it ends was not waiting on it."""


class Served:
    """A `regserve serve` process on port 0 whose stderr lines are collected as they come."""

    def __init__(self, model_dir: Path, *flags: str) -> None:
        command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", "0", "--no-demo-models"]
        command += ["--model-dir", str(model_dir), "--poll-interval", "0.2", *flags]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # A session of its own, as a server started from a terminal has: killpg reaches the group a Ctrl-C would.
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._lines.append("")  # the end of the stream
            self._changed.notify_all()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60.0) -> list[re.Match]:
        """The first ``count`` log lines matching ``pattern``, once there; fails when the log ends without them."""
        expression = re.compile(pattern)
        with self._changed:
            while True:
                found = [m for m in map(expression.search, self._lines) if m is not None]
                if len(found) >= count:
                    return found[:count]
                ended = bool(self._lines) and self._lines[-1] == ""
                if ended or not self._changed.wait(timeout):
                    pytest.fail(f"no {count} lines matching {pattern!r} in the log:\n{self.log()[-4000:]}")

    def log(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def children(self) -> list[int]:
        """The pids of this process's children: the workers, with --workers."""
        pid = self.process.pid
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            # Workers have process groups of their own; after a failed test none must outlive it.
            for child in self.children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            self.process.kill()
        self.process.wait(30)
        self._reader.join(30)


@contextlib.contextmanager
def _served(model_dir: Path, *flags: str) -> Iterator[Served]:
    server = Served(model_dir, *flags)
    try:
        yield server
    finally:
        server.stop()


def _when(line: re.Match) -> datetime:
    """The time stamp the log line of ``line`` starts with."""
    return datetime.strptime(line.string[:23], "%Y-%m-%d %H:%M:%S,%f")


def _fresh_channel(target: str) -> grpc.Channel:
    # A subchannel pool of its own: the channel opens a connection of its own, as a new client would.
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def _status(channel: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def _predict(channel: grpc.Channel, rows: np.ndarray) -> pb.PredictResponse:
    inputs = types_pb2.Matrix(num_columns=rows.shape[1], raw=rows.tobytes())
    return pb_grpc.RegressionServiceStub(channel).Predict(pb.PredictRequest(model="house", inputs=inputs), timeout=10)


def _http(url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:  # a connection of its own
        return answer.status, answer.read()


def _refused(port: int, timeout: float = 10.0) -> bool:
    """True once a new TCP connection to ``port`` is refused; the listener closes on the server's next step."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _wait_serving(target: str) -> None:
    deadline = time.monotonic() + 60
    with _fresh_channel(target) as channel:
        while True:
            try:
                if _status(channel) == SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "the server never turned SERVING"
            time.sleep(0.05)


class HeldTrain:
    """A Train of model "slow" whose client sends half its rows, then holds the stream open until ``join``."""

    def __init__(self, target: str, X: np.ndarray, y: np.ndarray) -> None:
        self._released = threading.Event()
        self._sent = threading.Event()
        self.answer: pb.TrainResponse | None = None
        self.error: Exception | None = None
        half = len(X) // 2

        def chunks():
            yield X[:half], y[:half]
            self._sent.set()
            self._released.wait(LONG)
            yield X[half:], y[half:]

        def run() -> None:
            try:
                with RegressionClient(target, timeout=2 * LONG) as client:
                    self.answer = client.train("slow", chunks=chunks())
            except Exception as exc:  # reported by the test
                self.error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert self._sent.wait(30), "the Train's first rows were not taken"

    def join(self) -> None:
        self._released.set()
        self._thread.join(LONG)


class HeldStream:
    """A BatchPredict stream answered once, then held open by its client until ``join``."""

    def __init__(self, target: str, rows: np.ndarray, chunks: int = 3) -> None:
        self._channel = grpc.insecure_channel(target)
        self._released = threading.Event()
        self._answered = threading.Event()
        self.answers: list[pb.BatchPredictResponse] = []
        self.error: grpc.RpcError | None = None
        inputs = types_pb2.Matrix(num_columns=rows.shape[1], raw=rows.tobytes())

        def requests():
            yield pb.BatchPredictRequest(model="house", inputs=inputs)
            self._answered.wait(LONG)
            self._released.wait(LONG)
            for _ in range(chunks - 1):
                yield pb.BatchPredictRequest(inputs=inputs)

        def run() -> None:
            try:
                for answer in pb_grpc.RegressionServiceStub(self._channel).BatchPredict(requests(), timeout=2 * LONG):
                    self.answers.append(answer)
                    self._answered.set()
            except grpc.RpcError as exc:
                self.error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert self._answered.wait(30), "the stream's first chunk was not answered"

    def join(self) -> None:
        """Release the stream and wait for its end."""
        self._released.set()
        self._thread.join(LONG)
        self._channel.close()


def _listening(server: Served) -> tuple[int, int]:
    """The gRPC and REST ports a single server logged."""
    line = server.wait_for(r"listening on 127\.0\.0\.1:(\d+) .*REST gateway: http://127\.0\.0\.1:(\d+)/docs")[0]
    return int(line.group(1)), int(line.group(2))


def test_sigterm_drains_answering_calls_then_closes_the_listeners_and_finishes_calls_in_flight(tmp_path, linear_data):
    X, y = linear_data
    flags = ["--gateway-port", "0", "--metrics-port", "0", "--drain-seconds", str(DRAIN), "--grace-seconds", str(LONG)]
    with _served(tmp_path / "models", *flags) as server:
        port, http_port = _listening(server)
        metrics_port = int(server.wait_for(r"metrics: http://127\.0\.0\.1:(\d+)/metrics")[0].group(1))
        target = f"127.0.0.1:{port}"
        with RegressionClient(target, timeout=60) as client:
            client.train("house", X, y)
        _wait_serving(target)
        watching = grpc.insecure_channel(target)
        watches = [
            health_pb2_grpc.HealthStub(watching).Watch(health_pb2.HealthCheckRequest(service=name), timeout=2 * LONG)
            for name in ("", *SERVICE_NAMES)
        ]
        assert [next(watch).status for watch in watches] == [SERVING] * len(watches)
        held = HeldStream(target, X[:4])
        training = HeldTrain(target, X, y)

        server.process.send_signal(signal.SIGTERM)
        draining = server.wait_for(r"draining: health NOT_SERVING, still accepting for 3\.0 s")[0]
        # A new client is still served: probes see NOT_SERVING for every service, calls are answered.
        with _fresh_channel(target) as channel:
            assert [_status(channel, name) for name in ("", *SERVICE_NAMES)] == [NOT_SERVING] * len(watches)
            assert np.frombuffer(_predict(channel, X[:3]).predictions.raw).shape == (3,)
        status, body = _http(
            f"http://127.0.0.1:{http_port}/v1/models/house:predict", {"inputs": {"values": X[0].tolist()}}
        )
        assert status == 200 and len(json.loads(body)["predictions"]["values"]) == 1
        status, body = _http(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and b"regserve_requests_total" in body
        assert [next(watch).status for watch in watches] == [NOT_SERVING] * len(watches)

        closed = server.wait_for(r"listener closed; finishing (\d+) calls within 60\.0 s")[0]
        assert int(closed.group(1)) >= 2  # the held stream and the Train
        assert _refused(port) and _refused(http_port)
        for watch in watches:  # watchers are let go, so they hold no one up
            assert list(watch) == [] and watch.code() == grpc.StatusCode.OK
        watching.close()
        assert server.process.poll() is None and held.error is None  # the held calls still run
        held.join()
        assert held.error is None and len(held.answers) == 3
        training.join()
        assert training.error is None and training.answer is not None and training.answer.model_version.version == "v1"
        assert server.process.wait(LONG) == 0
        stopped = server.wait_for(r"regserve stopped$")[0]
    assert _when(draining) <= _when(closed) <= _when(stopped)
    assert (_when(closed) - _when(draining)).total_seconds() >= DRAIN - 0.01  # ms in the log's stamps
    access = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert [a["code"] for a in access if a["method"].endswith("/BatchPredict")] == ["OK"]
    assert [a["code"] for a in access if a["method"].endswith("/Predict")] == ["OK", "OK"]
    assert [a["code"] for a in access if a["method"].endswith("/Train")] == ["OK", "OK"]
    assert sorted(ModelRegistry(tmp_path / "models").list_models()) == ["house", "slow"]


@pytest.mark.parametrize(
    ("phase", "second"),
    [("draining: health NOT_SERVING", signal.SIGTERM), ("listener closed; finishing", signal.SIGINT)],
    ids=["sigterm-while-draining", "sigint-while-finishing-calls"],
)
def test_a_second_signal_stops_at_once_cancelling_the_calls_in_flight(tmp_path, linear_data, phase, second):
    X, y = linear_data
    drain = LONG if phase.startswith("draining") else 0.5
    flags = ["--gateway-port", "0", "--drain-seconds", str(drain), "--grace-seconds", str(LONG)]
    with _served(tmp_path / "models", *flags) as server:
        port, _ = _listening(server)
        target = f"127.0.0.1:{port}"
        with RegressionClient(target, timeout=60) as client:
            client.train("house", X, y)
        held = HeldStream(target, X[:4])
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(phase)
        server.process.send_signal(second)
        # Well before the drain or grace period would have ended.
        assert server.process.wait(LONG / 2) == 1
        held.join()
        server.wait_for("stopping at once")
        server.wait_for(r"regserve stopped; the calls still in flight were cancelled")
    assert held.error is not None and held.error.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)


def _health_over_http(http_port: int, path: str) -> tuple[int, dict]:
    """The gateway's answer on ``path`` (``/healthz`` or ``/readyz``), on a connection of its own."""
    try:
        status, body = _http(f"http://127.0.0.1:{http_port}{path}")
    except urllib.error.HTTPError as error:  # urllib raises on 503
        status, body = error.code, error.read()
    return status, json.loads(body)


def test_readyz_follows_the_drain_while_healthz_stays_live(tmp_path, linear_data):
    """A load balancer that reads /readyz sees the replica leave as gRPC health does; /healthz keeps answering."""
    X, y = linear_data
    flags = ["--gateway-port", "0", "--drain-seconds", str(LONG), "--grace-seconds", str(LONG)]
    with _served(tmp_path / "models", *flags) as server:
        port, http_port = _listening(server)
        target = f"127.0.0.1:{port}"
        assert _health_over_http(http_port, "/readyz") == (503, {"status": "NOT_SERVING"})
        with RegressionClient(target, timeout=60) as client:
            client.train("house", X, y)
        _wait_serving(target)
        assert _health_over_http(http_port, "/readyz") == (200, {"status": "SERVING"})
        assert _health_over_http(http_port, "/healthz") == (200, {"status": "live"})

        server.process.send_signal(signal.SIGTERM)
        server.wait_for(r"draining: health NOT_SERVING")
        assert _health_over_http(http_port, "/readyz") == (503, {"status": "NOT_SERVING"})
        assert _health_over_http(http_port, "/healthz") == (200, {"status": "live"})
        status, _ = _http(
            f"http://127.0.0.1:{http_port}/v1/models/house:predict", {"inputs": {"values": X[0].tolist()}}
        )
        assert status == 200  # still answering while it drains
        server.process.send_signal(signal.SIGTERM)  # the second signal: no test waits out the long drain
        assert server.process.wait(LONG / 2) == 1


def test_two_workers_drain_together_on_a_ctrl_c_and_exit_zero(tmp_path, linear_data):
    X, y = linear_data
    flags = ["--workers", "2", "--gateway-port", "0", "--drain-seconds", str(DRAIN), "--grace-seconds", str(LONG)]
    with _served(tmp_path / "models", *flags) as server:
        line = server.wait_for(r"2 workers on 127\.0\.0\.1:(\d+) \(REST gateway: http://127\.0\.0\.1:(\d+)/docs")[0]
        port, http_port = int(line.group(1)), int(line.group(2))
        target = f"127.0.0.1:{port}"
        server.wait_for("regserve listening on", count=2)
        with RegressionClient(target, timeout=60) as client:
            client.train("house", X, y)
        # Each new connection goes to either worker; both follow the registry.
        channels = [_fresh_channel(target) for _ in range(8)]
        try:
            deadline = time.monotonic() + 30
            for channel in channels:
                while True:
                    try:
                        if _status(channel) == SERVING and _predict(channel, X[:1]).version == "v1":
                            break
                    except grpc.RpcError:
                        pass
                    assert time.monotonic() < deadline, "a worker never served the new model"
                    time.sleep(0.05)
        finally:
            for channel in channels:
                channel.close()
        held = HeldStream(target, X[:4])

        # SIGINT to the whole process group, as a terminal sends it: the workers, in groups of their
        # own, get it once, from the parent, and drain (a second one would stop them at once).
        os.killpg(server.process.pid, signal.SIGINT)
        server.wait_for("draining: health NOT_SERVING", count=2)
        for _ in range(8):
            with _fresh_channel(target) as channel:
                assert _status(channel) == NOT_SERVING
                assert _predict(channel, X[:2]).version == "v1"
            status, _ = _http(
                f"http://127.0.0.1:{http_port}/v1/models/house:predict", {"inputs": {"values": X[0].tolist()}}
            )
            assert status == 200

        server.wait_for("listener closed; finishing", count=2)
        assert _refused(port) and _refused(http_port)
        assert server.process.poll() is None  # the parent waits for the worker with the held stream
        held.join()
        assert held.error is None and len(held.answers) == 3
        assert server.process.wait(LONG) == 0
        server.wait_for(r"regserve stopped$", count=3)  # both workers and the parent
    assert "stopping at once" not in server.log()


def test_a_second_signal_to_the_workers_parent_stops_them_at_once(tmp_path, linear_data):
    X, y = linear_data
    flags = ["--workers", "2", "--drain-seconds", str(LONG), "--grace-seconds", str(LONG)]
    with _served(tmp_path / "models", *flags) as server:
        port = int(server.wait_for(r"2 workers on 127\.0\.0\.1:(\d+)")[0].group(1))
        server.wait_for("regserve listening on", count=2)
        with RegressionClient(f"127.0.0.1:{port}", timeout=60) as client:
            client.train("house", X, y)
        server.process.send_signal(signal.SIGTERM)
        server.wait_for("draining: health NOT_SERVING", count=2)
        workers = server.children()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(LONG / 2) == 1  # well before the drain would have ended
        server.wait_for("stopping at once", count=3)  # the parent and both workers
    assert len(workers) == 2 and not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.parametrize("name", ["drain_seconds", "grace_seconds"])
@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf")])
def test_drain_and_grace_must_be_finite_and_not_negative(name, value):
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be a finite number of seconds, 0 or more"):
        Settings(**{name: value}).check()
    Settings(**{name: 0.0}).check()


def test_a_negative_drain_from_the_environment_stops_the_start(tmp_path):
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", "0"]
    command += ["--model-dir", str(tmp_path / "models")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REGSERVE_DRAIN_SECONDS": "-1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--drain-seconds must be a finite number of seconds" in done.stderr
    assert not (tmp_path / "models").exists()
