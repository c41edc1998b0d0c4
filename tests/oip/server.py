"""`regserve serve` in a process of its own, run by regserve's interpreter, and Predict answers from it.

The suite's interpreter cannot import regserve (see conftest.py), so the server and the
regserve.v1 calls the answers are compared with run under ``REGSERVE_PYTHON``
(default: the repository's .venv), which `make test` sets.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path

import numpy as np

__all__ = ["REGSERVE_PYTHON", "ROOT", "Served"]

ROOT = Path(__file__).resolve().parents[2]
REGSERVE_PYTHON = os.environ.get("REGSERVE_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
_LISTENING = re.compile(r"regserve listening on [^ ]+:(\d+).*REST gateway: (?:http://[^ ]+:(\d+)/docs|off)")
_PREDICT = """
import sys
import numpy as np
from regserve.client import RegressionClient
target, model, rows_path, out_path = sys.argv[1:5]
with RegressionClient(target, timeout=120) as client:
    answer = client.predict(model, np.load(rows_path))
arrays = {"values": answer.values, "version": np.array(answer.version)}
if answer.labels is not None:
    arrays.update(labels=np.array(answer.labels), probabilities=answer.probabilities)
np.savez(out_path, **arrays)
"""


class Served:
    """A `regserve serve` with the demo models on 127.0.0.1, gRPC and REST on ports the OS picked."""

    def __init__(self, model_dir: Path, *flags: str, timeout: float = 120.0) -> None:
        command = [REGSERVE_PYTHON, "-m", "regserve.server.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
        command += ["--gateway-port", "0", "--metrics-port", "-1", "--model-dir", str(model_dir), *flags]
        self.process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self._lines: list[str] = []
        self._ready = threading.Event()
        self.port = self.gateway_port = -1
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or self.port < 0:
            self.stop()
            raise RuntimeError(f"regserve did not start:\n{self.log()[-4000:]}")

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.append(line)
            match = _LISTENING.search(line)
            if match and not self._ready.is_set():
                self.port = int(match.group(1))
                self.gateway_port = int(match.group(2) or -1)
                self._ready.set()
        self._ready.set()  # the process ended: no wait goes on for a line that cannot come

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_target(self) -> str:
        return f"127.0.0.1:{self.gateway_port}"

    def log(self) -> str:
        return "".join(self._lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def predict(self, model: str, X: np.ndarray, tmp_path: Path) -> dict[str, np.ndarray]:
        """regserve.v1 Predict's answer for ``X`` (raw float64 bytes over gRPC), by regserve's own client."""
        rows, answer = tmp_path / f"{model}-rows.npy", tmp_path / f"{model}-answer.npz"
        np.save(rows, np.asarray(X, dtype=np.float64))
        done = subprocess.run(
            [REGSERVE_PYTHON, "-c", _PREDICT, self.grpc_target, model, str(rows), str(answer)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"Predict failed:\n{done.stderr}")
        with np.load(answer) as stored:
            return {name: stored[name] for name in stored.files}
