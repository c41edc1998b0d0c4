"""ModelService end to end: a real server on port 0, called through ModelAdminClient and raw stubs."""

from __future__ import annotations

import hashlib
import io
import json

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from regserve.client import FailedPrecondition, InvalidArgument, ModelAdminClient, NotFound, RegserveError
from regserve.v1 import model_service_pb2 as pb
from regserve.v1 import model_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2


@pytest.fixture
def admin(target):
    with ModelAdminClient(target, timeout=30) as admin:
        yield admin


@pytest.fixture
def two_versions(client, linear_data):
    """Model "house": v1 trained on y and serving, v2 trained on -y and stored only."""
    X, y = linear_data
    client.train("house", X, y, validation_fraction=0.25, seed=1)
    client.train("house", X, -y, validation_fraction=0.25, seed=1, promote=False)
    return X


def state_bytes(model_dir, model="house") -> bytes:
    return (model_dir / "models" / model / "state.json").read_bytes()


def test_list_models_and_versions_show_the_routing_state(admin, two_versions):
    (state,) = admin.list_models()
    assert (state.model, state.serving_version, list(state.versions)) == ("house", "v1", ["v1", "v2"])
    versions = admin.list_versions("house")
    assert [(v.version, v.serving_state) for v in versions] == [
        ("v1", types_pb2.SERVING_STATE_SERVING),
        ("v2", types_pb2.SERVING_STATE_AVAILABLE),
    ]
    assert all(len(v.checksum) == 64 and v.num_samples == 400 for v in versions)


def test_get_version_describes_a_version_with_its_coefficients(admin, two_versions):
    v2 = admin.get_version("house", "v2")
    assert (v2.model, v2.version, v2.serving_state) == ("house", "v2", types_pb2.SERVING_STATE_AVAILABLE)
    assert v2.coefficients.num_columns == 5 and len(v2.intercepts) == 1
    assert "mse" in v2.validation.metrics


def test_promote_and_rollback_switch_what_predict_answers(admin, client, two_versions):
    X = two_versions
    v1 = client.predict("house", X[:5], version="v1").values
    state = admin.promote("house", "v2", reason="try the negated model")
    assert (state.serving_version, list(state.previous_versions)) == ("v2", ["v1"])
    answer = client.predict("house", X[:5])
    assert answer.version == "v2"
    np.testing.assert_allclose(answer.values, client.predict("house", X[:5], version="v2").values)
    assert not np.allclose(answer.values, v1)
    state = admin.rollback("house", reason="it was worse")
    assert (state.serving_version, list(state.previous_versions)) == ("v1", [])
    answer = client.predict("house", X[:5])
    assert answer.version == "v1"
    np.testing.assert_array_equal(answer.values, v1)


def test_predict_naming_a_version_is_answered_by_it_and_refused_once_frozen(admin, client, two_versions):
    X = two_versions
    assert client.predict("house", X[:2], version="v2").version == "v2"
    assert client.predict("house", X[:2]).version == "v1"
    state = admin.freeze("house", "v2", reason="suspicious")
    assert list(state.frozen_versions) == ["v2"]
    with pytest.raises(FailedPrecondition) as info:
        client.predict("house", X[:2], version="v2")
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_FROZEN")
    assert admin.get_version("house", "v2").serving_state == types_pb2.SERVING_STATE_FROZEN
    admin.unfreeze("house", "v2")
    assert client.predict("house", X[:2], version="v2").version == "v2"


def test_split_routes_by_key_and_clearing_it_returns_to_the_serving_version(admin, client, two_versions):
    X = two_versions
    state = admin.set_split("house", {"v1": 50, "v2": 50}, reason="a/b")
    assert dict(state.traffic_split) == {"v1": 50.0, "v2": 50.0}
    assert {v.serving_state for v in admin.list_versions("house")} == {types_pb2.SERVING_STATE_IN_SPLIT}
    arms = {client.predict("house", X[:1], routing_key=f"user-{i}").version for i in range(50)}
    assert arms == {"v1", "v2"}
    state = admin.set_split("house", {})
    assert not state.traffic_split and state.serving_version == "v1"
    assert {client.predict("house", X[:1], routing_key=f"user-{i}").version for i in range(20)} == {"v1"}


