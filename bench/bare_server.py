"""The baseline: a bare grpcio server doing Predict's arithmetic with no framework around it.

It speaks regserve.v1's Predict and BatchPredict messages on the raw float64
path (``np.frombuffer``, one matmul, ``tobytes``), and the Open Inference
Protocol's ModelInfer (``inference.GRPCInferenceService``, from the compiled
stubs) on its raw tensors the same way, and nothing else: no model store, no
validation, no error mapping, no health, no reflection.

    python -m bench.bare_server --mode sync|aio --port 0 --features 10 [--predict-threads 2]

In sync mode it arranges its threads as regserve does by default: 16 for the
server, and Predict on 2 of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent import futures

import grpc
import numpy as np

from regserve.inference import grpc_service_pb2 as oip
from regserve.inference import grpc_service_pb2_grpc as oip_grpc
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2

F8 = np.dtype("<f8")


def _weights(features: int) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(0)
    return rng.normal(size=features), 0.5


def _answer(weights, intercept, inputs):
    X = np.frombuffer(inputs.raw, dtype=F8).reshape(-1, inputs.num_columns)
    return types_pb2.Vector(raw=(X @ weights + intercept).tobytes())


class SyncServicer(pb_grpc.RegressionServiceServicer):
    def __init__(self, features: int) -> None:
        self.w, self.b = _weights(features)

    def Predict(self, request, context):
        return pb.PredictResponse(
            model=request.model, version="v1", predictions=_answer(self.w, self.b, request.inputs)
        )

    def BatchPredict(self, request_iterator, context):
        for index, request in enumerate(request_iterator):
            yield pb.BatchPredictResponse(chunk_index=index, predictions=_answer(self.w, self.b, request.inputs))


class AioServicer(SyncServicer):
    async def Predict(self, request, context):
        return super().Predict(request, context)

    async def BatchPredict(self, request_iterator, context):
        index = 0
        async for request in request_iterator:
            yield pb.BatchPredictResponse(chunk_index=index, predictions=_answer(self.w, self.b, request.inputs))
            index += 1


class SyncInferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """ModelInfer on one raw FP64 input of shape [rows, features]: one output, ``predictions``, raw."""

    def __init__(self, features: int) -> None:
        self.w, self.b = _weights(features)

    def ModelInfer(self, request, context):
        (tensor,) = request.inputs
        X = np.frombuffer(request.raw_input_contents[0], dtype=F8).reshape(tuple(tensor.shape))
        output = oip.ModelInferResponse.InferOutputTensor(name="predictions", datatype="FP64", shape=[len(X)])
        return oip.ModelInferResponse(
            model_name=request.model_name,
            model_version="v1",
            id=request.id,
            outputs=[output],
            raw_output_contents=[(X @ self.w + self.b).tobytes()],
        )


class AioInferenceServicer(SyncInferenceServicer):
    async def ModelInfer(self, request, context):
        return super().ModelInfer(request, context)


OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def run_sync(port: int, features: int, workers: int, predict_threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=OPTIONS)
    servicer = SyncServicer(features)
    if predict_threads:
        # As regserve's --predict-threads: grpcio runs a behavior that names a pool on that pool.
        pool = futures.ThreadPoolExecutor(predict_threads)
        SyncServicer.Predict.experimental_thread_pool = pool
        SyncInferenceServicer.ModelInfer.experimental_thread_pool = pool
    pb_grpc.add_RegressionServiceServicer_to_server(servicer, server)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(SyncInferenceServicer(features), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(bound, flush=True)
    server.wait_for_termination()


async def run_aio(port: int, features: int) -> None:
    server = grpc.aio.server(options=OPTIONS)
    pb_grpc.add_RegressionServiceServicer_to_server(AioServicer(features), server)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(AioInferenceServicer(features), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(bound, flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("sync", "aio"), default="sync")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--workers", type=int, default=16, help="threads of the server (regserve's --max-workers)")
    parser.add_argument(
        "--predict-threads", type=int, default=2, help="threads of Predict's own (regserve's default); 0: none"
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if args.mode == "sync":
        run_sync(args.port, args.features, args.workers, args.predict_threads)
    else:
        asyncio.run(run_aio(args.port, args.features))


if __name__ == "__main__":
    main()
