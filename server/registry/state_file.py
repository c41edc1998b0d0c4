"""Parsing and encoding a model's ``state.json``, bounded in entries and in bytes.

A state that cannot be read (not JSON, not an object, values of the wrong type, or an
error of the storage) raises FAILED_PRECONDITION ``CORRUPT_STATE`` naming the model,
so a caller can report that model and go on with the others.  A state is written
with its rollback stack and history trimmed to their limits, and with the oldest
history entries dropped until the file fits ``STATE_MAX_BYTES``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from regserve.server.errors import IntegrityError
from regserve.server.registry.file_checks import check_state_json
from regserve.server.registry.state import ModelState

__all__ = ["HISTORY_LIMIT", "PREVIOUS_LIMIT", "STATE_MAX_BYTES", "encode_state", "parse_state", "parse_state_json"]

HISTORY_LIMIT = 100
"""Most history entries kept."""
PREVIOUS_LIMIT = 100
"""Most versions kept on the rollback stack."""
STATE_MAX_BYTES = 256 * 1024
"""Past this size the oldest history entries are dropped (the newest one is always kept)."""


def corrupt_state(model: str, detail: str) -> IntegrityError:
    """The CORRUPT_STATE error of ``model``; ``detail`` says what is wrong."""
    return IntegrityError(
        f"The serving state of model {model!r} is unreadable: {detail}.",
        reason="CORRUPT_STATE",
        metadata={"model": model},
    )


def parse_state_json(data: bytes | None, model: str) -> dict[str, Any]:
    """The JSON object stored as ``data``; empty when there is no state yet (``data`` is None)."""
    if data is None:
        return {}
    try:
        stored = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise corrupt_state(model, "state.json is not JSON") from exc
    if not isinstance(stored, dict):
        raise corrupt_state(model, "state.json holds no JSON object")
    return stored


def parse_state(data: bytes | None, model: str) -> ModelState:
    """The serving state stored as ``data``, checked; the default state when there is none yet."""
    stored = parse_state_json(data, model)
    try:
        check_state_json(stored)
    except ValueError as exc:
        raise corrupt_state(model, f"state.json is invalid: {exc}") from exc
    return ModelState.from_json(stored)


def _encoded(value: Any) -> bytes:
    # Compact: the C encoder is used only without indentation.
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def encode_state(state: ModelState) -> tuple[ModelState, bytes]:
    """``state`` as the next generation with its lists trimmed, and the bytes to store."""
    state = replace(
        state,
        generation=state.generation + 1,
        history=state.history[-HISTORY_LIMIT:],
        previous=state.previous[-PREVIOUS_LIMIT:],
    )
    data = _encoded(state.to_json())
    if len(data) <= STATE_MAX_BYTES or len(state.history) < 2:
        return state, data
    excess, dropped = len(data) - STATE_MAX_BYTES, 0
    while excess > 0 and dropped < len(state.history) - 1:
        excess -= len(_encoded(state.history[dropped].to_json())) + 1  # the entry and its comma
        dropped += 1
    state = replace(state, history=state.history[dropped:])
    return state, _encoded(state.to_json())
