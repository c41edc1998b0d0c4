"""A damaged file of one model is reported with that model and never fails the others:
an unreadable state (CORRUPT_STATE), unreadable metadata (CORRUPT_METADATA), garbled
weights whose checksum was fixed up (CORRUPT_WEIGHTS), a serving version that cannot load."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import numpy as np
import pytest

from regserve.server.errors import FailedPrecondition, IntegrityError, NotFound, Unavailable
from regserve.server.models.estimator import LinearModel
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.store import ModelStore


def _estimator(seed: int, kind: str = "linear") -> LinearModel:
    rng = np.random.default_rng(seed)
    if kind == "logistic":
        return LinearModel("logistic", rng.normal(size=(1, 3)), rng.normal(size=(1,)), classes=("no", "yes"))
    return LinearModel("linear", rng.normal(size=(1, 3)), rng.normal(size=(1,)))


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "root")


def _new_store(root: str) -> ModelStore:
    store = ModelStore(ModelRegistry(root))
    store.load_all()
    return store


@pytest.fixture
def store(root):
    """Models "a", "b" (two versions, v2 serving) and "c" (a classifier)."""
    store = _new_store(root)
    for model in ("a", "b"):
        for seed in range(2):
            store.add_version(model, _estimator(seed), {})
    store.add_version("c", _estimator(5, "logistic"), {})
    return store


def _path(root: str, model: str, *parts: str) -> str:
    return os.path.join(root, "models", model, *parts)


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


CORRUPT_STATES = {
    "not json": b"{not json",
    "not an object": b"[1, 2]",
    "generation text": b'{"generation": "seven"}',
    "history of numbers": b'{"history": [1, 2]}',
    "split weight text": b'{"serving": "v1", "split": {"v1": "half"}}',
    "serving a number": b'{"serving": 2}',
    "bad timestamp": b'{"history": [{"at": "yesterday", "action": "promote"}]}',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("content", CORRUPT_STATES.values(), ids=list(CORRUPT_STATES))
def test_a_corrupt_state_is_reported_with_its_model_and_the_others_answer(content, store, root):
    _write(_path(root, "b", "state.json"), content)
    reports = {r.model: r for r in store.reports()}
    assert sorted(reports) == ["a", "b", "c"]
    broken = reports["b"]
    assert broken.problem is not None and broken.problem.reason == "CORRUPT_STATE"
    assert "'b'" in broken.problem.message
    assert broken.version_names == ("v1", "v2") and broken.state.serving is None
    for model in ("a", "c"):
        assert reports[model].problem is None and reports[model].serving_problem is None
    assert reports["a"].state.serving == "v2"
    with pytest.raises(IntegrityError) as info:
        store.read_state("b")
    assert info.value.reason == "CORRUPT_STATE"
    # The model keeps the routing it had; a change of it is refused while its state is unreadable.
    assert store.resolve("b").version == "v2"
    with pytest.raises(FailedPrecondition):
        store.promote("b", "v1")


def test_a_model_whose_state_is_corrupt_at_start_says_why_it_cannot_answer(store, root):
    _write(_path(root, "b", "state.json"), b"{not json")
    restarted = _new_store(root)
    assert restarted.resolve("a").version == "v2"
    with pytest.raises(Unavailable) as info:
        restarted.resolve("b")
    error = info.value
    assert error.reason == "NO_SERVING_VERSION" and error.metadata["cause"] == "CORRUPT_STATE"
    assert "CORRUPT_STATE" in error.message


def _fix_checksum(root: str, model: str, version: str, payload: bytes) -> None:
    """Replace a version's weights and fix its checksum up, as an attacker or a bad copy would."""
    _write(_path(root, model, "versions", version, "weights.npz"), payload)
    meta_path = _path(root, model, "versions", version, "metadata.json")
    with open(meta_path) as f:
        metadata = json.load(f)
    metadata["sha256"] = hashlib.sha256(payload).hexdigest()
    _write(meta_path, json.dumps(metadata).encode())


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _stored_arrays(root: str, model: str, version: str) -> dict[str, np.ndarray]:
    with np.load(_path(root, model, "versions", version, "weights.npz"), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _zip_with_bad_member() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("coef.npy", b"\x93NUMPY garbage")
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("coef.npy", b"\0" * (8 * 1024 * 1024))
    return buffer.getvalue()


def _garbled(root: str) -> dict[str, bytes]:
    good = _npz(**_stored_arrays(root, "a", "v1"))
    stored = _stored_arrays(root, "a", "v1")
    classifier = _stored_arrays(root, "c", "v1")
    return {
        "random bytes": np.random.default_rng(0).bytes(2048),
        "truncated": good[: len(good) // 2],
        "flipped middle": good[:200] + bytes(b ^ 0x5A for b in good[200:400]) + good[400:],
        "bad member": _zip_with_bad_member(),
        "zip bomb": _zip_bomb(),
        "empty": b"",
        "coef as text": _npz(**{**stored, "coef": np.array([["a", "b", "c"]])}),
        "coef of wrong shape": _npz(**{**stored, "coef": np.ones((2, 2, 2))}),
        "no coef": _npz(**{k: v for k, v in stored.items() if k != "coef"}),
        "probe as text": _npz(**{**stored, "probe_inputs": np.array([["x"] * 3] * 8)}),
        "probe of wrong width": _npz(**{**stored, "probe_inputs": np.ones((8, 5))}),
        "classifier without classes": _npz(**{k: v for k, v in classifier.items() if k != "classes"}),
    }


GARBLES = [
    "random bytes",
    "truncated",
    "flipped middle",
    "bad member",
    "zip bomb",
    "empty",
    "coef as text",
    "coef of wrong shape",
    "no coef",
    "probe as text",
    "probe of wrong width",
    "classifier without classes",
]


@pytest.mark.parametrize("garble", GARBLES)
def test_garbled_weights_with_a_fixed_checksum_answer_corrupt_weights(garble, store, root):
    model = "c" if garble == "classifier without classes" else "a"
    _fix_checksum(root, model, "v1", _garbled(root)[garble])
    with pytest.raises(IntegrityError) as info:
        store.promote(model, "v1")
    assert info.value.reason == "CORRUPT_WEIGHTS", info.value.message
    assert info.value.metadata == {"model": model, "version": "v1"}
    with pytest.raises(IntegrityError) as info:
        _new_store(root).resolve(model, "v1")  # a fresh store: this one keeps the copy it verified
    assert info.value.reason == "CORRUPT_WEIGHTS"
    if model == "a":
        assert store.resolve("a").version == "v2"


DAMAGED_METADATA = {
    "not json": (b"{not json", "CORRUPT_METADATA"),
    "not an object": (b'"text"', "CORRUPT_METADATA"),
    "no checksum": (b'{"kind": "linear"}', "CORRUPT_METADATA"),
    "negative sample count": (None, "CORRUPT_METADATA"),
    "bad creation time": (None, "CORRUPT_METADATA"),
    "missing": (b"", "INCOMPLETE_VERSION"),
}


def _damage_metadata(root: str, case: str) -> None:
    path = _path(root, "a", "versions", "v1", "metadata.json")
    content = DAMAGED_METADATA[case][0]
    if case == "missing":
        os.unlink(path)
        return
    if content is None:
        with open(path) as f:
            metadata = json.load(f)
        metadata.update({"n_samples": -3} if case == "negative sample count" else {"created_at": "noon"})
        content = json.dumps(metadata).encode()
    _write(path, content)


@pytest.mark.parametrize("case", DAMAGED_METADATA, ids=list(DAMAGED_METADATA))
def test_a_version_with_damaged_metadata_is_reported_not_dropped(case, store, root):
    _damage_metadata(root, case)
    reason = DAMAGED_METADATA[case][1]
    report = store.report("a")
    assert report.version_names == ("v1", "v2")
    assert [m.version for m in report.versions] == ["v2"]
    assert report.version_problem("v1").reason == reason
    assert report.version_problem("v2") is None and report.serving_problem is None
    for call in (lambda: _new_store(root).resolve("a", "v1"), lambda: store.promote("a", "v1")):
        with pytest.raises(NotFound) as info:
            call()
        assert info.value.reason == reason
    # A damaged version can be deleted, which is how an operator clears it.
    assert store.delete_version("a", "v1", "damaged").history[-1].to_version == "v1"
    assert store.report("a").version_names == ("v2",)


def test_a_restart_with_a_corrupt_serving_version_says_why_it_is_not_served(store, root):
    weights = _path(root, "a", "versions", "v2", "weights.npz")
    with open(weights, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    restarted = _new_store(root)
    with pytest.raises(Unavailable) as info:
        restarted.resolve("a")
    error = info.value
    assert error.reason == "NO_SERVING_VERSION"
    assert error.metadata == {"model": "a", "version": "v2", "cause": "CHECKSUM_MISMATCH"}
    assert "v2" in error.message and "CHECKSUM_MISMATCH" in error.message
    report = restarted.report("a")
    assert report.serving_problem is not None and report.serving_problem.reason == "CHECKSUM_MISMATCH"
    assert report.version_problem("v1") is None
    assert restarted.report("b").serving_problem is None
    # Promoting a sound version clears the problem.
    restarted.promote("a", "v1", "v2 is damaged")
    assert restarted.resolve("a").version == "v1" and restarted.report("a").serving_problem is None


def test_a_restart_with_damaged_serving_metadata_says_why(store, root):
    _write(_path(root, "a", "versions", "v2", "metadata.json"), b"{}")
    restarted = _new_store(root)
    with pytest.raises(Unavailable) as info:
        restarted.resolve("a")
    assert info.value.metadata["cause"] == "CORRUPT_METADATA"
    assert restarted.report("a").serving_problem.reason == "CORRUPT_METADATA"
