"""AsyncRegressionClient against a real server: the answers of the blocking client, typed exceptions, TLS.

Each behaviour of tests/client/test_client.py is checked here for the asyncio client, and
every call is compared with the blocking client's answer from the same server.
"""

from __future__ import annotations

import asyncio
import inspect
import re

import grpc
import grpc.aio
import numpy as np
import pytest
import trustme

from regserve.client import (
    DeadlineExceeded,
    InvalidArgument,
    ModelAdminClient,
    NotFound,
    Prediction,
    RegressionClient,
    RegserveError,
    Unavailable,
)
from regserve.client.aio import AsyncModelAdminClient, AsyncRegressionClient
from tests.conftest import start_server

pytestmark = pytest.mark.anyio

HEX_ID = re.compile(r"[0-9a-f]{32}")


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
async def aclient(target):
    async with AsyncRegressionClient(target, timeout=60) as client:
        yield client


@pytest.fixture
def iris_like():
    """150 rows, 4 features, three separable classes with string labels, seeded."""
    rng = np.random.default_rng(20261207)
    centres = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 3, 3, 3]], dtype=float)
    labels = np.repeat(np.array(["setosa", "versicolor", "virginica"]), 50)
    X = centres[np.repeat(np.arange(3), 50)] + rng.normal(scale=0.6, size=(150, 4))
    return X, labels


def assert_same(ours: Prediction, theirs: Prediction) -> None:
    assert (ours.model, ours.version, ours.labels, ours.classes) == (
        theirs.model,
        theirs.version,
        theirs.labels,
        theirs.classes,
    )
    np.testing.assert_array_equal(ours.values, theirs.values)
    if theirs.probabilities is None:
        assert ours.probabilities is None
    else:
        np.testing.assert_array_equal(ours.probabilities, theirs.probabilities)


@pytest.mark.parametrize(
    ("blocking", "asynchronous"),
    [(RegressionClient, AsyncRegressionClient), (ModelAdminClient, AsyncModelAdminClient)],
    ids=["regression", "admin"],
)
async def test_every_method_of_a_blocking_client_has_an_asyncio_peer(blocking, asynchronous):
    def methods(cls):
        return {name for name, member in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}

    assert methods(asynchronous) == methods(blocking)
    for name in methods(blocking):
        method = getattr(asynchronous, name)
        assert inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method), name
    assert inspect.isasyncgenfunction(AsyncRegressionClient.iter_batch_predict)


async def test_every_call_answers_what_the_blocking_client_answers(aclient, client, linear_data):
    X, y = linear_data
    trained = await aclient.train("house", X, y, feature_names=list("abcde"), validation_fraction=0.25, seed=3)
    assert trained.model_version.version == "v1"
    assert_same(await aclient.predict("house", X[:7]), client.predict("house", X[:7]))
    rows = [dict(zip("abcde", row, strict=True)) for row in X[:3]]
    assert_same(await aclient.predict_named("house", rows), client.predict_named("house", rows))
    np.testing.assert_array_equal(
        await aclient.batch_predict("house", X, chunk_rows=70), client.batch_predict("house", X, chunk_rows=70)
    )
    assert await aclient.model_info("house") == client.model_info("house")
    assert await aclient.health() == client.health() == "SERVING"


async def test_a_classifier_answers_labels_probabilities_and_classes(aclient, client, iris_like):
    X, labels = iris_like
    await aclient.train("iris", X, labels, kind="logistic")
    ours = await aclient.predict("iris", X[::10])
    assert ours.classes == ["setosa", "versicolor", "virginica"] and ours.labels is not None
    assert ours.probabilities is not None and ours.probabilities.shape == (15, 3)
    assert_same(ours, client.predict("iris", X[::10]))
    streamed = [p async for p in aclient.iter_batch_predict("iris", [X[:40], X[40:90], X[90:]])]
    expected = list(client.iter_batch_predict("iris", [X[:40], X[40:90], X[90:]]))
    assert len(streamed) == 3
    for ours, theirs in zip(streamed, expected, strict=True):
        assert_same(ours, theirs)


async def test_iter_batch_predict_reads_an_iterable_or_an_async_iterable_in_order(aclient, linear_data):
    X, y = linear_data
    await aclient.train("house", X, y)
    cuts = [0, 100, 101, 250, 400]

    async def chunks():
        for start, end in zip(cuts, cuts[1:], strict=False):
            await asyncio.sleep(0)
            yield X[start:end]

    blocks = [X[start:end] for start, end in zip(cuts, cuts[1:], strict=False)]
    from_list = [p async for p in aclient.iter_batch_predict("house", blocks)]
    from_async = [p async for p in aclient.iter_batch_predict("house", chunks())]
    whole = (await aclient.predict("house", X)).values
    for parts in (from_list, from_async):
        assert [len(p.values) for p in parts] == [100, 1, 149, 150]
        np.testing.assert_array_equal(np.concatenate([p.values for p in parts]), whole)


async def test_train_reads_x_and_y_an_iterable_or_an_async_iterable_alike(aclient, linear_data):
    X, y = linear_data

    async def pairs():
        for start in range(0, 400, 150):
            yield X[start : start + 150], y[start : start + 150]

    versions = [
        await aclient.train("house", X, y),
        await aclient.train("house", chunks=[(X[:150], y[:150]), (X[150:], y[150:])]),
        await aclient.train("house", chunks=pairs()),
    ]
    assert [v.model_version.version for v in versions] == ["v1", "v2", "v3"]
    coefficients = [list(v.model_version.coefficients.values) for v in versions]
    np.testing.assert_allclose(coefficients[1], coefficients[0], rtol=1e-9)
    np.testing.assert_allclose(coefficients[2], coefficients[0], rtol=1e-9)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["iterable", "async-iterable"])
