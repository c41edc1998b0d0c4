"""A real gRPC server of regserve's contract that fails the first attempts of every call.

Built from the generated descriptors, so it serves every method of RegressionService,
ModelService and grpc.health.v1.Health with empty answers; it records the method and
metadata of every attempt it sees, which is how the tests count retries.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2

from regserve.v1 import model_service_pb2, regression_service_pb2

__all__ = ["SERVICES", "Attempt", "FlakyServer"]

SERVICES: tuple[ServiceDescriptor, ...] = (
    regression_service_pb2.DESCRIPTOR.services_by_name["RegressionService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
)


class Attempt:
    """One attempt of a call as the server saw it."""

    def __init__(self, method: str, metadata: dict[str, str]) -> None:
        self.method = method
        self.metadata = metadata

    @property
    def request_id(self) -> str:
        return self.metadata.get("x-request-id", "")


class FlakyServer:
    """Fails the first ``failures`` attempts of each method with ``code``, then answers empty messages.

    Streams that answer fail after ``answers_before_failing`` responses instead of
    before the first; a server with ``read_requests_first`` reads a client stream to
    its end before it fails.  A context manager; ``target`` is its loopback address.
    """

    def __init__(
        self,
        failures: int = 1,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        *,
        answers_before_failing: int = 0,
        read_requests_first: bool = False,
    ) -> None:
        self.failures = failures
        self.code = code
        self.answers_before_failing = answers_before_failing
        self.read_requests_first = read_requests_first
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    service.full_name, {method.name: self._handler(method) for method in service.methods}
                )
                for service in SERVICES
            ]
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    def __enter__(self) -> FlakyServer:
        self._server.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.stop(0)

    def attempts_of(self, method: str) -> list[Attempt]:
        with self._lock:
            return [attempt for attempt in self.attempts if attempt.method == method]

    def _fails(self, method: MethodDescriptor, context: grpc.ServicerContext) -> bool:
        """Record the attempt; True when it is one of the first ``failures`` of its method."""
        with self._lock:
            self.attempts.append(Attempt(method.name, dict(context.invocation_metadata())))  # type: ignore[arg-type]
            return sum(attempt.method == method.name for attempt in self.attempts) <= self.failures

    def _handler(self, method: MethodDescriptor) -> grpc.RpcMethodHandler:
        request_class = GetMessageClass(method.input_type)
        response_class = GetMessageClass(method.output_type)
        decode, encode = request_class.FromString, response_class.SerializeToString

        def answer(request_or_requests, context: grpc.ServicerContext):
            failing = self._fails(method, context)
            if method.client_streaming and (self.read_requests_first or not failing):
                for _ in request_or_requests:
                    pass
            if failing:
                context.abort(self.code, f"attempt refused by the test server: {method.name}")
            return response_class()

        def answers(request_or_requests, context: grpc.ServicerContext) -> Iterator:
            failing = self._fails(method, context)
            if failing and self.read_requests_first and method.client_streaming:
                for _ in request_or_requests:
                    pass
            requests = request_or_requests if method.client_streaming else iter([request_or_requests])
            for sent, _ in enumerate(requests):
                if failing and sent >= self.answers_before_failing:
                    break
                yield response_class()
            if failing:
                context.abort(self.code, f"attempt refused by the test server: {method.name}")

        kinds = {
            (False, False): (grpc.unary_unary_rpc_method_handler, answer),
            (True, False): (grpc.stream_unary_rpc_method_handler, answer),
            (False, True): (grpc.unary_stream_rpc_method_handler, answers),
            (True, True): (grpc.stream_stream_rpc_method_handler, answers),
        }
        kind, behaviour = kinds[method.client_streaming, method.server_streaming]
        return kind(behaviour, request_deserializer=decode, response_serializer=encode)
