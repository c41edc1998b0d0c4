"""AsyncModelAdminClient against a real server: the cases of tests/client/test_admin.py, awaited."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from regserve.client import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ModelAdminClient,
    NotFound,
    PermissionDenied,
    RegserveError,
    Unauthenticated,
    Unavailable,
)
from regserve.client.aio import AsyncModelAdminClient, AsyncRegressionClient
from regserve.v1 import model_service_pb2, types_pb2
from tests.client.flaky_server import FlakyServer
from tests.conftest import start_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
async def one_event_loop():
    """Keeps one event loop for every asyncio test, as an application has.

    grpc.aio hands a call's last events (a cancelled stream's, say) to the loop that made
    the call, also after the test ended; a loop closed meanwhile fails the next test.
    """
    yield


@pytest.fixture
async def admin(target):
    async with AsyncModelAdminClient(target, timeout=30, metadata=[("x-request-origin", "tests")]) as admin:
        yield admin


@pytest.fixture
def house(client, linear_data):
    X, y = linear_data
    client.train("house", X, y)
    client.train("house", X, 2 * y, promote=False)


async def test_every_method_returns_what_the_blocking_client_returns(admin, house, target):
    (state,) = await admin.list_models()
    assert isinstance(state, model_service_pb2.ModelState) and state.serving_version == "v1"
    with ModelAdminClient(target) as blocking:
        assert await admin.list_models() == blocking.list_models()
        assert await admin.list_versions("house") == blocking.list_versions("house")
        assert await admin.get_version("house", "v2") == blocking.get_version("house", "v2")
        answered = await admin.status_response("house")
        assert answered.replica and answered.replica == blocking.status_response("house").replica
        assert [m.state.model for m in answered.models] == ["house"]
    assert isinstance(await admin.get_version("house", "v2"), types_pb2.ModelVersion)
    changes = [
        (await admin.promote("house", "v2", reason="r"), "v2"),
        (await admin.rollback("house"), "v1"),
        (await admin.freeze("house", "v2"), "v1"),
        (await admin.unfreeze("house", "v2"), "v1"),
        (await admin.set_split("house", {"v1": 3, "v2": 1}), "v1"),
        (await admin.set_split("house", {}), "v1"),
        (await admin.delete_version("house", "v2"), "v1"),
    ]
    for state, serving in changes:
        assert isinstance(state, model_service_pb2.ModelState) and state.serving_version == serving
    assert list(changes[2][0].frozen_versions) == ["v2"] and not changes[3][0].frozen_versions
    assert dict(changes[4][0].traffic_split) == {"v1": 3.0, "v2": 1.0}
    assert list(changes[-1][0].versions) == ["v1"]
    (status,) = await admin.status("house")
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


async def test_failures_are_typed_with_code_reason_and_cause(admin, house):
    with pytest.raises(NotFound) as info:
        await admin.promote("house", "v5")
    error = info.value
    assert isinstance(error, RegserveError) and isinstance(error.__cause__, grpc.aio.AioRpcError)
    assert (error.code, error.reason, error.metadata) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_VERSION",
        {"model": "house", "version": "v5"},
    )
    with pytest.raises(FailedPrecondition) as info:
        await admin.delete_version("house", "v1")
    assert info.value.reason == "VERSION_SERVING"
    assert info.value.field_violations == [("version", "version v1 is the serving version")]
    with pytest.raises(InvalidArgument) as info:
        await admin.set_split("house", {"v1": -1})
    assert info.value.reason == "INVALID_SPLIT"


async def test_an_unreachable_server_is_unavailable():
    async with AsyncModelAdminClient("127.0.0.1:1", timeout=2) as admin:
        with pytest.raises((Unavailable, DeadlineExceeded)):
            await admin.list_models()


async def test_the_channel_is_closed_on_leaving_the_context(target):
    async with AsyncModelAdminClient(target) as admin:
        assert await admin.list_models() == []
    with pytest.raises(grpc.aio.UsageError):  # grpc.aio refuses calls on a closed channel
        await admin.list_models()


async def test_credentials_give_a_secure_channel_that_a_plaintext_server_refuses(target):
    credentials = grpc.ssl_channel_credentials()
    async with AsyncModelAdminClient(target, timeout=2, credentials=credentials) as admin:
        with pytest.raises((Unavailable, DeadlineExceeded)):
            await admin.list_models()


async def test_metadata_and_token_are_sent_with_every_call():
    with FlakyServer(failures=0) as server:
        async with AsyncModelAdminClient(
            server.target, metadata=[("x-request-origin", "tests")], token="t0ken"
        ) as admin:
            assert await admin.list_models() == [] and await admin.list_models() == []
    seen = server.attempts_of("ListModels")
    assert [a.metadata.get("authorization") for a in seen] == ["Bearer t0ken", "Bearer t0ken"]
    assert [a.metadata.get("x-request-origin") for a in seen] == ["tests", "tests"]
    assert seen[0].request_id != seen[1].request_id


async def test_token_and_roles_on_a_server_that_checks_tokens(tmp_path, linear_data):
    app = start_server(tmp_path / "models", tokens="admin:admin-secret,predict:predict-secret")
    target = f"127.0.0.1:{app.port}"
    try:
        async with AsyncRegressionClient(target, token="admin-secret") as client:
            await client.train("house", *linear_data)
        async with AsyncModelAdminClient(target, token="admin-secret") as admin:
            assert [s.model for s in await admin.list_models()] == ["house"]
        async with AsyncModelAdminClient(target, token="predict-secret") as admin:
            with pytest.raises(PermissionDenied):
                await admin.promote("house", "v1")
        async with AsyncModelAdminClient(target) as admin:
            with pytest.raises(Unauthenticated):
                await admin.list_models()
    finally:
        app.stop(0)
