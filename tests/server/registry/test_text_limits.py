"""Bounded free text: over-long reasons, names and keys are refused before anything is stored,
and ``state.json`` stays bounded in bytes however long the reasons of its history."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from regserve.server.errors import InvalidInput
from regserve.server.models.estimator import LinearModel
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.state import ModelState, Switch
from regserve.server.registry.state_file import STATE_MAX_BYTES, encode_state
from regserve.server.registry.store import ModelStore
from regserve.server.registry.text_limits import (
    REASON_MAX,
    ROUTING_KEY_MAX,
    VERSION_NAME_MAX,
    check_length,
    check_lengths,
    shown,
)

HUGE = "r" * (30 * 1024 * 1024)  # the 30 MiB reason of the report


def _estimator(seed: int) -> LinearModel:
    rng = np.random.default_rng(seed)
    return LinearModel("linear", rng.normal(size=(1, 3)), rng.normal(size=(1,)))


@pytest.fixture
def store(tmp_path):
    store = ModelStore(ModelRegistry(tmp_path / "root"))
    store.load_all()
    for seed in range(3):
        store.add_version("m", _estimator(seed), {})
    return store


def _files(root) -> dict[str, bytes]:
    """Every file under the registry root, by path, with its bytes."""
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[path] = f.read()
    return found


def _expect_too_long(call, field: str, limit: int) -> None:
    with pytest.raises(InvalidInput) as info:
        call()
    error = info.value
    assert error.reason == "FIELD_TOO_LONG"
    assert error.violations[0][0] == field and str(limit) in error.violations[0][1]
    assert error.metadata["limit"] == str(limit)
    assert len(error.message) < 200  # the text is never echoed back


CHANGES = {
    "promote": lambda s, text: s.promote("m", "v1", text),
    "rollback": lambda s, text: s.rollback("m", text),
    "freeze": lambda s, text: s.freeze("m", "v1", text),
    "unfreeze": lambda s, text: s.unfreeze("m", "v1", text),
    "split": lambda s, text: s.set_split("m", {"v1": 1, "v2": 1}, text),
    "delete": lambda s, text: s.delete_version("m", "v1", text),
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_a_30_mib_reason_is_refused_and_nothing_is_written(change, store, tmp_path):
    before = _files(tmp_path / "root")
    _expect_too_long(lambda: CHANGES[change](store, HUGE), "reason", REASON_MAX)
    assert _files(tmp_path / "root") == before
    assert store.resolve("m").version == "v3"


def test_a_reason_of_the_limit_is_kept_whole(store):
    reason = "é" * REASON_MAX
    assert store.promote("m", "v1", reason).history[-1].reason == reason


@pytest.mark.parametrize(
    ("call", "field", "limit"),
    [
        (lambda s: s.promote("m", "v" + "1" * 40), "version", VERSION_NAME_MAX),
        (lambda s: s.freeze("m", "v" * 10_000), "version", VERSION_NAME_MAX),
        (lambda s: s.delete_version("m", "v" * 10_000), "version", VERSION_NAME_MAX),
        (lambda s: s.set_split("m", {"v1": 1, "x" * 10_000: 1}), "weights", VERSION_NAME_MAX),
        (lambda s: s.resolve("m", "v" * 10_000), "version", VERSION_NAME_MAX),
        (lambda s: s.resolve("m", routing_key="k" * 10_000), "routing_key", ROUTING_KEY_MAX),
        (lambda s: s.resolve("x" * 10_000), "model", 64),
    ],
    ids=["promote", "freeze", "delete", "split key", "resolve version", "routing key", "unknown model"],
)
def test_over_long_names_and_keys_are_refused_without_being_echoed(call, field, limit, store, tmp_path):
    before = _files(tmp_path / "root")
    _expect_too_long(lambda: call(store), field, limit)
    assert _files(tmp_path / "root") == before


def test_an_over_long_model_name_is_not_echoed(store):
    with pytest.raises(InvalidInput) as info:
        store.promote("m" * 100_000, "v1")
    assert info.value.reason == "INVALID_MODEL_NAME" and len(info.value.message) < 300


def test_the_state_file_stays_bounded_after_many_long_reason_changes(store, tmp_path):
    path = tmp_path / "root" / "models" / "m" / "state.json"
    # Astral characters are the worst case: JSON writes each as a 12-byte surrogate pair, so
    # about 20 such entries fill the budget; 60 changes go well past it.
    reason = "\U0001f600" * REASON_MAX
    sizes = []
    for i in range(60):
        store.set_split("m", {"v1": 1 + i % 7, "v2": 1}, reason)
        sizes.append(path.stat().st_size)
    assert max(sizes) <= STATE_MAX_BYTES
    state = store.read_state("m")
    assert 1 <= len(state.history) < 60
    assert state.history[-1].reason == reason  # the newest entry is whole
    assert [v for v in state.history[-1].split] == ["v1", "v2"]


def test_an_old_oversized_state_is_trimmed_by_the_next_change(store, tmp_path):
    path = tmp_path / "root" / "models" / "m" / "state.json"
    stored = json.loads(path.read_text())
    reason = "r" * (8 * 1024 * 1024)  # written before reasons were limited
    old_entry = {"at": "2026-01-02T03:04:05.678Z", "action": "promote", "from": None, "to": "v1", "reason": reason}
    stored["history"] = [old_entry] * 2 + stored["history"]
    path.write_text(json.dumps(stored))
    assert path.stat().st_size > 2 * len(reason)
    store.promote("m", "v2", "after the attack")
    assert path.stat().st_size <= STATE_MAX_BYTES
    assert store.read_state("m").history[-1].reason == "after the attack"


def test_encoding_keeps_the_newest_entry_even_past_the_budget():
    entry = Switch("2026-01-02T03:04:05.678Z", "promote", None, "v1", "x" * (2 * STATE_MAX_BYTES))
    state, data = encode_state(ModelState(history=(entry, entry)))
    assert state.history == (entry,) and state.generation == 1
    assert ModelState.from_json(json.loads(data)) == state


def test_length_helpers():
    assert check_length("abc", "f", 3) == "abc"
    with pytest.raises(InvalidInput) as info:
        check_lengths(["a", "bb", "ccc"], "names", 2)
    assert info.value.violations[0][0] == "names[2]"
    assert shown("abc") == "'abc'"
    assert shown("x" * 100, 4) == "'xxxx'... (100 characters)"


def test_an_oversized_state_from_before_the_bound_is_trimmed_at_start(store, tmp_path):
    path = tmp_path / "root" / "models" / "m" / "state.json"
    stored = json.loads(path.read_text())
    entry = {"at": "2026-01-02T03:04:05.678Z", "action": "promote", "from": None, "to": "v1", "reason": "r" * 10**6}
    stored["history"] = [entry, entry, *stored["history"]]
    path.write_text(json.dumps(stored))
    generation = stored["generation"]
    ModelRegistry(tmp_path / "root")
    assert path.stat().st_size <= STATE_MAX_BYTES
    state = ModelStore(ModelRegistry(tmp_path / "root")).read_state("m")
    assert state.generation == generation + 1 and state.serving == "v3"
    assert all(len(s.reason or "") < 1000 for s in state.history)
