"""Training benchmarks: ``python -m bench.training`` (``--quick`` for a 1/20-size smoke run).

Each figure starts its own ``regserve serve`` subprocess on a free 127.0.0.1
port (fresh, so its VmHWM belongs to that figure) and trains through
``RegressionClient.train`` over gRPC, raw float64 bytes in 50,000-row chunks.
A sampler thread polls the server's /proc files (RSS split into anonymous and
file-backed pages, CPU time per thread, bytes written) and the free space of
the spool directory while a figure runs.  VmHWM counts file-backed pages too:
the server's np.memmap of its spool file shows up there (RssFile), not as heap.
BLAS threading is inherited from the environment (OPENBLAS_NUM_THREADS, shown
in the header when set).

1. Closed form on 1,000,000 x 50 rows: rows/s through Train beside
   ``numpy.linalg.lstsq`` on the same rows in memory, and how far apart the
   two coefficient vectors are.
2. Closed form on 20,000,000 x 20 rows (3.2 GB of float64) generated chunk by
   chunk on the client: server peak RSS, wall time, rows/s, and where the time
   goes (client generation, intake while streaming, the finish phase after the
   last chunk), followed by an in-process breakdown of ``Trainer`` on 1/10 of
   the rows: validation, split draws, moments, the drift edges' sample, proto
   parsing, the fingerprint and spool writes (in the trainer's store thread,
   overlapping the rest), the fit and the one scoring pass of the finish.
3. Logistic regression (Newton, standardize, alpha 1e-4) on 1,000,000 x 20
   rows beside scikit-learn's lbfgs ``LogisticRegression(C=1/(alpha*n))``.

Figures 1 and 3 also time ``regserve train FILE.parquet`` (the CLI process from
start to exit, reading the same rows from a Parquet file written beforehand).
Those runs and the references (lstsq, scikit-learn's fit) run as many times as
regserve's Train, and each figure is the median of its runs.

The table goes to stdout and bench/results/training.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np

from regserve.client import RegressionClient

ROOT = Path(__file__).resolve().parent
CHUNK_ROWS = 50_000
TIMEOUT = 3600.0
SEED = 20_240_601
_TICKS = os.sysconf("SC_CLK_TCK")
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")  # inherited by the server


# ----------------------------------------------------------------------------- server process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status_kib(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0])
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of ``pid``, with the thread's name (comm)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            comm, _, rest = (task / "stat").read_text().partition("(")[2].rpartition(")")
            fields = rest.split()
            out[int(task.name)] = (comm, (int(fields[11]) + int(fields[12])) / _TICKS)
    return out


def _io(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}


class Server:
    """``regserve serve`` in a subprocess, with a /proc sampler; a context manager."""

    def __init__(self, model_dir: str, profile: str | None = None, options: tuple[str, ...] = ()) -> None:
        port = _free_port()
        self.target = f"127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "regserve.server.cli",
            "serve",
            "--port",
            str(port),
            "--model-dir",
            model_dir,
            "--no-demo-models",
            "--log-level",
            "WARNING",
            *options,
        ]
        self._profiler = None
        self.process = subprocess.Popen(command)
        with grpc.insecure_channel(self.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if profile and py_spy:
            # Sampling profile of the server (py-spy is optional and not a project dependency).
            self._profiler = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(self.process.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "50",
                    "--nonblocking",
                    "--threads",
                    "--output",
                    profile,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        self.peaks: dict[str, int] = {}
        self.samples: list[tuple[float, int, int]] = []  # (t, RssAnon kB, RssFile kB)
        self.min_free_bytes = shutil.disk_usage(tempfile.gettempdir()).free
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        spool_dir = tempfile.gettempdir()
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError):
                for key, value in _status_kib(self.process.pid).items():
                    if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                        self.peaks[key] = max(self.peaks.get(key, 0), value)
                self.min_free_bytes = min(self.min_free_bytes, shutil.disk_usage(spool_dir).free)
                own = _status_kib(os.getpid())["VmRSS"]
                self.peaks["client VmRSS"] = max(self.peaks.get("client VmRSS", 0), own)
                status = _status_kib(self.process.pid)
                self.samples.append((time.perf_counter(), status["RssAnon"], status["RssFile"]))

    def snapshot(self) -> dict:
        """Now: CPU seconds, cumulative I/O counters and status fields of the server process."""
        return {
            "t": time.perf_counter(),
            "cpu": _cpu_seconds(self.process.pid),
            "io": _io(self.process.pid),
            "status": _status_kib(self.process.pid),
            "threads": _thread_cpu(self.process.pid),
        }

    def vm_hwm_mb(self) -> float:
        return _status_kib(self.process.pid)["VmHWM"] / 1024

    def close(self) -> None:
        self._stop.set()
        self._sampler.join()
        if self._profiler is not None:
            self._profiler.send_signal(2)  # SIGINT: py-spy writes its output and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._profiler.wait(60)
        self.process.terminate()
        self.process.wait(30)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _client(target: str) -> RegressionClient:
    return RegressionClient(target, timeout=TIMEOUT)


def _warm_up(client: RegressionClient) -> None:
    """One small Train, so the timed runs do not pay for first-call imports and thread start-up."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2_000, 5))
    client.train("warmup", X, X @ np.arange(5.0) + 1.0, solver="closed_form")


