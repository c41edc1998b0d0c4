"""Run the benchmark suite: ``python -m bench`` (``make bench``).

Every server runs in its own process and every load generator (``bench.loadgen``)
in another, all on 127.0.0.1, with a 10-feature linear model:

- ``regserve``: ``regserve serve`` with metrics, the JSON access log and the
  embedded REST gateway on, authentication off, one process;
- ``regserve x2``: the same with ``--workers 2``;
- ``regserve pinned`` / ``regserve x2 pinned``: the same with ``--pin-cpus`` on the first CPU and
  ``--workers 2 --pin-cpus auto`` (each process on one CPU; the load generator is not pinned),
  and ``bare sync pinned``, the bare sync server on the same CPU as ``regserve pinned``;
- ``bare sync`` / ``bare aio``: ``bench/bare_server.py``, the same arithmetic on
  the same messages with no framework, in grpcio's sync mode (regserve's, with
  regserve's threads: 16 for the server and 2 of Predict's own) and aio;
- ``bare sync shared``: the bare sync server with Predict on the server's 16
  threads, grpcio's usual set-up (unary at concurrency 8 only);
- ``fastapi``: ``bench/fastapi_server.py``, a FastAPI ``def /predict`` JSON endpoint, and
  a FastAPI ``def /v2/models/{model}/infer`` with pydantic models of the protocol's JSON.

The ``ModelInfer`` scenarios call the Open Inference Protocol's ``inference.GRPCInferenceService``
with the rows as one raw FP64 tensor, as tritonclient sends them; the bare servers answer
the same ModelInfer from the compiled stubs with one matmul.  ``REST v2`` posts the
protocol's JSON to ``/v2/models/{model}/infer``, on regserve's gateway and on FastAPI.

All servers are started first; each scenario then runs ``--rounds`` times, its
servers taking turns, and the table shows each server's mean throughput and median
percentiles over the rounds (every round is kept in the JSON file): servers compared
in a scenario meet the same minutes of a machine whose speed drifts.  Before each
scenario the server's peak resident memory (VmHWM) is reset, so the "srv MB"
column is the peak of that scenario alone.  The table goes to stdout;
the figures to bench/results/latest.json and a chart to bench/results/latest.png.
The four targets of the suite are checked at the end, by ratio, from this run only.
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
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from regserve.client import RegressionClient

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
FEATURES = 10
GRPC_BASELINES = ("bare sync", "bare aio", "bare sync shared")


@dataclass(frozen=True)
class Scenario:
    name: str
    options: dict
    servers: tuple[str, ...]
    metric: str = "rps"  # the throughput the ratios compare: "rps" or "rows_per_s"
    timed: bool = True  # runs for --duration seconds


_UNARY = ("regserve", "bare sync", "bare aio")
_CONNECTIONS = ("regserve", "regserve x2", "regserve x2 pinned", "bare sync")
SCENARIOS = [
    Scenario("unary c=1", dict(scenario="unary", concurrency=1), _UNARY),
    Scenario(
        "unary c=8",
        dict(scenario="unary", concurrency=8),
        (*_UNARY, "bare sync shared", "regserve pinned", "bare sync pinned"),
    ),
    Scenario("unary c=64", dict(scenario="unary", concurrency=64), _UNARY),
    Scenario("Predict 1,000 rows c=8", dict(scenario="unary", concurrency=8, rows=1000), _UNARY, "rows_per_s"),
    Scenario("BatchPredict 10,000x10", dict(scenario="stream", rows=10_000, chunks=200), _UNARY, "rows_per_s", False),
    Scenario(
        "BatchPredict intervals",
        dict(scenario="stream", rows=10_000, chunks=200, interval=0.95),
        ("regserve",),
        "rows_per_s",
        False,
    ),
    Scenario("REST c=1", dict(scenario="http", concurrency=1), ("regserve", "fastapi")),
    Scenario(
        "REST c=8", dict(scenario="http", concurrency=8), ("regserve", "regserve pinned", "regserve x2", "fastapi")
    ),
    Scenario("Train closed form", dict(scenario="train", rows=100_000, chunks=10), ("regserve",), "rows_per_s", False),
    Scenario("ModelInfer c=1", dict(scenario="infer", concurrency=1), _UNARY),
    Scenario("ModelInfer c=8", dict(scenario="infer", concurrency=8), _UNARY),
    Scenario("ModelInfer c=64", dict(scenario="infer", concurrency=64), _UNARY),
    Scenario("ModelInfer 10,000x10", dict(scenario="infer", concurrency=8, rows=10_000), _UNARY, "rows_per_s"),
    Scenario("REST v2 infer c=8", dict(scenario="http", concurrency=8, http_style="v2"), ("regserve", "fastapi")),
    Scenario("unary c=8, 8 conns", dict(scenario="unary", concurrency=8, channels=8), _CONNECTIONS),
    Scenario("unary c=64, 8 conns", dict(scenario="unary", concurrency=64, channels=8), _CONNECTIONS),
]


# ------------------------------------------------------------------ servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_grpc(target: str, timeout: float = 60.0) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    grpc_target: str = ""
    http_target: str = ""
    pids: list[int] = field(default_factory=list)

    def serving_pids(self) -> list[int]:
        """The processes that answer: the workers under ``--workers``, else the process itself."""
        if self.name.startswith("regserve x2"):
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            return [int(pid) for pid in children]
        return [self.process.pid]

    def reset_peak_memory(self) -> None:
        for pid in self.serving_pids():
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def peak_memory_mb(self) -> float:
        total = 0.0
        for pid in self.serving_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        return total

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def start_regserve(model_dir: str, workers: int = 1, pin_cpus: str = "") -> Server:
    """regserve with metrics, the JSON access log and the REST gateway on, authentication off.

    The first one started (one process, not pinned) trains the model; the others load it from the registry.
    """
    port, gateway, metrics = _free_port(), _free_port(), _free_port()
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", str(port), "--model-dir", model_dir]
    command += ["--no-demo-models", "--access-log", "--metrics-port", str(metrics), "--gateway-port", str(gateway)]
    command += ["--workers", str(workers)]
    if pin_cpus:
        command += ["--pin-cpus", pin_cpus]
    # The access log goes to stderr: one JSON line per request is written, and dropped here.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    name = ("regserve" if workers == 1 else f"regserve x{workers}") + (" pinned" if pin_cpus else "")
    server = Server(name, process)
    server.grpc_target, server.http_target = f"127.0.0.1:{port}", f"127.0.0.1:{gateway}"
    _wait_grpc(server.grpc_target)
    _wait_http(f"http://{server.http_target}/openapi.json")
    if name == "regserve":
        rng = np.random.default_rng(0)
        X = rng.normal(size=(10_000, FEATURES))
        with RegressionClient(server.grpc_target) as client:
            client.train("bench", X, X @ rng.normal(size=FEATURES) + 0.5)
    else:
        time.sleep(3)  # every process has polled the registry and holds the model
    return server


def start_bare(mode: str, cpu: int | None = None, *, shared: bool = False) -> Server:
    """The bare server; with ``cpu``, every thread of it runs on that CPU, as under ``--pin-cpus``.

    In sync mode its threads are regserve's (16, and 2 for Predict), unless ``shared``:
    then Predict runs on the 16 as well, grpcio's usual set-up.
    """
    port = _free_port()
    command = [sys.executable, "-m", "bench.bare_server", "--mode", mode, "--port", str(port)]
    command += ["--predict-threads", "0"] if shared else []
    pin = None if cpu is None else lambda: os.sched_setaffinity(0, {cpu})
    name = f"bare {mode}" + ("" if cpu is None else " pinned") + (" shared" if shared else "")
    server = Server(name, subprocess.Popen(command, stdout=subprocess.DEVNULL, preexec_fn=pin))
    server.grpc_target = f"127.0.0.1:{port}"
    _wait_grpc(server.grpc_target)
    return server


def start_fastapi() -> Server:
    port = _free_port()
    command = [sys.executable, "-m", "bench.fastapi_server", "--port", str(port), "--features", str(FEATURES)]
    server = Server("fastapi", subprocess.Popen(command))
    server.http_target = f"127.0.0.1:{port}"
    _wait_http(f"http://{server.http_target}/openapi.json")
    return server


# ------------------------------------------------------------------ running


def load(target: str, **options) -> dict:
    command = [sys.executable, "-m", "bench.loadgen", "--target", target]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _combine(rounds: list[dict]) -> dict:
    """One server's figures over the rounds of a scenario: mean throughput and CPU, median percentiles."""
    combined = dict(rounds[0])
    for key in ("rps", "rows_per_s", "client_cpu"):
        if rounds[0].get(key) is not None:
            combined[key] = float(np.mean([r[key] for r in rounds]))
    for key in ("p50_ms", "p99_ms"):
        if rounds[0].get(key) is not None:
            combined[key] = float(np.median([r[key] for r in rounds]))
    if "requests" in combined:
        combined["requests"] = sum(r["requests"] for r in rounds)
    combined["rounds"] = rounds
    return combined