def test_delete_removes_a_version_and_its_number_is_not_reused(admin, client, two_versions, linear_data):
    state = admin.delete_version("house", "v2", reason="unused")
    assert list(state.versions) == ["v1"]
    with pytest.raises(NotFound) as info:
        admin.get_version("house", "v2")
    assert info.value.reason == "UNKNOWN_VERSION"
    assert client.train("house", *linear_data, promote=False).model_version.version == "v3"
    (status,) = admin.status("house")
    assert (status.history[-1].action, status.history[-1].to_version, status.history[-1].reason) == (
        "delete",
        "v2",
        "unused",
    )


# Each case: the call, the expected status code and ErrorInfo reason.  The setup is
# `two_versions` with v2 frozen: v1 serving, no previous version, v2 frozen.
REFUSED = {
    "promote unknown model": (lambda a: a.promote("nope", "v1"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL"),
    "rollback unknown model": (lambda a: a.rollback("nope"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL"),
    "list unknown model": (lambda a: a.list_versions("nope"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL"),
    "split unknown model": (lambda a: a.set_split("nope", {"v1": 1}), grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL"),
    "status unknown model": (lambda a: a.status("nope"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL"),
    "describe unknown model": (lambda a: a.get_version("nope", "v1"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL"),
    "promote unknown version": (lambda a: a.promote("house", "v9"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_VERSION"),
    "freeze unknown version": (lambda a: a.freeze("house", "v9"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_VERSION"),
    "unfreeze unknown version": (lambda a: a.unfreeze("house", "v9"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_VERSION"),
    "delete unknown version": (
        lambda a: a.delete_version("house", "v9"),
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_VERSION",
    ),
    "describe unknown version": (
        lambda a: a.get_version("house", "v9"),
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_VERSION",
    ),
    "split names unknown version": (
        lambda a: a.set_split("house", {"v1": 90, "v9": 10}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_VERSION",
    ),
    "promote frozen version": (
        lambda a: a.promote("house", "v2"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "VERSION_FROZEN",
    ),
    "split with frozen arm": (
        lambda a: a.set_split("house", {"v1": 1, "v2": 1}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "VERSION_FROZEN",
    ),
    "delete serving version": (
        lambda a: a.delete_version("house", "v1"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "VERSION_SERVING",
    ),
    "freeze serving version": (
        lambda a: a.freeze("house", "v1"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "VERSION_SERVING",
    ),
    "rollback without previous": (
        lambda a: a.rollback("house"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_PREVIOUS_VERSION",
    ),
    "split weights all zero": (
        lambda a: a.set_split("house", {"v1": 0.0}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_SPLIT",
    ),
    "split weight negative": (
        lambda a: a.set_split("house", {"v1": 2.0, "v3": -1.0}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_SPLIT",
    ),
    "split weight not finite": (
        lambda a: a.set_split("house", {"v1": float("nan")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_SPLIT",
    ),
    "promote without version": (
        lambda a: a.promote("house", ""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MISSING_VERSION",
    ),
    "invalid model name": (
        lambda a: a.rollback("../etc"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_MODEL_NAME",
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_refused_call_reports_its_reason_and_changes_nothing(case, admin, client, two_versions, model_dir):
    call, code, reason = REFUSED[case]
    admin.freeze("house", "v2", reason="setup")
    before = state_bytes(model_dir)
    models = sorted(p.name for p in (model_dir / "models").iterdir())
    with pytest.raises(RegserveError) as info:
        call(admin)
    assert (info.value.code, info.value.reason) == (code, reason)
    assert state_bytes(model_dir) == before
    assert sorted(p.name for p in (model_dir / "models").iterdir()) == models
    assert client.predict("house", two_versions[:1]).version == "v1"


def test_status_counts_requests_errors_rows_and_latency_per_version(admin, client, two_versions):
    X = two_versions
    admin.promote("house", "v2", reason="canary")
    admin.rollback("house", reason="canary failed")
    n = 7
    for i in range(n):
        client.predict("house", X[i : i + 3])
    with pytest.raises(InvalidArgument) as info:
        client.predict("house", np.ones((1, 3)))
    assert info.value.reason == "FEATURE_COUNT_MISMATCH"
    (status,) = admin.status("house")
    assert status.state.serving_version == "v1"
    v1, v2 = status.versions
    assert (v1.version, v1.serving_state) == ("v1", types_pb2.SERVING_STATE_SERVING)
    assert (v1.requests, v1.errors, v1.rows) == (n + 1, 1, 3 * n)
    assert v1.latency_mean_ms > 0 and v1.latency_p50_ms > 0 and v1.latency_p99_ms >= v1.latency_p50_ms
    assert (v2.version, v2.requests, v2.errors, v2.rows) == ("v2", 0, 0, 0)
    assert [(s.action, s.from_version, s.to_version, s.reason) for s in status.history] == [
        ("promote", "", "v1", "first serving version of the model"),
        ("promote", "v1", "v2", "canary"),
        ("rollback", "v2", "v1", "canary failed"),
    ]
    assert all(s.time.seconds > 0 for s in status.history)
    assert [m.state.model for m in admin.status()] == ["house"]


def test_status_of_every_model_is_in_name_order(admin, client, linear_data):
    for name in ("zeta", "alpha"):
        client.train(name, *linear_data)
    assert [s.state.model for s in admin.status()] == ["alpha", "zeta"]
    assert [m.model for m in admin.list_models()] == ["alpha", "zeta"]


def _flip_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_promoting_a_tampered_version_is_refused_and_serving_is_unchanged(admin, client, two_versions, model_dir):
    X = two_versions
    before_values = client.predict("house", X[:3]).values
    _flip_byte(model_dir / "models" / "house" / "versions" / "v2" / "weights.npz")
    before = state_bytes(model_dir)
    with pytest.raises(FailedPrecondition) as info:
        admin.promote("house", "v2", reason="should fail")
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CHECKSUM_MISMATCH")
    assert state_bytes(model_dir) == before
    answer = client.predict("house", X[:3])
    assert answer.version == "v1"
    np.testing.assert_array_equal(answer.values, before_values)


def test_promoting_weights_that_no_longer_reproduce_the_probe_is_refused(admin, client, two_versions, model_dir):
    # Rewrite v2's weights and its checksum consistently: only the stored probe can tell.
    vdir = model_dir / "models" / "house" / "versions" / "v2"
    with np.load(vdir / "weights.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["coef"] = arrays["coef"] * 1.5
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (vdir / "weights.npz").write_bytes(buffer.getvalue())
    metadata = json.loads((vdir / "metadata.json").read_text())
    metadata["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (vdir / "metadata.json").write_text(json.dumps(metadata))
    before = state_bytes(model_dir)
    with pytest.raises(FailedPrecondition) as info:
        admin.promote("house", "v2")
    assert info.value.reason == "PROBE_MISMATCH"
    assert state_bytes(model_dir) == before
    assert client.predict("house", two_versions[:1]).version == "v1"


def test_train_with_the_gate_stores_a_worse_version_without_promoting_it(admin, client, linear_data):
    X, y = linear_data
    good = client.train("house", X, y, validation_fraction=0.25, seed=2)
    assert good.promoted
    noisy = y + np.random.default_rng(3).normal(scale=5.0, size=y.shape)
    worse = client.train("house", X, noisy, validation_fraction=0.25, seed=2, promotion_gate=True)
    assert not worse.promoted
    assert "not promoted" in worse.promotion_reason
    assert worse.model_version.serving_state == types_pb2.SERVING_STATE_AVAILABLE
    assert [v.version for v in admin.list_versions("house")] == ["v1", "v2"]
    assert client.predict("house", X[:2]).version == "v1"
    better = client.train("house", X, y, validation_fraction=0.25, seed=2, alpha=0.0, promotion_gate=True)
    assert better.promoted and client.predict("house", X[:2]).version == "v3"


def test_train_with_promote_false_keeps_the_old_serving_version(admin, client, linear_data):
    X, y = linear_data
    client.train("house", X, y)
    response = client.train("house", X, 2 * y, promote=False)
    assert not response.promoted and response.promotion_reason == "promotion was not requested"
    assert admin.list_models()[0].serving_version == "v1"
    assert client.predict("house", X[:2]).version == "v1"
    assert client.predict("house", X[:2], version="v2").version == "v2"


def test_health_and_reflection_cover_the_model_service(channel, client, linear_data):
    name = "regserve.v1.ModelService"
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.NOT_SERVING
    )
    client.train("house", *linear_data)
    assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    assert name in {s.name for r in responses for s in r.list_services_response.service}


def test_a_raw_stub_gets_error_details_on_the_status(channel):
    from grpc_status import rpc_status

    from regserve.client._exceptions import from_rpc_error

    stub = pb_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.RollbackModel(pb.RollbackModelRequest(model="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert rpc_status.from_call(info.value) is not None
    assert from_rpc_error(info.value).reason == "UNKNOWN_MODEL"


# ----------------------------------------------------------------- bounded fields, damaged files


def _too_long_calls(X):
    """Each case: a call through the admin client or the regression client, and the field it overflows."""
    huge = "r" * (30 * 1024 * 1024)
    return {
        "30 MiB reason": (lambda a, c: a.set_split("house", {"v1": 1, "v2": 1}, huge), "reason"),
        "promote reason": (lambda a, c: a.promote("house", "v2", "x" * 1025), "reason"),
        "rollback reason": (lambda a, c: a.rollback("house", "x" * 5000), "reason"),
        "delete reason": (lambda a, c: a.delete_version("house", "v2", "x" * 5000), "reason"),
        "version name": (lambda a, c: a.get_version("house", "v" * 5000), "version"),
        "freeze version": (lambda a, c: a.freeze("house", "v" * 5000), "version"),
        "split key": (lambda a, c: a.set_split("house", {"v1": 1, "v" * 5000: 1}), "weights"),
        "routing key": (lambda a, c: c.predict("house", X[:1], routing_key="k" * 5000), "routing_key"),
        "predict version": (lambda a, c: c.predict("house", X[:1], version="v" * 5000), "version"),
        "predict model": (lambda a, c: c.predict("m" * 5000, X[:1]), "model"),
        "info version": (lambda a, c: c.model_info("house", "v" * 5000), "version"),
        "feature name": (
            lambda a, c: c.train("house", X, X[:, 0], feature_names=["a", "b", "c", "d", "e" * 300]),
            "spec.feature_names[4]",
        ),
        "class label": (
            lambda a, c: c.train("labels", X[:3], np.array(["yes", "no", "n" * 300]), kind="logistic"),
            "chunk.labels",
        ),
    }


@pytest.mark.parametrize(
    "case",
    list(_too_long_calls(np.zeros((1, 5)))),
)
def test_an_over_long_field_is_refused_with_its_limit_and_nothing_is_stored(
    case, admin, client, two_versions, model_dir
):
    call, field = _too_long_calls(two_versions)[case]
    before = state_bytes(model_dir)
    stored = sorted(str(p) for p in (model_dir / "models").rglob("*"))
    with pytest.raises(InvalidArgument) as info:
        call(admin, client)
    error = info.value
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_TOO_LONG")
    assert error.field_violations[0][0] == field and "at most" in error.field_violations[0][1]
    assert len(error.message) < 200
    assert state_bytes(model_dir) == before
    assert sorted(str(p) for p in (model_dir / "models").rglob("*")) == stored


def test_the_status_of_a_model_name_too_long_is_refused_without_echoing_it(admin, two_versions):
    with pytest.raises(InvalidArgument) as info:
        admin.status("m" * 100_000)
    assert info.value.reason == "INVALID_MODEL_NAME" and len(info.value.message) < 300


def _state_path(model_dir, model="house"):
    return model_dir / "models" / model / "state.json"


def test_a_corrupt_state_leaves_list_models_and_status_answering(admin, client, two_versions, linear_data, model_dir):
    client.train("zeta", *linear_data)
    _state_path(model_dir).write_bytes(b"{not json")
    house, zeta = admin.list_models()
    assert (house.model, house.problem.reason, list(house.versions)) == ("house", "CORRUPT_STATE", ["v1", "v2"])
    assert "'house'" in house.problem.message and not house.HasField("serving_problem")
    assert (zeta.model, zeta.serving_version, zeta.HasField("problem")) == ("zeta", "v1", False)
    statuses = admin.status()
    assert [(s.state.model, s.state.problem.reason) for s in statuses] == [("house", "CORRUPT_STATE"), ("zeta", "")]
    (status,) = admin.status("house")
    assert status.state.problem.reason == "CORRUPT_STATE" and [v.version for v in status.versions] == ["v1", "v2"]
    assert [v.version for v in admin.list_versions("house")] == ["v1", "v2"]
    # The model keeps answering with the routing it had before its state was damaged.
    assert client.predict("house", two_versions[:1]).version == "v1"


def _fix_checksum(version_dir, payload: bytes) -> None:
    (version_dir / "weights.npz").write_bytes(payload)
    metadata = json.loads((version_dir / "metadata.json").read_text())
    metadata["sha256"] = hashlib.sha256(payload).hexdigest()
    (version_dir / "metadata.json").write_text(json.dumps(metadata))


def test_garbled_weights_with_a_fixed_checksum_answer_corrupt_weights(admin, client, two_versions, model_dir):
    vdir = model_dir / "models" / "house" / "versions" / "v2"
    good = (vdir / "weights.npz").read_bytes()
    _fix_checksum(vdir, good[:300] + bytes(b ^ 0x5A for b in good[300:600]) + good[600:])
    before = state_bytes(model_dir)
    for call in (lambda: admin.promote("house", "v2"), lambda: client.model_info("house", "v2")):
        with pytest.raises(FailedPrecondition) as info:
            call()
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CORRUPT_WEIGHTS")
        assert info.value.metadata == {"model": "house", "version": "v2"}
    assert state_bytes(model_dir) == before
    assert client.predict("house", two_versions[:1]).version == "v1"


def test_a_version_with_unreadable_metadata_is_listed_with_its_problem(admin, client, two_versions, model_dir):
    (model_dir / "models" / "house" / "versions" / "v2" / "metadata.json").write_bytes(b"\xff\xfe not json")
    v1, v2 = admin.list_versions("house")
    assert (v1.version, v1.HasField("problem"), v1.num_samples) == ("v1", False, 400)
    assert (v2.version, v2.problem.reason, v2.serving_state) == (
        "v2",
        "CORRUPT_METADATA",
        types_pb2.SERVING_STATE_AVAILABLE,
    )
    assert "v2" in v2.problem.message
    (status,) = admin.status("house")
    assert [(v.version, v.problem.reason) for v in status.versions] == [("v1", ""), ("v2", "CORRUPT_METADATA")]
    assert list(admin.list_models()[0].versions) == ["v1", "v2"]
    with pytest.raises(NotFound) as info:
        admin.get_version("house", "v2")
    assert info.value.reason == "CORRUPT_METADATA"
    assert list(admin.delete_version("house", "v2", reason="damaged").versions) == ["v1"]


def test_a_restart_with_a_corrupt_serving_version_says_why_in_status_and_predict(app, two_versions, model_dir):
    from regserve.client import RegressionClient, Unavailable
    from tests.conftest import start_server

    _flip_byte(model_dir / "models" / "house" / "versions" / "v1" / "weights.npz")
    app.stop(0)
    restarted = start_server(model_dir)
    try:
        target = f"127.0.0.1:{restarted.port}"
        with ModelAdminClient(target, timeout=30) as admin, RegressionClient(target, timeout=30) as client:
            (state,) = admin.list_models()
            assert (state.serving_version, state.serving_problem.reason) == ("v1", "CHECKSUM_MISMATCH")
            (status,) = admin.status("house")
            assert status.state.serving_problem.reason == "CHECKSUM_MISMATCH"
            assert [(v.version, v.problem.reason) for v in status.versions] == [("v1", "CHECKSUM_MISMATCH"), ("v2", "")]
            with pytest.raises(Unavailable) as info:
                client.predict("house", two_versions[:1])
            error = info.value
            assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "NO_SERVING_VERSION")
            assert error.metadata == {"model": "house", "version": "v1", "cause": "CHECKSUM_MISMATCH"}
            assert "CHECKSUM_MISMATCH" in error.message and "v1" in error.message
            # Promoting a sound version serves again and clears the problem.
            assert not admin.promote("house", "v2", reason="v1 is damaged").HasField("serving_problem")
            assert client.predict("house", two_versions[:1]).version == "v2"
    finally:
        restarted.stop(0)
