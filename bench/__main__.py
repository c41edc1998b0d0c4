"""Run the benchmark suite and print its table: ``python -m bench`` (``make bench``).

Each server runs in its own process and each load generator in another, all on
127.0.0.1.  regserve runs as `regserve serve` with a 10-feature linear model;
the baselines are bench/bare_server.py in sync and aio mode, doing the same
arithmetic with no framework.  Results go to stdout and bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from regserve.client import RegressionClient

ROOT = Path(__file__).resolve().parent
FEATURES = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait_ready(target: str, timeout: float = 60.0) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


def start_regserve(model_dir: str) -> tuple[subprocess.Popen, str, str]:
    """regserve with metrics, the JSON access log and the REST gateway on, authentication off."""
    port, gateway, metrics = _free_port(), _free_port(), _free_port()
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", str(port), "--model-dir", model_dir]
    command += ["--no-demo-models", "--access-log", "--metrics-port", str(metrics), "--gateway-port", str(gateway)]
    # The access log goes to stderr: one JSON line per request is written, and dropped here.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    _wait_ready(target)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10_000, FEATURES))
    with RegressionClient(target) as client:
        client.train("bench", X, X @ rng.normal(size=FEATURES) + 0.5)
    return process, target, f"127.0.0.1:{gateway}"


def start_bare(mode: str) -> tuple[subprocess.Popen, str, str]:
    """The bare grpcio baseline; it has no REST gateway (the third value is empty)."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_server", "--mode", mode, "--port", str(port)], stdout=subprocess.DEVNULL
    )
    target = f"127.0.0.1:{port}"
    _wait_ready(target)
    return process, target, ""


def load(target: str, **options) -> dict:
    command = [sys.executable, "-m", "bench.loadgen", "--target", target]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


SCENARIOS = [
    ("unary c=1", dict(scenario="unary", concurrency=1)),
    ("unary c=8", dict(scenario="unary", concurrency=8)),
    ("unary c=64", dict(scenario="unary", concurrency=64)),
    ("unary 1,000 rows c=8", dict(scenario="unary", concurrency=8, rows=1000)),
    ("BatchPredict 10,000x10", dict(scenario="stream", rows=10_000, chunks=200)),
    ("REST Predict c=1", dict(scenario="http", concurrency=1)),
    ("REST Predict c=8", dict(scenario="http", concurrency=8)),
]


def run(duration: float) -> dict:
    results: dict[str, dict] = {}
    servers = {"regserve": None, "bare sync": "sync", "bare aio": "aio"}
    with tempfile.TemporaryDirectory() as model_dir:
        for name, mode in servers.items():
            process, target, gateway = start_regserve(model_dir) if mode is None else start_bare(mode)
            try:
                for scenario, options in SCENARIOS:
                    options = dict(options, features=FEATURES)
                    if options["scenario"] == "http" and not gateway:
                        continue
                    if options["scenario"] in ("unary", "http"):
                        options["duration"] = duration
                    result = load(gateway if options["scenario"] == "http" else target, **options)
                    result["server_peak_rss_mb"] = _peak_rss_mb(process.pid)
                    results.setdefault(scenario, {})[name] = result
                    print(f"  {name:10s} {scenario:24s} done", file=sys.stderr)
            finally:
                process.terminate()
                process.wait(30)
    return results


def table(results: dict) -> str:
    head = (
        f"{'scenario':24s} {'server':10s} {'req/s':>9s} {'rows/s':>12s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'client CPU':>10s} {'srv RSS MB':>10s} {'ratio':>6s}"
    )
    lines = [head, "-" * len(head)]
    for scenario, by_server in results.items():
        bare = by_server.get("bare sync") or results.get(scenario.replace("REST Predict", "unary"), {}).get(
            "regserve", {}
        )
        for server, r in by_server.items():
            key = "rows_per_s"
            ratio = r[key] / bare[key] if bare.get(key) else float("nan")
            lines.append(
                f"{scenario:24s} {server:10s} {r.get('rps', float('nan')):9.0f} {r[key]:12.0f} "
                f"{r.get('p50_ms', float('nan')):8.3f} {r.get('p99_ms', float('nan')):8.3f} "
                f"{r['client_cpu']:10.0%} {r['server_peak_rss_mb']:10.0f} {ratio:6.2f}"
            )
    lines.append("ratio: rows/s against the bare sync grpcio server in the same scenario; for REST rows, against")
    lines.append("regserve's own gRPC Predict at the same concurrency.  The regserve server runs with metrics,")
    lines.append("the JSON access log and the gateway on, authentication off.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="regserve benchmarks")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per unary scenario")
    args = parser.parse_args()
    header = (
        f"regserve bench, {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, grpcio {grpc.__version__}, "
        f"numpy {np.__version__}"
    )
    print(header, file=sys.stderr)
    results = run(args.duration)
    print(header)
    print(table(results))
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"header": header, "results": results}, indent=2))


if __name__ == "__main__":
    main()