def run(duration: float, rounds: int = 2, only: set[str] | None = None) -> dict[str, dict[str, dict]]:
    """Figures by scenario, then by server.

    Every server is started first and stays up (an idle server costs nothing here);
    then each scenario is run ``rounds`` times, going through its servers in turn
    (in a rotated order each round), so the servers compared in a scenario meet the
    same minutes of a machine whose speed drifts.
    """
    starters = {
        "regserve": lambda model_dir: start_regserve(model_dir),  # first: it trains the model the others serve
        "bare sync": lambda model_dir: start_bare("sync"),
        "bare aio": lambda model_dir: start_bare("aio"),
        "bare sync shared": lambda model_dir: start_bare("sync", shared=True),
        "bare sync pinned": lambda model_dir: start_bare("sync", cpu=min(os.sched_getaffinity(0))),
        "fastapi": lambda model_dir: start_fastapi(),
        "regserve x2": lambda model_dir: start_regserve(model_dir, workers=2),
        "regserve pinned": lambda model_dir: start_regserve(model_dir, pin_cpus=str(min(os.sched_getaffinity(0)))),
        "regserve x2 pinned": lambda model_dir: start_regserve(model_dir, workers=2, pin_cpus="auto"),
    }
    scenarios = [s for s in SCENARIOS if only is None or s.name in only]
    results: dict[str, dict[str, dict]] = {s.name: {} for s in scenarios}
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory() as model_dir:
        try:
            for name, starter in starters.items():
                if any(name in s.servers for s in scenarios):
                    servers[name] = starter(model_dir)
            for scenario in scenarios:
                names = [name for name in scenario.servers if name in servers]
                figures: dict[str, list[dict]] = {name: [] for name in names}
                for name in names:
                    servers[name].reset_peak_memory()
                for index in range(rounds):
                    for name in names[index % len(names) :] + names[: index % len(names)]:
                        server = servers[name]
                        options = dict(scenario.options, features=FEATURES)
                        if scenario.timed:
                            options["duration"] = duration
                        if options["scenario"] == "http" and name == "fastapi" and "http_style" not in options:
                            options["http_style"] = "fastapi"
                        target = server.http_target if options["scenario"] == "http" else server.grpc_target
                        figures[name].append(load(target, **options))
                        print(f"  {name:18s} {scenario.name:24s} round {index + 1} done", file=sys.stderr)
                for name in names:
                    result = _combine(figures[name])
                    result["server_peak_rss_mb"] = servers[name].peak_memory_mb()
                    results[scenario.name][name] = result
        finally:
            for server in servers.values():
                server.stop()
    return {name: by_server for name, by_server in results.items() if by_server}


