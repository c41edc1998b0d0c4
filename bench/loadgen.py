"""The load generator: runs in its own process, prints one JSON result line.

    python -m bench.loadgen --target 127.0.0.1:50051 --model bench --scenario unary --concurrency 8

Scenarios: ``unary`` (Predict with --rows rows per request, --concurrency calls in
flight over --channels connections, for --duration seconds), ``infer`` (the same with
the Open Inference Protocol's ModelInfer, the rows as one raw FP64 tensor), ``stream``
(BatchPredict of --chunks chunks of --rows x --features), ``http`` (one row as JSON over
--concurrency keep-alive connections, to regserve.v1's Predict route, FastAPI's
/predict, or with --http-style v2 the protocol's /v2/models/{model}/infer; --target is
then the HTTP host:port) and ``train`` (a closed-form Train streamed as --chunks chunks
of --rows x --features).
It reports its own CPU time, so a reader can tell when the client rather than the
server was the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import grpc
import numpy as np

from regserve.inference import grpc_service_pb2 as oip
from regserve.inference import grpc_service_pb2_grpc as oip_grpc
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2

OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def unary(args) -> dict:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features))
    # Several channels get one connection each (a local subchannel pool), so a server
    # of several processes sharing the port (SO_REUSEPORT) sees several connections.
    options = OPTIONS + ([("grpc.use_local_subchannel_pool", 1)] if args.channels > 1 else [])
    channels = [grpc.aio.insecure_channel(args.target, options=options) for _ in range(args.channels)]
    if args.scenario == "infer":
        tensor = oip.ModelInferRequest.InferInputTensor(name="inputs", datatype="FP64", shape=list(X.shape))
        request = oip.ModelInferRequest(model_name=args.model, inputs=[tensor], raw_input_contents=[X.tobytes()])
        calls = [oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer for channel in channels]
    else:
        matrix = types_pb2.Matrix(num_columns=args.features, raw=X.tobytes())
        request = pb.PredictRequest(model=args.model, inputs=matrix)
        calls = [pb_grpc.RegressionServiceStub(channel).Predict for channel in channels]
    for call in calls:
        for _ in range(50):  # warm-up
            await call(request)
    latencies: list[float] = []
    deadline = time.perf_counter() + args.duration
    failures = 0

    async def worker(call):
        nonlocal failures
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await call(request)
            except grpc.RpcError:
                failures += 1
                continue
            latencies.append(time.perf_counter() - start)

    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker(calls[i % len(calls)]) for i in range(args.concurrency)))
    wall = time.perf_counter() - wall0
    cpu = _cpu_seconds() - cpu0
    for channel in channels:
        await channel.close()
    lat = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "failures": failures,
        "rps": len(latencies) / wall,
        "rows_per_s": len(latencies) * args.rows / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "client_cpu": cpu / wall,
    }


async def http(args) -> dict:
    """One-row Predict as JSON over keep-alive HTTP/1.1 connections.

    ``--http-style regserve`` posts ``{"inputs": {"values": [...]}}`` to the gateway's
    ``/v1/models/{model}:predict``; ``fastapi`` posts ``{"features": [...]}`` to ``/predict``;
    ``v2`` posts the protocol's one input of shape [1, features] to ``/v2/models/{model}/infer``.
    """
    host, port = args.target.rsplit(":", 1)
    rng = np.random.default_rng(0)
    row = rng.normal(size=args.features).tolist()
    if args.http_style == "fastapi":
        path, body = "/predict", json.dumps({"features": row}).encode()
    elif args.http_style == "v2":
        tensor = {"name": "inputs", "shape": [1, args.features], "datatype": "FP64", "data": row}
        path, body = f"/v2/models/{args.model}/infer", json.dumps({"inputs": [tensor]}).encode()
    else:
        path, body = f"/v1/models/{args.model}:predict", json.dumps({"inputs": {"values": row}}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {args.target}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body

    async def call(reader, writer) -> None:
        writer.write(request)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if b" 200 " not in status:
            raise RuntimeError(status.decode().strip())

    latencies: list[float] = []
    failures = 0
    connections = [await asyncio.open_connection(host, int(port)) for _ in range(args.concurrency)]
    for reader, writer in connections:
        for _ in range(20):  # warm-up
            await call(reader, writer)
    deadline = time.perf_counter() + args.duration

    async def worker(reader, writer):
        nonlocal failures
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await call(reader, writer)
            except RuntimeError:
                failures += 1
                continue
            latencies.append(time.perf_counter() - start)

    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in connections))
    wall = time.perf_counter() - wall0
    cpu = _cpu_seconds() - cpu0
    for _, writer in connections:
        writer.close()
    lat = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "failures": failures,
        "rps": len(latencies) / wall,
        "rows_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "client_cpu": cpu / wall,
    }


def stream(args) -> dict:
    rng = np.random.default_rng(0)
    chunk = rng.normal(size=(args.rows, args.features)).tobytes()
    matrix = types_pb2.Matrix(num_columns=args.features, raw=chunk)

    def requests():
        yield pb.BatchPredictRequest(model=args.model, inputs=matrix, interval_level=args.interval)
        for _ in range(args.chunks - 1):
            yield pb.BatchPredictRequest(inputs=matrix)

    with grpc.insecure_channel(args.target, options=OPTIONS) as channel:
        stub = pb_grpc.RegressionServiceStub(channel)
        for _ in stub.BatchPredict(iter([pb.BatchPredictRequest(model=args.model, inputs=matrix)])):
            pass
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        rows = sum(len(r.predictions.raw) // 8 for r in stub.BatchPredict(requests()))
        wall = time.perf_counter() - wall0
        cpu = _cpu_seconds() - cpu0
    return {"rows": rows, "rows_per_s": rows / wall, "seconds": wall, "client_cpu": cpu / wall}


def train(args) -> dict:
    """Closed-form Train of --chunks chunks of --rows x --features, streamed as raw float64; promote=False."""
    from regserve.client import RegressionClient

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features))
    y = X @ rng.normal(size=args.features) + 0.5 + rng.normal(scale=0.1, size=args.rows)

    def chunks():
        for _ in range(args.chunks):
            yield X, y

    with RegressionClient(args.target, timeout=600) as client:
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        client.train(f"{args.model}-train", chunks=chunks(), solver="closed_form", promote=False)
        wall = time.perf_counter() - wall0
        cpu = _cpu_seconds() - cpu0
    rows = args.rows * args.chunks
    return {"rows": rows, "rows_per_s": rows / wall, "seconds": wall, "client_cpu": cpu / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--scenario", choices=("unary", "infer", "stream", "http", "train"), default="unary")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.0, help="BatchPredict: interval level (0: none)")
    parser.add_argument("--http-style", choices=("regserve", "fastapi", "v2"), default="regserve")
    parser.add_argument(
        "--channels", type=int, default=1, help="gRPC connections the unary calls are spread over (in turn)"
    )
    args = parser.parse_args()
    if args.scenario == "stream":
        result = stream(args)
    elif args.scenario == "train":
        result = train(args)
    else:
        result = asyncio.run(http(args) if args.scenario == "http" else unary(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
