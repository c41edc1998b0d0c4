"""The soak: every known attack at once against one server, for a bounded time (``make soak``).

    python -m bench.soak [--duration 60] [--idle-streams 64] [--slow-connections 200]

One ``regserve serve`` runs on 127.0.0.1 with its REST gateway, metrics, bearer
tokens and a rate limit on.  While a prober checks ``grpc.health.v1`` ten times a
second and a well-behaved client predicts and checks its answers, attackers run
side by side until ``--duration`` has passed:

- idle BatchPredict streams: opened, one message each, then silent;
- runaway training: GD with ~4 billion epochs and tolerance 0 (refused up front by the
  work limit), and GD with 100,000 epochs (within it), each under a 2 s deadline;
- oversized REST bodies: a Content-Length past the limit, the body never sent;
- slow HTTP connections: headers never finished;
- malformed input: JSON nested 2,000 deep, bad binary metadata, a non-ASCII request id,
  an infinite timeout, undecodable gRPC messages;
- unauthenticated calls, as fast as they are answered.

Every attacker is bounded in count and time and stops by itself; all traffic goes to
127.0.0.1.  The table printed at the end says what held: the health probe's latency
and failures under attack, the good client's failures, what each attacker got back
(by gRPC code or HTTP status), and the server's peak resident memory and open file
descriptors.  It fails (exit 1) when a health probe or a good call failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from regserve.client import RegressionClient
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2

ADMIN_TOKEN = "soak-admin-token"
PREDICT_TOKEN = "soak-predict-token"
FEATURES = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tally:
    """Outcomes by attacker and kind, counted from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def add(self, attacker: str, outcome: str) -> None:
        with self._lock:
            self.counts[attacker][outcome] += 1