# ------------------------------------------------------------------ reporting


def _ratios(scenario: Scenario, by_server: dict[str, dict]) -> dict[str, float]:
    """regserve's throughput over each baseline's in this scenario (and its other set-ups' over it)."""
    ours = by_server.get("regserve", {}).get(scenario.metric)
    ratios = {}
    for baseline in (*GRPC_BASELINES, "fastapi"):
        theirs = by_server.get(baseline, {}).get(scenario.metric)
        if ours and theirs:
            ratios[baseline] = ours / theirs
    for variant in ("regserve x2", "regserve pinned", "regserve x2 pinned"):
        theirs = by_server.get(variant, {}).get(scenario.metric)
        if ours and theirs:
            ratios[variant] = theirs / ours
    return ratios


def _cell(value, fmt: str) -> str:
    width = int(fmt.split(".")[0] or 0)
    return "-".rjust(width) if value is None else format(value, fmt)


def table(results: dict[str, dict[str, dict]]) -> str:
    head = (
        f"{'scenario':24s} {'server':18s} {'req/s':>8s} {'rows/s':>11s} {'p50 ms':>7s} {'p99 ms':>7s} "
        f"{'client CPU':>10s} {'srv MB':>7s}  regserve's ratio"
    )
    lines = [head, "-" * len(head)]
    for scenario in SCENARIOS:
        by_server = results.get(scenario.name)
        if not by_server:
            continue
        ratios = _ratios(scenario, by_server)
        for server, r in by_server.items():
            ratio = ""
            if server == "regserve":
                ratio = ", ".join(f"{v:.2f} of {k}" for k, v in ratios.items() if not k.startswith("regserve"))
            elif server.startswith("regserve") and server in ratios:
                ratio = f"{ratios[server]:.2f} of regserve (1 process, not pinned)"
                pinned_bare = by_server.get("bare sync pinned", {}).get(scenario.metric)
                if server == "regserve pinned" and pinned_bare:
                    ratio += f", {r[scenario.metric] / pinned_bare:.2f} of bare sync pinned"
            lines.append(
                f"{scenario.name:24s} {server:18s} {_cell(r.get('rps'), '8.0f')} {r['rows_per_s']:11.0f} "
                f"{_cell(r.get('p50_ms'), '7.3f')} {_cell(r.get('p99_ms'), '7.3f')} "
                f"{r['client_cpu']:10.0%} {r['server_peak_rss_mb']:7.0f}  {ratio}"
            )
    return "\n".join(lines)


