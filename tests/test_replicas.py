"""Three `regserve serve` replicas on loopback share one registry in an S3 API (moto's server mode).

A client balances over the three addresses with its default service config (round_robin, retries of
idempotent calls on UNAVAILABLE) at concurrency 8 for the whole test, while replica 1 promotes and rolls
back, replica 2 is stopped with SIGTERM (it drains) and replica 3 with SIGKILL, a new version is promoted
while they are down, and both are started again.  No Predict may fail, every replica must route to each
new serving version within the poll interval (plus the time to load it), and the registry must end whole.
Then two replicas promote different versions at the same instant, 50 times, through their admin RPCs.

The figures the test measures (calls, failures, time for a change to reach every replica, the drain
timeline) are printed; ``pytest -s tests/test_replicas.py`` shows them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from regserve.client import ModelAdminClient, RegressionClient
from regserve.server.registry.disk import ModelRegistry

ROOT = Path(__file__).resolve().parents[1]
POLL = 0.5
DRAIN = 2.0
GRACE = 10.0
CONCURRENCY = 8
WAIT = 60.0
"""Upper bound on any wait; every wait ends as soon as what it waits for is seen."""

pytestmark = pytest.mark.slow


def _free_port() -> int:
    # The replicas must come back on the ports the client was given, so the test picks them.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _when(line: str) -> float:
    """The wall-clock time (seconds since the epoch) a log line starts with."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


class Replica:
    """One `regserve serve` process on a fixed loopback port, its stderr collected line by line."""

    def __init__(self, number: int, registry_url: str) -> None:
        self.number, self.registry_url, self.port = number, registry_url, _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self, *, empty: bool = False) -> None:
        """Start the process and wait until it serves (or, on an ``empty`` registry, until it answers)."""
        command = [sys.executable, "-m", "regserve.server.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--model-dir", self.registry_url, "--no-demo-models"]
        command += ["--poll-interval", str(POLL), "--drain-seconds", str(DRAIN), "--grace-seconds", str(GRACE)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.lines = []
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, args=(self.process, self.lines), daemon=True)
        self._reader.start()
        self.wait_serving(empty)

    @staticmethod
    def _read(process: subprocess.Popen, lines: list[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)

    def wait_serving(self, empty: bool) -> None:
        deadline = time.monotonic() + WAIT
        with grpc.insecure_channel(self.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process is not None and self.process.poll() is None, "".join(self.lines)[-4000:]
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if empty or answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, f"replica {self.number} never served:\n" + "".join(self.lines)
                time.sleep(0.05)

    def line(self, pattern: str) -> str:
        found = [line for line in self.lines if re.search(pattern, line)]
        assert found, f"no line matching {pattern!r} in replica {self.number}'s log:\n" + "".join(self.lines)[-4000:]
        return found[0]

    def serving_version(self) -> str:
        """The version this replica answers a Predict for ``house`` with, asked on a connection of its own."""
        with RegressionClient(self.address, timeout=10) as client:
            return client.predict("house", np.zeros(3)).version

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(WAIT)
        if self._reader is not None:
            self._reader.join(WAIT)


class Load:
    """``CONCURRENCY`` threads calling Predict through one balanced client until stopped."""

    def __init__(self, target: str) -> None:
        self.client = RegressionClient(target, timeout=30)
        self.calls = 0
        self.failures: list[str] = []
        self.versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(seed,)) for seed in range(CONCURRENCY)]

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not self._stop.is_set():
            try:
                version = self.client.predict("house", rng.normal(size=3)).version
                failure = None
            except Exception as exc:
                version, failure = None, f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.calls += 1
                if failure is not None:
                    self.failures.append(failure)
                else:
                    self.versions[version] = self.versions.get(version, 0) + 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(WAIT)
        self.client.close()


def _train(address: str, seed: int, *, promote: bool) -> str:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + seed + rng.normal(scale=0.1, size=200)
    with RegressionClient(address, timeout=60) as client:
        return client.train("house", X, y, promote=promote).model_version.version


def _reach_every_replica(replicas: list[Replica], version: str, since: float) -> float:
    """Seconds from ``since`` until every replica answers with ``version``."""
    pending = list(replicas)
    deadline = time.monotonic() + WAIT
    while pending:
        pending = [replica for replica in pending if replica.serving_version() != version]
        assert time.monotonic() < deadline, f"{[r.number for r in pending]} never served {version}"
        if pending:
            time.sleep(0.02)
    return time.monotonic() - since


@pytest.fixture
def replicas(s3_url):
    made = [Replica(number, s3_url) for number in (1, 2, 3)]
    yield made
    for replica in made:
        replica.kill()


