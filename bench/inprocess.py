"""Python time per Predict in one thread, without the network: regserve's handler and the bare servicer.

    python -m bench.inprocess [--access-log] [--number 20000]

It starts a real regserve server on 127.0.0.1:0 (for training the model), then
calls the Predict handler the gRPC server runs, behind the edge, with a
stand-in context, and the servicer alone; and the servicer of bench/bare_server.py;
then the same for one-row ModelInfer (one raw FP64 input, as tritonclient sends it).
The edge's part is what the call itself does: the counting and the access-log line
are done later, in batches, by a background thread.
The best of three repeats is printed in microseconds a call: the "in process" figure
of docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import timeit
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bench.bare_server import SyncInferenceServicer, SyncServicer
from regserve.client import RegressionClient
from regserve.inference import grpc_service_pb2 as oip
from regserve.server.config import Settings
from regserve.server.observability.access_log import configure_access_log
from regserve.server.rpc.regression_servicer import RegressionServicer
from regserve.server.runtime.application import create_server
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import types_pb2

PREDICT = "/regserve.v1.RegressionService/Predict"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
CALLS = (
    "regserve, edge and servicer",
    "regserve, servicer alone",
    "bare servicer",
    "ModelInfer, edge and servicer",
    "ModelInfer, bare servicer",
)
"""The calls ``predict_calls`` gives, by name."""


class _Context:
    """The context methods the handlers call, doing nothing."""

    def invocation_metadata(self):
        return ()

    def peer(self):
        return "ipv4:127.0.0.1:1"

    def set_trailing_metadata(self, metadata):
        pass

    def trailing_metadata(self):
        return ()

    def send_initial_metadata(self, metadata):
        pass

    def code(self):
        return None


def _best(call, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=3)) / number * 1e6


@contextlib.contextmanager
def trained_server() -> Iterator[tuple[Any, np.ndarray, pb.PredictRequest]]:
    """A real regserve server on 127.0.0.1:0 with model ``bench`` trained, the rows, and a one-row Predict request.

    The server stays up while the context lasts.
    """
    with tempfile.TemporaryDirectory() as model_dir:
        app = create_server(Settings(host="127.0.0.1", port=0, model_dir=model_dir, demo_models=False))
        app.start()
        try:
            rng = np.random.default_rng(0)
            X = rng.normal(size=(2_000, 10))
            # Under valgrind a Train runs dozens of times slower than the client's default deadline allows.
            with RegressionClient(f"127.0.0.1:{app.port}", timeout=600.0) as client:
                client.train("bench", X, X @ rng.normal(size=10) + 0.5)
            yield app, X, pb.PredictRequest(model="bench", inputs=types_pb2.Matrix(num_columns=10, raw=X[:1].tobytes()))
        finally:
            app.stop(0)


@contextlib.contextmanager
def predict_calls(access_log: bool) -> Iterator[dict[str, Callable[[], object]]]:
    """One-row calls by name: Predict behind the edge, its servicer alone and the bare servicer; ModelInfer behind
    the edge and the bare servicer."""
    if access_log:
        configure_access_log(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    with trained_server() as (app, X, request):
        context = _Context()
        edge = app.local.handler(PREDICT)
        infer_edge = app.local.handler(MODEL_INFER)
        servicer = RegressionServicer(app.store, app.stats)
        bare, bare_infer = SyncServicer(10), SyncInferenceServicer(10)
        tensor = oip.ModelInferRequest.InferInputTensor(name="inputs", datatype="FP64", shape=[1, 10])
        infer = oip.ModelInferRequest(model_name="bench", inputs=[tensor], raw_input_contents=[X[:1].tobytes()])
        calls = (
            lambda: edge(request, context),
            lambda: servicer.Predict(request, context),
            lambda: bare.Predict(request, context),
            lambda: infer_edge(infer, context),
            lambda: bare_infer.ModelInfer(infer, context),
        )
        yield dict(zip(CALLS, calls, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--access-log", action="store_true", help="write the access log (to /dev/null)")
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    with predict_calls(args.access_log) as calls:
        for name, call in calls.items():
            print(f"{name:30s} {_best(call, args.number):6.1f} us")


if __name__ == "__main__":
    main()
