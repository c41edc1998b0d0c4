"""The asyncio clients balance and retry as the blocking ones do: the cases of test_retries.py and test_channel.py.

The same real server that refuses first attempts (tests/client/flaky_server.py) counts
the attempts; one asyncio call stands for each call of test_retries.CALLS.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from regserve.client import Cancelled, RegserveError, ServerError, Unavailable
from regserve.client.aio import AsyncModelAdminClient, AsyncRegressionClient
from tests.client.flaky_server import FlakyServer
from tests.client.test_retries import CALLS, HEX_ID, NEVER_RETRIED, X, Y
from tests.conftest import start_server

pytestmark = pytest.mark.anyio

ASYNC_CALLS = {
    "regserve.v1.RegressionService/Train": lambda client, admin: client.train("m", X, Y),
    "regserve.v1.RegressionService/Predict": lambda client, admin: client.predict("m", X),
    "regserve.v1.RegressionService/BatchPredict": lambda client, admin: client.batch_predict("m", X),
    "regserve.v1.RegressionService/ModelInfo": lambda client, admin: client.model_info("m"),
    "regserve.v1.ModelService/ListModels": lambda client, admin: admin.list_models(),
    "regserve.v1.ModelService/ListVersions": lambda client, admin: admin.list_versions("m"),
    "regserve.v1.ModelService/GetVersion": lambda client, admin: admin.get_version("m", "v1"),
    "regserve.v1.ModelService/CreateVersion": lambda client, admin: admin.create_version("m", "linear", [[1.0]], [0.0]),
    "regserve.v1.ModelService/PromoteVersion": lambda client, admin: admin.promote("m", "v1"),
    "regserve.v1.ModelService/RollbackModel": lambda client, admin: admin.rollback("m"),
    "regserve.v1.ModelService/FreezeVersion": lambda client, admin: admin.freeze("m", "v1"),
    "regserve.v1.ModelService/UnfreezeVersion": lambda client, admin: admin.unfreeze("m", "v1"),
    "regserve.v1.ModelService/SetTrafficSplit": lambda client, admin: admin.set_split("m", {"v1": 1}),
    "regserve.v1.ModelService/DeleteVersion": lambda client, admin: admin.delete_version("m", "v1"),
    "regserve.v1.ModelService/GetStatus": lambda client, admin: admin.status("m"),
    "grpc.health.v1.Health/Check": lambda client, admin: client.health(),
}
"""The asyncio call for each method the blocking clients call."""


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


def clients(target: str, **connection):
    return AsyncRegressionClient(target, timeout=30, **connection), AsyncModelAdminClient(
        target, timeout=30, **connection
    )


async def test_the_asyncio_clients_make_every_call_the_blocking_ones_make():
    assert ASYNC_CALLS.keys() == CALLS.keys()


@pytest.mark.parametrize("name", sorted(ASYNC_CALLS))
async def test_reads_are_retried_on_unavailable_and_changes_never(name):
    method = name.rsplit("/", 1)[1]
    with FlakyServer(failures=1) as server:
        client, admin = clients(server.target)
        async with client, admin:
            if name in NEVER_RETRIED:
                with pytest.raises(Unavailable) as info:
                    await ASYNC_CALLS[name](client, admin)
                (attempt,) = server.attempts_of(method)
                assert info.value.request_id == attempt.request_id
            else:
                await ASYNC_CALLS[name](client, admin)
                first, second = server.attempts_of(method)
                assert first.request_id == second.request_id
    assert HEX_ID.fullmatch(server.attempts_of(method)[0].request_id)


async def test_retries_are_bounded_and_the_error_carries_the_request_id():
    with FlakyServer(failures=100) as server:
        async with AsyncRegressionClient(server.target, timeout=30) as client:
            with pytest.raises(Unavailable) as info:
                await client.predict("m", X)
    attempts = server.attempts_of("Predict")
    assert len(attempts) == 4
    assert {attempt.request_id for attempt in attempts} == {info.value.request_id}


async def test_a_read_cancelled_by_a_closing_server_is_retried_and_a_change_is_not():
    with FlakyServer(failures=1, code=grpc.StatusCode.CANCELLED) as server:
        client, admin = clients(server.target)
        async with client, admin:
            await client.predict("m", X)
            with pytest.raises(Cancelled):
                await admin.promote("m", "v1")
    assert len(server.attempts_of("Predict")) == 2
    assert len(server.attempts_of("PromoteVersion")) == 1


async def test_other_failures_are_not_retried():
    with FlakyServer(failures=1, code=grpc.StatusCode.INTERNAL) as server:
        async with AsyncRegressionClient(server.target, timeout=30) as client:
            with pytest.raises(ServerError):
                await client.predict("m", X)
    assert len(server.attempts_of("Predict")) == 1


async def test_a_batch_predict_that_answered_is_not_replayed():
    with FlakyServer(failures=1, answers_before_failing=1) as server:
        async with AsyncRegressionClient(server.target, timeout=30) as client:
            predictions = client.iter_batch_predict("m", [X, X, X])
            await anext(predictions)
            with pytest.raises(Unavailable):
                await anext(predictions)
    assert len(server.attempts_of("BatchPredict")) == 1


async def test_a_batch_predict_larger_than_the_retry_buffer_is_not_replayed():
    # 3 chunks of 20,000 rows of 3 float64: 1.4 MB, past gRPC's 256 KiB per-call retry buffer.
    rng = np.random.default_rng(17)
    chunks = [rng.normal(size=(20_000, 3)) for _ in range(3)]
    with FlakyServer(failures=1, read_requests_first=True) as server:
        async with AsyncRegressionClient(server.target, timeout=30) as client:
            with pytest.raises(Unavailable):
                [p async for p in client.iter_batch_predict("m", chunks)]
    assert len(server.attempts_of("BatchPredict")) == 1


async def test_a_service_config_given_replaces_the_default():
    with FlakyServer(failures=2) as server:
        async with AsyncRegressionClient(server.target, timeout=30, service_config={}) as client:
            with pytest.raises(Unavailable):
                await client.predict("m", X)
        assert len(server.attempts_of("Predict")) == 1


async def test_options_apply_over_the_clients_own():
    with FlakyServer(failures=1) as server:
        options = [("grpc.enable_retries", 0), ("grpc.primary_user_agent", "pricing-service/2.1")]
        async with AsyncRegressionClient(server.target, timeout=30, options=options) as client:
            with pytest.raises(Unavailable):
                await client.predict("m", X)
    (attempt,) = server.attempts_of("Predict")
    assert attempt.metadata["user-agent"].startswith("pricing-service/2.1")


async def test_a_request_id_given_is_sent_with_every_attempt_and_carried_by_the_error():
    with FlakyServer(failures=100) as server:
        async with AsyncModelAdminClient(server.target, timeout=30, metadata=[("x-request-id", "order-4711")]) as admin:
            with pytest.raises(Unavailable) as info:
                await admin.list_models()
            with pytest.raises(Unavailable):
                await admin.promote("m", "v1")
    assert info.value.request_id == "order-4711"
    assert {attempt.request_id for attempt in server.attempts} == {"order-4711"}


async def test_a_call_that_reached_no_server_carries_the_id_it_was_sent_with():
    # Port 1 on loopback: nothing listens, so every attempt is refused before it leaves the client.
    async with AsyncRegressionClient("127.0.0.1:1", timeout=30) as client:
        errors = []
        for call in (lambda: client.predict("m", X), lambda: client.train("m", X, Y)):
            with pytest.raises(Unavailable) as info:
                await call()
            errors.append(info.value)
    assert all(HEX_ID.fullmatch(error.request_id) for error in errors)
    assert errors[0].request_id != errors[1].request_id


async def test_round_robin_spreads_calls_over_every_address_and_a_service_config_replaces_it(tmp_path, linear_data):
    # Server A serves "house" at v1 and server B at v2, so an answer's version says which server gave it.
    X_train, y_train = linear_data
    started = [start_server(tmp_path / "a"), start_server(tmp_path / "b")]
    try:
        targets = [f"127.0.0.1:{app.port}" for app in started]
        for versions, target in zip((1, 2), targets, strict=True):
            async with AsyncRegressionClient(target, timeout=60) as client:
                for _ in range(versions):
                    await client.train("house", X_train, y_train)
        async with AsyncRegressionClient("ipv4:" + ",".join(targets), timeout=30) as client:
            # Round robin picks among the connections that are ready; call until both are.
            seen = set()
            for _ in range(200):
                seen.add((await client.predict("house", X_train[:1])).version)
                if len(seen) == 2:
                    break
            assert seen == {"v1", "v2"}
            versions = [(await client.predict("house", X_train[:1])).version for _ in range(20)]
        assert versions.count("v1") == versions.count("v2") == 10
        pick_first = {"loadBalancingConfig": [{"pick_first": {}}]}
        async with AsyncRegressionClient("ipv4:" + ",".join(targets), timeout=30, service_config=pick_first) as client:
            assert len({(await client.predict("house", X_train[:1])).version for _ in range(20)}) == 1
    finally:
        for app in started:
            app.stop(0)


async def test_a_real_server_echoes_the_id_the_client_sent(target):
    async with AsyncRegressionClient(target, timeout=30) as client:
        with pytest.raises(RegserveError) as info:
            await client.model_info("nothing")
    assert info.value.__cause__.trailing_metadata()["x-request-id"] == info.value.request_id
