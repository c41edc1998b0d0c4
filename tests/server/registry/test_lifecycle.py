"""Lifecycle scenarios: hot swaps under load, A/B routing, crashes, replicas, and the CLI.

Servers are real (port 0, real channels); the crash and replica tests run the server
as a separate process, started the way an operator starts it.
"""

from __future__ import annotations

import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest

from regserve.client import FailedPrecondition, ModelAdminClient, NotFound, RegressionClient, Unavailable
from regserve.server.cli import main
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.routing import choose_arm
from tests.conftest import start_server

# ----------------------------------------------------------------- helpers


def train_two_versions(target, X, y) -> tuple[np.ndarray, np.ndarray]:
    """Train v1 on y (serving) and v2 on -y + 100 (stored); return their predictions on X[:4]."""
    with RegressionClient(target, timeout=60) as client:
        client.train("house", X, y)
        client.train("house", X, 100.0 - y, promote=False)
        return client.predict("house", X[:4], version="v1").values, client.predict("house", X[:4], version="v2").values


class ServerProcess:
    """``regserve serve`` in a child process on a free port, logging to a file."""

    def __init__(self, model_dir, log_path) -> None:
        self.log_path = log_path
        command = [sys.executable, "-m", "regserve.server.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
        command += ["--model-dir", str(model_dir), "--no-demo-models", "--poll-interval", "0.5"]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        self.port = self._wait_for_port(start=os.path.getsize(log_path))
        self.target = f"127.0.0.1:{self.port}"

    def _wait_for_port(self, start: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(start)
                found = re.search(rb"listening on 127\.0\.0\.1:(\d+)", log.read())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"the server did not start:\n{open(self.log_path, encoding='utf-8').read()[-3000:]}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def processes():
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.stop()


def poll_until(check, timeout: float = 30.0):
    """Call ``check`` until it returns a truthy value or ``timeout`` seconds pass; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# ----------------------------------------------------------------- hot swap under load


def _possibly_serving(timeline, version: str, start: float, end: float) -> bool:
    """Whether ``version`` may have been serving at some moment of [start, end].

    ``timeline[i] = (before_i, after_i, target_i)``: switch i took effect at some moment
    of [before_i, after_i], so target_i may serve from before_i until switch i + 1 finished.
    """
    for i, (before, _, target) in enumerate(timeline):
        until = timeline[i + 1][1] if i + 1 < len(timeline) else math.inf
        if target == version and before <= end and start <= until:
            return True
    return False


@pytest.mark.slow
def test_predictions_never_fail_and_come_from_a_serving_version_during_100_switches(target, linear_data):
    X, y = linear_data
    expected = dict(zip(("v1", "v2"), train_two_versions(target, X, y), strict=True))
    stop = threading.Event()
    progress = threading.Condition()
    latest_start = [-math.inf]  # the latest start time of a finished Predict
    records: list[tuple[float, float, str, np.ndarray]] = []
    failures: list[BaseException] = []

    def load() -> None:
        with RegressionClient(target, timeout=30) as client:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    answer = client.predict("house", X[:4])
                except Exception as exc:  # noqa: BLE001 - any failure fails the test below
                    failures.append(exc)
                    return
                end = time.perf_counter()
                with progress:
                    records.append((start, end, answer.version, answer.values))
                    latest_start[0] = max(latest_start[0], start)
                    progress.notify_all()

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    timeline = [(-math.inf, -math.inf, "v1")]
    try:
        with ModelAdminClient(target, timeout=30) as admin:
            for i in range(100):
                before = time.perf_counter()
                if i % 2 == 0:
                    state = admin.promote("house", "v2", reason=f"switch {i}")
                elif i % 4 == 1:
                    state = admin.rollback("house", reason=f"switch {i}")
                else:
                    state = admin.promote("house", "v1", reason=f"switch {i}")
                after = time.perf_counter()
                timeline.append((before, after, state.serving_version))
                # Wait for a Predict that began after this switch, so every switch is seen under load.
                with progress:
                    assert progress.wait_for(lambda t=after: latest_start[0] > t or failures, timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:3]
    assert [t for _, _, t in timeline[1:]] == ["v2", "v1"] * 50
    assert {version for _, _, version, _ in records} == {"v1", "v2"}
    for start, end, version, values in records:
        assert _possibly_serving(timeline, version, start, end), (start, end, version)
        np.testing.assert_array_equal(values, expected[version])


# ----------------------------------------------------------------- A/B split


@pytest.mark.slow
def test_a_90_10_split_sends_about_10_percent_to_the_minor_arm_and_is_sticky(target, linear_data):
    X, y = linear_data
    train_two_versions(target, X, y)
    with ModelAdminClient(target) as admin, RegressionClient(target) as client:
        admin.set_split("house", {"v1": 90, "v2": 10}, reason="canary")
        row = X[:1]
        arms = {key: client.predict("house", row, routing_key=key).version for key in map(str, range(10_000))}
        share = Counter(arms.values())["v2"] / len(arms)
        assert 0.085 <= share <= 0.115, share
        rng = random.Random(7)
        for key in rng.sample(sorted(arms), 500):
            assert client.predict("house", row, routing_key=key).version == arms[key]
    # The arm is a pure function of the key and the weights, the same on every replica.
    assert all(arms[key] == choose_arm({"v1": 90, "v2": 10}, key) for key in map(str, range(0, 10_000, 7)))


# ----------------------------------------------------------------- crashes


def _tiny_data(rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(rng.randrange(2**32))
    X = gen.normal(size=(64, 3))
    return X, X @ gen.normal(size=3) + gen.normal()


def _lifecycle_workload(target: str, rng: random.Random, errors: list, trained: threading.Event) -> None:
    """Train, promote and roll back until the server dies; any failure but UNAVAILABLE is recorded.

    ``trained`` is set once a Train of this run has stored its version.
    """
    try:
        with RegressionClient(target, timeout=10) as client, ModelAdminClient(target, timeout=10) as admin:
            while True:
                X, y = _tiny_data(rng)
                client.train("crash", X, y, promote=rng.random() < 0.5)
                trained.set()
                versions = [v.version for v in admin.list_versions("crash")]
                admin.promote("crash", rng.choice(versions), reason="workload")
                if len(versions) >= 2 and rng.random() < 0.4:
                    # A split change, then (sometimes) its end, also meets the SIGKILL.
                    arms = rng.sample(versions, 2)
                    admin.set_split("crash", {arms[0]: 90, arms[1]: 10}, reason="workload")
                    if rng.random() < 0.5:
                        admin.set_split("crash", {}, reason="workload")
                if rng.random() < 0.3:
                    try:
                        admin.rollback("crash", reason="workload")
                    except FailedPrecondition as exc:
                        if exc.reason != "NO_PREVIOUS_VERSION":
                            raise
    except Unavailable:
        return
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _check_recovered(target: str, model_dir) -> None:
    with RegressionClient(target, timeout=10) as client, ModelAdminClient(target, timeout=10) as admin:
        assert client.health() == "SERVING"
        (state,) = admin.list_models()
        listed = [v.version for v in admin.list_versions("crash")]
        assert state.serving_version in listed
        answer = client.predict("crash", np.zeros((1, 3)))
        # A split that survived the kill routes to its arms; otherwise the serving version answers.
        routed = {v for v, weight in state.traffic_split.items() if weight > 0} or {state.serving_version}
        assert answer.version in routed
        assert routed <= set(listed)
    registry = ModelRegistry(model_dir)
    assert [m.version for m in registry.list_versions("crash")] == listed
    for version in listed:
        registry.load_version("crash", version)  # raises on a checksum mismatch


@pytest.mark.slow
def test_sigkill_during_train_and_promote_leaves_a_registry_that_loads_and_serves(processes, tmp_path):
    model_dir, log = tmp_path / "models", tmp_path / "server.log"
    rng = random.Random(20261124)
    server = ServerProcess(model_dir, log)
    processes.append(server)
    with RegressionClient(server.target, timeout=30) as client:
        client.train("crash", *_tiny_data(rng))
    errors: list[BaseException] = []
    for _ in range(20):
        trained = threading.Event()
        workload = (server.target, random.Random(rng.random()), errors, trained)
        worker = threading.Thread(target=_lifecycle_workload, args=workload)
        worker.start()
        # The kill lands at a random point after the round's first version, however slow the machine is.
        trained.wait(60)
        time.sleep(rng.uniform(0.0, 0.3))
        server.kill()
        worker.join()
        assert not errors, errors
        server = ServerProcess(model_dir, log)
        processes.append(server)
        _check_recovered(server.target, model_dir)
    assert len(ModelRegistry(model_dir).list_versions("crash")) > 20


# ----------------------------------------------------------------- replicas


def _predict_version(client, **kwargs) -> str | None:
    try:
        return client.predict("house", np.zeros((1, 5)), **kwargs).version
    except (NotFound, Unavailable, FailedPrecondition):
        return None


@pytest.mark.slow
def test_two_processes_on_one_registry_see_each_others_changes(processes, location, tmp_path, linear_data):
    model_dir = location  # a directory, or S3 served by moto (the servers inherit the AWS_* variables)
    a = ServerProcess(model_dir, tmp_path / "a.log")
    processes.append(a)
    b = ServerProcess(model_dir, tmp_path / "b.log")
    processes.append(b)
    train_two_versions(a.target, *linear_data)
    with ModelAdminClient(a.target) as admin, RegressionClient(b.target, timeout=10) as other:
        assert poll_until(lambda: _predict_version(other) == "v1"), "B never served v1"

        admin.promote("house", "v2", reason="through A")
        assert poll_until(lambda: _predict_version(other) == "v2"), "B did not serve v2 within 30 s"

        admin.freeze("house", "v1", reason="through A")

        def refused() -> bool:
            try:
                other.predict("house", np.zeros((1, 5)), version="v1")
            except FailedPrecondition as exc:
                return exc.reason == "VERSION_FROZEN"
            return False

        assert poll_until(refused), "B still answers with the frozen v1 after 30 s"

        admin.unfreeze("house", "v1")
        admin.set_split("house", {"v1": 50, "v2": 50}, reason="through A")
        keys = [f"user-{i}" for i in range(100)]
        expected = [choose_arm({"v1": 50, "v2": 50}, key) for key in keys]
        assert set(expected) == {"v1", "v2"}
        assert poll_until(lambda: [_predict_version(other, routing_key=k) for k in keys] == expected), (
            "B does not route by the split within 30 s"
        )
    with ModelAdminClient(b.target) as other_admin:
        assert dict(other_admin.list_models()[0].traffic_split) == {"v1": 50.0, "v2": 50.0}


# ----------------------------------------------------------------- the command line


def _table(out: str, first: str) -> list[str]:
    """The cells of the printed row whose first cell is ``first``."""
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, out
    return rows[0]


def test_cli_lifecycle_commands_print_the_state(target, linear_data, capsys):
    X, y = linear_data
    train_two_versions(target, X, y)
    server = ["--server", target]
    house = [*server, "--model", "house"]

    def run(*argv: str) -> str:
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    out = run("models", *server)
    assert _table(out, "house")[:2] == ["house", "v1"] and "v1, v2" in out

    out = run("versions", *house)
    assert _table(out, "v1")[1] == "serving" and _table(out, "v2")[1] == "available"

    out = run("promote", *house, "v2", "--reason", "looks better")
    assert _table(out, "house")[1] == "v2"
    out = run("freeze", *house, "v1", "--reason", "bad data")
    assert _table(run("versions", *house), "v1")[1] == "frozen"
    run("unfreeze", *house, "v1")

    out = run("split", *house, "v1=90", "v2=10", "--reason", "canary")
    assert "v1=90, v2=10" in out
    assert _table(run("versions", *house), "v1")[1] == "in_split"
    out = run("split", *house, "--clear")
    assert _table(out, "house")[2] == "-"

    out = run("rollback", *house, "--reason", "regression")
    assert _table(out, "house")[1] == "v1"
    out = run("delete", *house, "v2", "--reason", "cleanup")
    assert _table(out, "house")[-2] == "v1"

    with RegressionClient(target) as client:
        for _ in range(3):
            client.predict("house", X[:2])
    out = run("status", *server, "--model", "house")
    assert "model house: serving v1" in out
    row = _table(out, "v1")
    # 1 + 3 calls: train_two_versions predicted 4 rows before, these 3 calls 6 more.
    assert row[1:5] == ["serving", "4", "0", "10"]
    assert float(row[5]) > 0
    history = [line for line in out.splitlines() if re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert [line.split()[1:4] for line in history] == [
        ["promote", "-", "v1"],
        ["promote", "v1", "v2"],
        ["freeze", "-", "v1"],
        ["unfreeze", "-", "v1"],
        ["split", "v2", "v1=90,v2=10"],
        ["split", "v2", "-"],
        ["rollback", "v2", "v1"],
        ["delete", "-", "v2"],
    ]
    assert history[1].endswith("looks better") and history[-1].endswith("cleanup")
    assert "model house" in run("status", *server)


@pytest.mark.parametrize(
    ("argv", "status", "reason"),
    [
        (["promote", "v9"], "NOT_FOUND", "UNKNOWN_VERSION"),
        (["delete", "v1"], "FAILED_PRECONDITION", "VERSION_SERVING"),
        (["rollback"], "FAILED_PRECONDITION", "NO_PREVIOUS_VERSION"),
        (["split", "v1=0"], "INVALID_ARGUMENT", "INVALID_SPLIT"),
        (["freeze", "v7"], "NOT_FOUND", "UNKNOWN_VERSION"),
    ],
)
def test_cli_errors_exit_1_with_the_reason_on_stderr(target, linear_data, capsys, argv, status, reason):
    train_two_versions(target, *linear_data)
    command, *rest = argv
    assert main([command, "--server", target, "--model", "house", *rest]) == 1
    err = capsys.readouterr().err
    assert status in err and reason in err


def test_cli_split_needs_weights_or_clear(target, capsys):
    assert main(["split", "--server", target, "--model", "house"]) == 2
    assert main(["split", "--server", target, "--model", "house", "v1"]) == 2
    assert "not VERSION=WEIGHT" in capsys.readouterr().err
    assert main(["versions", "--server", target, "--model", "nope"]) == 1
    assert "UNKNOWN_MODEL" in capsys.readouterr().err


def test_cli_sends_the_token_from_flag_or_environment(tmp_path, linear_data, capsys, monkeypatch):
    app = start_server(tmp_path / "models", tokens="admin:admin-secret")
    target = f"127.0.0.1:{app.port}"
    try:
        with RegressionClient(target, token="admin-secret") as client:
            client.train("house", *linear_data)
        assert main(["models", "--server", target]) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        assert main(["models", "--server", target, "--token", "admin-secret"]) == 0
        assert _table(capsys.readouterr().out, "house")[1] == "v1"
        monkeypatch.setenv("REGSERVE_TOKEN", "admin-secret")
        assert main(["versions", "--server", target, "--model", "house"]) == 0
        assert _table(capsys.readouterr().out, "v1")[1] == "serving"
    finally:
        app.stop(0)
