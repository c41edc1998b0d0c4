"""What the registry stores about a model and its versions, as frozen values.

``ModelState`` is a model's ``state.json`` (serving version, rollback stack, frozen
versions, traffic split, history of switches); ``VersionMetadata`` is a version's
``metadata.json``.  Both read and write exactly the JSON the registry has always stored,
so registries written before these types existed load unchanged, and keys this code
does not know are carried along untouched.  ``ModelState.role_of`` is the one place
that decides how a version takes part in routing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from regserve.server.errors import InvalidInput
from regserve.server.registry.text_limits import MODEL_NAME_MAX, shown

__all__ = [
    "ModelState",
    "ServingRole",
    "StateUpdate",
    "Switch",
    "VersionMetadata",
    "check_model_name",
    "utc_timestamp",
    "version_number",
]

_MODEL_NAME_PATTERN = f"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MODEL_NAME_MAX - 1}}}"
_MODEL_NAME = re.compile(_MODEL_NAME_PATTERN)
_VERSION = re.compile(r"v([1-9][0-9]*)")
_EMPTY: Mapping[str, Any] = MappingProxyType({})

ServingRole = Literal["serving", "in_split", "frozen", "available"]
"""How a version takes part in routing, as ``ModelState.role_of`` decides it."""


def version_number(version: str) -> int:
    """Return N for a version named ``"vN"``, or 0 when the name is not of that form."""
    match = _VERSION.fullmatch(version)
    return int(match.group(1)) if match else 0


def is_model_name(name: str) -> bool:
    """True when ``name`` is a valid model name (1-64 letters, digits, '_', '.', '-')."""
    return bool(_MODEL_NAME.fullmatch(name))


def check_model_name(model: str) -> str:
    """Return ``model`` if it is a valid model name, else raise INVALID_MODEL_NAME."""
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise InvalidInput(
            f"Model name {shown(model) if isinstance(model, str) else repr(model)} is invalid: use 1-{MODEL_NAME_MAX}"
            " letters, digits, '_', '.', '-', starting with a letter or digit.",
            reason="INVALID_MODEL_NAME",
            violations=[("model", f"must match ^{_MODEL_NAME_PATTERN}$")],
        )
    return model


def utc_timestamp() -> str:
    """Now, as the registry writes times: ISO 8601 in UTC to the millisecond, ending in ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _frozen_mapping(value: Mapping | None) -> Mapping:
    if value is None:
        return _EMPTY
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


def _unknown_keys(data: Mapping[str, Any], known: tuple[str, ...]) -> Mapping[str, Any]:
    return MappingProxyType({k: v for k, v in data.items() if k not in known})


@dataclass(frozen=True)
class Switch:
    """One entry of a model's history: a promotion, rollback, freeze, unfreeze, split or delete.

    Stored as ``{"at", "action", "from", "to", "reason"}``, plus ``"split"`` (version ->
    weight) for a split entry.  An entry read from a file keeps its values as stored:
    None where a key is missing.
    """

    at: str | None
    """When, as ``utc_timestamp`` writes it."""
    action: str | None
    from_version: str | None
    to_version: str | None
    reason: str | None = ""
    split: Mapping[str, float] | None = None
    """The new weights of a split entry (empty when the split was cleared); None otherwise."""
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)
    """Stored keys this code does not know, written back unchanged."""

    _KEYS = ("at", "action", "from", "to", "reason", "split")

    def __post_init__(self) -> None:
        if self.split is not None:
            object.__setattr__(self, "split", _frozen_mapping(self.split))
        object.__setattr__(self, "extra", _frozen_mapping(self.extra))

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Switch:
        """A history entry as stored in ``state.json``."""
        return cls(
            at=entry.get("at"),
            action=entry.get("action"),
            from_version=entry.get("from"),
            to_version=entry.get("to"),
            reason=entry.get("reason"),
            split=entry.get("split"),
            extra=_unknown_keys(entry, cls._KEYS),
        )

    def to_json(self) -> dict[str, Any]:
        """The entry as ``state.json`` stores it."""
        entry = {
            "at": self.at,
            "action": self.action,
            "from": self.from_version,
            "to": self.to_version,
            "reason": self.reason,
            **self.extra,
        }
        if self.split is not None:
            entry["split"] = dict(self.split)
        return entry


