"""The REST gateway carries ModelInfo's statistics and Predict's intervals as the gRPC calls answer them."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from google.protobuf import json_format
from sklearn.datasets import load_diabetes

from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2
from tests.server.gateway.helpers import MODES, running_gateway


@pytest.fixture(params=MODES)
def http(request, app, target):
    with running_gateway(target, app.local if request.param == "in_process" else None) as client:
        yield client


def test_statistics_and_intervals_over_rest(http, client, channel):
    X, y = load_diabetes(return_X_y=True)
    client.train("diabetes", X, y)
    stub = pb_grpc.RegressionServiceStub(channel)
    ols = sm.OLS(y, sm.add_constant(X)).fit()

    response = http.get("/v1/models/diabetes", params={"confidenceLevel": 0.9})
    assert response.status_code == 200, response.text
    expected = stub.ModelInfo(pb.ModelInfoRequest(model="diabetes", confidence_level=0.9))
    assert response.json() == json_format.MessageToDict(expected)
    statistics = response.json()["modelVersion"]["statistics"]
    assert statistics["confidenceLevel"] == 0.9 and statistics["robustCovarianceType"] == "HC3"
    np.testing.assert_allclose([c["ciLow"] for c in statistics["coefficients"]], ols.conf_int(0.1)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(statistics["rSquared"], ols.rsquared, rtol=1e-6)

    rows = X[:4]
    body = {"inputs": {"numColumns": rows.shape[1], "values": rows.ravel().tolist()}, "intervalLevel": 0.95}
    response = http.post("/v1/models/diabetes:predict", json=body)
    assert response.status_code == 200, response.text
    frame = ols.get_prediction(sm.add_constant(rows, has_constant="add")).summary_frame(alpha=0.05)
    answer = response.json()
    np.testing.assert_allclose(answer["meanLower"]["values"], frame["mean_ci_lower"], rtol=1e-6)
    np.testing.assert_allclose(answer["predictionUpper"]["values"], frame["obs_ci_upper"], rtol=1e-6)
    grpc_answer = stub.Predict(
        pb.PredictRequest(
            model="diabetes",
            inputs=types_pb2.Matrix(num_columns=rows.shape[1], values=rows.ravel()),
            interval_level=0.95,
        )
    )
    assert answer == json_format.MessageToDict(grpc_answer)


def test_ridge_intervals_are_refused_over_rest_with_the_reason(http, client):
    X, y = load_diabetes(return_X_y=True)
    client.train("ridge", X, y, kind="ridge", alpha=1.0)
    body = {"inputs": {"numColumns": X.shape[1], "values": X[:1].ravel().tolist()}, "intervalLevel": 0.95}
    response = http.post("/v1/models/ridge:predict", json=body)
    assert response.status_code == 400
    assert "INTERVALS_UNAVAILABLE" in response.text