def _coefficients(model_version) -> tuple[np.ndarray, np.ndarray]:
    m = model_version.coefficients
    flat = np.frombuffer(m.raw, dtype="<f8") if m.raw else np.array(m.values, dtype=np.float64)
    coef = flat.reshape(-1, m.num_columns)
    return coef, np.array(model_version.intercepts)


def _max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), np.finfo(float).tiny)))


def _parquet_train(
    target: str, X: np.ndarray, y: np.ndarray, directory: str, model: str, options: list[str], repeats: int
) -> list[float]:
    """Seconds of each of ``repeats`` runs of ``regserve train FILE.parquet`` (the CLI process, start to exit).

    The file (columns x0.., y; row groups of CHUNK_ROWS) is written first, untimed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(directory) / f"{model}.parquet"
    columns = {f"x{j}": X[:, j] for j in range(X.shape[1])}
    pq.write_table(pa.table({**columns, "y": y}), path, row_group_size=CHUNK_ROWS)
    command = [sys.executable, "-m", "regserve.server.cli", "train", str(path), "--server", target, "--model", model]
    command += ["--target", "y", "--chunk-rows", str(CHUNK_ROWS), "-o", "json", *options]
    _, seconds = _timed(lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL), repeats)
    path.unlink()
    return seconds


T = TypeVar("T")


def _timed(run: Callable[[], T], repeats: int) -> tuple[T, list[float]]:
    """``run()`` ``repeats`` times: its last result and the seconds of each run.

    regserve and its reference run the same number of times, and each side's figure is the
    median of its runs: the machine's speed drifts.
    """
    seconds: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - t0)
    return result, seconds


def _chunks(X: np.ndarray, y: np.ndarray, rows: int = CHUNK_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, X.shape[0], rows):
        yield X[start : start + rows], y[start : start + rows]


# ----------------------------------------------------------------------------- figure 1


def closed_form_throughput(n: int, d: int, model_dir: str, repeats: int, profile: str | None = None) -> dict:
    rng = np.random.default_rng([SEED, 1])
    X = rng.standard_normal((n, d))
    w = rng.normal(size=d)
    y = X @ w + 0.5 + 0.1 * rng.standard_normal(n)
    with Server(model_dir, profile=profile) as server, _client(server.target) as client:
        _warm_up(client)
        response, runs = _timed(
            lambda: client.train("bench_linear", chunks=_chunks(X, y), kind="linear", solver="closed_form"), repeats
        )
        peak = server.vm_hwm_mb()
        options = ["--kind", "linear", "--solver", "closed_form"]
        parquet = _parquet_train(server.target, X, y, model_dir, "bench_linear_parquet", options, repeats)
    coef, intercept = _coefficients(response.model_version)
    t0 = time.perf_counter()
    A = np.column_stack([np.ones(n), X])
    design_s = time.perf_counter() - t0
    (beta, *_), lstsq_runs = _timed(functools.partial(np.linalg.lstsq, A, y, rcond=None), repeats)
    lstsq_s = float(np.median(lstsq_runs))
    del A
    wall = float(np.median(runs))
    return {
        "rows": n,
        "features": d,
        "chunk_rows": CHUNK_ROWS,
        "data_mb": X.nbytes / 1e6,
        "train_seconds": runs,
        "train_seconds_median": wall,
        "parquet_cli_seconds": float(np.median(parquet)),
        "parquet_cli_seconds_runs": parquet,
        "train_rows_per_s": n / wall,
        "train_mb_per_s": (X.nbytes + y.nbytes) / 1e6 / wall,
        "server_vm_hwm_mb": peak,
        "lstsq_seconds": lstsq_s,
        "lstsq_seconds_runs": lstsq_runs,
        "lstsq_rows_per_s": n / lstsq_s,
        "lstsq_design_seconds": design_s,
        "coef_max_rel_diff": _max_rel_diff(np.append(intercept, coef[0]), beta),
        "coef_max_abs_err_vs_truth": float(np.max(np.abs(coef[0] - w))),
        "condition_number": response.model_version.solver_report.condition_number,
    }


# ----------------------------------------------------------------------------- figure 2


def streamed_memory(n: int, d: int, model_dir: str, profile: str | None) -> dict:
    """Closed form on n x d rows generated chunk by chunk; the client never holds more than one chunk."""
    rng = np.random.default_rng([SEED, 2])
    w = rng.normal(size=d)
    buf = np.empty((CHUNK_ROWS, d))
    noise = np.empty(CHUNK_ROWS)
    timing = {"generate": 0.0}
    marks: dict[str, dict] = {}

    def generate(server: Server) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, n, CHUNK_ROWS):
            t0 = time.perf_counter()
            rows = min(CHUNK_ROWS, n - start)
            X = buf[:rows]
            rng.standard_normal(out=X)
            rng.standard_normal(out=noise[:rows])
            y = X @ w
            y += 0.5
            y += 0.1 * noise[:rows]
            timing["generate"] += time.perf_counter() - t0
            # The client copies X and y into the request (tobytes) before asking for the next chunk,
            # so one buffer serves every chunk.
            yield X, y
        marks["last_chunk"] = server.snapshot()

    free_before = shutil.disk_usage(tempfile.gettempdir()).free
    with Server(model_dir, profile=profile) as server, _client(server.target) as client:
        _warm_up(client)
        before = server.snapshot()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        response = client.train("bench_big", chunks=generate(server), kind="linear", solver="closed_form")
        after = server.snapshot()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        peaks = dict(server.peaks)
        samples = list(server.samples)
        min_free = server.min_free_bytes
    wall = after["t"] - before["t"]
    last = marks["last_chunk"]
    coef, intercept = _coefficients(response.model_version)

    def io_delta(a, b, key):
        return (b["io"].get(key, 0) - a["io"].get(key, 0)) / 1e6 if a["io"] else None

    def phase_peak(t0: float, t1: float, column: int) -> float:
        return max((s[column] for s in samples if t0 <= s[0] <= t1), default=0) / 1024

    def thread_cpu(a: dict, b: dict) -> list[dict]:
        rows = [
            {"tid": tid, "name": comm, "cpu_seconds": cpu - a["threads"].get(tid, (comm, 0.0))[1]}
            for tid, (comm, cpu) in b["threads"].items()
        ]
        return sorted((r for r in rows if r["cpu_seconds"] > 0.05), key=lambda r: -r["cpu_seconds"])

    data_bytes = n * (d + 1) * 8
    return {
        "rows": n,
        "features": d,
        "chunk_rows": CHUNK_ROWS,
        "data_mb": n * d * 8 / 1e6,
        "wire_mb": data_bytes / 1e6,
        "seconds": wall,
        "rows_per_s": n / wall,
        "server_vm_hwm_mb": after["status"]["VmHWM"] / 1024,
        "server_peak_rss_anon_mb": peaks.get("RssAnon", 0) / 1024,
        "server_peak_rss_file_mb": peaks.get("RssFile", 0) / 1024,
        "server_rss_before_mb": before["status"]["VmRSS"] / 1024,
        "server_peak_rss_anon_mb_intake": phase_peak(before["t"], last["t"], 1),
        "server_peak_rss_file_mb_intake": phase_peak(before["t"], last["t"], 2),
        "server_peak_rss_anon_mb_finish": phase_peak(last["t"], after["t"], 1),
        "server_peak_rss_file_mb_finish": phase_peak(last["t"], after["t"], 2),
        "server_rss_file_mb_after": after["status"]["RssFile"] / 1024,
        "server_thread_cpu_intake": thread_cpu(before, last),
        "server_thread_cpu_finish": thread_cpu(last, after),
        "client_peak_rss_mb": peaks.get("client VmRSS", 0) / 1024,
        "client_generate_seconds": timing["generate"],
        "client_cpu_seconds": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "intake_seconds": last["t"] - before["t"],
        "finish_seconds": after["t"] - last["t"],
        "server_cpu_intake_seconds": last["cpu"] - before["cpu"],
        "server_cpu_finish_seconds": after["cpu"] - last["cpu"],
        "server_written_mb_intake": io_delta(before, last, "wchar"),
        "spool_disk_peak_mb": (free_before - min_free) / 1e6,
        "coef_max_abs_err_vs_truth": float(np.max(np.abs(coef[0] - w))),
        "intercept_err": float(abs(intercept[0] - 0.5)),
    }


STORE_HASH, STORE_WRITE = "store thread: fingerprint", "store thread: spool write()"


def trainer_breakdown(n: int, d: int) -> dict:
    """Time the pieces of an in-process ``Trainer`` run over n x d rows (no gRPC) by wrapping its methods."""
    from regserve.server.models import training
    from regserve.server.rpc import convert
    from regserve.v1 import regression_service_pb2 as pb
    from regserve.v1 import types_pb2

    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    class TimedFile:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            t0 = time.perf_counter()
            try:
                return self._f.write(data)
            finally:
                spent[STORE_WRITE] = spent.get(STORE_WRITE, 0.0) + time.perf_counter() - t0

        def close(self):
            return self._f.close()

    patches = [
        (training.Trainer, "add_chunk"),
        (training.Trainer, "_checked"),
        (training.Trainer, "_fingerprint"),
        (training.Trainer, "_settle"),
        (training.moments.Moments, "add"),
        (training.sampling.RowGroups, "take"),
        (training.drift_reference.EdgeSample, "add"),
        (training.Trainer, "_fit"),
        (training.Trainer, "_score"),
        (training.Trainer, "_feature_stats"),
    ]
    originals = {(cls, name): getattr(cls, name) for cls, name in patches}
    for cls, name in patches:
        label = STORE_HASH if name == "_fingerprint" else f"{cls.__name__}.{name}"
        setattr(cls, name, timed(label, originals[(cls, name)]))
    rng = np.random.default_rng([SEED, 3])
    w = rng.normal(size=d)
    X = rng.standard_normal((CHUNK_ROWS, d))
    y = X @ w + 0.5
    # The server's per-message work before the trainer: parse the request, view its bytes as arrays.
    wire = pb.TrainRequest(
        chunk=types_pb2.TrainChunk(
            features=types_pb2.Matrix(num_columns=d, raw=X.tobytes()), targets=types_pb2.Vector(raw=y.tobytes())
        )
    ).SerializeToString()
    parse = timed(
        "parse TrainRequest + convert.train_chunk",
        lambda: convert.train_chunk(pb.TrainRequest.FromString(wire).chunk, False),
    )
    try:
        t0 = time.perf_counter()
        with training.Trainer(training.TrainSpec(kind="linear", solver="closed_form")) as trainer:
            trainer._spool = TimedFile(trainer._spool)
            for _ in range(0, n, CHUNK_ROWS):
                Xc, yc = parse()
                trainer.add_chunk(Xc, yc)
            t_intake = time.perf_counter()
            trainer.finish()
        t_end = time.perf_counter()
    finally:
        for (cls, name), fn in originals.items():
            setattr(cls, name, fn)
    add = spent.pop("Trainer.add_chunk")
    finish_names = ("Trainer._fit", "Trainer._score", "Trainer._feature_stats")
    named = {k: v for k, v in spent.items() if k not in finish_names}
    intake_parts = {k: v for k, v in named.items() if not k.startswith("parse")}
    # The store thread's fingerprint and writes overlap add_chunk; only its own steps (and the wait) are inside it.
    own = sum(v for k, v in intake_parts.items() if k not in (STORE_HASH, STORE_WRITE))
    intake_parts["rest of add_chunk (spool column_stack/astype/tobytes, masks)"] = add - own
    finish = {k: spent[k] for k in finish_names if k in spent}
    return {
        "rows": (n // CHUNK_ROWS) * CHUNK_ROWS,
        "features": d,
        "intake_seconds": t_intake - t0,
        "finish_seconds": t_end - t_intake,
        "parse_seconds": spent.get("parse TrainRequest + convert.train_chunk", 0.0),
        "add_chunk_seconds": add,
        "intake_parts": intake_parts,
        "finish_parts": finish,
    }


# ----------------------------------------------------------------------------- figure 3


def logistic(n: int, d: int, model_dir: str, alpha: float, repeats: int, profile: str | None = None) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng([SEED, 4])
    scales = rng.uniform(0.5, 5.0, d)
    offsets = rng.normal(0.0, 3.0, d)
    w = rng.normal(0.0, 0.5, d)

    def sample(m: int) -> tuple[np.ndarray, np.ndarray]:
        Z = rng.standard_normal((m, d))
        p = 1.0 / (1.0 + np.exp(-(Z @ w - 0.3)))
        return Z * scales + offsets, (rng.random(m) < p).astype(np.float64)

    X, y = sample(n)
    X_test, _ = sample(10_000)
    # Newton's budget counts up to max_iterations (100) Hessian passes, past the default 200 billion here.
    with (
        Server(model_dir, profile=profile, options=("--max-train-gflop", "2000")) as server,
        _client(server.target) as client,
    ):
        _warm_up(client)
        response, runs = _timed(
            lambda: client.train(
                "bench_logistic", chunks=_chunks(X, y), kind="logistic", solver="newton", standardize=True, alpha=alpha
            ),
            repeats,
        )
        wall = float(np.median(runs))
        prediction = client.predict("bench_logistic", X_test)
        peak = server.vm_hwm_mb()
        options = ["--kind", "logistic", "--solver", "newton", "--standardize", "--alpha", str(alpha)]
        parquet = _parquet_train(server.target, X, y, model_dir, "bench_logistic_parquet", options, repeats)
    mv = response.model_version
    p_server = prediction.probabilities[:, prediction.classes.index("1")]

    t0 = time.perf_counter()
    scaler = StandardScaler().fit(X)
    Xs = scaler.transform(X)
    t1 = time.perf_counter()
    clf, fit_runs = _timed(
        lambda: LogisticRegression(C=1.0 / (alpha * n), solver="lbfgs", tol=1e-8, max_iter=10_000).fit(Xs, y), repeats
    )
    p_sklearn = clf.predict_proba(scaler.transform(X_test))[:, list(clf.classes_).index(1.0)]
    return {
        "rows": n,
        "features": d,
        "alpha": alpha,
        "seconds": wall,
        "seconds_runs": runs,
        "parquet_cli_seconds": float(np.median(parquet)),
        "parquet_cli_seconds_runs": parquet,
        "rows_per_s": n / wall,
        "iterations": mv.solver_report.iterations,
        "converged": mv.solver_report.converged,
        "final_loss": mv.solver_report.final_loss,
        "accuracy": mv.training.metrics["accuracy"],
        "log_loss": mv.training.metrics.get("log_loss"),
        "server_vm_hwm_mb": peak,
        "sklearn_C": 1.0 / (alpha * n),
        "sklearn_tol": 1e-8,
        "sklearn_scale_seconds": t1 - t0,
        "sklearn_fit_seconds": float(np.median(fit_runs)),
        "sklearn_fit_seconds_runs": fit_runs,
        "sklearn_n_iter": int(clf.n_iter_[0]),
        "sklearn_accuracy": float(clf.score(Xs, y)),
        "proba_max_abs_diff": float(np.max(np.abs(p_server - p_sklearn))),
        "proba_rows": len(X_test),
    }


# ----------------------------------------------------------------------------- report


def _row(label: str, measure: str, regserve: str, reference: str = "") -> str:
    return f"{label:34s} {measure:34s} {regserve:>18s} {reference:>22s}"


def table(r: dict) -> str:
    lines = [_row("benchmark", "measure", "regserve", "reference"), "-" * 111]
    if "closed_form" in r:
        a = r["closed_form"]
        label = f"1 closed form {a['rows']:,}x{a['features']}"
        lines += [
            _row(
                label,
                "wall s (median of runs) / lstsq s",
                f"{a['train_seconds_median']:.2f}",
                f"lstsq {a['lstsq_seconds']:.2f}",
            ),
            _row("", "rows/s", f"{a['train_rows_per_s']:,.0f}", f"lstsq {a['lstsq_rows_per_s']:,.0f}"),
            _row(
                "",
                "regserve train FILE.parquet s",
                f"{a['parquet_cli_seconds']:.2f}",
                f"lstsq {a['lstsq_seconds']:.2f}",
            ),
            _row("", "  all runs s", ", ".join(f"{s:.2f}" for s in a["parquet_cli_seconds_runs"])),
            _row("", "MB/s over gRPC", f"{a['train_mb_per_s']:,.0f}"),
            _row("", "all runs s", ", ".join(f"{s:.2f}" for s in a["train_seconds"])),
            _row(
                "",
                "ratio to lstsq (gRPC / parquet)",
                f"{a['train_seconds_median'] / a['lstsq_seconds']:.2f}x / "
                f"{a['parquet_cli_seconds'] / a['lstsq_seconds']:.2f}x",
                "target <= 1x",
            ),
            _row("", "coef max rel diff vs lstsq", f"{a['coef_max_rel_diff']:.2e}"),
            _row("", "server VmHWM MB", f"{a['server_vm_hwm_mb']:,.0f}", f"data {a['data_mb']:,.0f} MB"),
        ]
    if "streamed" in r:
        b = r["streamed"]
        label = f"2 closed form {b['rows']:,}x{b['features']}"
        lines += [
            _row(label, "wall s", f"{b['seconds']:.1f}"),
            _row("", "rows/s", f"{b['rows_per_s']:,.0f}"),
            _row("", "server VmHWM MB", f"{b['server_vm_hwm_mb']:,.0f}", f"data {b['data_mb']:,.0f} MB"),
            _row(
                "",
                "  peak RssAnon / RssFile MB",
                f"{b['server_peak_rss_anon_mb']:,.0f} / {b['server_peak_rss_file_mb']:,.0f}",
            ),
            _row(
                "",
                "  intake: peak RssAnon / RssFile MB",
                f"{b['server_peak_rss_anon_mb_intake']:,.0f} / {b['server_peak_rss_file_mb_intake']:,.0f}",
            ),
            _row(
                "",
                "  finish: peak RssAnon / RssFile MB",
                f"{b['server_peak_rss_anon_mb_finish']:,.0f} / {b['server_peak_rss_file_mb_finish']:,.0f}",
            ),
            _row("", "  server RSS before the run MB", f"{b['server_rss_before_mb']:,.0f}"),
            _row("", "client peak RSS MB (during run)", f"{b['client_peak_rss_mb']:,.0f}"),
            _row("", "intake s (until last chunk sent)", f"{b['intake_seconds']:.1f}"),
            _row("", "  client chunk generation s", f"{b['client_generate_seconds']:.1f}"),
            _row("", "  client CPU s (all threads)", f"{b['client_cpu_seconds']:.1f}"),
            _row("", "  server CPU s", f"{b['server_cpu_intake_seconds']:.1f}"),
            *(
                _row("", f"    {t['name']} tid {t['tid']} CPU s"[:34], f"{t['cpu_seconds']:.1f}")
                for t in b["server_thread_cpu_intake"][:5]
            ),
            _row("", "  server bytes written MB", f"{b['server_written_mb_intake'] or 0:,.0f}"),
            _row("", "finish s (after last chunk)", f"{b['finish_seconds']:.1f}"),
            _row("", "  server CPU s", f"{b['server_cpu_finish_seconds']:.1f}"),
            _row("", "spool disk peak MB", f"{b['spool_disk_peak_mb']:,.0f}"),
            _row("", "coef max abs err vs truth", f"{b['coef_max_abs_err_vs_truth']:.2e}"),
        ]
    if "breakdown" in r:
        c = r["breakdown"]
        label = f"2b Trainer in-process {c['rows']:,}x{c['features']}"
        total = c["intake_seconds"] + c["finish_seconds"]
        lines.append(
            _row(
                label,
                "intake s / finish s",
                f"{c['intake_seconds']:.2f} / {c['finish_seconds']:.2f}",
                f"{c['rows'] / total:,.0f} rows/s",
            )
        )
        lines.append(_row("", "parse TrainRequest + train_chunk s", f"{c['parse_seconds']:.2f}"))
        for name, seconds in {**c["intake_parts"], **c["finish_parts"]}.items():
            short = name.replace(
                "rest of add_chunk (spool column_stack/astype/tobytes, masks)", "rest: spool column_stack+tobytes"
            )
            lines.append(_row("", f"  {short}"[:34], f"{seconds:.2f}", f"{seconds / total:.0%}"))
    if "logistic" in r:
        d = r["logistic"]
        label = f"3 logistic newton {d['rows']:,}x{d['features']}"
        lines += [
            _row(
                label, "wall s (median) / sklearn fit s", f"{d['seconds']:.2f}", f"lbfgs {d['sklearn_fit_seconds']:.2f}"
            ),
            _row("", "all runs s", ", ".join(f"{s:.2f}" for s in d["seconds_runs"])),
            _row(
                "",
                "regserve train FILE.parquet s",
                f"{d['parquet_cli_seconds']:.2f}",
                f"lbfgs {d['sklearn_fit_seconds']:.2f}",
            ),
            _row("", "  all runs s", ", ".join(f"{s:.2f}" for s in d["parquet_cli_seconds_runs"])),
            _row(
                "",
                "ratio to sklearn (gRPC / parquet)",
                f"{d['seconds'] / d['sklearn_fit_seconds']:.2f}x / "
                f"{d['parquet_cli_seconds'] / d['sklearn_fit_seconds']:.2f}x",
                "target <= 1.5x",
            ),
            _row("", "iterations", f"{d['iterations']}", f"n_iter_ {d['sklearn_n_iter']}"),
            _row("", "training accuracy", f"{d['accuracy']:.4f}", f"{d['sklearn_accuracy']:.4f}"),
            _row("", "converged", f"{d['converged']}"),
            _row("", f"max |P diff| on {d['proba_rows']:,} rows", f"{d['proba_max_abs_diff']:.2e}"),
            _row("", "server VmHWM MB", f"{d['server_vm_hwm_mb']:,.0f}"),
        ]
    return "\n".join(lines)


def _header(quick: bool) -> str:
    import sklearn

    from regserve.server import __version__

    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"regserve training bench{' (--quick)' if quick else ''}, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, "
        f"Python {platform.python_version()}, regserve {__version__}, grpcio {grpc.__version__}, "
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, chunks of {CHUNK_ROWS:,} rows"
        + "".join(f", {k}={os.environ[k]}" for k in _THREAD_VARS if k in os.environ)
    )


def _profile(args: argparse.Namespace, figure: str) -> str | None:
    """The py-spy output file of ``figure``'s server, None without --profile-server."""
    return f"{args.profile_server}.{figure}" if args.profile_server else None