async def test_chunks_that_raise_reach_the_caller_and_nothing_is_stored(aclient, linear_data, asynchronous):
    X, y = linear_data

    def pairs():
        yield X[:200], y[:200]
        raise KeyError("the caller's own failure")

    async def async_pairs():
        for pair in pairs():
            yield pair

    with pytest.raises(KeyError, match="own failure"):
        await aclient.train("house", chunks=async_pairs() if asynchronous else pairs())
    with pytest.raises(NotFound) as info:
        await aclient.model_info("house")
    assert info.value.reason == "UNKNOWN_MODEL"

    await aclient.train("house", X, y)

    def rows():
        yield X[:10]
        raise KeyError("the caller's own rows")

    async def async_rows():
        for chunk in rows():
            yield chunk

    with pytest.raises(KeyError, match="own rows"):
        async for _ in aclient.iter_batch_predict("house", async_rows() if asynchronous else rows()):
            pass


async def test_a_stream_the_server_refuses_midway_fails_with_the_servers_status_every_time(aclient, linear_data):
    # grpc.aio overwrites that status with INTERNAL when a chunk is still being sent (grpc/grpc#36066).
    X, y = linear_data
    await aclient.train("house", X, y)
    chunks = [X[start : start + 20].copy() for start in range(0, 400, 20)]
    chunks[2][5, 1] = np.nan
    for _ in range(20):
        with pytest.raises(InvalidArgument) as info:
            async for _ in aclient.iter_batch_predict("house", chunks):
                pass
        assert info.value.reason == "NON_FINITE_VALUE" and HEX_ID.fullmatch(info.value.request_id)


async def test_calls_run_concurrently_on_one_channel(aclient, client, linear_data):
    X, y = linear_data
    await aclient.train("house", X, y)
    answers = await asyncio.gather(*(aclient.predict("house", X[i : i + 3]) for i in range(0, 300, 3)))
    np.testing.assert_array_equal(np.concatenate([a.values for a in answers]), client.predict("house", X[:300]).values)


async def test_leaving_a_batch_stream_early_leaves_the_client_usable(aclient, linear_data):
    X, y = linear_data
    await aclient.train("house", X, y)
    stream = aclient.iter_batch_predict("house", [X[:10]] * 50)
    first = await anext(stream)
    await stream.aclose()
    assert len(first.values) == 10
    assert len((await aclient.predict("house", X[:2])).values) == 2


async def test_exceptions_carry_code_reason_violations_and_request_id(aclient, linear_data):
    await aclient.train("house", *linear_data)
    with pytest.raises(InvalidArgument) as info:
        await aclient.predict("house", np.ones((1, 3)))
    error = info.value
    assert isinstance(error, RegserveError)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "FEATURE_COUNT_MISMATCH"
    assert error.field_violations[0][0] == "inputs"
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)
    # The server echoes the id the client sent.
    assert HEX_ID.fullmatch(error.request_id)
    assert error.__cause__.trailing_metadata()["x-request-id"] == error.request_id


async def test_not_found_is_typed(aclient):
    with pytest.raises(NotFound) as info:
        await aclient.model_info("nothing")
    assert info.value.reason == "UNKNOWN_MODEL"


async def test_an_unreachable_server_is_unavailable():
    async with AsyncRegressionClient("127.0.0.1:1", timeout=2) as client:
        with pytest.raises((Unavailable, DeadlineExceeded)) as info:
            await client.predict("m", np.ones((1, 1)))
    assert HEX_ID.fullmatch(info.value.request_id)


async def test_a_tiny_deadline_is_exceeded(aclient, linear_data):
    await aclient.train("house", *linear_data)
    aclient.timeout = 1e-6
    for _ in range(10):
        with pytest.raises(DeadlineExceeded):
            await aclient.batch_predict("house", np.ones((200_000, 5)))


async def test_the_async_context_manager_closes_the_channel(target):
    async with AsyncRegressionClient(target) as client:
        assert await client.health() == "NOT_SERVING"
    with pytest.raises(grpc.aio.UsageError):  # grpc.aio refuses calls on a closed channel
        await client.health()


async def test_one_dimensional_input_is_one_row(aclient, linear_data):
    X, y = linear_data
    await aclient.train("house", X, y)
    np.testing.assert_array_equal(
        (await aclient.predict("house", X[0])).values, (await aclient.predict("house", X[:1])).values
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, and a client certificate, as PEM files."""
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@regserve.test")
    paths = {name: str(root / f"{name}.pem") for name in ("ca", "server_cert", "server_key", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.private_key_pem.write_to_path(paths["server_key"])
    server.cert_chain_pems[0].write_to_path(paths["server_cert"])
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(paths["server_cert"], append=True)
    client.private_key_pem.write_to_path(paths["key"])
    client.cert_chain_pems[0].write_to_path(paths["cert"])
    return paths


async def test_tls_and_mutual_tls_from_pem_files(tmp_path, pki):
    app = start_server(
        tmp_path / "models", tls_cert=pki["server_cert"], tls_key=pki["server_key"], tls_client_ca=pki["ca"]
    )
    target = f"127.0.0.1:{app.port}"
    try:
        async with AsyncRegressionClient(
            target, tls_ca=pki["ca"], tls_cert=pki["cert"], tls_key=pki["key"], timeout=5
        ) as client:
            assert await client.health() == "NOT_SERVING"
        async with AsyncRegressionClient(target, tls_ca=pki["ca"], timeout=5) as client:
            with pytest.raises((Unavailable, DeadlineExceeded)):
                await client.health()
        async with AsyncRegressionClient(target, timeout=5) as client:
            with pytest.raises((Unavailable, DeadlineExceeded)):
                await client.health()
    finally:
        app.stop(0)
