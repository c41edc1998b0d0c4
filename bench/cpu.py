"""Server CPU and context switches per call: regserve variants against the bare sync server.

    python -m bench.cpu --rounds 3 --duration 4 --variant "log=" --variant "no log=--no-access-log"

Each variant is ``name=flags`` for ``regserve serve`` (metrics on, demo models off).
Servers run one at a time, the variants interleaved with the bare sync server over
``--rounds`` rounds, each loaded by ``bench.loadgen`` with one-row Predict calls (or,
with ``--scenario infer``, ModelInfer calls) at ``--concurrency``.  For each run it
prints calls a second, the server's CPU time per call and its context switches per
call (all threads, from /proc): on a machine whose speed drifts, CPU per call and
switches per call compare better than rates.

``--pin`` runs each server (every thread, as ``--pin-cpus`` does) on the first CPU it
may use and the load generator on the second.  The threads of a server then hand the
interpreter lock over on one core, without waking another, and on this 2-core
machine the figures are much steadier (docs/performance.md gives the spread): use it
to compare code changes, and the unpinned
suite (``python -m bench``) for the figures a deployment sees.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.__main__ import FEATURES, _free_port, _wait_grpc, load, start_bare
from regserve.client import RegressionClient


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _context_switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
        except OSError:  # the thread ended meanwhile
            pass
    return total


def _start_regserve(model_dir: str, flags: list[str], cpu: int | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", str(port), "--model-dir", model_dir]
    command += ["--no-demo-models", "--metrics-port", "0", *flags]
    pin = None if cpu is None else lambda: os.sched_setaffinity(0, {cpu})  # as start_bare does
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin)
    target = f"127.0.0.1:{port}"
    _wait_grpc(target)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2_000, FEATURES))
    with RegressionClient(target) as client:
        client.train("bench", X, X @ rng.normal(size=FEATURES) + 0.5)
    return process, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="name=flags for regserve serve (repeatable)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--scenario", choices=("unary", "infer"), default="unary", help="one-row Predict, or one-row ModelInfer"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run every server on one CPU and the load generator on another: steadier figures on a 2-core machine",
    )
    args = parser.parse_args()
    server_cpu = None
    if args.pin:
        server_cpu, load_cpu = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, {load_cpu})  # the load generators inherit it
    variants = {"bare sync": None}
    for spec in args.variant or ["regserve="]:
        name, _, flags = spec.partition("=")
        variants[name] = shlex.split(flags)
    print(f"{'server':14s} {'calls/s':>8s} {'CPU us/call':>12s} {'switches/call':>14s} {'client CPU':>10s}")
    with tempfile.TemporaryDirectory() as model_dir:
        for _ in range(args.rounds):
            for name, flags in variants.items():
                if flags is None:
                    server = start_bare("sync", cpu=server_cpu)
                    process, target = server.process, server.grpc_target
                else:
                    process, target = _start_regserve(model_dir, flags, server_cpu)
                try:
                    options = dict(scenario=args.scenario, concurrency=args.concurrency, features=FEATURES)
                    load(target, duration=1, **options)  # warm-up
                    cpu, switches = _cpu_seconds(process.pid), _context_switches(process.pid)
                    result = load(target, duration=args.duration, **options)
                    cpu, switches = _cpu_seconds(process.pid) - cpu, _context_switches(process.pid) - switches
                finally:
                    process.terminate()
                    process.wait(30)
                calls = result["requests"]
                print(
                    f"{name:14s} {result['rps']:8.0f} {cpu * 1e6 / calls:12.1f} {switches / calls:14.1f} "
                    f"{result['client_cpu']:10.0%}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
