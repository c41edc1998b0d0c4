"""Server reflection under both of its names: ``grpc.reflection.v1`` and ``grpc.reflection.v1alpha``.

grpcio-reflection implements only v1alpha, while newer clients (grpcurl, Postman, Evans,
grpcui) ask for v1 first.  The two contracts have the same messages with the same field
numbers, so v1 is served by grpcio-reflection's own servicer: each v1 request is
re-read as v1alpha from its bytes, and each answer re-read as v1 the same way.  Both
services answer from the same descriptors and list the same services.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from regserve.reflection.v1 import reflection_pb2 as reflection_v1_pb2
from regserve.reflection.v1 import reflection_pb2_grpc as reflection_v1_pb2_grpc

__all__ = ["SERVICE_NAMES", "V1ReflectionServicer", "enable_reflection"]

V1_SERVICE_NAME = reflection_v1_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
SERVICE_NAMES = (V1_SERVICE_NAME, reflection.SERVICE_NAME)
"""The names reflection is served under, v1 first."""


class V1ReflectionServicer(reflection_v1_pb2_grpc.ServerReflectionServicer):
    """``grpc.reflection.v1.ServerReflection`` answered by grpcio-reflection's v1alpha servicer."""

    def __init__(self, v1alpha: reflection.ReflectionServicer) -> None:
        self._v1alpha = v1alpha

    def ServerReflectionInfo(
        self, request_iterator: Iterable[reflection_v1_pb2.ServerReflectionRequest], context: grpc.ServicerContext
    ) -> Iterator[reflection_v1_pb2.ServerReflectionResponse]:
        requests = (reflection_pb2.ServerReflectionRequest.FromString(r.SerializeToString()) for r in request_iterator)
        for response in self._v1alpha.ServerReflectionInfo(requests, context):
            yield reflection_v1_pb2.ServerReflectionResponse.FromString(response.SerializeToString())


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both reflection services."""
    names = (*service_names, *SERVICE_NAMES)
    v1alpha = reflection.ReflectionServicer(names)
    reflection_v1_pb2_grpc.add_ServerReflectionServicer_to_server(V1ReflectionServicer(v1alpha), server)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(v1alpha, server)