@dataclass(frozen=True)
class ModelState:
    """The serving state of one model, as ``state.json`` stores it."""

    generation: int = 0
    """Grows by one on every change, so replicas notice changes by polling it."""
    serving: str | None = None
    """The version that answers requests naming no version, or None."""
    previous: tuple[str, ...] = ()
    """The rollback stack, last on top (at most 100)."""
    frozen: tuple[str, ...] = ()
    """Versions excluded from routing and prediction, in version order."""
    split: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    """Traffic split, version -> relative weight; empty when off."""
    history: tuple[Switch, ...] = ()
    """The last 100 switches, oldest first."""
    last_version: int = 0
    """The highest version number ever given, so a deleted number is never reused."""
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)
    """Stored keys this code does not know, written back unchanged."""

    _KEYS = ("generation", "serving", "previous", "frozen", "split", "history", "last_version")

    def __post_init__(self) -> None:
        object.__setattr__(self, "previous", tuple(self.previous))
        object.__setattr__(self, "frozen", tuple(self.frozen))
        object.__setattr__(self, "history", tuple(self.history))
        object.__setattr__(self, "split", _frozen_mapping(self.split))
        object.__setattr__(self, "extra", _frozen_mapping(self.extra))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelState:
        """The state as stored in ``state.json``; a missing key takes its default."""
        return cls(
            generation=int(data.get("generation", 0)),
            serving=data.get("serving"),
            previous=data.get("previous") or (),
            frozen=data.get("frozen") or (),
            split=data.get("split") or {},
            history=tuple(Switch.from_json(entry) for entry in data.get("history") or ()),
            last_version=data.get("last_version", 0),
            extra=_unknown_keys(data, cls._KEYS),
        )

    def to_json(self) -> dict[str, Any]:
        """The state as ``state.json`` stores it."""
        return {
            **self.extra,
            "generation": self.generation,
            "serving": self.serving,
            "previous": list(self.previous),
            "frozen": list(self.frozen),
            "split": dict(self.split),
            "history": [entry.to_json() for entry in self.history],
            "last_version": self.last_version,
        }

    def role_of(self, version: str) -> ServingRole:
        """How ``version`` takes part in routing: an arm of the split first, then serving, then frozen."""
        if version in self.split:
            return "in_split"
        if self.serving == version:
            return "serving"
        return "frozen" if version in self.frozen else "available"


class StateUpdate(NamedTuple):
    """What a change of serving state left: the state, and whether anything was written."""

    state: ModelState
    changed: bool


def _text(value: object) -> str:
    return str(value) if value else ""


def _number(kind: type, value: object) -> Any:
    try:
        return kind(value or 0)
    except (TypeError, ValueError):  # a hand-edited file: show 0 rather than fail every listing
        return kind(0)


@dataclass(frozen=True)
class VersionMetadata:
    """A version's ``metadata.json``: the registry's facts and what training recorded.

    Build it with ``from_json``; every other field is read from ``raw``, which keeps the
    stored mapping whole (``to_json`` gives it back), so keys no code reads, such as
    ``source``, are never lost.  Absent keys read as empty: ``""``, 0, ``()``, None.
    """

    raw: Mapping[str, Any] = field(repr=False)
    """Everything stored, exactly as stored."""
    model: str = field(init=False)
    version: str = field(init=False)
    created_at: str = field(init=False)
    """ISO 8601 in UTC, as ``utc_timestamp`` writes it."""
    sha256: str = field(init=False)
    """Hex SHA-256 of ``weights.npz``, checked on every load."""
    kind: str = field(init=False)
    """``"linear"``, ``"ridge"`` or ``"logistic"``."""
    solver: str = field(init=False, repr=False)
    spec: Mapping[str, Any] = field(init=False, repr=False)
    """The training spec, field -> value (``TrainSpec.to_dict``)."""
    feature_names: tuple[str, ...] = field(init=False, repr=False)
    classes: tuple[str, ...] = field(init=False, repr=False)
    n_samples: int = field(init=False, repr=False)
    n_train: int = field(init=False, repr=False)
    n_validation: int = field(init=False, repr=False)
    fingerprint: str = field(init=False, repr=False)
    """Hex digest of the training data."""
    regserve_version: str = field(init=False, repr=False)
    duration_seconds: float = field(init=False, repr=False)
    feature_stats: tuple[Mapping[str, Any], ...] = field(init=False, repr=False)
    """Per feature: ``name``, ``mean``, ``std``, ``min``, ``max``."""
    training_metrics: Mapping[str, Any] | None = field(init=False, repr=False)
    validation_metrics: Mapping[str, Any] | None = field(init=False, repr=False)
    cv_metrics: Mapping[str, Any] | None = field(init=False, repr=False)
    """``folds``, ``mean`` and ``std`` (metric -> value), ``per_fold``."""
    solver_info: Mapping[str, Any] = field(init=False, repr=False)
    """What the solver reported: ``rank``, ``condition_number``, ``fallback``, ``iterations``, ..."""

    def __post_init__(self) -> None:
        raw = _frozen_mapping(self.raw)
        values = {
            "raw": raw,
            "model": _text(raw.get("model")),
            "version": _text(raw.get("version")),
            "created_at": _text(raw.get("created_at")),
            "sha256": _text(raw.get("sha256")),
            "kind": _text(raw.get("kind")),
            "solver": _text(raw.get("solver")),
            "spec": _frozen_mapping(raw.get("spec") or None),
            "feature_names": tuple(str(n) for n in raw.get("feature_names") or ()),
            "classes": tuple(str(c) for c in raw.get("classes") or ()),
            "n_samples": _number(int, raw.get("n_samples")),
            "n_train": _number(int, raw.get("n_train")),
            "n_validation": _number(int, raw.get("n_validation")),
            "fingerprint": _text(raw.get("fingerprint")),
            "regserve_version": _text(raw.get("regserve_version")),
            "duration_seconds": _number(float, raw.get("duration_seconds")),
            "feature_stats": tuple(raw.get("feature_stats") or ()),
            "training_metrics": raw.get("training_metrics") or None,
            "validation_metrics": raw.get("validation_metrics") or None,
            "cv_metrics": raw.get("cv_metrics") or None,
            "solver_info": _frozen_mapping(raw.get("solver_info") or None),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VersionMetadata:
        """The metadata as stored in ``metadata.json``."""
        return cls(MappingProxyType(dict(data)))

    def to_json(self) -> dict[str, Any]:
        """A copy of the stored mapping, ready for ``json.dumps``."""
        return dict(self.raw)
