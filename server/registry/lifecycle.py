"""The rules of a model's lifecycle, as pure functions from one ``ModelState`` to the next.

Each function either refuses (raising the domain error a caller sees), returns the same
state object when the call changes nothing, or returns the new state with a ``Switch``
appended to its history.  Whether a version exists is a question for the disk, so it
comes in as ``exists``; everything else is decided from the state alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from regserve.server.errors import FailedPrecondition, InvalidInput, VersionFrozen
from regserve.server.registry.state import ModelState, Switch, utc_timestamp, version_number

__all__ = [
    "delete",
    "freeze",
    "promote",
    "refuse_if_frozen",
    "refuse_if_routed",
    "rollback",
    "rollback_target",
    "set_split",
    "unfreeze",
]

Exists = Callable[[str], bool]
"""Whether the model has a complete stored version of that name."""


def _record(
    state: ModelState,
    action: str,
    old: str | None,
    new: str | None,
    reason: str,
    *,
    weights: Mapping[str, float] | None = None,
    **changes,
) -> ModelState:
    """``state`` with ``changes`` applied and the switch appended; ``weights`` only for a split."""
    switch = Switch(utc_timestamp(), action, old, new, reason, split=weights)
    return replace(state, **changes, history=(*state.history, switch))


def refuse_if_frozen(state: ModelState, model: str, version: str, field: str = "version") -> None:
    """Raise VERSION_FROZEN when ``version`` is frozen."""
    if version in state.frozen:
        raise VersionFrozen(model, version, field=field, advice="unfreeze it first")


def refuse_if_routed(state: ModelState, model: str, version: str) -> None:
    """Raise VERSION_SERVING or VERSION_IN_SPLIT when requests can reach ``version`` without naming it."""
    if state.serving == version:
        raise FailedPrecondition(
            f"Version {version} of model {model!r} is serving; promote another first.",
            reason="VERSION_SERVING",
            violations=[("version", f"version {version} is the serving version")],
            metadata={"model": model, "version": version},
        )
    if version in state.split:
        raise FailedPrecondition(
            f"Version {version} of model {model!r} is in the traffic split; change it first.",
            reason="VERSION_IN_SPLIT",
            violations=[("version", f"version {version} is an arm of the traffic split")],
            metadata={"model": model, "version": version},
        )


def promote(state: ModelState, model: str, version: str, reason: str) -> ModelState:
    """Serve ``version``; the old serving version goes on top of the rollback stack.

    A promotion ends any A/B test: the split is cleared.  Promoting the serving version
    while no split is set changes nothing.
    """
    refuse_if_frozen(state, model, version)
    old = state.serving
    if old == version and not state.split:
        return state
    previous = list(state.previous)
    if old is not None and old != version:
        previous = [v for v in previous if v != old] + [old]
    previous = [v for v in previous if v != version]
    return _record(state, "promote", old, version, reason, serving=version, previous=tuple(previous), split={})


def rollback_target(state: ModelState, exists: Exists) -> tuple[str | None, tuple[str, ...]]:
    """The version a rollback would serve, and the stack left after popping it.

    Versions skipped on the way (deleted or frozen) leave the stack.
    """
    stack = list(state.previous)
    while stack:
        candidate = stack.pop()
        usable = candidate != state.serving and candidate not in state.frozen
        if usable and exists(candidate):
            return candidate, tuple(stack)
    return None, ()


def rollback(state: ModelState, model: str, reason: str, exists: Exists) -> ModelState:
    """Serve the most recent previous version still present and not frozen; clear the split."""
    target, stack = rollback_target(state, exists)
    if target is None:
        raise FailedPrecondition(
            f"Model {model!r} has no previous version to roll back to.",
            reason="NO_PREVIOUS_VERSION",
            metadata={"model": model},
        )
    return _record(state, "rollback", state.serving, target, reason, serving=target, previous=stack, split={})


def freeze(state: ModelState, model: str, version: str, reason: str) -> ModelState:
    """Exclude ``version`` from routing and prediction; freezing a frozen version changes nothing."""
    if version in state.frozen:
        return state
    refuse_if_routed(state, model, version)
    frozen = tuple(sorted([*state.frozen, version], key=version_number))
    return _record(state, "freeze", None, version, reason, frozen=frozen)


def unfreeze(state: ModelState, version: str, reason: str) -> ModelState:
    """Allow ``version`` to be routed again; unfreezing a version not frozen changes nothing."""
    if version not in state.frozen:
        return state
    frozen = tuple(v for v in state.frozen if v != version)
    return _record(state, "unfreeze", None, version, reason, frozen=frozen)


def set_split(state: ModelState, model: str, split: Mapping[str, float], reason: str, exists: Exists) -> ModelState:
    """Set the traffic split to ``split`` (already checked by ``check_split_weights``); empty clears it."""
    for version in split:
        if not exists(version):
            # A weight naming no version is a bad argument of this call, not a lookup.
            raise InvalidInput(
                f"The traffic split names version {version!r}, which model {model!r} does not have.",
                reason="UNKNOWN_VERSION",
                violations=[(f"weights[{version}]", f"no version {version!r} of model {model!r}")],
                metadata={"model": model, "version": version},
            )
    for version in split:
        refuse_if_frozen(state, model, version, f"weights[{version}]")
    if split == state.split:
        return state
    return _record(state, "split", state.serving, None, reason, weights=split, split=split)


def delete(state: ModelState, model: str, version: str, reason: str) -> ModelState:
    """Forget ``version``, which must be neither serving nor in the split."""
    refuse_if_routed(state, model, version)
    return _record(
        state,
        "delete",
        None,
        version,
        reason,
        previous=tuple(v for v in state.previous if v != version),
        frozen=tuple(v for v in state.frozen if v != version),
    )
