"""Tests of the in-memory serving store over a real registry in tmp_path."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter

import numpy as np
import pytest

from regserve.server.errors import (
    FailedPrecondition,
    IntegrityError,
    InvalidInput,
    NotFound,
    Unavailable,
    UnknownModel,
)
from regserve.server.models.estimator import LinearModel
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.events import RegistryEvent
from regserve.server.registry.routing import SplitTable
from regserve.server.registry.store import ModelStore

FEATURES = ["age", "bmi", "bp"]


def _regressor(seed: int) -> LinearModel:
    rng = np.random.default_rng(seed)
    return LinearModel("linear", rng.normal(size=(1, 3)), rng.normal(size=(1,)))


def _classifier(seed: int) -> LinearModel:
    rng = np.random.default_rng(seed)
    return LinearModel(
        "logistic",
        rng.normal(size=(1, 3)),
        rng.normal(size=(1,)),
        mean=rng.normal(size=3),
        scale=rng.uniform(0.5, 2, size=3),
        classes=("no", "yes"),
    )


def _meta(**validation) -> dict:
    metadata = {
        "feature_names": FEATURES,
        "feature_stats": [{"name": n, "mean": 10.0 * i, "std": 2.0} for i, n in enumerate(FEATURES)],
    }
    if validation:
        metadata["validation_metrics"] = validation
    return metadata


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "registry")


@pytest.fixture
def store(root):
    store = ModelStore(ModelRegistry(root))
    store.load_all()
    return store


X = np.random.default_rng(42).normal(size=(5, 3))


def _state_bytes(root, model):
    with open(os.path.join(root, "models", model, "state.json"), "rb") as f:
        return f.read()


def _flip_byte(root, model, version, offset=100):
    path = os.path.join(root, "models", model, "versions", version, "weights.npz")
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_resolve_serving_and_explicit_versions(store):
    assert not store.has_serving_model()
    est1, est2 = _regressor(1), _regressor(2)
    stored, promoted, reason = store.add_version("house", est1, _meta(mse=1.0))
    assert (stored.version, promoted) == ("v1", True)
    assert "first" in reason
    assert store.add_version("house", est2, _meta(mse=2.0))[1] is True
    assert store.has_serving_model() and store.model_names() == ["house"]

    served = store.resolve("house")
    assert (served.name, served.version) == ("house", "v2")
    np.testing.assert_allclose(served.estimator.predict(X), est2.predict(X), rtol=1e-12)
    assert dict(served.feature_index) == {"age": 0, "bmi": 1, "bp": 2}
    assert served.metadata.kind == "linear" and served.metadata.version == "v2"
    old = store.resolve("house", "v1")
    assert old.version == "v1"
    np.testing.assert_allclose(old.estimator.predict(X), est1.predict(X), rtol=1e-12)
    assert store.resolve("house", "v1") is old  # cached after the first load
    assert store.serving_state("house", "v2") == "serving"
    assert store.serving_state("house", "v1") == "available"

    with pytest.raises(NotFound) as info:
        store.resolve("nope")
    assert info.value.reason == "UNKNOWN_MODEL" and info.value.violations[0][0] == "model"
    with pytest.raises(NotFound) as info:
        store.resolve("house", "v3")
    assert info.value.reason == "UNKNOWN_VERSION" and info.value.violations[0][0] == "version"


def test_probe_is_stored(store, root):
    est = _classifier(3)
    store.add_version("c", est, _meta(accuracy=0.9))
    arrays, _ = ModelRegistry(root).load_version("c", "v1")
    assert arrays["probe_inputs"].shape == (8, 3)
    np.testing.assert_array_equal(arrays["probe_inputs"][0], [0.0, 10.0, 20.0])
    np.testing.assert_array_equal(arrays["probe_outputs"], est.predict(arrays["probe_inputs"]))
    assert arrays["probe_probabilities"].shape == (8, 2)
    np.testing.assert_array_equal(arrays["classes"], ["no", "yes"])


def test_no_serving_version(store):
    stored, promoted, reason = store.add_version("m", _regressor(1), _meta(), promote=False)
    assert not promoted and "not requested" in reason
    with pytest.raises(Unavailable) as info:
        store.resolve("m")
    assert info.value.reason == "NO_SERVING_VERSION"
    assert store.resolve("m", "v1").version == "v1"
    assert not store.has_serving_model()


def test_frozen_version_refused(store):
    for seed in range(2):
        store.add_version("m", _regressor(seed), _meta(), promote=seed == 0)
    store.resolve("m", "v2")  # cached before the freeze
    store.freeze("m", "v2")
    with pytest.raises(FailedPrecondition) as info:
        store.resolve("m", "v2")
    assert info.value.reason == "VERSION_FROZEN" and info.value.violations[0][0] == "version"
    assert store.resolve("m", "v2", allow_frozen=True).version == "v2"
    assert store.serving_state("m", "v2") == "frozen"
    store.unfreeze("m", "v2")
    assert store.resolve("m", "v2").version == "v2"


def test_split_routing(store):
    for seed in range(3):
        store.add_version("m", _regressor(seed), _meta())
    store.set_split("m", {"v1": 90, "v2": 10})
    keys = [f"caller-{i}" for i in range(4000)]
    chosen = [store.resolve("m", routing_key=k).version for k in keys]
    assert chosen == [store.resolve("m", routing_key=k).version for k in keys]
    table = SplitTable({"v1": 90, "v2": 10})
    assert chosen == [table.choose(k) for k in keys]
    counts = Counter(chosen)
    assert set(counts) == {"v1", "v2"} and 0.08 <= counts["v2"] / len(keys) <= 0.12
    assert store.serving_state("m", "v2") == "in_split"
    assert store.resolve("m", "v3").version == "v3"  # explicit versions bypass the split
    # Promotion ends the A/B test.
    store.promote("m", "v3")
    assert {store.resolve("m", routing_key=k).version for k in keys[:200]} == {"v3"}


def test_split_refusals_leave_routing_alone(store, root):
    for seed in range(3):
        store.add_version("m", _regressor(seed), _meta())
    store.freeze("m", "v1")
    before = _state_bytes(root, "m")
    with pytest.raises(FailedPrecondition) as info:
        store.set_split("m", {"v1": 1, "v2": 1})
    assert info.value.reason == "VERSION_FROZEN"
    with pytest.raises(InvalidInput) as info:
        store.set_split("m", {"v7": 1})
    assert info.value.reason == "UNKNOWN_VERSION" and info.value.violations[0][0] == "weights[v7]"
    with pytest.raises(InvalidInput) as info:
        store.set_split("m", {"v2": -1})
    assert info.value.reason == "INVALID_SPLIT"
    assert _state_bytes(root, "m") == before
    assert store.resolve("m", routing_key="k").version == "v3"


def test_gate_regressor(store):
    assert store.add_version("m", _regressor(1), _meta(mse=1.0), gate=True)[1]
    stored, promoted, reason = store.add_version("m", _regressor(2), _meta(mse=2.0), gate=True)
    assert not promoted and "worse" in reason and stored.version == "v2"
    assert store.resolve("m").version == "v1"
    stored, promoted, reason = store.add_version("m", _regressor(3), _meta(mse=1.0), gate=True)
    assert promoted and "equal" in reason
    assert store.resolve("m").version == "v3"
    stored, promoted, reason = store.add_version("m", _regressor(4), _meta(), gate=True)
    assert not promoted and "no validation mse" in reason
    # Without the gate a worse model is promoted on request.
    assert store.add_version("m", _regressor(5), _meta(mse=9.0))[1]
    assert store.resolve("m").version == "v5"
    history = store.read_state("m").history
    assert [h.to_version for h in history] == ["v1", "v3", "v5"]
    assert "gate" in history[1].reason


def test_gate_classifier(store):
    assert store.add_version("c", _classifier(1), _meta(accuracy=0.8), gate=True)[1]
    assert not store.add_version("c", _classifier(2), _meta(accuracy=0.7), gate=True)[1]
    assert store.add_version("c", _classifier(3), _meta(accuracy=0.85), gate=True)[1]
    assert store.resolve("c").version == "v3"
    # The serving version lacking metrics also refuses.
    store.add_version("c", _classifier(4), _meta(), promote=True)
    _, promoted, reason = store.add_version("c", _classifier(5), _meta(accuracy=1.0), gate=True)
    assert not promoted and "v4 has no validation accuracy" in reason


def test_promote_of_tampered_version_refused(store, root):
    store.add_version("m", _regressor(1), _meta())
    store.add_version("m", _regressor(2), _meta(), promote=False)
    _flip_byte(root, "m", "v2")
    before = _state_bytes(root, "m")
    with pytest.raises(IntegrityError) as info:
        store.promote("m", "v2")
    assert info.value.reason == "CHECKSUM_MISMATCH"
    assert _state_bytes(root, "m") == before
    assert store.resolve("m").version == "v1"
    with pytest.raises(IntegrityError):
        store.set_split("m", {"v1": 1, "v2": 1})
    assert _state_bytes(root, "m") == before


def test_probe_mismatch_refused(store, root):
    est = _regressor(1)
    store.add_version("m", est, _meta())
    registry = ModelRegistry(root)
    probe = np.zeros((8, 3))
    bad = {**est.to_arrays(), "probe_inputs": probe, "probe_outputs": est.predict(probe) + 1e-6}
    registry.create_version("m", bad, {"kind": "linear"})
    registry.create_version("m", est.to_arrays(), {"kind": "linear"})  # no probe at all
    before = _state_bytes(root, "m")
    for version in ["v2", "v3"]:
        with pytest.raises(IntegrityError) as info:
            store.promote("m", version)
        assert info.value.reason == "PROBE_MISMATCH"
    assert _state_bytes(root, "m") == before
    assert store.resolve("m").version == "v1"


def test_load_all_skips_a_tampered_serving_version(store, root):
    store.add_version("bad", _regressor(1), _meta())
    store.add_version("good", _regressor(2), _meta())
    _flip_byte(root, "bad", "v1")
    fresh = ModelStore(ModelRegistry(root))
    fresh.load_all()
    assert fresh.model_names() == ["bad", "good"]
    assert fresh.resolve("good").version == "v1"
    with pytest.raises(Unavailable) as info:
        fresh.resolve("bad")
    assert info.value.reason == "NO_SERVING_VERSION"
    with pytest.raises(IntegrityError):
        fresh.resolve("bad", "v1")
    # The role is the stored one, as every listing reports it, even for a version not loaded.
    assert fresh.serving_state("bad", "v1") == fresh.read_state("bad").role_of("v1") == "serving"


def test_replica_sees_promotion_on_refresh(root):
    a = ModelStore(ModelRegistry(root))
    a.load_all()
    a.add_version("m", _regressor(1), _meta())
    b = ModelStore(ModelRegistry(root))
    b.load_all()
    assert b.resolve("m").version == "v1"
    assert b.refresh() is False
    a.add_version("m", _regressor(2), _meta(), promote=False)
    assert b.refresh() is True  # a new version is known, routing unchanged
    assert b.resolve("m").version == "v1" and b.resolve("m", "v2").version == "v2"
    a.promote("m", "v2")
    assert b.refresh() is True
    assert b.resolve("m").version == "v2"
    assert b.refresh() is False
    a.add_version("other", _regressor(3), _meta())
    a.delete_version("m", "v1")
    assert b.refresh() is True
    assert b.model_names() == ["m", "other"]
    with pytest.raises(NotFound):
        b.resolve("m", "v1")


def test_refresh_keeps_old_routing_when_new_state_is_bad(root):
    a = ModelStore(ModelRegistry(root))
    a.add_version("m", _regressor(1), _meta())
    a.add_version("m", _regressor(2), _meta(), promote=False)
    b = ModelStore(ModelRegistry(root))
    b.load_all()
    _flip_byte(root, "m", "v2")
    ModelRegistry(root).promote("m", "v2")  # bypasses the store's checks on purpose
    assert b.refresh() is False
    assert b.resolve("m").version == "v1"


def test_polling_thread(root):
    a = ModelStore(ModelRegistry(root))
    a.add_version("m", _regressor(1), _meta())
    a.add_version("m", _regressor(2), _meta(), promote=False)
    b = ModelStore(ModelRegistry(root), poll_interval=0.02)
    b.load_all()
    changed = threading.Event()
    b.start(on_change=changed.set)
    try:
        a.promote("m", "v2")
        assert changed.wait(5.0)
        assert b.resolve("m").version == "v2"
    finally:
        b.stop()
    assert b._thread is None


def test_rollback_and_delete(store):
    for seed in range(3):
        store.add_version("m", _regressor(seed), _meta())
    assert store.rollback("m", reason="regression").serving == "v2"
    assert store.resolve("m").version == "v2"
    store.resolve("m", "v3")
    store.delete_version("m", "v3")
    with pytest.raises(NotFound) as info:
        store.resolve("m", "v3")
    assert info.value.reason == "UNKNOWN_VERSION"
    assert store.rollback("m").serving == "v1"
    with pytest.raises(FailedPrecondition) as info:
        store.rollback("m")
    assert info.value.reason == "NO_PREVIOUS_VERSION"
    assert store.resolve("m").version == "v1"


def test_hot_swap_under_load(store):
    est = {"v1": _regressor(1), "v2": _regressor(2)}
    store.add_version("m", est["v1"], _meta())
    store.add_version("m", est["v2"], _meta())
    expected = {v: e.predict(X) for v, e in est.items()}
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: Counter = Counter()

    def serve() -> None:
        try:
            while not stop.is_set():
                served = store.resolve("m")
                np.testing.assert_allclose(served.estimator.predict(X), expected[served.version])
                seen[served.version] += 1
                time.sleep(0)  # let the writer have the GIL between requests, as network I/O does
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=serve) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i in range(100):
            if i % 2 == 0:
                store.rollback("m")
            else:
                store.promote("m", "v2")
            time.sleep(0.001)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors
    assert set(seen) == {"v1", "v2"}
    assert store.resolve("m").version == "v2"


def test_trained_models_round_trip(root):
    from regserve.server.models.training import Trainer, TrainSpec

    rng = np.random.default_rng(7)
    features = rng.normal(size=(300, 3)) * [1.0, 5.0, 0.1] + [0.0, 50.0, -3.0]
    targets = {
        "linear": features @ [1.5, -0.2, 4.0] + rng.normal(scale=0.1, size=300),
        "logistic": np.where(features[:, 0] > 0, "yes", "no"),
    }
    a = ModelStore(ModelRegistry(root))
    trained = {}
    for kind, y in targets.items():
        spec = TrainSpec(kind=kind, feature_names=("a", "b", "c"), validation_fraction=0.2, standardize=True, seed=7)
        with Trainer(spec) as trainer:
            trainer.add_chunk(features, y)
            result = trainer.finish()
        trained[kind] = result.model
        assert a.add_version(kind, result.model, result.metadata, gate=True)[1]
        # The same data again passes the gate (equal metrics).
        assert a.add_version(kind, result.model, result.metadata, gate=True)[1]
    b = ModelStore(ModelRegistry(root))
    b.load_all()
    for kind, model in trained.items():
        served = b.resolve(kind)
        assert served.version == "v2" and served.metadata.kind == kind
        assert dict(served.feature_index) == {"a": 0, "b": 1, "c": 2}
        np.testing.assert_allclose(served.estimator.predict(features), model.predict(features), rtol=1e-12, atol=1e-12)


def test_each_change_is_reported_once_where_it_is_made(root):
    events = []
    store = ModelStore(ModelRegistry(root), on_event=events.append)
    store.add_version("m", _regressor(1), _meta())
    store.add_version("m", _regressor(2), _meta(), promote=False)
    store.promote("m", "v2", reason="canary")
    store.promote("m", "v2")  # serving already, no split: nothing changes
    store.rollback("m")
    store.freeze("m", "v2")
    store.freeze("m", "v2")
    store.unfreeze("m", "v2")
    store.unfreeze("m", "v2")
    store.set_split("m", {"v1": 1, "v2": 1})
    store.set_split("m", {"v1": 1, "v2": 1})
    store.set_split("m", {})
    store.delete_version("m", "v2")
    with pytest.raises(FailedPrecondition):
        store.delete_version("m", "v1")
    assert events == [
        RegistryEvent("m", "create", "v1"),
        RegistryEvent("m", "promote", "v1"),
        RegistryEvent("m", "create", "v2"),
        RegistryEvent("m", "promote", "v2"),
        RegistryEvent("m", "rollback", "v1"),
        RegistryEvent("m", "freeze", "v2"),
        RegistryEvent("m", "unfreeze", "v2"),
        RegistryEvent("m", "split", None),
        RegistryEvent("m", "split", None),
        RegistryEvent("m", "delete", "v2"),
    ]


def test_a_gated_version_is_created_but_not_promoted(root):
    events = []
    store = ModelStore(ModelRegistry(root), on_event=events.append)
    store.add_version("m", _regressor(1), _meta(mse=1.0))
    store.add_version("m", _regressor(2), _meta(mse=2.0), gate=True)
    assert [(e.action, e.version) for e in events] == [("create", "v1"), ("promote", "v1"), ("create", "v2")]


def test_a_failing_event_callback_is_logged_and_the_change_stands(root, caplog):
    def fail(event: RegistryEvent) -> None:
        raise RuntimeError("the metrics are down")

    heard: list[RegistryEvent] = []
    store = ModelStore(ModelRegistry(root), on_event=fail)
    store.listen(heard.append)
    with caplog.at_level(logging.ERROR, logger="regserve.server.registry.store"):
        stored, promoted, _ = store.add_version("m", _regressor(1), _meta())
    assert (stored.version, promoted) == ("v1", True)
    assert store.resolve("m").version == "v1"
    assert "registry event listener failed" in caplog.text and "the metrics are down" in caplog.text
    # A listener after the failing one still hears every change.
    assert heard == [RegistryEvent("m", "create", "v1"), RegistryEvent("m", "promote", "v1")]


def test_reads_through_the_store_show_another_replicas_changes_at_once(root):
    a = ModelStore(ModelRegistry(root))
    b = ModelStore(ModelRegistry(root))
    b.load_all()
    a.add_version("m", _regressor(1), _meta(mse=1.5))
    a.add_version("m", _regressor(2), _meta(), promote=False)
    a.freeze("m", "v2")
    assert b.model_names() == []  # routing waits for a refresh; reads do not
    assert b.list_models() == ["m"]
    state = b.read_state("m")
    assert (state.serving, state.frozen, state.role_of("v2")) == ("v1", ("v2",), "frozen")
    versions = b.list_versions("m")
    assert [m.version for m in versions] == ["v1", "v2"]
    assert versions[0].feature_names == tuple(FEATURES) and versions[0].validation_metrics == {"mse": 1.5}
    with pytest.raises(UnknownModel):
        b.read_state("nope")
