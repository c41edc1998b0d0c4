"""GetVersion's validation-sample view over a real server: the rows stored at training, pickle-free, checked."""

from __future__ import annotations

import io
import zipfile

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status

from regserve.server.models.training import SAMPLE_ROWS
from regserve.server.models.training.sampling import RowGroups
from regserve.v1 import model_service_pb2 as pb
from regserve.v1 import model_service_pb2_grpc as pb_grpc
from tests.server.gateway.helpers import running_gateway


@pytest.fixture
def stub(channel):
    return pb_grpc.ModelServiceStub(channel)


def _sample(response: pb.GetVersionResponse) -> tuple[np.ndarray, np.ndarray]:
    sample = response.validation_sample
    targets = np.frombuffer(sample.targets.raw, dtype="<f8")
    return np.frombuffer(sample.inputs.raw, dtype="<f8").reshape(targets.size, sample.inputs.num_columns), targets


def test_the_view_answers_the_validation_rows_stored_at_training(client, stub, linear_data, model_dir):
    X, y = linear_data
    client.train("house", X, y, validation_fraction=0.25, seed=3, chunk_rows=50)
    basic = stub.GetVersion(pb.GetVersionRequest(model="house", version="v1"), timeout=30)
    assert not basic.HasField("validation_sample")
    request = pb.GetVersionRequest(model="house", version="v1", view=pb.VERSION_VIEW_VALIDATION_SAMPLE)
    response = stub.GetVersion(request, timeout=30)
    assert response.model_version == basic.model_version
    inputs, targets = _sample(response)
    held_out = RowGroups(3, 0.25, 1).take(0, X.shape[0])[0] == -1
    np.testing.assert_array_equal(inputs, X[held_out])
    np.testing.assert_array_equal(targets, y[held_out])
    assert inputs.shape[0] == response.model_version.num_validation <= SAMPLE_ROWS
    # Stored in the version's weights.npz as plain float arrays: readable without pickle.
    weights = (model_dir / "models" / "house" / "versions" / "v1" / "weights.npz").read_bytes()
    with np.load(io.BytesIO(weights), allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["validation_inputs"], inputs)
    assert {"validation_inputs.npy", "validation_targets.npy"} <= set(zipfile.ZipFile(io.BytesIO(weights)).namelist())


def test_a_classifier_answers_class_indices(client, stub):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(240, 2))
    labels = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    client.train("flag", X, labels.tolist(), kind="logistic", validation_fraction=0.5, seed=2)
    request = pb.GetVersionRequest(model="flag", version="v1", view=pb.VERSION_VIEW_VALIDATION_SAMPLE)
    inputs, targets = _sample(stub.GetVersion(request, timeout=30))
    expected = (inputs[:, 0] + inputs[:, 1] > 0).astype(float)  # classes ("no", "yes"): "yes" is 1
    assert inputs.shape[0] > 50
    np.testing.assert_array_equal(targets, expected)


def test_without_a_validation_split_the_sample_is_empty(client, stub, linear_data):
    X, y = linear_data
    client.train("house", X, y, seed=3)
    request = pb.GetVersionRequest(model="house", version="v1", view=pb.VERSION_VIEW_VALIDATION_SAMPLE)
    response = stub.GetVersion(request, timeout=30)
    assert response.HasField("validation_sample")
    inputs, targets = _sample(response)
    assert inputs.shape == (0, 5) and targets.shape == (0,)


def test_an_unknown_view_is_refused(client, stub, linear_data):
    X, y = linear_data
    client.train("house", X, y, seed=3)
    with pytest.raises(grpc.RpcError) as failure:
        stub.GetVersion(pb.GetVersionRequest(model="house", version="v1", view=7), timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "INVALID_VIEW" in str(rpc_status.from_call(failure.value))


def test_the_rest_route_takes_the_view_as_a_query_parameter(app, client, linear_data):
    X, y = linear_data
    client.train("house", X, y, validation_fraction=0.25, seed=3)
    with running_gateway(f"127.0.0.1:{app.port}") as http:
        answer = http.get("/v1/models/house/versions/v1", params={"view": "VERSION_VIEW_VALIDATION_SAMPLE"})
        basic = http.get("/v1/models/house/versions/v1")
    assert answer.status_code == 200, answer.text
    sample = answer.json()["validationSample"]
    assert sample["inputs"]["numColumns"] == 5 and sample["inputs"]["raw"] and sample["targets"]["raw"]
    assert "validationSample" not in basic.json()