def main() -> None:
    parser = argparse.ArgumentParser(description="regserve training benchmarks")
    parser.add_argument("--quick", action="store_true", help="1/20 of the full sizes, for a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="timed Train runs in figures 1 and 3")
    parser.add_argument(
        "--only",
        choices=("closed_form", "streamed", "breakdown", "logistic"),
        action="append",
        help="run only these figures (repeatable): prints their table rows and JSON, writes no results file",
    )
    parser.add_argument(
        "--profile-server",
        metavar="FILE",
        help="py-spy raw profiles of the servers, one file per figure: FILE.closed_form, FILE.streamed, FILE.logistic",
    )
    parser.add_argument(
        "--scale",
        type=int,
        nargs="?",
        const=20_000_000,
        metavar="ROWS",
        help="only the scale table (bench.training_scale): ROWS x 20 as 16 Parquet files, single-node and "
        "--dask local:2 (default 20,000,000)",
    )
    args = parser.parse_args()
    if args.scale:
        from bench.training_scale import run

        run(args.scale)
        return
    scale = 20 if args.quick else 1
    header = _header(args.quick)
    print(header, file=sys.stderr)
    free = shutil.disk_usage(tempfile.gettempdir())
    spool_need = 20_000_000 // scale * 21 * 8
    print(
        f"  spool dir {tempfile.gettempdir()}: {free.free / 1e9:.1f} GB free, figure 2 spools "
        f"{spool_need / 1e9:.2f} GB",
        file=sys.stderr,
    )
    if free.free < 2 * spool_need:
        sys.exit("not enough free space in the spool directory for figure 2")
    results: dict = {}
    with tempfile.TemporaryDirectory() as model_dir:
        steps = [
            (
                "closed_form",
                lambda: closed_form_throughput(
                    1_000_000 // scale, 50, model_dir, args.repeats, _profile(args, "closed_form")
                ),
            ),
            ("streamed", lambda: streamed_memory(20_000_000 // scale, 20, model_dir, _profile(args, "streamed"))),
            ("breakdown", lambda: trainer_breakdown(2_000_000 // scale, 20)),
            (
                "logistic",
                lambda: logistic(
                    1_000_000 // scale,
                    20,
                    model_dir,
                    alpha=1e-4,
                    repeats=args.repeats,
                    profile=_profile(args, "logistic"),
                ),
            ),
        ]
        for name, step in steps:
            if args.only and name not in args.only:
                continue
            t0 = time.perf_counter()
            results[name] = step()
            print(f"  {name} done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    print(header)
    print(table(results))
    if args.only:
        print(json.dumps(results, indent=2))
        return
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "training.json").write_text(json.dumps({"header": header, "results": results}, indent=2))


if __name__ == "__main__":
    main()
