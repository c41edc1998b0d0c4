"""What drift detection costs one-row Predict: the servicer with the drift hook and without, interleaved.

    python -m bench.drift_overhead [--rounds 9] [--number 5000]

A real regserve server on 127.0.0.1:0 trains the model (its versions carry the training
deciles) and runs its drift thread; two servicers over its store answer the same one-row
request in process, one handing the rows to the server's ``DriftMonitor``, the other with
drift off.  Rounds alternate between them, so a busy machine slows both alike; each round
is the best of three runs of ``--number`` calls.  Also the hook alone (``observe``), on and off.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import timeit

import numpy as np

from bench.inprocess import _Context
from regserve.client import RegressionClient
from regserve.server.config import Settings
from regserve.server.observability.drift import DriftMonitor
from regserve.server.rpc.regression_servicer import RegressionServicer
from regserve.server.runtime.application import create_server
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import types_pb2


def _per_call(call, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=3)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--number", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as model_dir:
        app = create_server(Settings(host="127.0.0.1", port=0, model_dir=model_dir, demo_models=False))
        app.start()
        try:
            rng = np.random.default_rng(0)
            X = rng.normal(size=(2_000, 10))
            with RegressionClient(f"127.0.0.1:{app.port}") as client:
                client.train("bench", X, X @ rng.normal(size=10) + 0.5)
            request = pb.PredictRequest(model="bench", inputs=types_pb2.Matrix(num_columns=10, raw=X[:1].tobytes()))
            context = _Context()
            servicers = {
                "Predict, drift on": RegressionServicer(app.store, app.stats, drift=app.drift),
                "Predict, drift off": RegressionServicer(app.store, app.stats),
            }
            times: dict[str, list[float]] = {name: [] for name in servicers}
            for _ in range(args.rounds):
                for name, servicer in servicers.items():
                    times[name].append(_per_call(lambda s=servicer: s.Predict(request, context), args.number))
            for name, values in times.items():
                print(f"{name:22s} median {statistics.median(values):6.2f} us   best {min(values):6.2f} us")
            served = app.store.resolve("bench")
            row, values = X[:1], np.zeros(1)
            for name, monitor in (
                ("observe, drift on", DriftMonitor(queue_blocks=10**8)),
                ("observe, drift off", DriftMonitor(0)),
            ):
                cost = _per_call(lambda m=monitor: m.observe(served, row, values), 100_000)
                print(f"{name:22s} {cost * 1e3:6.0f} ns")
            print(f"blocks dropped by the server's queue: {app.drift.dropped}")
        finally:
            app.stop(0)


if __name__ == "__main__":
    main()
