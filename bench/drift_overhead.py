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

import numpy as np

from bench.inprocess import _best, _Context, trained_server
from regserve.server.observability.drift import DriftMonitor
from regserve.server.rpc.regression_servicer import RegressionServicer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--number", type=int, default=5000)
    args = parser.parse_args()
    with trained_server() as (app, X, request):
        context = _Context()
        servicers = {
            "Predict, drift on": RegressionServicer(app.store, app.stats, drift=app.drift),
            "Predict, drift off": RegressionServicer(app.store, app.stats),
        }
        times: dict[str, list[float]] = {name: [] for name in servicers}
        for _ in range(args.rounds):
            for name, servicer in servicers.items():
                times[name].append(_best(lambda s=servicer: s.Predict(request, context), args.number))
        for name, values in times.items():
            print(f"{name:22s} median {statistics.median(values):6.2f} us   best {min(values):6.2f} us")
        served = app.store.resolve("bench")
        row, values = X[:1], np.zeros(1)
        for name, monitor in (
            ("observe, drift on", DriftMonitor(queue_blocks=10**8)),
            ("observe, drift off", DriftMonitor(0)),
        ):
            cost = _best(lambda m=monitor: m.observe(served, row, values), 100_000)
            print(f"{name:22s} {cost * 1e3:6.0f} ns")
        print(f"blocks dropped by the server's queue: {app.drift.dropped}")


if __name__ == "__main__":
    main()
