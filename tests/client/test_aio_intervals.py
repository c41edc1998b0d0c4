"""AsyncRegressionClient's interval= and confidence_level= answer as the blocking client's do."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes

from regserve.client.aio import AsyncRegressionClient

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


async def test_aio_intervals_and_statistics_equal_the_blocking_clients(client, target):
    X, y = load_diabetes(return_X_y=True)
    client.train("diabetes", X, y)
    expected = client.predict("diabetes", X[:6], interval=0.8)
    expected_info = client.model_info("diabetes", confidence_level=0.8)
    async with AsyncRegressionClient(target, timeout=30) as aio:
        answer = await aio.predict("diabetes", X[:6], interval=0.8)
        info = await aio.model_info("diabetes", confidence_level=0.8)
        chunks = [p async for p in aio.iter_batch_predict("diabetes", [X[:3], X[3:6]], interval=0.8)]
    for name in ("mean_lower", "mean_upper", "prediction_lower", "prediction_upper"):
        np.testing.assert_array_equal(getattr(answer, name), getattr(expected, name))
        streamed = np.concatenate([getattr(c, name) for c in chunks])
        np.testing.assert_allclose(streamed, getattr(expected, name), rtol=1e-12)
    assert info.statistics == expected_info.statistics and info.statistics.confidence_level == 0.8
