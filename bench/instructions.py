"""Instructions per one-row Predict in process, counted by valgrind's callgrind: a figure that does not drift.

    python -m bench.instructions [--calls 10000] [--no-access-log]

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
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from bench.inprocess import CALLS, predict_calls

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls counted (beyond the first 1,000)")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.calls, args.access_log)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
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