TARGETS = [
    ("unary Predict req/s at c=8, regserve / bare sync", "unary c=8", "rps", "bare sync", ">=", 0.85),
    ("unary Predict p50 at c=1, regserve / bare sync", "unary c=1", "p50_ms", "bare sync", "<=", 1.2),
    ("BatchPredict rows/s, regserve / bare sync", "BatchPredict 10,000x10", "rows_per_s", "bare sync", ">=", 0.75),
    ("REST Predict req/s at c=8, regserve / FastAPI", "REST c=8", "rps", "fastapi", ">=", 1.0),
    ("ModelInfer req/s at c=8, regserve / bare sync", "ModelInfer c=8", "rps", "bare sync", ">=", 0.85),
    ("ModelInfer 10,000 rows/s, regserve / bare sync", "ModelInfer 10,000x10", "rows_per_s", "bare sync", ">=", 0.75),
    ("REST v2 infer req/s at c=8, regserve / FastAPI", "REST v2 infer c=8", "rps", "fastapi", ">=", 1.0),
]


def targets(results: dict[str, dict[str, dict]]) -> list[dict]:
    checked = []
    for label, scenario, key, baseline, op, bound in TARGETS:
        by_server = results.get(scenario, {})
        ours, theirs = by_server.get("regserve", {}).get(key), by_server.get(baseline, {}).get(key)
        ratio = ours / theirs if ours and theirs else None
        met = None if ratio is None else (ratio >= bound if op == ">=" else ratio <= bound)
        checked.append({"target": label, "bound": f"{op} {bound:g}", "ratio": ratio, "met": met})
    return checked


def targets_text(checked: list[dict]) -> str:
    lines = ["targets (ratios from this run):"]
    for t in checked:
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"  {t['target']:54s} {t['bound']:>7s}  {_cell(t['ratio'], '5.2f')}  {verdict}")
    return "\n".join(lines)


def _versions() -> str:
    from importlib import metadata

    names = ("grpcio", "protobuf", "numpy", "uvicorn", "starlette", "fastapi")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        memory_kb = 0
    return f"{model}, {os.cpu_count()} cores, {memory_kb / 1024**2:.1f} GiB, Linux {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description="regserve benchmark suite")
    # Many short rounds rather than a few long ones: this machine's speed drifts within a
    # minute, and servers that take turns every few seconds meet the same drift.
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per timed scenario and round")
    parser.add_argument(
        "--rounds", type=int, default=8, help="times each scenario runs, its servers taking turns (figures averaged)"
    )
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for latest.json and latest.png")
    args = parser.parse_args()
    header = [
        f"regserve bench {time.strftime('%Y-%m-%d %H:%M')}: "
        f"python -m bench --duration {args.duration:g} --rounds {args.rounds}",
        f"machine: {_machine()}",
        f"software: Python {platform.python_version()}, {_versions()}",
    ]
    print("\n".join(header), file=sys.stderr)
    results = run(args.duration, args.rounds, set(args.only) if args.only else None)
    checked = targets(results)
    print("\n".join(header))
    print(table(results))
    print(
        "regserve: metrics, JSON access log and embedded REST gateway on, authentication off.  "
        "'8 conns': the calls spread over 8 connections, so SO_REUSEPORT can give each worker some.  "
        "ModelInfer: the Open Inference Protocol's gRPC call on one raw FP64 tensor, beside the bare servers' "
        "same call; compare its req/s with unary Predict's at the same concurrency.  "
        "REST v2: the protocol's JSON to /v2/models/{model}/infer, regserve's gateway against FastAPI with pydantic."
    )
    print(targets_text(checked))
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"header": header, "results": results, "targets": checked}
    (args.out / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    from bench.chart import draw

    draw(document, args.out / "latest.png")
    print(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.png'}")


if __name__ == "__main__":
    main()
