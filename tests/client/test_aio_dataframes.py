"""pandas DataFrames in the asyncio client: the same answers as the blocking client's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regserve.client.aio import AsyncRegressionClient

pytestmark = pytest.mark.anyio

NAMES = ["bedrooms", "bathrooms", "sqft"]


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
async def one_event_loop():
    """One event loop for every test here: grpc.aio hands a call's last events to the loop that made it."""
    yield


async def test_train_predict_and_batch_predict_by_name(target):
    rng = np.random.default_rng(20261208)
    frame = pd.DataFrame({name: rng.normal(size=40) for name in NAMES})
    price = frame.to_numpy() @ [1.0, -2.0, 3.0] + rng.normal(scale=0.1, size=40)
    async with AsyncRegressionClient(target, timeout=60) as client:
        response = await client.train("houses", frame[["sqft", "bedrooms"]], price)
        assert list(response.model_version.feature_names) == ["sqft", "bedrooms"]
        expected = (await client.predict("houses", frame[["sqft", "bedrooms"]].to_numpy())).values
        swapped = frame[["bedrooms", "sqft"]]
        np.testing.assert_allclose((await client.predict("houses", swapped)).values, expected, rtol=1e-12)
        np.testing.assert_allclose(await client.batch_predict("houses", swapped, chunk_rows=7), expected, rtol=1e-12)
        with pytest.raises(ValueError, match="the model has no feature 'bathrooms'"):
            await client.batch_predict("houses", frame)


async def test_batch_predict_refuses_a_split_answering_with_other_features(target):
    from regserve.client.aio import AsyncModelAdminClient

    rng = np.random.default_rng(20261209)
    frame = pd.DataFrame({name: rng.normal(size=40) for name in NAMES})
    price = frame.to_numpy() @ [1.0, -2.0, 3.0]
    async with AsyncRegressionClient(target, timeout=60) as client, AsyncModelAdminClient(target) as admin:
        await client.train("split", frame[NAMES], price)
        await client.train("split", frame[NAMES[::-1]], price, promote=False)
        await client.train("split", frame[NAMES[:2]], price, promote=False)
        await admin.set_split("split", {"v2": 100.0})
        with pytest.raises(ValueError, match="split v2 answered, whose features"):
            await client.batch_predict("split", frame)
        # Another feature count: the first chunk is refused before its answer can be compared.
        await admin.set_split("split", {"v3": 100.0})
        with pytest.raises(ValueError, match=r"split answered with a version of 2 features, not v1 \(bedrooms"):
            await client.batch_predict("split", frame)
