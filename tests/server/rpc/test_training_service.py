"""Train over gRPC: streaming exactness, classifiers, hyperparameter errors, nothing stored on failure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from regserve.client import InvalidArgument
from regserve.server.errors import InvalidInput
from regserve.server.registry.disk import ModelRegistry
from regserve.v1 import types_pb2


def uneven_chunks(X, y, count, seed):
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(X)), size=count - 1, replace=False))
    return list(zip(np.split(X, cuts), np.split(y, cuts), strict=True))


def coefficients(info):
    return np.array(info.coefficients.values), np.array(info.intercepts)


def test_one_chunk_and_997_uneven_chunks_give_the_same_model(client):
    rng = np.random.default_rng(997)
    X = rng.normal(size=(5000, 8)) * rng.uniform(0.1, 100, size=8)
    y = X @ rng.normal(size=8) + rng.normal(size=5000)
    options = dict(kind="ridge", alpha=0.5, standardize=True, validation_fraction=0.2, cv_folds=3, seed=11)
    whole = client.train("whole", X, y, **options).model_version
    parts = client.train("parts", chunks=uneven_chunks(X, y, 997, seed=3), **options).model_version
    for a, b in zip(coefficients(whole), coefficients(parts), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert whole.data_fingerprint == parts.data_fingerprint
    assert (whole.num_train, whole.num_validation) == (parts.num_train, parts.num_validation)
    assert whole.validation.metrics["mse"] == pytest.approx(parts.validation.metrics["mse"], rel=1e-10)
    assert whole.cross_validation.folds == 3
    assert whole.cross_validation.mean["r2"] == pytest.approx(parts.cross_validation.mean["r2"], rel=1e-10)


def test_classifier_with_string_labels_returns_labels_and_probabilities(client):
    rng = np.random.default_rng(5)
    centers = np.array([[0, 0], [4, 0], [0, 4]])
    X = np.vstack([rng.normal(c, 0.7, size=(100, 2)) for c in centers])
    y = np.repeat(np.array(["red", "green", "blue"]), 100)
    response = client.train("colours", X, y, kind="logistic", standardize=True, validation_fraction=0.2, seed=1)
    info = response.model_version
    assert list(info.classes) == ["blue", "green", "red"]
    assert info.validation.metrics["accuracy"] > 0.95
    assert info.validation.confusion_matrix.num_columns == 3
    assert {c.label for c in info.validation.per_class} == {"blue", "green", "red"}
    prediction = client.predict("colours", centers.astype(float))
    assert prediction.labels == ["red", "green", "blue"]
    assert prediction.classes == ["blue", "green", "red"]
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, rtol=1e-12)
    assert prediction.values.tolist() == [2.0, 1.0, 0.0]
    streamed = list(client.iter_batch_predict("colours", [centers.astype(float)]))
    assert streamed[0].labels == prediction.labels
    np.testing.assert_array_equal(streamed[0].probabilities, prediction.probabilities)
    two = list(client.iter_batch_predict("colours", [centers.astype(float)] * 2))
    assert [p.classes for p in two] == [["blue", "green", "red"]] * 2


def test_integer_labels_are_accepted_as_targets(client):
    rng = np.random.default_rng(6)
    X = np.vstack([rng.normal(-2, 1, size=(60, 3)), rng.normal(2, 1, size=(60, 3))])
    y = np.repeat([0.0, 1.0], 60)
    info = client.train("binary", X, y, kind="logistic", solver="newton").model_version
    assert list(info.classes) == ["0", "1"]
    assert info.solver_report.solver == types_pb2.SOLVER_NEWTON and info.solver_report.converged


@pytest.mark.parametrize("solver", ["gd", "sgd"])
def test_gradient_solvers_over_grpc(client, solver):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(2000, 4))
    y = X @ np.array([1.0, -1.0, 2.0, 0.5]) + 3 + rng.normal(scale=0.01, size=2000)
    info = client.train(
        "gradient", X, y, solver=solver, standardize=True, learning_rate=0.1, epochs=500, batch_size=64, seed=2
    ).model_version
    exact = client.train("exact", X, y, standardize=True).model_version
    assert info.training.metrics["mse"] == pytest.approx(exact.training.metrics["mse"], rel=1e-6)


BAD_SPECS = [
    (dict(kind="ridge", alpha=-1.0), "INVALID_HYPERPARAMETER", "spec.alpha"),
    (dict(solver="gd", learning_rate=0.0), "INVALID_HYPERPARAMETER", "spec.learning_rate"),
    (dict(validation_fraction=0.999), "TOO_FEW_ROWS", "spec.validation_fraction"),
    (dict(kind="linear", solver="newton"), "INVALID_HYPERPARAMETER", "spec.solver"),
]


@pytest.mark.parametrize(("options", "reason", "field"), BAD_SPECS)
def test_bad_specs_are_refused_and_store_nothing(client, model_dir, options, reason, field):
    X = np.arange(40.0).reshape(20, 2)
    y = X.sum(axis=1)
    with pytest.raises(InvalidArgument) as info:
        client.train("refused", X, y, **options)
    assert info.value.reason == reason
    assert info.value.field_violations[0][0] == field
    assert "refused" not in ModelRegistry(model_dir).list_models()


def test_single_class_and_undeclared_labels_are_refused(client, model_dir):
    X = np.arange(20.0).reshape(10, 2)
    with pytest.raises(InvalidArgument) as info:
        client.train("one", X, np.array(["a"] * 10), kind="logistic")
    assert info.value.reason == "SINGLE_CLASS"
    labels = np.array(["a", "b"] * 4 + ["c", "a"])
    with pytest.raises(InvalidArgument) as info:
        client.train("declared", X, labels, kind="logistic", class_labels=["a", "b"])
    assert info.value.reason == "UNKNOWN_LABEL"
    assert info.value.metadata["row"] == "8"
    assert ModelRegistry(model_dir).list_models() == []


@pytest.mark.parametrize(
    ("options", "X_scale", "y_scale", "reason", "field"),
    [
        (dict(), 1e200, 1.0, "VALUE_TOO_LARGE", "chunk.features"),
        (dict(), 1.0, 1e300, "VALUE_TOO_LARGE", "chunk.targets"),
        (dict(cv_folds=4_294_967_295), 1.0, 1.0, "INVALID_HYPERPARAMETER", "spec.cv_folds"),
    ],
)
def test_extreme_data_and_settings_are_bad_input_and_store_nothing(
    client, model_dir, options, X_scale, y_scale, reason, field
):
    rng = np.random.default_rng(12)
    X = rng.normal(size=(50, 3))
    y = X @ np.array([1.0, 2.0, 3.0]) + 1.0
    with pytest.raises(InvalidArgument) as info:
        client.train("extreme", X * X_scale, y * y_scale, **options)
    assert (info.value.reason, info.value.field_violations[0][0]) == (reason, field)
    assert "extreme" not in ModelRegistry(model_dir).list_models()


def test_too_many_features_and_empty_labels_are_refused(client, model_dir):
    with pytest.raises(InvalidArgument) as info:
        client.train("wide", np.ones((2, 5000)), np.ones(2))
    assert info.value.reason == "TOO_MANY_FEATURES"
    with pytest.raises(InvalidArgument) as info:
        client.train("blank", np.arange(8.0).reshape(4, 2), np.array(["a", "", "b", "a"]), kind="logistic")
    assert (info.value.reason, info.value.metadata["row"]) == ("EMPTY_LABEL", "1")
    assert ModelRegistry(model_dir).list_models() == []


def test_a_prediction_that_overflows_is_refused_not_answered_with_nan(client, linear_data):
    client.train("house", *linear_data)
    with pytest.raises(InvalidArgument) as info:
        client.predict("house", np.full((2, 5), 1e308))
    assert info.value.reason == "NON_FINITE_PREDICTION"


def test_a_train_cancelled_after_its_data_arrived_stores_nothing(app, target, model_dir, caplog):
    """The caller cancels while the server computes: the server must not store the version."""
    import logging
    import time

    import grpc

    from regserve.v1 import regression_service_pb2 as pb
    from regserve.v1 import regression_service_pb2_grpc as pb_grpc

    caplog.set_level(logging.INFO, logger="regserve.access")
    rng = np.random.default_rng(13)
    X = rng.normal(size=(20_000, 20))
    y = X @ rng.normal(size=20)
    spec = types_pb2.TrainSpec(
        model="cancelled", kind=types_pb2.MODEL_KIND_LINEAR, solver=types_pb2.SOLVER_SGD, epochs=200, batch_size=8
    )
    chunk = types_pb2.TrainChunk(
        features=types_pb2.Matrix(num_columns=20, raw=X.tobytes()), targets=types_pb2.Vector(raw=y.tobytes())
    )
    with grpc.insecure_channel(target) as channel:
        future = pb_grpc.RegressionServiceStub(channel).Train.future(
            iter([pb.TrainRequest(spec=spec), pb.TrainRequest(chunk=chunk)])
        )
        time.sleep(1.0)  # all data is sent; the server is running SGD
        assert future.cancel()

    def train_logged():
        return [r for r in caplog.records if r.name == "regserve.access" and "/Train" in r.getMessage()]

    deadline = time.monotonic() + 120
    while not train_logged() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert train_logged(), "the server never finished the Train call"
    assert json.loads(train_logged()[0].getMessage())["code"] == "CANCELLED"
    assert "cancelled" not in ModelRegistry(model_dir).list_models()


@pytest.mark.parametrize(("solver", "field"), [("gd", "spec.learning_rate"), ("closed_form", "chunks")])
def test_a_fit_with_non_finite_coefficients_is_refused_before_anything_is_stored(solver, field):
    from regserve.server.models.estimator import LinearModel
    from regserve.server.models.training import TrainSpec
    from regserve.server.models.training.fitting import check_model_finite

    diverged = LinearModel("linear", np.array([[1.0, np.inf]]), np.array([0.0]))
    with pytest.raises(InvalidInput) as info:
        check_model_finite(diverged, TrainSpec(solver=solver))
    assert (info.value.reason, info.value.violations[0][0]) == ("TRAINING_DIVERGED", field)
    check_model_finite(LinearModel("linear", np.array([[1.0, 2.0]]), np.array([0.5])), TrainSpec(solver=solver))


def test_a_singular_problem_falls_back_to_least_squares_and_says_so(client):
    rng = np.random.default_rng(14)
    a = rng.normal(size=(100, 1))
    X = np.hstack([a, 2 * a, rng.normal(size=(100, 1))])  # the second column repeats the first
    y = X @ np.array([1.0, 1.0, -1.0]) + 0.5
    report = client.train("singular", X, y).model_version.solver_report
    assert report.least_squares_fallback and report.rank == 2  # two independent feature columns
    assert report.condition_number > 1e12
    np.testing.assert_allclose(client.predict("singular", X[:5]).values, y[:5], rtol=1e-8, atol=1e-8)


def test_an_exactly_singular_system_reports_an_infinite_condition_number():
    from regserve.server.registry.state import VersionMetadata
    from regserve.server.rpc import registry_messages

    metadata = {"model": "m", "version": "v1", "solver": "closed_form"}
    singular = registry_messages.model_version_to_proto(
        VersionMetadata.from_json({**metadata, "solver_info": {"rank": 1, "condition_number": None}}), None, ""
    )
    assert singular.solver_report.condition_number == float("inf")
    iterative = registry_messages.model_version_to_proto(
        VersionMetadata.from_json({**metadata, "solver_info": {"rank": None}}), None, ""
    )
    assert iterative.solver_report.condition_number == 0.0
