"""The training scale table: ``python -m bench.training --scale [ROWS]`` (default 20,000,000 rows x 20 features).

The rows (seeded, generated file by file, never whole in memory) are written as 16
Parquet files, then trained twice on the same files, each run against a fresh
``regserve serve`` on 127.0.0.1:

* single-node: ``regserve train DIR`` streams the rows to the server;
* ``regserve train DIR --dask local:2``: two local worker processes read the files,
  the model is stored with CreateVersion.

Each run's wall time is the CLI process's, start to exit (for ``--dask`` that includes
starting and closing the LocalCluster).  Peak memory is VmHWM from /proc of every
process involved: the server, the CLI (the client; with ``--dask`` also the scheduler,
which LocalCluster runs in it) and each process the CLI starts (nannies and workers),
polled every 50 ms, so a peak reached in a process's last 50 ms may be missed.  The
table also gives the largest relative difference of the two runs' coefficients.

The table goes to stdout and bench/results/training_scale.json.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.training import ROOT, SEED, Server, _client, _coefficients, _max_rel_diff, _status_kib

FILES = 16
FEATURES = 20
ROW_GROUP = 250_000


def write_parts(directory: Path, rows: int, d: int = FEATURES, files: int = FILES) -> None:
    """``rows`` seeded rows of ``d`` features and a linear target ``y`` as ``files`` Parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(SEED)
    coef = rng.normal(size=d)
    for i in range(files):
        n = rows // files + (i < rows % files)
        with pq.ParquetWriter(directory / f"part-{i:02d}.parquet", _schema(pa, d)) as writer:
            for start in range(0, n, ROW_GROUP):
                m = min(ROW_GROUP, n - start)
                X = rng.normal(size=(m, d))
                y = X @ coef + 1.0 + rng.normal(scale=0.1, size=m)
                columns = {f"x{j}": X[:, j] for j in range(d)}
                writer.write_table(pa.table({**columns, "y": y}))


def _schema(pa, d: int):
    return pa.schema([*(pa.field(f"x{j}", pa.float64()) for j in range(d)), pa.field("y", pa.float64())])


class ProcessTree:
    """Peak VmHWM (MB) of a process and of every process it starts, polled while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self._stop.wait(0.05):
            with contextlib.suppress(psutil.Error):
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error, OSError, KeyError):
                        peak = _status_kib(process.pid)["VmHWM"] / 1024
                        name = self.peaks.get(process.pid, (_role(process), 0.0))[0]
                        self.peaks[process.pid] = (name, max(peak, self.peaks.get(process.pid, ("", 0.0))[1]))

    def close(self) -> dict[str, float]:
        """Peak MB by role; processes of one role numbered in the order they were first seen."""
        self._stop.set()
        self._thread.join()
        out: dict[str, float] = {}
        for pid, (role, peak) in self.peaks.items():
            label = "client (CLI)" if pid == self.pid else role
            count = sum(1 for key in out if key.startswith(label))
            out[f"{label} {count + 1}" if pid != self.pid else label] = round(peak, 1)
        return out


def _role(process) -> str:
    """What a process of a ``--dask local`` run is, from its command line."""
    command = " ".join(process.cmdline())
    if "multiprocessing.resource_tracker" in command:
        return "resource tracker"
    if "multiprocessing.spawn" in command or "multiprocessing.forkserver" in command:
        return "worker"
    return process.name()


def train_run(directory: Path, model: str, extra: list[str]) -> dict:
    """One ``regserve train`` of the files against a fresh server: seconds, peaks, coefficients."""
    with tempfile.TemporaryDirectory() as model_dir, Server(model_dir) as server:
        command = [sys.executable, "-m", "regserve.server.cli", "train", str(directory), "--server", server.target]
        command += ["--model", model, "--target", "y", "--chunk-rows", "65536", "-o", "json", *extra]
        t0 = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tree = ProcessTree(process.pid)
        code = process.wait()
        seconds = time.perf_counter() - t0
        peaks = tree.close()
        if code:
            raise RuntimeError(f"{' '.join(command)} exited with {code}")
        with _client(server.target) as client:
            coef, intercept = _coefficients(client.model_info(model))
        peaks["server"] = round(server.vm_hwm_mb(), 1)
    return {"seconds": seconds, "peak_mb": peaks, "coef": np.concatenate([intercept, coef.ravel()])}


def scale_table(rows: int) -> dict:
    """Both runs on ``rows`` rows as 16 Parquet files; the JSON-ready results."""
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        t0 = time.perf_counter()
        write_parts(directory, rows)
        print(f"  wrote {rows:,} rows as {FILES} files in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        single = train_run(directory, "single", [])
        cluster = train_run(directory, "cluster", ["--dask", "local:2"])
    result = {"rows": rows, "features": FEATURES, "files": FILES}
    for name, run in (("single_node", single), ("dask_local_2", cluster)):
        result[name] = {
            "seconds": round(run["seconds"], 2),
            "rows_per_s": round(rows / run["seconds"]),
            "peak_mb": run["peak_mb"],
        }
    result["max_rel_coef_diff"] = _max_rel_diff(cluster["coef"], single["coef"])
    return result


def table(r: dict) -> str:
    lines = [f"scale: {r['rows']:,} x {r['features']} as {r['files']} Parquet files, closed form", "-" * 100]
    lines.append(f"{'run':24s} {'wall s':>8s} {'rows/s':>12s}  peak memory (VmHWM MB) per process")
    for name, label in (("single_node", "single-node (streamed)"), ("dask_local_2", "--dask local:2")):
        run = r[name]
        peaks = ", ".join(f"{k} {v:,.0f}" for k, v in run["peak_mb"].items())
        lines.append(f"{label:24s} {run['seconds']:8.2f} {run['rows_per_s']:12,.0f}  {peaks}")
    lines.append(f"largest relative difference of the two runs' coefficients: {r['max_rel_coef_diff']:.2e}")
    return "\n".join(lines)


def run(rows: int) -> None:
    result = scale_table(rows)
    print(table(result))
    out = ROOT / "results" / "training_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