def _metadata(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


def _start_server(model_dir: str, port: int, gateway: int, metrics: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", str(port), "--model-dir", model_dir]
    command += ["--gateway-port", str(gateway), "--metrics-port", str(metrics), "--no-access-log"]
    command += ["--rate-limit", "200", "--rate-burst", "50", "--no-demo-models"]
    # Above the idle streams' count, so they reach the server's threads instead of the per-peer cap.
    command += ["--max-streams-per-peer", "128"]
    env = {**os.environ, "REGSERVE_TOKENS": f"admin:{ADMIN_TOKEN},predict:{PREDICT_TOKEN}"}
    return subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)


def _train(target: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(2_000, FEATURES))
    with RegressionClient(target, token=ADMIN_TOKEN, timeout=60) as client:
        client.train("soak", X, X @ np.arange(1.0, FEATURES + 1) + 0.5)
    return X


def _probe_health(target: str, stop: threading.Event, latencies: list, tally: Tally) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.wait(0.1):
            started = time.perf_counter()
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                latencies.append(time.perf_counter() - started)
                tally.add("health probe", "OK")
            except grpc.RpcError as exc:
                tally.add("health probe", exc.code().name)


def _good_client(target: str, X: np.ndarray, stop: threading.Event, tally: Tally) -> None:
    expected = X[:8] @ np.arange(1.0, FEATURES + 1) + 0.5
    with RegressionClient(target, token=PREDICT_TOKEN, timeout=5) as client:
        while not stop.wait(0.05):
            try:
                values = client.predict("soak", X[:8]).values
                tally.add("good client", "OK" if np.allclose(values, expected) else "WRONG ANSWER")
            except Exception as exc:  # noqa: BLE001 - every failure is an outcome to count
                tally.add("good client", type(exc).__name__)


def _idle_streams(target: str, count: int, stop: threading.Event, tally: Tally) -> None:
    """Open ``count`` BatchPredict streams over 4 channels, send one message each, then stay silent."""
    request = pb.BatchPredictRequest(model="soak", inputs=types_pb2.Matrix(num_columns=FEATURES, values=[0.0] * 4))
    channels = [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(4)]
    release = threading.Event()

    def silent():
        yield request
        release.wait(600)

    def hold(channel):
        try:
            for _ in pb_grpc.RegressionServiceStub(channel).BatchPredict(silent(), metadata=_metadata(PREDICT_TOKEN)):
                pass
            tally.add("idle streams", "OK")
        except grpc.RpcError as exc:
            tally.add("idle streams", exc.code().name)

    threads = [threading.Thread(target=hold, args=(channels[i % 4],), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    stop.wait()
    release.set()
    for channel in channels:
        channel.close()


def _runaway_training(target: str, stop: threading.Event, tally: Tally) -> None:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(500, FEATURES))
    with RegressionClient(target, token=ADMIN_TOKEN, timeout=2) as client:
        while not stop.is_set():
            for name, epochs in (("runaway GD, 2**32 epochs", 2**32 - 1), ("runaway GD, 10**5 epochs", 10**5)):
                try:
                    client.train("runaway", X, X[:, 0], solver="gd", epochs=epochs, tolerance=0.0, promote=False)
                    tally.add(name, "OK")
                except Exception as exc:  # noqa: BLE001
                    tally.add(name, getattr(getattr(exc, "code", None), "name", type(exc).__name__))
            stop.wait(0.5)


def _http(host: str, port: int, raw: bytes, *, read_timeout: float = 5.0) -> str:
    """Send ``raw`` and return the status line's code ('' when the server closed without answering)."""
    with socket.create_connection((host, port), timeout=read_timeout) as sock:
        sock.sendall(raw)
        try:
            answer = sock.recv(256)
        except OSError:
            return "no answer"
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"


def _http_attacks(port: int, stop: threading.Event, tally: Tally) -> None:
    deep = ("[" * 2000 + "]" * 2000).encode()
    auth = f"Authorization: Bearer {PREDICT_TOKEN}\r\n"
    attacks = {
        "oversized body": (
            "POST /v1/models/soak:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {80 << 20}\r\n\r\n".encode()
        ),
        "deep JSON": (
            "POST /v1/models/soak:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {len(deep)}\r\nConnection: close\r\n\r\n".encode()
            + deep
        ),
        "bad -bin metadata": (
            f"GET /v1/models/soak HTTP/1.1\r\nHost: x\r\n{auth}Grpc-Metadata-foo-bin: !!\r\nConnection: close\r\n\r\n"
        ).encode(),
        "non-ASCII request id": (
            f"GET /v1/models/soak HTTP/1.1\r\nHost: x\r\n{auth}X-Request-Id: caf\xe9\r\nConnection: close\r\n\r\n"
        ).encode("latin-1"),
        "infinite timeout": (
            f"GET /v1/models/soak HTTP/1.1\r\nHost: x\r\n{auth}X-Timeout-Seconds: inf\r\nConnection: close\r\n\r\n"
        ).encode(),
    }
    while not stop.is_set():
        for name, raw in attacks.items():
            try:
                tally.add(name, _http("127.0.0.1", port, raw))
            except OSError as exc:
                tally.add(name, type(exc).__name__)
        stop.wait(0.2)


def _slow_connections(port: int, count: int, stop: threading.Event, tally: Tally) -> None:
    """Hold ``count`` connections whose headers never end; count how many the server closed."""
    sockets = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"POST /v1/models/soak:predict HTTP/1.1\r\nHost: x\r\n")
            sock.setblocking(False)
            sockets.append(sock)
        except OSError as exc:
            tally.add("slow connections", type(exc).__name__)
    stop.wait()
    for sock in sockets:
        try:
            tally.add("slow connections", "closed by server" if sock.recv(1) == b"" else "answered")
        except BlockingIOError:
            tally.add("slow connections", "still open")
        except OSError:
            tally.add("slow connections", "closed by server")
        sock.close()


def _undecodable_and_unauthenticated(target: str, stop: threading.Event, tally: Tally) -> None:
    with grpc.insecure_channel(target) as channel:
        raw_predict = channel.unary_unary("/regserve.v1.RegressionService/Predict")  # bytes in, bytes out
        stub = pb_grpc.RegressionServiceStub(channel)
        request = pb.PredictRequest(model="soak", inputs=types_pb2.Matrix(values=[0.0] * FEATURES))
        while not stop.is_set():
            try:
                raw_predict(b"\xff\xff\xff\xff", timeout=2, metadata=_metadata(PREDICT_TOKEN))
                tally.add("undecodable message", "OK")
            except grpc.RpcError as exc:
                tally.add("undecodable message", exc.code().name)
            for _ in range(20):
                try:
                    stub.Predict(request, timeout=2)
                    tally.add("no token", "OK")
                except grpc.RpcError as exc:
                    tally.add("no token", exc.code().name)


def _sample_process(pid: int, stop: threading.Event, peaks: dict) -> None:
    while not stop.wait(0.2):
        try:
            peaks["fds"] = max(peaks.get("fds", 0), len(os.listdir(f"/proc/{pid}/fd")))
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks["rss_mb"] = int(line.split()[1]) / 1024
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds the attacks run")
    parser.add_argument("--idle-streams", type=int, default=64)
    parser.add_argument("--slow-connections", type=int, default=200)
    args = parser.parse_args(argv)

    port, gateway, metrics = _free_port(), _free_port(), _free_port()
    target = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="regserve-soak-") as model_dir:
        server = _start_server(model_dir, port, gateway, metrics)
        try:
            with grpc.insecure_channel(target) as channel:
                grpc.channel_ready_future(channel).result(timeout=60)
            X = _train(target)
            time.sleep(1.0)  # the gateway binds once the server is up
            tally, latencies, peaks = Tally(), [], {}
            stop = threading.Event()
            workers = [
                threading.Thread(target=_probe_health, args=(target, stop, latencies, tally)),
                threading.Thread(target=_good_client, args=(target, X, stop, tally)),
                threading.Thread(target=_idle_streams, args=(target, args.idle_streams, stop, tally)),
                threading.Thread(target=_runaway_training, args=(target, stop, tally)),
                threading.Thread(target=_http_attacks, args=(gateway, stop, tally)),
                threading.Thread(target=_slow_connections, args=(gateway, args.slow_connections, stop, tally)),
                threading.Thread(target=_undecodable_and_unauthenticated, args=(target, stop, tally)),
                threading.Thread(target=_sample_process, args=(server.pid, stop, peaks)),
            ]
            started = time.monotonic()
            for worker in workers:
                worker.start()
            stop.wait(args.duration)
            stop.set()
            for worker in workers:
                worker.join(30)
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            try:
                stopped = server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                stopped = "killed: it did not stop within 30 s of SIGTERM"
                server.wait()

    print(f"regserve soak: {elapsed:.0f} s of attacks against one server on 127.0.0.1")
    if latencies:
        ms = np.array(latencies) * 1e3
        print(
            f"health probe latency under attack: p50 {np.percentile(ms, 50):.2f} ms, "
            f"p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms over {len(ms)} probes"
        )
    print(f"server peak RSS {peaks.get('rss_mb', 0):.0f} MB, peak open file descriptors {peaks.get('fds', 0)}")
    print(f"server exit after SIGTERM: {stopped}")
    print(f"{'attacker':24} outcomes")
    for attacker in sorted(tally.counts):
        outcomes = ", ".join(f"{name} {count}" for name, count in tally.counts[attacker].most_common())
        print(f"{attacker:24} {outcomes}")
    failed = {k: v for k, v in tally.counts["health probe"].items() if k != "OK"}
    failed.update({k: v for k, v in tally.counts["good client"].items() if k != "OK"})
    if stopped != 0:
        failed["server exit"] = str(stopped)
    print(json.dumps({"held": not failed, "failures": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
