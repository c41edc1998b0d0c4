"""KServe's own Python client (``kserve.InferenceRESTClient``, protocol v2) against `regserve serve`'s REST gateway."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


def _run(served, calls):
    """Run ``calls(client, base_url)`` with a fresh client on its own event loop."""

    async def main():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
        try:
            return await calls(client, f"http://{served.http_target}")
        finally:
            await client.close()

    return asyncio.run(main())


def test_health_and_readiness(served):
    async def calls(client, base):
        return (
            await client.is_server_live(base),
            await client.is_server_ready(base),
            await client.is_model_ready(base, "iris"),
        )

    assert _run(served, calls) == (True, True, True)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("rows", [1, 10_000])
def test_infer_equals_predict(served, tmp_path, rows, binary):
    X = np.random.default_rng(rows + binary).normal(loc=[5.8, 3.0, 3.8, 1.2], scale=0.5, size=(rows, 4))

    async def calls(client, base):
        tensor = InferInput("inputs", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X, binary_data=binary)
        outputs = [
            RequestedOutput(name, parameters={"binary_data": binary}) for name in ("predictions", "probabilities")
        ]
        request = InferRequest(model_name="iris", infer_inputs=[tensor], request_id="kserve", request_outputs=outputs)
        return await client.infer(base, request, model_name="iris")

    answer = _run(served, calls)
    assert (answer.model_name, answer.id) == ("iris", "kserve")
    by_name = {output.name: output.as_numpy() for output in answer.outputs}
    expected = served.predict("iris", X, tmp_path)
    np.testing.assert_array_equal(by_name["predictions"], expected["values"].astype(np.int64))
    np.testing.assert_array_equal(by_name["probabilities"], expected["probabilities"])
