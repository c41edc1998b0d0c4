"""Instructions per one-row call, counted by valgrind's callgrind: a figure that does not drift.

    python -m bench.instructions [--calls 10000] [--no-access-log]
    python -m bench.instructions --wire [--scenario unary|infer] [--duration 20] [--variant NAME=FLAGS ...]

The speed of a shared machine drifts within minutes, so a change worth a few
percent needs many interleaved timing rounds to show.  Callgrind counts the
instructions a process executes instead, which come out the same from run to run
whatever else the machine is doing.  For each of the calls of ``bench.inprocess``
(regserve behind the edge, its servicer alone, the bare servicer) this runs a child
process under callgrind twice, making 1,000 and then 1,000 + ``--calls`` calls, and
prints the difference divided by ``--calls``: start-up, training and shut-down
cancel out.  The background threads' work per call (the edge's recorder counting
calls and writing their log lines) is counted; work done per tick of a timer comes
out a little larger than in real time, since the process runs many times slower
under valgrind.  docs/performance.md says how closely runs of the same code agree.

It counts the Python work of a call in user space, not the kernel's or what waiting
for the interpreter lock costs under load; ``python -m bench`` measures those.
Needs valgrind (Debian's package ``valgrind``) on the PATH; children run two at a time.

``--wire`` counts the whole server process instead, over the real transport: the
bare sync server, ``regserve serve`` with its defaults and each ``--variant``
(``name=flags``) run under callgrind, two at a time, while ``bench.loadgen`` (not
under valgrind) sends one-row Predict or ModelInfer calls at concurrency 8.  Counting
starts after a warm-up; a second window of the same length with no calls gives what
the idle process spends (timers, polling), which is taken off.  Every thread counts:
grpcio's, the handler's and the background ones.  Runs of the same server agree
within about 3%, since how often grpcio's threads poll and hand over depends on
timing.  Under valgrind a server answers about 40 times fewer calls a second, so
work done a batch at a time (the edge's counting and access log, drift's folds)
comes in batches about 40 times smaller than at full speed and weighs more per call.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.__main__ import FEATURES, _free_port, _wait_grpc, load
from bench.inprocess import CALLS, predict_calls
from regserve.client import RegressionClient

_BASE_CALLS = 1_000
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _child(name: str, calls: int, access_log: bool) -> None:
    with predict_calls(access_log) as named:
        call = named[name]
        for _ in range(calls):
            call()


def _count(name: str, calls: int, access_log: bool) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m", __spec__.name]
    command += ["--child", name, "--calls", str(calls)] + ([] if access_log else ["--no-access-log"])
    result = subprocess.run(command, capture_output=True, text=True)
    match = _COLLECTED.search(result.stderr)
    if result.returncode or match is None:
        raise RuntimeError(f"callgrind run of {name!r} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return int(match.group(1))


_TOTALS = re.compile(r"^totals:\s*(\d+)", re.MULTILINE)
_STARTUP_SECONDS = 600.0  # importing and training run dozens of times slower under valgrind


def _dumped_total(path: Path, timeout: float = 120.0) -> int:
    """The instructions of a callgrind dump file, once callgrind has finished writing it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            match = _TOTALS.search(path.read_text())
            if match:
                return int(match.group(1))
        time.sleep(0.5)
    raise RuntimeError(f"callgrind wrote no totals to {path}")


def _wire_count(flags: list[str] | None, scenario: str, duration: float, out_dir: str) -> tuple[int, float]:
    """(calls answered, instructions per call) of one server under callgrind: regserve with ``flags``, or bare."""
    port = _free_port()
    target = f"127.0.0.1:{port}"
    if flags is None:
        command = [sys.executable, "-m", "bench.bare_server", "--mode", "sync", "--port", str(port)]
    else:
        command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", str(port)]
        command += ["--model-dir", tempfile.mkdtemp(dir=out_dir), "--no-demo-models", "--metrics-port", "0", *flags]
    output = Path(tempfile.mkdtemp(dir=out_dir)) / "callgrind.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={output}"]
    process = subprocess.Popen(valgrind + command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_grpc(target, timeout=_STARTUP_SECONDS)
        if flags is not None:
            rng = np.random.default_rng(0)
            X = rng.normal(size=(2_000, FEATURES))
            with RegressionClient(target, timeout=_STARTUP_SECONDS) as client:
                client.train("bench", X, X @ rng.normal(size=FEATURES) + 0.5)
        options = dict(scenario=scenario, concurrency=8, features=FEATURES)
        load(target, duration=5, **options)  # warm-up, not counted

        def control(*arguments: str) -> None:
            subprocess.run(["callgrind_control", *arguments, str(process.pid)], check=True, capture_output=True)

        control("--instr=on")
        result = load(target, duration=duration, **options)
        control("--dump")  # writes the window's counts to callgrind.out.1 and starts counting afresh
        time.sleep(duration)
        control("--dump")  # the idle window: callgrind.out.2
        busy, idle = _dumped_total(Path(f"{output}.1")), _dumped_total(Path(f"{output}.2"))
    finally:
        process.terminate()
        process.wait(120)
    calls = result["requests"]
    return calls, (busy - idle) / calls


def _wire(args: argparse.Namespace) -> None:
    servers: dict[str, list[str] | None] = {"bare sync": None, "regserve": []}
    for spec in args.variant:
        name, _, flags = spec.partition("=")
        servers[name] = shlex.split(flags)
    with tempfile.TemporaryDirectory() as out_dir, ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(
            zip(
                servers,
                pool.map(lambda flags: _wire_count(flags, args.scenario, args.duration, out_dir), servers.values()),
                strict=True,
            )
        )
    call = "Predict" if args.scenario == "unary" else "ModelInfer"
    print(f"instructions per one-row {call} at concurrency 8, whole server process (callgrind, {args.duration:g} s)")
    bare = counts["bare sync"][1]
    for name, (calls, per_call) in counts.items():
        ratio = "" if name == "bare sync" else f"  bare's / this = {bare / per_call:.3f}"
        print(f"{name:30s} {calls:6d} calls {per_call:11,.0f}{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls counted (beyond the first 1,000)")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--wire", action="store_true", help="count whole servers over gRPC instead (see above)")
    parser.add_argument("--scenario", choices=("unary", "infer"), default="infer", help="with --wire: the call")
    parser.add_argument("--duration", type=float, default=20.0, help="with --wire: seconds of each window")
    parser.add_argument("--variant", action="append", default=[], help="with --wire: name=flags for regserve serve")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.calls, args.access_log)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    if args.wire:
        _wire(args)
        return
    runs = [(name, calls) for name in CALLS for calls in (_BASE_CALLS, _BASE_CALLS + args.calls)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(runs, pool.map(lambda run: _count(*run, args.access_log), runs), strict=True))
    log = "on" if args.access_log else "off"
    print(f"instructions per one-row call, in process (callgrind, {args.calls} calls, access log {log})")
    for name in CALLS:
        per_call = (counts[name, _BASE_CALLS + args.calls] - counts[name, _BASE_CALLS]) / args.calls
        print(f"{name:30s} {per_call:9,.0f}")


if __name__ == "__main__":
    main()
