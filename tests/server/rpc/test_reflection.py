"""Server reflection v1 and v1alpha on a real server: a raw v1 client, a raw v1alpha client and grpcurl."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from regserve.reflection.v1 import reflection_pb2 as v1_pb2
from regserve.reflection.v1 import reflection_pb2_grpc as v1_pb2_grpc
from regserve.server.rpc.methods import OPEN_SERVICES, SERVICES
from tests.server.rpc.test_grpcurl import grpcurl

EVERY_SERVICE = {service.full_name for service in (*SERVICES, *OPEN_SERVICES)}


def _ask_v1(channel: grpc.Channel, *requests: v1_pb2.ServerReflectionRequest) -> list[v1_pb2.ServerReflectionResponse]:
    return list(v1_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter(requests), timeout=30))


def _files(response: v1_pb2.ServerReflectionResponse) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = (
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    )
    return {file.name: file for file in files}


def test_v1_lists_every_service(channel):
    (response,) = _ask_v1(channel, v1_pb2.ServerReflectionRequest(list_services=""))
    assert response.WhichOneof("message_response") == "list_services_response"
    assert {s.name for s in response.list_services_response.service} == EVERY_SERVICE
    assert "grpc.reflection.v1.ServerReflection" in EVERY_SERVICE


def test_v1_gives_the_file_of_every_service_with_its_methods(channel):
    names = sorted(EVERY_SERVICE)
    responses = _ask_v1(channel, *(v1_pb2.ServerReflectionRequest(file_containing_symbol=name) for name in names))
    assert len(responses) == len(names)
    seen: set[str] = set()
    for name, response in zip(names, responses, strict=True):
        assert response.original_request.file_containing_symbol == name
        files = _files(response)
        seen |= set(files)
        package, _, service_name = name.rpartition(".")
        services = [s for f in files.values() if f.package == package for s in f.service if s.name == service_name]
        assert len(services) == 1 and services[0].method, name
        # Every import was sent in this answer or an earlier one of the stream, so a client can resolve every type.
        for file in files.values():
            assert set(file.dependency) <= seen, (name, file.name)


def test_v1_gives_files_by_name_and_types_and_reports_unknown_symbols(channel):
    by_name, by_type, unknown = _ask_v1(
        channel,
        v1_pb2.ServerReflectionRequest(file_by_filename="regserve/v1/regression_service.proto"),
        v1_pb2.ServerReflectionRequest(file_containing_symbol="regserve.v1.PredictRequest"),
        v1_pb2.ServerReflectionRequest(file_containing_symbol="regserve.v1.NoSuchThing"),
    )
    assert "regserve/v1/regression_service.proto" in _files(by_name)
    file = _files(by_type)["regserve/v1/regression_service.proto"]
    assert "PredictRequest" in {m.name for m in file.message_type}
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_v1_and_v1alpha_answer_alike(channel):
    questions = [{"list_services": ""}, {"file_containing_symbol": "regserve.v1.RegressionService"}]
    v1 = _ask_v1(channel, *(v1_pb2.ServerReflectionRequest(**q) for q in questions))
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    alpha = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**q) for q in questions])))
    assert [r.SerializeToString(deterministic=True) for r in v1] == [
        r.SerializeToString(deterministic=True) for r in alpha
    ]


def test_grpcurl_lists_every_service(target):
    listed = grpcurl(target, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == EVERY_SERVICE


@pytest.mark.parametrize("service", sorted(EVERY_SERVICE))
def test_grpcurl_describes_every_service(target, service):
    described = grpcurl(target, "describe", service)
    assert described.returncode == 0, described.stderr
    assert f"{service} is a service:" in described.stdout
    assert "rpc " in described.stdout
