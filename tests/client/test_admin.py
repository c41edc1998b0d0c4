"""ModelAdminClient against a real server: return types, typed exceptions, options."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from regserve.client import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ModelAdminClient,
    NotFound,
    PermissionDenied,
    RegressionClient,
    RegserveError,
    Unauthenticated,
    Unavailable,
)
from regserve.v1 import model_service_pb2, model_service_pb2_grpc, types_pb2
from tests.conftest import start_server


@pytest.fixture
def admin(target):
    with ModelAdminClient(target, timeout=30, metadata=[("x-request-origin", "tests")]) as admin:
        yield admin


@pytest.fixture
def house(client, linear_data):
    X, y = linear_data
    client.train("house", X, y)
    client.train("house", X, 2 * y, promote=False)


def test_every_method_returns_the_useful_part_of_its_response(admin, house):
    (state,) = admin.list_models()
    assert isinstance(state, model_service_pb2.ModelState) and state.serving_version == "v1"
    versions = admin.list_versions("house")
    assert [v.version for v in versions] == ["v1", "v2"]
    assert isinstance(admin.get_version("house", "v2"), types_pb2.ModelVersion)
    changes = [
        (admin.promote("house", "v2", reason="r"), "v2"),
        (admin.rollback("house"), "v1"),
        (admin.freeze("house", "v2"), "v1"),
        (admin.unfreeze("house", "v2"), "v1"),
        (admin.set_split("house", {"v1": 3, "v2": 1}), "v1"),
        (admin.set_split("house", {}), "v1"),
        (admin.delete_version("house", "v2"), "v1"),
    ]
    for state, serving in changes:
        assert isinstance(state, model_service_pb2.ModelState) and state.serving_version == serving
    assert list(changes[2][0].frozen_versions) == ["v2"] and not changes[3][0].frozen_versions
    assert dict(changes[4][0].traffic_split) == {"v1": 3.0, "v2": 1.0}
    assert list(changes[-1][0].versions) == ["v1"]
    (status,) = admin.status("house")
    assert isinstance(status, model_service_pb2.ModelStatus)
    assert [s.action for s in status.history] == [
        "promote",
        "promote",
        "rollback",
        "freeze",
        "unfreeze",
        "split",
        "split",
        "delete",
    ]


def test_failures_are_typed_with_code_reason_and_cause(admin, house):
    with pytest.raises(NotFound) as info:
        admin.promote("house", "v5")
    error = info.value
    assert isinstance(error, RegserveError) and isinstance(error.__cause__, grpc.RpcError)
    assert (error.code, error.reason, error.metadata) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_VERSION",
        {"model": "house", "version": "v5"},
    )
    with pytest.raises(FailedPrecondition) as info:
        admin.delete_version("house", "v1")
    assert info.value.reason == "VERSION_SERVING"
    assert info.value.field_violations == [("version", "version v1 is the serving version")]
    with pytest.raises(InvalidArgument) as info:
        admin.set_split("house", {"v1": -1})
    assert info.value.reason == "INVALID_SPLIT"


def test_an_unreachable_server_is_unavailable():
    with ModelAdminClient("127.0.0.1:1", timeout=2) as admin:
        with pytest.raises((Unavailable, DeadlineExceeded)):
            admin.list_models()


def test_the_channel_is_closed_on_leaving_the_context(target):
    with ModelAdminClient(target) as admin:
        assert admin.list_models() == []
    with pytest.raises(ValueError):  # grpc refuses calls on a closed channel
        admin.list_models()


def test_credentials_give_a_secure_channel_that_a_plaintext_server_refuses(target):
    credentials = grpc.ssl_channel_credentials()
    with ModelAdminClient(target, timeout=2, credentials=credentials) as admin:
        with pytest.raises((Unavailable, DeadlineExceeded)):
            admin.list_models()


def test_metadata_is_sent_with_every_call():
    seen = []

    class Recorder(model_service_pb2_grpc.ModelServiceServicer):
        def ListModels(self, request, context):
            seen.append(dict(context.invocation_metadata()))
            return model_service_pb2.ListModelsResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Recorder(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with ModelAdminClient(f"127.0.0.1:{port}", metadata=[("authorization", "Bearer t0ken")]) as admin:
            assert admin.list_models() == [] and admin.list_models() == []
    finally:
        server.stop(0)
    assert [m.get("authorization") for m in seen] == ["Bearer t0ken", "Bearer t0ken"]


def test_token_and_roles_on_a_server_that_checks_tokens(tmp_path, linear_data):
    app = start_server(tmp_path / "models", tokens="admin:admin-secret,predict:predict-secret")
    target = f"127.0.0.1:{app.port}"
    try:
        with RegressionClient(target, token="admin-secret") as client:
            client.train("house", *linear_data)
        with ModelAdminClient(target, token="admin-secret") as admin:
            assert [s.model for s in admin.list_models()] == ["house"]
        with ModelAdminClient(target, token="predict-secret") as admin, pytest.raises(PermissionDenied):
            admin.promote("house", "v1")
        with ModelAdminClient(target) as admin, pytest.raises(Unauthenticated):
            admin.list_models()
    finally:
        app.stop(0)
