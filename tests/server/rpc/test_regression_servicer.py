"""RegressionService end to end: a real server on port 0, called through real channels."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from regserve.client import InvalidArgument, NotFound, RegressionClient
from regserve.server.registry.disk import ModelRegistry
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2
from tests.conftest import start_server


def lstsq_with_intercept(X, y):
    A = np.hstack([np.ones((X.shape[0], 1)), X])
    solution, *_ = np.linalg.lstsq(A, y, rcond=None)
    return solution[0], solution[1:]


def test_train_then_predict_matches_lstsq(client, linear_data):
    X, y = linear_data
    response = client.train("house", X, y)
    assert response.promoted
    assert response.model_version.version == "v1"
    intercept, coef = lstsq_with_intercept(X, y)
    rng = np.random.default_rng(1)
    X_new = rng.normal(size=(50, 5))
    prediction = client.predict("house", X_new)
    assert (prediction.model, prediction.version) == ("house", "v1")
    np.testing.assert_allclose(prediction.values, X_new @ coef + intercept, rtol=1e-9, atol=1e-9)


def test_typed_and_named_inputs_give_the_raw_path_answer(client, channel, linear_data):
    X, y = linear_data
    client.train("house", X, y, feature_names=["a", "b", "c", "d", "e"])
    raw = client.predict("house", X[:3]).values
    stub = pb_grpc.RegressionServiceStub(channel)
    typed = stub.Predict(pb.PredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=5, values=X[:3].ravel())))
    assert not typed.predictions.raw
    np.testing.assert_array_equal(np.array(typed.predictions.values), raw)
    named = client.predict_named("house", [dict(zip("abcde", row, strict=True)) for row in X[:3]])
    np.testing.assert_array_equal(named.values, raw)


def test_batch_predict_of_a_million_rows_equals_predict_in_order(client, linear_data):
    X, y = linear_data
    client.train("house", X, y)
    rng = np.random.default_rng(2)
    big = rng.normal(size=(1_000_000, 5))
    streamed = client.batch_predict("house", big, chunk_rows=10_000)
    assert streamed.shape == (1_000_000,)
    unary = np.concatenate([client.predict("house", big[i : i + 200_000]).values for i in range(0, 1_000_000, 200_000)])
    np.testing.assert_array_equal(streamed, unary)


def test_batch_predict_reports_offsets_and_uneven_chunks(client, linear_data):
    X, y = linear_data
    client.train("house", X, y)
    sizes = [1, 7, 300, 2]
    chunks = np.split(X[:310], np.cumsum(sizes)[:-1])
    answers = list(client.iter_batch_predict("house", chunks))
    assert [len(a.values) for a in answers] == sizes
    np.testing.assert_array_equal(np.concatenate([a.values for a in answers]), client.predict("house", X[:310]).values)


def test_model_info_reports_what_was_trained(client, linear_data):
    X, y = linear_data
    client.train("house", X, y, feature_names=list("abcde"), validation_fraction=0.25, seed=3)
    info = client.model_info("house")
    assert (info.model, info.version, info.kind) == ("house", "v1", types_pb2.MODEL_KIND_LINEAR)
    assert list(info.feature_names) == list("abcde")
    assert info.num_samples == 400 and info.num_train + info.num_validation == 400 and info.num_validation > 0
    assert info.serving_state == types_pb2.SERVING_STATE_SERVING
    assert len(info.checksum) == 64 and len(info.data_fingerprint) == 64
    assert set(info.training.metrics) >= {"mse", "rmse", "mae", "r2"}
    assert info.validation.metrics["r2"] > 0.99
    assert info.coefficients.num_columns == 5 and len(info.intercepts) == 1
    assert info.create_time.seconds > 0


def test_health_turns_serving_once_a_model_is_loaded(client, channel, linear_data):
    health = health_pb2_grpc.HealthStub(channel)
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert health.Check(health_pb2.HealthCheckRequest()).status == not_serving
    service = "regserve.v1.RegressionService"
    assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == not_serving
    client.train("house", *linear_data)
    assert client.health() == "SERVING"
    assert client.health(service) == "SERVING"


def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"regserve.v1.RegressionService", "grpc.health.v1.Health"} <= names


def test_a_restart_serves_the_same_model(model_dir, linear_data):
    X, y = linear_data
    first = start_server(model_dir)
    try:
        with RegressionClient(f"127.0.0.1:{first.port}") as client:
            client.train("house", X, y)
            before = client.predict("house", X[:10])
    finally:
        first.stop(0)
    second = start_server(model_dir)
    try:
        with RegressionClient(f"127.0.0.1:{second.port}") as client:
            after = client.predict("house", X[:10])
            assert client.health() == "SERVING"
    finally:
        second.stop(0)
    assert after.version == before.version
    np.testing.assert_array_equal(after.values, before.values)


# Bad input: the code, the ErrorInfo reason and the field; nothing stored.


def expect(error_type, reason, call, *args, **kwargs):
    with pytest.raises(error_type) as info:
        call(*args, **kwargs)
    assert info.value.reason == reason, info.value
    return info.value


@pytest.fixture
def trained(client, linear_data):
    client.train("house", *linear_data)
    return client


def test_failed_predictions_count_as_errors_of_the_version(app, trained):
    trained.predict("house", np.ones((3, 5)))
    expect(InvalidArgument, "FEATURE_COUNT_MISMATCH", trained.predict, "house", np.ones((2, 4)))
    with pytest.raises(InvalidArgument):
        list(trained.iter_batch_predict("house", [np.ones((4, 5)), np.ones((2, 4))]))
    summary = app.stats.summary("house", "v1")
    # Two answered calls (a Predict and a BatchPredict chunk) with their rows; two failures with none.
    assert (summary.requests, summary.errors, summary.rows) == (4, 2, 7)


def test_wrong_feature_count(trained):
    error = expect(InvalidArgument, "FEATURE_COUNT_MISMATCH", trained.predict, "house", np.ones((2, 4)))
    assert error.field_violations and error.field_violations[0][0] == "inputs"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs(trained, bad):
    X = np.ones((3, 5))
    X[2, 4] = bad
    error = expect(InvalidArgument, "NON_FINITE_VALUE", trained.predict, "house", X)
    assert error.metadata == {"row": "2", "column": "4"}


def test_empty_request(trained, channel):
    stub = pb_grpc.RegressionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(pb.PredictRequest(model="house"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(info.value)
    reasons = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = error_details_pb2.ErrorInfo()
            detail.Unpack(error_info)
            reasons.append((error_info.reason, error_info.domain))
    assert reasons == [("EMPTY_REQUEST", "regserve.v1")]


def test_missing_and_unknown_model(trained):
    expect(InvalidArgument, "MISSING_MODEL", trained.predict, "", np.ones((1, 5)))
    error = expect(NotFound, "UNKNOWN_MODEL", trained.predict, "nope", np.ones((1, 5)))
    assert error.field_violations[0][0] == "model"
    expect(NotFound, "UNKNOWN_VERSION", trained.predict, "house", np.ones((1, 5)), version="v9")


def test_unknown_feature_name(trained):
    trained.train("named", np.ones((3, 1)) * [[1], [2], [3]], [1.0, 2.0, 3.5], feature_names=["x"])
    expect(InvalidArgument, "UNKNOWN_FEATURE", trained.predict_named, "named", [{"x": 1.0, "y": 2.0}])
    expect(InvalidArgument, "MISSING_FEATURE", trained.predict_named, "named", [{}])


def versions_on_disk(model_dir, model):
    registry = ModelRegistry(model_dir)
    return [v.version for v in registry.list_versions(model)] if model in registry.list_models() else []


def test_train_with_no_rows_stores_nothing(client, model_dir):
    expect(InvalidArgument, "EMPTY_TRAINING_SET", client.train, "empty", chunks=iter(()))
    assert versions_on_disk(model_dir, "empty") == []


def test_train_with_mismatched_targets_stores_nothing(client, model_dir):
    error = expect(InvalidArgument, "TARGET_COUNT_MISMATCH", client.train, "bad", np.ones((5, 2)), np.ones(4))
    assert error.field_violations[0][0] == "chunk.targets"
    assert versions_on_disk(model_dir, "bad") == []


def test_train_with_nan_names_the_row(client, model_dir, linear_data):
    X, y = linear_data
    X = X.copy()
    X[123, 1] = np.nan
    error = expect(InvalidArgument, "NON_FINITE_VALUE", client.train, "bad", X, y, chunk_rows=50)
    assert error.metadata.get("row") == "123"
    assert versions_on_disk(model_dir, "bad") == []


def test_train_without_spec_or_kind(channel, model_dir):
    stub = pb_grpc.RegressionServiceStub(channel)
    chunk = pb.TrainRequest(
        chunk=types_pb2.TrainChunk(features=types_pb2.Matrix(values=[1.0]), targets=types_pb2.Vector(values=[1.0]))
    )
    for requests, reason, field in [
        ([chunk], "MISSING_SPEC", "spec"),
        ([pb.TrainRequest(spec=types_pb2.TrainSpec(model="m")), chunk], "INVALID_HYPERPARAMETER", "spec.kind"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Train(iter(requests))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        error_info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        details = rpc_status.from_call(info.value).details
        assert details[0].Unpack(error_info) and details[1].Unpack(bad_request)
        assert (error_info.reason, bad_request.field_violations[0].field) == (reason, field)
    assert ModelRegistry(model_dir).list_models() == []


def test_a_cut_train_stream_stores_nothing(target, model_dir, linear_data):
    """The client cancels mid-stream: the server sees a broken stream and stores nothing."""
    X, y = linear_data
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.RegressionServiceStub(channel)
    import threading

    sent = threading.Event()
    release = threading.Event()

    def requests():
        yield pb.TrainRequest(spec=types_pb2.TrainSpec(model="cut", kind=types_pb2.MODEL_KIND_LINEAR))
        yield pb.TrainRequest(
            chunk=types_pb2.TrainChunk(
                features=types_pb2.Matrix(num_columns=5, raw=X.tobytes()), targets=types_pb2.Vector(raw=y.tobytes())
            )
        )
        sent.set()
        release.wait(10)

    future = stub.Train.future(requests())
    assert sent.wait(10)
    future.cancel()
    release.set()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    channel.close()
    # The server must not have stored a version, now or after it has noticed the cancellation.
    import time

    time.sleep(0.5)
    assert versions_on_disk(model_dir, "cut") == []


def test_predict_before_any_train_is_not_found(client):
    expect(NotFound, "UNKNOWN_MODEL", client.predict, "house", np.ones((1, 5)))


def test_invalid_model_name_is_refused(client, linear_data):
    expect(InvalidArgument, "INVALID_MODEL_NAME", client.train, "../etc", *linear_data)


def test_model_info_under_a_split_describes_the_serving_version_every_time(client, target, linear_data):
    from regserve.client import ModelAdminClient

    X, y = linear_data
    client.train("house", X, y)
    client.train("house", X, y + 1.0)  # v2 serves
    with ModelAdminClient(target) as admin:
        admin.set_split("house", {"v1": 50, "v2": 50})
    assert {client.model_info("house").version for _ in range(20)} == {"v2"}
    assert {client.predict("house", X[:1], routing_key=f"k{i}").version for i in range(40)} == {"v1", "v2"}


def test_class_fields_follow_the_request_encoding():
    from regserve.server.models.prediction import Prediction
    from regserve.server.rpc import convert
    from regserve.v1 import regression_service_pb2 as pb

    proba = np.array([[0.25, 0.75]])
    typed = pb.PredictResponse()
    convert.add_class_fields(typed, Prediction(np.array([1.0]), ["b"], proba), raw=False, classes=("a", "b"))
    assert list(typed.labels) == ["b"] and list(typed.classes) == ["a", "b"]
    assert list(typed.probabilities.values) == [0.25, 0.75] and not typed.probabilities.raw
    raw = pb.BatchPredictResponse()
    convert.add_class_fields(raw, Prediction(np.array([1.0]), ["b"], proba), raw=True)
    assert list(raw.labels) == ["b"] and not raw.classes
    assert raw.probabilities.num_columns == 2 and np.frombuffer(raw.probabilities.raw).tolist() == [0.25, 0.75]


def test_non_finite_input_in_a_column_with_zero_weight_is_refused(client):
    # A constant zero column gets a zero weight: the answer alone cannot reveal an
    # infinite value there, so the inputs are checked before predicting.
    rng = np.random.default_rng(11)
    X = rng.normal(size=(200, 3))
    X[:, 2] = 0.0
    client.train("zeroed", X, X[:, 0] * 2.0 - X[:, 1] + 1.0)
    bad = np.ones((2, 3))
    bad[1, 2] = np.inf
    error = expect(InvalidArgument, "NON_FINITE_VALUE", client.predict, "zeroed", bad)
    assert error.metadata == {"row": "1", "column": "2"}


def serve_regression(model_dir, on_trained):
    """A bare RegressionService on a loopback port, reporting trainings to ``on_trained``."""
    from concurrent import futures

    from regserve.server.observability.serving_stats import ServingStats
    from regserve.server.registry.store import ModelStore
    from regserve.server.rpc.regression_servicer import RegressionServicer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = RegressionServicer(ModelStore(ModelRegistry(model_dir)), ServingStats(), on_trained=on_trained)
    pb_grpc.add_RegressionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_on_trained_hears_each_stored_version_with_the_seconds_it_took(model_dir, linear_data):
    heard = []
    server, target = serve_regression(model_dir, lambda model, seconds: heard.append((model, seconds)))
    try:
        with RegressionClient(target, timeout=60) as client:
            client.train("house", *linear_data)
            expect(InvalidArgument, "TARGET_COUNT_MISMATCH", client.train, "house", np.ones((5, 2)), np.ones(4))
            client.train("other", *linear_data, promote=False)
    finally:
        server.stop(0)
    assert [model for model, _ in heard] == ["house", "other"]
    assert all(0.0 < seconds < 60.0 for _, seconds in heard)


def test_a_failing_on_trained_does_not_fail_the_train(model_dir, linear_data):
    def fail(model: str, seconds: float) -> None:
        raise RuntimeError("the metrics are down")

    server, target = serve_regression(model_dir, fail)
    try:
        with RegressionClient(target, timeout=60) as client:
            assert client.train("house", *linear_data).model_version.version == "v1"
            assert client.predict("house", linear_data[0][:2]).version == "v1"
    finally:
        server.stop(0)
    assert versions_on_disk(model_dir, "house") == ["v1"]
