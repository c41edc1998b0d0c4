"""CreateVersion end to end: a real server on port 0, called through ModelAdminClient and a raw stub."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from regserve.client import InvalidArgument, ModelAdminClient, PermissionDenied
from regserve.client._exceptions import from_rpc_error
from regserve.server.cli import main
from regserve.v1 import model_service_pb2 as pb
from regserve.v1 import model_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2
from tests.conftest import start_server
from tests.server.gateway.helpers import MODES, running_gateway

RNG_SEED = 20


@pytest.fixture
def admin(target):
    with ModelAdminClient(target, timeout=30) as admin:
        yield admin


def refused(call, *args, **kwargs) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as info:
        call(*args, **kwargs)
    assert info.value.reason == "INVALID_PARAMETERS", info.value
    return info.value.field_violations


def fields(violations) -> set[str]:
    return {field for field, _ in violations}


def test_a_linear_version_is_stored_served_and_described(admin, client):
    rng = np.random.default_rng(RNG_SEED)
    coef, X = rng.normal(size=3), rng.normal(size=(20, 3))
    answer = admin.create_version(
        "house",
        "linear",
        coef,
        [0.5],
        feature_names=["a", "b", "c"],
        training={"mse": 0.25},
        source="imported from house.json",
        data_fingerprint="ab" * 32,
    )
    assert answer.promoted and answer.promotion_reason == "first serving version of the model"
    version = answer.model_version
    assert (version.model, version.version, version.kind) == ("house", "v1", types_pb2.MODEL_KIND_LINEAR)
    assert (list(version.feature_names), version.source, version.data_fingerprint) == (
        ["a", "b", "c"],
        "imported from house.json",
        "ab" * 32,
    )
    assert version.training.metrics["mse"] == 0.25 and len(version.checksum) == 64
    np.testing.assert_allclose(client.predict("house", X).values, X @ coef + 0.5, rtol=1e-12)
    assert admin.get_version("house", "v1").source == "imported from house.json"


def test_row_counts_are_stored_when_given_and_read_zero_when_not(admin):
    given = admin.create_version(
        "house", "linear", [[1.0, 2.0]], [0.0], validation={"mse": 1.0}, num_train=300, num_validation=100
    ).model_version
    counts = ("num_samples", "num_train", "num_validation")
    assert [getattr(given, c) for c in counts] == [400, 300, 100]
    assert [getattr(admin.get_version("house", "v1"), c) for c in counts] == [400, 300, 100]
    only_train = admin.create_version("house", "linear", [[1.0, 2.0]], [0.0], num_train=7).model_version
    assert [getattr(only_train, c) for c in counts] == [7, 7, 0]
    unknown = admin.create_version("house", "linear", [[1.0, 2.0]], [0.0]).model_version
    assert [getattr(unknown, c) for c in counts] == [0, 0, 0]
    listed = {v.version: [getattr(v, c) for c in counts] for v in admin.list_versions("house")}
    assert listed == {"v1": [400, 300, 100], "v2": [7, 7, 0], "v3": [0, 0, 0]}


def test_a_standardized_multinomial_version_answers_its_softmax(admin, client):
    rng = np.random.default_rng(RNG_SEED)
    coef, intercepts = rng.normal(size=(3, 4)), rng.normal(size=3)
    means, scales = rng.normal(size=4), rng.uniform(0.5, 2.0, size=4)
    admin.create_version("flowers", "logistic", coef, intercepts, classes=["a", "b", "c"], means=means, scales=scales)
    X = rng.normal(size=(10, 4))
    scores = ((X - means) / scales) @ coef.T + intercepts
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    answer = client.predict("flowers", X)
    np.testing.assert_allclose(answer.probabilities, expected, rtol=1e-12)
    assert answer.labels == [["a", "b", "c"][i] for i in expected.argmax(axis=1)]


def test_promote_false_and_the_gate_decide_as_for_train(admin):
    admin.create_version("house", "linear", [[1.0, 2.0]], [0.0], validation={"mse": 1.0})
    stored = admin.create_version("house", "linear", [[1.0, 2.5]], [0.0], promote=False)
    assert (stored.model_version.version, stored.promoted) == ("v2", False)
    worse = admin.create_version("house", "linear", [[1.0, 3.0]], [0.0], validation={"mse": 2.0}, promotion_gate=True)
    assert not worse.promoted and "worse" in worse.promotion_reason
    better = admin.create_version("house", "linear", [[1.0, 2.1]], [0.0], validation={"mse": 0.5}, promotion_gate=True)
    assert better.promoted and better.model_version.serving_state == types_pb2.SERVING_STATE_SERVING


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            dict(kind="linear", coefficients=[[1.0, 2.0], [3.0, 4.0]], intercepts=[0.0, 0.0]),
            {"coefficients", "intercepts"},
        ),
        (dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0, 1.0]), {"intercepts"}),
        (dict(kind="linear", coefficients=[[1.0, np.nan]], intercepts=[0.0]), {"coefficients"}),
        (dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[np.inf]), {"intercepts"}),
        (dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], classes=["a", "b"]), {"classes"}),
        (dict(kind="logistic", coefficients=[[1.0, 2.0]], intercepts=[0.0], classes=["a"]), {"classes"}),
        (dict(kind="logistic", coefficients=[[1.0, 2.0]], intercepts=[0.0], classes=["a", "a"]), {"classes"}),
        (
            dict(kind="logistic", coefficients=[[1.0, 2.0], [3.0, 4.0]], intercepts=[0.0, 0.0], classes=["a", "b"]),
            {"coefficients", "intercepts"},
        ),
        (
            dict(kind="logistic", coefficients=[[1.0, 2.0]], intercepts=[0.0], classes=["a", "b", "c"]),
            {"coefficients", "intercepts"},
        ),
        (dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], feature_names=["a"]), {"feature_names"}),
        (
            dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], feature_names=["a", "a"]),
            {"feature_names"},
        ),
        (dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], feature_names=["a", ""]), {"feature_names"}),
        (
            dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], feature_names=["a", "b" * 257]),
            {"feature_names"},
        ),
        (
            dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], means=[0.0], scales=[1.0, 1.0]),
            {"standardization.means"},
        ),
        (
            dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], means=[0.0, 0.0], scales=[1.0, 0.0]),
            {"standardization.scales"},
        ),
        (
            dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], validation={"mse": np.nan}),
            {"validation.metrics[mse]"},
        ),
        (dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], source="s" * 1025), {"lineage.source"}),
        (dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], num_train=0), {"num_train"}),
        (dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], num_validation=5), {"num_validation"}),
        (
            dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], num_train=2**63 - 5, num_validation=5),
            {"num_train"},
        ),
        (
            dict(kind="linear", coefficients=[[1.0, 2.0]], intercepts=[0.0], validation={"mse": 1.0}, num_train=9),
            {"num_validation"},
        ),
        (
            dict(
                kind="linear",
                coefficients=[[1.0, 2.0]],
                intercepts=[0.0],
                warnings=[{"reason": "fit-doubt", "message": "x"}, {"reason": "NOT_CONVERGED", "message": ""}],
            ),
            {"warnings[0].reason", "warnings[1].message"},
        ),
        (
            dict(
                kind="linear",
                coefficients=[[1.0, 2.0]],
                intercepts=[0.0],
                warnings=[{"reason": "A", "message": "x"}] * 17,
            ),
            {"warnings"},
        ),
    ],
)
def test_bad_parameters_are_refused_with_field_violations(admin, arguments, expected):
    violations = refused(admin.create_version, "house", **arguments)
    assert fields(violations) == expected, violations
    assert admin.list_models() == []


def test_warnings_are_stored_and_shown_as_a_trained_versions(admin):
    warning = {"reason": "COMPLETE_SEPARATION", "message": "The classes show complete separation."}
    response = admin.create_version("house", "linear", [[1.0, 2.0]], [0.0], warnings=[warning])
    assert [(w.reason, w.message) for w in response.model_version.warnings] == [tuple(warning.values())]
    stored = admin.get_version("house", response.model_version.version)
    assert [(w.reason, w.message) for w in stored.warnings] == [tuple(warning.values())]


def test_every_problem_is_named_at_once(admin):
    violations = refused(
        admin.create_version, "house", "logistic", [[np.nan, 1.0]], [0.0, 1.0], classes=["a"], feature_names=["x"]
    )
    assert fields(violations) == {"classes", "coefficients", "intercepts", "feature_names"}


def test_an_invalid_model_name_is_refused(admin):
    with pytest.raises(InvalidArgument) as info:
        admin.create_version("no/such name", "linear", [[1.0]], [0.0])
    assert info.value.reason == "INVALID_MODEL_NAME"
    assert fields(info.value.field_violations) == {"model"}


def test_answers_that_overflow_are_refused_before_anything_is_stored(admin):
    with pytest.raises(InvalidArgument) as info:
        admin.create_version("house", "linear", [[1e308, 1e308]], [0.0], means=[1e5, 1e5], scales=[1e-3, 1e-3])
    assert info.value.reason == "UNUSABLE_PARAMETERS"
    assert admin.list_models() == []


def test_missing_coefficients_and_a_regressor_confusion_matrix_are_refused(channel):
    stub = pb_grpc.ModelServiceStub(channel)
    request = pb.CreateVersionRequest(model="house", kind=types_pb2.MODEL_KIND_RIDGE, intercepts=[0.0])
    request.training.confusion_matrix.CopyFrom(types_pb2.Matrix(num_columns=1, values=[1.0]))
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateVersion(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = from_rpc_error(info.value, "")
    assert fields(error.field_violations) == {"coefficients", "training.confusion_matrix"}


@pytest.mark.parametrize("mode", MODES)
def test_rest_creates_a_version_and_refuses_bad_parameters_with_their_fields(app, target, client, mode):
    with running_gateway(target, app.local if mode == "in_process" else None) as http:
        bad = http.post("/v1/models/house/versions", json={"kind": "MODEL_KIND_LINEAR", "intercepts": [0.0]})
        assert bad.status_code == 400
        (violations,) = [d for d in bad.json()["details"] if d["@type"].endswith("google.rpc.BadRequest")]
        assert {v["field"] for v in violations["fieldViolations"]} == {"coefficients"}
        body = {
            "kind": "MODEL_KIND_LINEAR",
            "coefficients": {"numColumns": 2, "values": [1.5, -2.0]},
            "intercepts": [0.25],
            "lineage": {"source": "typed in by hand"},
        }
        negative = http.post("/v1/models/house/versions", json={**body, "numTrain": -1})
        assert negative.status_code == 400, negative.text
        created = http.post("/v1/models/house/versions", json={**body, "numTrain": 80, "numValidation": "20"})
        assert created.status_code == 200, created.text
        version = created.json()["modelVersion"]
        assert version["source"] == "typed in by hand" and created.json()["promoted"]
        assert (version["numSamples"], version["numTrain"], version["numValidation"]) == ("100", "80", "20")
    np.testing.assert_allclose(client.predict("house", [[2.0, 1.0]]).values, [1.25], rtol=1e-12)


def test_only_the_admin_role_may_create_a_version(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("admin:admin-secret-0123456789\npredict:predict-secret-0123456789\n", encoding="utf-8")
    app = start_server(tmp_path / "models", tokens_file=str(tokens))
    target = f"127.0.0.1:{app.port}"
    try:
        with ModelAdminClient(target, timeout=30, token="predict-secret-0123456789") as admin:
            with pytest.raises(PermissionDenied):
                admin.create_version("house", "linear", [[1.0]], [0.0])
        with ModelAdminClient(target, timeout=30, token="admin-secret-0123456789") as admin:
            assert admin.create_version("house", "linear", [[1.0]], [0.0]).promoted
    finally:
        app.stop(0)


@pytest.mark.parametrize(
    ("kind", "classes", "evaluation", "metrics", "expected"),
    [
        ("linear", (), "validation", {"mse": -5.0}, {"validation.metrics[mse]": "must be >= 0"}),
        (
            "linear",
            (),
            "training",
            {"r2": 7.0, "rmse": -1e-9},
            {
                "training.metrics[r2]": "must be <= 1",
                "training.metrics[rmse]": "must be >= 0",
            },
        ),
        ("linear", (), "validation", {"mae": -0.5}, {"validation.metrics[mae]": "must be >= 0"}),
        (
            "logistic",
            ("a", "b"),
            "validation",
            {"accuracy": 2.0},
            {"validation.metrics[accuracy]": "must lie in [0, 1]"},
        ),
        (
            "logistic",
            ("a", "b"),
            "validation",
            {"log_loss": -3.0, "accuracy": -0.1},
            {
                "validation.metrics[log_loss]": "must be >= 0",
                "validation.metrics[accuracy]": "must lie in [0, 1]",
            },
        ),
        ("logistic", ("a", "b"), "training", {"f1": 1.5}, {"training.metrics[f1]": "must lie in [0, 1]"}),
    ],
    ids=[
        "negative-mse",
        "r2-above-1-and-negative-rmse",
        "negative-mae",
        "accuracy-2",
        "negative-log-loss-and-accuracy",
        "f1-above-1",
    ],
)
def test_metrics_outside_the_values_regserve_computes_are_refused(admin, kind, classes, evaluation, metrics, expected):
    violations = refused(
        admin.create_version, "house", kind, [[1.0, 2.0]], [0.0], classes=classes, **{evaluation: metrics}
    )
    assert dict(violations) == expected, violations
    assert admin.list_models() == []


def test_metrics_at_the_edges_of_their_range_and_unknown_metrics_are_stored(admin):
    rng = np.random.default_rng(RNG_SEED)
    coef = rng.normal(size=(1, 3))
    edges = {"mse": 0.0, "rmse": 0.0, "mae": 0.0, "r2": 1.0, "explained": -7.5}
    stored = admin.create_version("house", "linear", coef, [0.0], training=edges, validation={"r2": -40.0})
    assert dict(stored.model_version.training.metrics) == edges
    assert dict(stored.model_version.validation.metrics) == {"r2": -40.0}
    rates = {"accuracy": 1.0, "log_loss": 0.0, "precision": 0.0, "recall": 1.0, "f1": 0.5, "margin": -3.0}
    stored = admin.create_version("flowers", "logistic", coef, [0.0], classes=["a", "b"], validation=rates)
    assert dict(stored.model_version.validation.metrics) == rates
    # An impossible metric can no longer win the promotion gate: the version is not stored at all.
    refused(admin.create_version, "house", "linear", coef, [0.0], validation={"mse": -5.0}, promotion_gate=True)
    assert [v.version for v in admin.list_versions("house")] == ["v1"]


def test_a_missing_or_short_scales_array_is_named_for_that_alone(admin, channel):
    # The Python client sends means without scales with an empty scales array.
    violations = refused(admin.create_version, "house", "linear", [[1.0, 2.0]], [0.0], means=[0.5, 0.5])
    assert violations == [("standardization.scales", "one scale per feature (2)")]
    violations = refused(
        admin.create_version, "house", "linear", [[1.0, 2.0]], [0.0], means=[np.nan, 0.5, 1.0], scales=[1.0, -np.inf]
    )
    assert violations == [
        ("standardization.means", "one mean per feature (2)"),
        ("standardization.scales", "every value must be finite (no NaN or infinity)"),
    ]
    # Over the wire an absent array is empty; the NaN, negative scale of a wrong length is named by its length only.
    request = pb.CreateVersionRequest(model="house", kind=types_pb2.MODEL_KIND_LINEAR, intercepts=[0.0])
    request.coefficients.CopyFrom(types_pb2.Matrix(num_columns=2, values=[1.0, 2.0]))
    request.standardization.enabled = True
    request.standardization.means.extend([0.5, 0.5])
    request.standardization.scales.extend([1.0, -1.0, np.nan])
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.ModelServiceStub(channel).CreateVersion(request, timeout=30)
    error = from_rpc_error(info.value, "")
    assert (info.value.code(), error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETERS")
    assert error.field_violations == [("standardization.scales", "one scale per feature (2)")]
    assert admin.list_models() == []


def test_a_kind_outside_the_three_is_refused_by_the_client_and_by_the_server(admin, channel):
    with pytest.raises(ValueError, match="kind must be linear, ridge, logistic, not 'polynomial'"):
        admin.create_version("house", "polynomial", [[1.0, 2.0]], [0.0])
    request = pb.CreateVersionRequest(model="house", kind=types_pb2.MODEL_KIND_UNSPECIFIED, intercepts=[0.0])
    request.coefficients.CopyFrom(types_pb2.Matrix(num_columns=2, values=[1.0, 2.0]))
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.ModelServiceStub(channel).CreateVersion(request, timeout=30)
    error = from_rpc_error(info.value, "")
    assert error.reason == "INVALID_PARAMETERS"
    assert [field for field, _ in error.field_violations] == ["kind"]
    assert admin.list_models() == []


def test_the_settings_of_the_fit_are_stored_as_the_versions_spec(admin, capsys, target):
    answer = admin.create_version(
        "ridge_fit",
        "ridge",
        [[1.0, 2.0]],
        [0.5],
        feature_names=["a", "b"],
        spec={"alpha": 5.0, "standardize": True, "validation_fraction": 0.2, "seed": 3, "solver": "closed_form"},
    )
    spec = answer.model_version.spec
    assert (spec.alpha, spec.standardize, spec.validation_fraction, spec.seed) == (5.0, True, 0.2, 3)
    assert spec.solver == types_pb2.SOLVER_CLOSED_FORM and list(spec.feature_names) == ["a", "b"]
    assert main(["info", "--server", target, "--model", "ridge_fit"]) == 0
    assert "penalty" in capsys.readouterr().out
    # Without settings the spec holds the kind, the solver and the names only, and no penalty is claimed.
    bare = admin.create_version("plain_fit", "ridge", [[1.0, 2.0]], [0.5]).model_version.spec
    assert not bare.HasField("alpha") and not bare.HasField("c")
    # Settings that leave the penalty out claim none either, though Train would take c = 1.
    stated = admin.create_version(
        "logit_fit", "logistic", [[1.0, 2.0]], [0.5], classes=["no", "yes"], spec={"fit_intercept": True}
    ).model_version
    assert not stated.spec.HasField("c") and not stated.spec.HasField("alpha")
    assert list(stated.spec.class_labels) == ["no", "yes"] and stated.spec.fit_intercept
    capsys.readouterr()
    assert main(["info", "--server", target, "--model", "logit_fit"]) == 0
    out = capsys.readouterr().out
    assert "penalty" not in out and "source      not recorded" in out


@pytest.mark.parametrize(
    ("kind", "classes", "settings", "field"),
    [
        ("ridge", (), {"alpha": -1.0}, "spec.alpha"),
        ("ridge", (), {"c": 2.0}, "spec.c"),
        ("logistic", ("a", "b"), {"alpha": 1.0, "c": 1.0}, "spec.c"),
        ("ridge", (), {"validation_fraction": 1.5}, "spec.validation_fraction"),
        ("ridge", (), {"kind": types_pb2.MODEL_KIND_LOGISTIC}, "spec.kind"),
        ("ridge", (), {"feature_names": ["p", "q"]}, "spec.feature_names"),
        ("ridge", (), {"model": "another"}, "spec.model"),
    ],
)
def test_settings_train_would_refuse_are_refused(admin, kind, classes, settings, field):
    coefficients = [[1.0, 2.0]]
    violations = refused(admin.create_version, "bad_fit", kind, coefficients, [0.5], classes=classes, spec=settings)
    assert field in fields(violations), violations
    assert admin.list_models() == []
