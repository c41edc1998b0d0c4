"""Tests of the typed registry state: exact JSON round trips and the one serving-role rule."""

from __future__ import annotations

import json

import pytest

from regserve.server.errors import InvalidInput
from regserve.server.registry.state import (
    ModelState,
    Switch,
    VersionMetadata,
    check_model_name,
    version_number,
)

# A state.json as the registry wrote it before the state was typed (compact, sorted keys),
# with a key this code does not know.
OLD_STATE = (
    '{"frozen":["v3"],"generation":9,"history":[{"action":"promote","at":"2026-01-02T03:04:05.678Z",'
    '"from":null,"reason":"first","to":"v1"},{"action":"split","at":"2026-01-02T03:05:00.000Z","from":"v1",'
    '"reason":"ab","split":{"v1":90.0,"v2":10.0},"to":null}],"last_version":4,"note":"kept",'
    '"previous":["v2"],"serving":"v1","split":{"v1":90.0,"v2":10.0}}'
)


def test_an_old_state_file_reads_and_writes_back_byte_for_byte():
    state = ModelState.from_json(json.loads(OLD_STATE))
    assert (state.generation, state.serving, state.previous, state.frozen) == (9, "v1", ("v2",), ("v3",))
    assert state.split == {"v1": 90.0, "v2": 10.0} and state.last_version == 4
    assert state.history[0] == Switch("2026-01-02T03:04:05.678Z", "promote", None, "v1", "first")
    assert state.history[1].split == {"v1": 90.0, "v2": 10.0} and state.history[1].to_version is None
    assert state.extra == {"note": "kept"}
    assert json.dumps(state.to_json(), sort_keys=True, separators=(",", ":")) == OLD_STATE


def test_a_state_missing_keys_takes_the_defaults():
    state = ModelState.from_json({"serving": "v2"})
    assert state == ModelState(serving="v2")
    assert state.to_json() == {
        "generation": 0,
        "serving": "v2",
        "previous": [],
        "frozen": [],
        "split": {},
        "history": [],
        "last_version": 0,
    }


def test_the_state_cannot_be_changed_in_place():
    state = ModelState.from_json(json.loads(OLD_STATE))
    with pytest.raises(AttributeError):
        state.serving = "v2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        state.split["v3"] = 1.0  # type: ignore[index]


def _state(**changes) -> ModelState:
    base = {"generation": 7, "serving": "v2", "previous": ["v1"], "frozen": ["v3"], "split": {}, "history": []}
    return ModelState.from_json({**base, **changes})


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (_state(), {"v1": "available", "v2": "serving", "v3": "frozen", "v4": "available"}),
        (_state(split={"v1": 90.0, "v4": 10.0}), {"v1": "in_split", "v2": "serving", "v3": "frozen", "v4": "in_split"}),
        (_state(serving=None), {"v1": "available", "v2": "available", "v3": "frozen", "v4": "available"}),
    ],
)
def test_version_serving_state_follows_split_then_serving_then_frozen(state, expected):
    assert {v: state.role_of(v) for v in expected} == expected


STORED_METADATA = {
    "model": "house",
    "version": "v2",
    "created_at": "2026-01-02T03:04:05.678Z",
    "sha256": "ab" * 32,
    "kind": "logistic",
    "solver": "newton",
    "spec": {"kind": "logistic", "alpha": 0.5},
    "n_samples": 150,
    "n_train": 120,
    "n_validation": 30,
    "n_features": 2,
    "feature_names": ["a", "b"],
    "classes": ["no", "yes"],
    "fingerprint": "cd" * 32,
    "feature_stats": [{"name": "a", "mean": 0.0, "std": 1.0, "min": -2.0, "max": 2.0}],
    "training_metrics": {"accuracy": 0.9},
    "validation_metrics": {"accuracy": 0.85},
    "cv_metrics": None,
    "solver_info": {"rank": 3, "iterations": 7},
    "duration_seconds": 0.25,
    "regserve_version": "1.0",
    "source": "bundled dataset iris.csv",
}


def test_version_metadata_reads_the_stored_keys_and_keeps_every_one():
    metadata = VersionMetadata.from_json(STORED_METADATA)
    assert (metadata.model, metadata.version, metadata.kind, metadata.solver) == ("house", "v2", "logistic", "newton")
    assert (metadata.n_samples, metadata.n_train, metadata.n_validation) == (150, 120, 30)
    assert metadata.feature_names == ("a", "b") and metadata.classes == ("no", "yes")
    assert metadata.spec == {"kind": "logistic", "alpha": 0.5} and metadata.solver_info["iterations"] == 7
    assert metadata.validation_metrics == {"accuracy": 0.85} and metadata.cv_metrics is None
    assert metadata.duration_seconds == 0.25 and metadata.created_at == "2026-01-02T03:04:05.678Z"
    assert metadata.raw["source"] == "bundled dataset iris.csv"
    assert metadata.to_json() == STORED_METADATA
    assert metadata == VersionMetadata.from_json(json.loads(json.dumps(STORED_METADATA)))


def test_version_metadata_reads_absent_or_unreadable_keys_as_empty():
    metadata = VersionMetadata.from_json({"version": "v1", "n_samples": "many"})
    assert (metadata.model, metadata.kind, metadata.sha256, metadata.n_samples) == ("", "", "", 0)
    assert metadata.feature_names == () and metadata.training_metrics is None and metadata.solver_info == {}
    assert metadata.to_json() == {"version": "v1", "n_samples": "many"}


def test_names():
    assert [version_number(v) for v in ("v1", "v10", "v0", "1", "v01", "x")] == [1, 10, 0, 0, 0, 0]
    assert check_model_name("house-2.b") == "house-2.b"
    with pytest.raises(InvalidInput) as info:
        check_model_name("../etc")
    assert info.value.reason == "INVALID_MODEL_NAME"
