"""What a ``state.json`` or ``metadata.json`` read from disk must hold before the code uses it.

The registry writes these files itself, but a disk, a copy or a hand edit can damage
them.  Each check raises ValueError naming the first key whose value has a type or
range nothing in regserve can use, so a damaged file is reported as such (CORRUPT_STATE,
CORRUPT_METADATA) where it is read, and never fails a listing of other models or
versions later on.  Keys no check names are carried along unread.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["check_metadata_json", "check_state_json"]

Check = Callable[[Any], bool]

_UINT32 = 2**32
_UINT64 = 2**64
_SHA256 = re.compile(r"[0-9a-f]{64}")
# RFC 3339 as protobuf's Timestamp reads it; the registry writes ``2026-01-02T03:04:05.678Z``.
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


def _is_int(value: object, upper: int = _UINT64) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < upper


def _is_uint32(value: object) -> bool:
    return _is_int(value, _UINT32)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _list_of(check: Check) -> Check:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _mapping_of(check: Check) -> Check:
    return lambda value: isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())


def _record(fields: Mapping[str, Check], required: bool = False) -> Check:
    """A JSON object whose ``fields`` pass their checks; absent fields pass unless ``required``."""

    def check(value: object) -> bool:
        if not isinstance(value, dict):
            return False
        return all((name in value or not required) and check(value.get(name)) for name, check in fields.items())

    return check


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_timestamp(value: object) -> bool:
    return isinstance(value, str) and _TIMESTAMP.fullmatch(value) is not None


def _is_weight(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _is_matrix(value: object) -> bool:
    """A list of rows of numbers, every row as long as the first."""
    if not isinstance(value, list):
        return False
    width = len(value[0]) if value and isinstance(value[0], list) else 0
    return all(isinstance(row, list) and len(row) == width and all(map(_is_number, row)) for row in value)


_text = _optional(_is_str)
_names = _optional(_list_of(_is_str))
_weights = _optional(_mapping_of(_is_weight))

_SWITCH = _record({"at": _optional(_is_timestamp), "action": _text, "from": _text, "to": _text, "reason": _text})
_STATE = {
    "generation": _is_int,
    "serving": _text,
    "previous": _names,
    "frozen": _names,
    "split": _weights,
    "history": _optional(_list_of(lambda entry: _SWITCH(entry) and _weights(entry.get("split")))),
    "last_version": _is_int,
}

_PER_CLASS = _record(
    {
        "label": lambda v: isinstance(v, str | int),
        "precision": _optional(_is_number),
        "recall": _optional(_is_number),
        "f1": _optional(_is_number),
        "support": _is_int,
    },
    required=True,
)
_EVALUATION = _optional(
    _record({"per_class": _optional(_list_of(_PER_CLASS)), "confusion_matrix": _optional(_is_matrix)})
)
_SPEC = {
    **{name: _optional(_is_number) for name in ("alpha", "c", "learning_rate", "tolerance", "validation_fraction")},
    **{name: _optional(lambda v: isinstance(v, bool)) for name in ("fit_intercept", "standardize")},
    **{name: _optional(_is_uint32) for name in ("epochs", "batch_size", "max_iterations", "cv_folds")},
    "seed": _optional(_is_int),
    "feature_names": _names,
    "class_labels": _names,
}
_METADATA = {
    "sha256": lambda v: isinstance(v, str) and _SHA256.fullmatch(v) is not None,
    "created_at": _optional(lambda v: v == "" or _is_timestamp(v)),
    "feature_names": _names,
    "classes": _names,
    **{name: _optional(_is_int) for name in ("n_samples", "n_train", "n_validation")},
    "duration_seconds": _optional(_is_number),
    "feature_stats": _optional(
        _list_of(_record({"name": _text, **{k: _optional(_is_number) for k in ("mean", "std", "min", "max")}}))
    ),
    "training_metrics": _EVALUATION,
    "validation_metrics": _EVALUATION,
    "cv_metrics": _optional(
        _record(
            {
                "folds": _is_uint32,
                "mean": _mapping_of(_optional(_is_number)),
                "std": _mapping_of(_optional(_is_number)),
            },
            required=True,
        )
    ),
    "solver_info": _optional(
        _record(
            {
                "rank": _optional(_is_uint32),
                "iterations": _optional(_is_uint32),
                "condition_number": _optional(_is_number),
                "final_loss": _optional(_is_number),
            }
        )
    ),
    "spec": _optional(_record(_SPEC)),
    "warnings": _optional(_list_of(_record({"reason": _is_str, "message": _is_str}, required=True))),
}


def _check(data: Mapping[str, Any], checks: Mapping[str, Check], required: tuple[str, ...] = ()) -> None:
    for key, check in checks.items():
        if key in data or key in required:
            if not check(data.get(key)):
                raise ValueError(f"the value of {key!r} is missing or invalid")


def check_state_json(data: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``data`` (a parsed ``state.json`` object) can be read as a ``ModelState``."""
    _check(data, _STATE)


def check_metadata_json(data: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``data`` (a parsed ``metadata.json`` object) can describe a version.

    The checksum is required; every other key may be absent.
    """
    _check(data, _METADATA, required=("sha256",))
