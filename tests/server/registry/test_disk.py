"""Tests of the model registry on both backends: real files under tmp_path, and real S3 (moto) on loopback."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re

import numpy as np
import pytest

from regserve.server.errors import (
    FailedPrecondition,
    IntegrityError,
    InvalidInput,
    NotFound,
    UnknownModel,
    UnknownVersion,
    VersionFrozen,
)
from regserve.server.registry.disk import ModelRegistry
from tests.server.registry.conftest import raw_keys, raw_read, raw_write


@pytest.fixture
def registry(location):
    return ModelRegistry(location)


@pytest.fixture
def local_registry(tmp_path):
    return ModelRegistry(tmp_path / "root")


def _arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "coef": rng.normal(size=(3,)),
        "intercept": np.array(rng.normal()),
        "classes": np.array(["a", "b"]),
        "counts": np.arange(4, dtype=np.int64),
    }


def _make(registry: ModelRegistry, model: str, n: int) -> list[str]:
    return [registry.create_version(model, _arrays(i), {"i": i}).version for i in range(n)]


def _weights_key(model, version):
    return f"models/{model}/versions/{version}/weights.npz"


def _state_bytes(registry, model):
    return raw_read(registry, f"models/{model}/state.json")


def _flip_byte(registry, key: str, offset: int = 100) -> None:
    data = bytearray(raw_read(registry, key))
    data[offset] ^= 0xFF
    raw_write(registry, key, bytes(data))


# ------------------------------------------------------------------ versions


def test_round_trip_and_numbering(registry):
    first = registry.create_version("house", _arrays(0), {"kind": "ols", "metrics": {"mse": 1.5}})
    second = registry.create_version("house", _arrays(1), {"kind": "ridge"})
    assert (first.version, second.version) == ("v1", "v2")
    assert first.model == "house" and first.kind == "ols"
    assert first.raw["metrics"] == {"mse": 1.5}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.created_at)
    assert first.sha256 == hashlib.sha256(raw_read(registry, _weights_key("house", "v1"))).hexdigest()

    assert registry.list_models() == ["house"]
    assert [m.version for m in registry.list_versions("house")] == ["v1", "v2"]
    assert registry.describe("house", "v2") == second

    arrays, metadata = registry.load_version("house", "v1")
    assert metadata == first
    expected = _arrays(0)
    assert set(arrays) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(arrays[name], value)
        assert arrays[name].dtype == value.dtype
    assert isinstance(arrays["coef"], np.ndarray)


def test_caller_metadata_cannot_override_registry_fields(registry):
    stored = registry.create_version("m", _arrays(0), {"version": "v99", "sha256": "x"})
    assert stored.version == "v1"
    assert len(stored.sha256) == 64


def test_version_order_is_numeric(registry):
    versions = _make(registry, "m", 11)
    assert [m.version for m in registry.list_versions("m")] == versions
    assert versions[-2:] == ["v10", "v11"]


@pytest.mark.parametrize("name", ["", "../etc", ".hidden", "a/b", "a" * 65, "-x", "a b", None])
def test_invalid_model_names(registry, name):
    with pytest.raises(InvalidInput) as info:
        registry.create_version(name, _arrays(0), {})
    assert info.value.reason == "INVALID_MODEL_NAME"
    assert info.value.violations[0][0] == "model"
    assert raw_keys(registry) == [] and registry.list_models() == []


def test_longest_valid_name(registry):
    name = "A" + "b_.-9" * 12 + "xyz"
    assert len(name) == 64
    assert registry.create_version(name, _arrays(0), {}).version == "v1"


def test_unknown_model_and_version(registry):
    with pytest.raises(NotFound) as info:
        registry.load_version("nope", "v1")
    assert info.value.reason == "UNKNOWN_MODEL"
    assert info.value.violations[0][0] == "model"
    _make(registry, "m", 1)
    for version in ["v2", "1", "v0", "../v1", ""]:
        with pytest.raises(NotFound) as info:
            registry.load_version("m", version)
        assert info.value.reason == "UNKNOWN_VERSION"
        assert info.value.violations[0][0] == "version"
    with pytest.raises(NotFound) as info:
        registry.read_state("other")
    assert info.value.reason == "UNKNOWN_MODEL"


def test_checksum_tampering_detected(registry):
    _make(registry, "m", 1)
    _flip_byte(registry, _weights_key("m", "v1"))
    with pytest.raises(IntegrityError) as info:
        registry.load_version("m", "v1")
    assert info.value.reason == "CHECKSUM_MISMATCH"
    assert info.value.metadata == {"model": "m", "version": "v1"}


def test_pickled_arrays_are_never_loaded(registry):
    with pytest.raises(TypeError):
        registry.create_version("m", {"bad": np.array([{"a": 1}], dtype=object)}, {})
    _make(registry, "m", 1)
    # Forge a version whose checksum matches but whose array needs pickle.
    buffer = io.BytesIO()
    np.savez(buffer, bad=np.array([{"a": 1}], dtype=object))
    payload = buffer.getvalue()
    raw_write(registry, _weights_key("m", "v1"), payload)
    metadata = registry.describe("m", "v1").to_json()
    metadata["sha256"] = hashlib.sha256(payload).hexdigest()
    raw_write(registry, "models/m/versions/v1/metadata.json", json.dumps(metadata).encode())
    with pytest.raises(IntegrityError) as info:
        registry.load_version("m", "v1")
    assert info.value.reason == "CORRUPT_WEIGHTS"


def test_incomplete_and_temporary_directories_are_not_listed(local_registry):
    registry = local_registry
    _make(registry, "m", 1)
    model_dir = os.path.join(registry.root, "models", "m")
    stale = os.path.join(model_dir, ".tmp-crashed")
    os.makedirs(stale)
    with open(os.path.join(stale, "weights.npz"), "wb") as f:
        f.write(b"half")
    os.makedirs(os.path.join(model_dir, "versions", "v2"))  # no files at all
    os.makedirs(os.path.join(model_dir, "versions", "v3"))
    with open(os.path.join(model_dir, "versions", "v3", "metadata.json"), "w") as f:
        f.write("{not json")
    with open(os.path.join(model_dir, "versions", "v3", "weights.npz"), "wb") as f:
        f.write(b"x")
    os.makedirs(os.path.join(model_dir, "versions", "v4"))
    with open(os.path.join(model_dir, "versions", "v4", "weights.npz"), "wb") as f:
        f.write(b"x")  # metadata.json missing

    assert [m.version for m in registry.list_versions("m")] == ["v1"]
    for version in ["v2", "v3", "v4"]:
        with pytest.raises(NotFound):
            registry.describe("m", version)

    reopened = ModelRegistry(registry.root)
    assert not os.path.exists(stale)
    assert reopened.list_models() == ["m"]
    # A new version never lands on an existing directory, complete or not.
    assert reopened.create_version("m", _arrays(5), {}).version == "v5"
    assert [m.version for m in reopened.list_versions("m")] == ["v1", "v5"]


def test_deleted_version_numbers_are_not_reused(registry):
    _make(registry, "m", 3)
    registry.promote("m", "v1")
    registry.delete_version("m", "v3")
    assert registry.create_version("m", _arrays(9), {}).version == "v4"


def _create_many(root: str, n: int, seed: int, queue) -> None:
    registry = ModelRegistry(root)
    made = [registry.create_version("shared", _arrays(seed + i), {"seed": seed + i}).version for i in range(n)]
    queue.put(made)


def test_concurrent_processes_get_distinct_versions(tmp_path):
    root = str(tmp_path / "root")
    ModelRegistry(root)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_create_many, args=(root, 6, 100 * k, queue)) for k in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    made = [v for result in results for v in result]
    assert sorted(made, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, 19)]
    registry = ModelRegistry(root)
    versions = registry.list_versions("shared")
    assert len(versions) == 18
    for metadata in versions:
        arrays, _ = registry.load_version("shared", metadata.version)
        np.testing.assert_array_equal(arrays["coef"], _arrays(metadata.raw["seed"])["coef"])


def test_snapshot_token_changes_on_changes(registry):
    token0 = registry.snapshot_token()
    _make(registry, "m", 2)
    token1 = registry.snapshot_token()
    assert token1 != token0
    assert registry.snapshot_token() == token1
    registry.promote("m", "v1")
    token2 = registry.snapshot_token()
    assert token2 != token1
    generation = registry.state_generation("m")
    registry.promote("m", "v2")
    assert registry.snapshot_token() != token2
    assert registry.state_generation("m") == generation + 1


# ------------------------------------------------------------------ serving state


def test_initial_state(registry):
    _make(registry, "m", 1)
    state = registry.read_state("m")
    assert state.serving is None
    assert state.previous == () and state.frozen == () and state.split == {}
    assert state.history == ()


def test_promote_and_rollback(registry):
    _make(registry, "m", 3)
    s1 = registry.promote("m", "v1", reason="first").state
    assert s1.serving == "v1" and s1.previous == ()
    s2 = registry.promote("m", "v2").state
    assert s2.serving == "v2" and s2.previous == ("v1",)
    update = registry.promote("m", "v3", reason="better")
    s3 = update.state
    assert update.changed
    assert s3.previous == ("v1", "v2")
    assert s3.generation > s2.generation > s1.generation
    assert registry.read_state("m") == s3

    before = _state_bytes(registry, "m")
    update = registry.promote("m", "v3")
    assert update.state.generation == s3.generation and not update.changed
    assert _state_bytes(registry, "m") == before

    r1 = registry.rollback("m", reason="oops").state
    assert r1.serving == "v2" and r1.previous == ("v1",)
    r2 = registry.rollback("m").state
    assert r2.serving == "v1" and r2.previous == ()
    with pytest.raises(FailedPrecondition) as info:
        registry.rollback("m")
    assert info.value.reason == "NO_PREVIOUS_VERSION"

    history = registry.read_state("m").history
    assert [(h.action, h.from_version, h.to_version) for h in history] == [
        ("promote", None, "v1"),
        ("promote", "v1", "v2"),
        ("promote", "v2", "v3"),
        ("rollback", "v3", "v2"),
        ("rollback", "v2", "v1"),
    ]
    assert history[0].reason == "first" and history[3].reason == "oops"
    assert all(h.at.endswith("Z") for h in history)


def test_promoting_a_previous_version_removes_it_from_the_stack(registry):
    _make(registry, "m", 3)
    for v in ["v1", "v2", "v3"]:
        registry.promote("m", v)
    state = registry.promote("m", "v1").state
    assert state.previous == ("v2", "v3")
    assert registry.rollback("m").state.serving == "v3"


def test_rollback_skips_deleted_and_frozen(registry):
    _make(registry, "m", 4)
    for v in ["v1", "v2", "v3", "v4"]:
        registry.promote("m", v)
    registry.delete_version("m", "v3")
    registry.freeze("m", "v2")
    assert registry.read_state("m").previous == ("v1", "v2")
    state = registry.rollback("m").state
    assert state.serving == "v1" and state.previous == ()


def test_history_is_bounded(registry):
    _make(registry, "m", 2)
    for i in range(60):
        registry.promote("m", "v1" if i % 2 == 0 else "v2", reason=str(i))
    history = registry.read_state("m").history
    assert len(history) == 60
    for i in range(60, 110):
        registry.promote("m", "v1" if i % 2 == 0 else "v2", reason=str(i))
    history = registry.read_state("m").history
    assert len(history) == 100
    assert history[0].reason == "10" and history[-1].reason == "109"


def test_freeze_unfreeze(registry):
    _make(registry, "m", 3)
    registry.promote("m", "v1")
    state = registry.freeze("m", "v2", reason="bad data").state
    assert state.frozen == ("v2",)
    before = _state_bytes(registry, "m")
    update = registry.freeze("m", "v2")
    assert update.state.frozen == ("v2",) and not update.changed  # idempotent, no write
    assert _state_bytes(registry, "m") == before
    with pytest.raises(FailedPrecondition) as info:
        registry.promote("m", "v2")
    assert info.value.reason == "VERSION_FROZEN"
    assert registry.unfreeze("m", "v2").state.frozen == ()
    before = _state_bytes(registry, "m")
    update = registry.unfreeze("m", "v2")
    assert update.state.frozen == () and not update.changed
    assert _state_bytes(registry, "m") == before
    assert registry.promote("m", "v2").state.serving == "v2"
    actions = [(h.action, h.to_version, h.reason) for h in registry.read_state("m").history]
    assert ("freeze", "v2", "bad data") in actions and ("unfreeze", "v2", "") in actions


def test_split(registry):
    _make(registry, "m", 3)
    registry.promote("m", "v1")
    state = registry.set_split("m", {"v3": 10, "v2": 90.0}).state
    assert state.split == {"v2": 90.0, "v3": 10.0}
    assert state.serving == "v1"
    assert list(state.split) == ["v2", "v3"]
    assert state.history[-1].action == "split"
    assert state.history[-1].split == {"v2": 90.0, "v3": 10.0}
    assert not registry.set_split("m", {"v2": 90, "v3": 10}).changed  # the same split again
    # A promotion ends the A/B test.
    state = registry.promote("m", "v3").state
    assert state.split == {} and state.serving == "v3"
    registry.set_split("m", {"v3": 1})
    # Promoting the serving version is not a no-op while a split is set: it ends the test.
    assert registry.promote("m", "v3").state.split == {}
    registry.set_split("m", {"v1": 1, "v2": 0})
    assert registry.set_split("m", {}).state.split == {}


def test_delete_version(registry):
    _make(registry, "m", 4)
    for v in ["v1", "v2", "v3"]:
        registry.promote("m", v)
    registry.freeze("m", "v4")
    registry.delete_version("m", "v2")
    state = registry.delete_version("m", "v4", reason="cleanup").state
    assert [m.version for m in registry.list_versions("m")] == ["v1", "v3"]
    assert state.previous == ("v1",) and state.frozen == ()
    assert state.history[-1].to_json() == {
        **state.history[-1].to_json(),
        "action": "delete",
        "from": None,
        "to": "v4",
        "reason": "cleanup",
    }
    assert not [k for k in raw_keys(registry) if "/v2/" in k]
    if os.path.isdir(registry.root):
        assert not [n for n in os.listdir(os.path.join(registry.root, "models", "m")) if n.startswith(".tmp-")]
    with pytest.raises(NotFound) as info:
        registry.load_version("m", "v2")
    assert info.value.reason == "UNKNOWN_VERSION"


def _refusals():
    """(call, error type, reason, field) for every refusal; set up by _refusal_setup."""
    return [
        (lambda r: r.promote("m", "v9"), UnknownVersion, "UNKNOWN_VERSION", "version"),
        (lambda r: r.promote("m", "v4"), VersionFrozen, "VERSION_FROZEN", "version"),
        (lambda r: r.freeze("m", "v1"), FailedPrecondition, "VERSION_SERVING", "version"),
        (lambda r: r.freeze("m", "v2"), FailedPrecondition, "VERSION_IN_SPLIT", "version"),
        (lambda r: r.freeze("m", "v9"), UnknownVersion, "UNKNOWN_VERSION", "version"),
        (lambda r: r.unfreeze("m", "v9"), UnknownVersion, "UNKNOWN_VERSION", "version"),
        (lambda r: r.delete_version("m", "v1"), FailedPrecondition, "VERSION_SERVING", "version"),
        (lambda r: r.delete_version("m", "v3"), FailedPrecondition, "VERSION_IN_SPLIT", "version"),
        (lambda r: r.delete_version("m", "v9"), UnknownVersion, "UNKNOWN_VERSION", "version"),
        (lambda r: r.set_split("m", {"v2": 1, "v9": 1}), InvalidInput, "UNKNOWN_VERSION", "weights[v9]"),
        (lambda r: r.set_split("m", {"v2": 1, "v4": 1}), VersionFrozen, "VERSION_FROZEN", "weights[v4]"),
        (lambda r: r.set_split("m", {"v2": -1, "v3": 2}), InvalidInput, "INVALID_SPLIT", "weights"),
        (lambda r: r.set_split("m", {"v2": float("nan")}), InvalidInput, "INVALID_SPLIT", "weights"),
        (lambda r: r.set_split("m", {"v2": float("inf")}), InvalidInput, "INVALID_SPLIT", "weights"),
        (lambda r: r.set_split("m", {"v2": 0, "v3": 0}), InvalidInput, "INVALID_SPLIT", "weights"),
        (lambda r: r.set_split("m", {"v2": "heavy"}), InvalidInput, "INVALID_SPLIT", "weights"),
        (lambda r: r.promote("../m", "v1"), InvalidInput, "INVALID_MODEL_NAME", "model"),
        (lambda r: r.promote("other", "v1"), UnknownModel, "UNKNOWN_MODEL", "model"),
    ]


@pytest.mark.parametrize("index", range(len(_refusals())))
def test_refusals_change_nothing(registry, index):
    call, error, reason, field = _refusals()[index]
    _make(registry, "m", 4)
    registry.promote("m", "v1")
    registry.set_split("m", {"v2": 50, "v3": 50})
    registry.freeze("m", "v4")
    before = _state_bytes(registry, "m")
    listing = raw_keys(registry)
    with pytest.raises(error) as info:
        call(registry)
    assert type(info.value) is error
    assert info.value.reason == reason
    assert info.value.violations and info.value.violations[0][0] == field
    assert _state_bytes(registry, "m") == before
    assert raw_keys(registry) == listing
    assert "other" not in registry.list_models()


def test_rollback_refusal_changes_nothing(registry):
    _make(registry, "m", 2)
    registry.promote("m", "v1")
    registry.promote("m", "v2")
    registry.delete_version("m", "v1")  # leaves a dangling entry on the stack
    before = _state_bytes(registry, "m")
    with pytest.raises(FailedPrecondition) as info:
        registry.rollback("m")
    assert info.value.reason == "NO_PREVIOUS_VERSION"
    assert _state_bytes(registry, "m") == before
    assert registry.peek_rollback("m") is None