def test_three_replicas_on_one_s3_registry_lose_no_call(replicas, s3_url):
    first, second, third = replicas
    first.start(empty=True)
    assert _train(first.address, 1, promote=True) == "v1"
    assert _train(first.address, 2, promote=False) == "v2"
    second.start()
    third.start()
    target = "ipv4:" + ",".join(replica.address for replica in replicas)
    figures: dict[str, float] = {}

    with Load(target) as load:
        time.sleep(1.0)
        with ModelAdminClient(first.address, timeout=30) as admin:
            started = time.monotonic()
            admin.promote("house", "v2", reason="replica test: promote")
            figures["promote reaches all (s)"] = _reach_every_replica(replicas, "v2", started)
            started = time.monotonic()
            admin.rollback("house", reason="replica test: rollback")
            figures["rollback reaches all (s)"] = _reach_every_replica(replicas, "v1", started)
            admin.promote("house", "v2", reason="replica test: promote again")
            _reach_every_replica(replicas, "v2", started)

        # Replica 2 drains, replica 3 dies; the load goes on through replica 1 (and 2 while it drains).
        sigterm_at = time.time()
        assert second.process is not None and third.process is not None
        second.process.send_signal(signal.SIGTERM)
        third.process.kill()
        assert second.process.wait(WAIT) == 0
        exited_at = time.time()
        third.kill()
        second.kill()
        not_serving = second.line("draining: health NOT_SERVING")
        figures["drain: NOT_SERVING after SIGTERM (s)"] = _when(not_serving) - sigterm_at
        figures["drain: listener closed after SIGTERM (s)"] = _when(second.line("listener closed")) - sigterm_at
        figures["drain: process exited after SIGTERM (s)"] = exited_at - sigterm_at

        # A change made while two replicas are down is what they serve when they come back.
        assert _train(first.address, 3, promote=True) == "v3"
        second.start()
        third.start()
        started = time.monotonic()
        figures["v3 on every replica after restart (s)"] = _reach_every_replica(replicas, "v3", started)
        time.sleep(2.0)
        calls, failures, versions = load.calls, list(load.failures), dict(load.versions)

    figures["Predict calls"] = calls
    figures["Predict calls failed"] = len(failures)
    print("\nreplica test:", *(f"  {name}: {value:.3g}" for name, value in figures.items()), sep="\n")
    print("  answers by version:", versions)

    assert failures == []
    assert calls > 100 and set(versions) == {"v1", "v2", "v3"}
    # Drain order: NOT_SERVING at once, the listener open for the drain, the exit after it.
    assert figures["drain: NOT_SERVING after SIGTERM (s)"] < figures["drain: listener closed after SIGTERM (s)"]
    assert figures["drain: listener closed after SIGTERM (s)"] >= DRAIN - 0.05
    assert figures["drain: process exited after SIGTERM (s)"] >= figures["drain: listener closed after SIGTERM (s)"]

    # Nothing lost or damaged in the registry: every version loads with its checksum, the history is whole.
    registry = ModelRegistry(s3_url)
    versions_stored, problems = registry.scan_versions("house")
    assert [m.version for m in versions_stored] == ["v1", "v2", "v3"] and not problems
    for metadata in versions_stored:
        registry.load_version("house", metadata.version)
    state = registry.read_state("house")
    assert state.serving == "v3"
    assert [(h.action, h.to_version) for h in state.history] == [
        ("promote", "v1"),
        ("promote", "v2"),
        ("rollback", "v1"),
        ("promote", "v2"),
        ("promote", "v3"),
    ]


def test_two_replicas_promoting_at_the_same_instant_keep_every_change(replicas, s3_url):
    first, second, _ = replicas
    first.start(empty=True)
    for seed in (1, 2, 3):
        _train(first.address, seed, promote=seed == 1)
    second.start()
    registry = ModelRegistry(s3_url)
    barrier = threading.Barrier(2)
    start_generation = registry.read_state("house").generation

    def promote(admin: ModelAdminClient, version: str) -> None:
        barrier.wait(timeout=WAIT)
        admin.promote("house", version, reason=f"to {version}")

    with (
        ModelAdminClient(first.address, timeout=30) as one,
        ModelAdminClient(second.address, timeout=30) as two,
        ThreadPoolExecutor(2) as pool,
    ):
        for _ in range(50):
            before = registry.read_state("house")
            a, b = [v for v in ("v1", "v2", "v3") if v != before.serving]
            for future in [pool.submit(promote, one, a), pool.submit(promote, two, b)]:
                future.result(timeout=WAIT)
            after = registry.read_state("house")
            # Both changes are recorded, in one order, and the state is the later one's: never a mix.
            assert after.generation == before.generation + 2
            last_two = after.history[-2:]
            assert [h.action for h in last_two] == ["promote", "promote"]
            assert {h.to_version for h in last_two} == {a, b}
            assert last_two[0].from_version == before.serving
            assert last_two[1].from_version == last_two[0].to_version
            assert after.serving == last_two[1].to_version
    assert registry.read_state("house").generation == start_generation + 100
