"""Length limits of the free text a caller can have stored or echoed back.

Every name, label and reason that reaches ``state.json`` or ``metadata.json``, or comes
back in a reply or an error, is refused past its limit with INVALID_ARGUMENT
``FIELD_TOO_LONG`` before anything is read or stored, so no caller can grow the files
or the replies without bound.  Limits count characters (Unicode code points).
"""

from __future__ import annotations

from collections.abc import Iterable

from regserve.server.errors import InvalidInput

__all__ = [
    "CLASS_LABEL_MAX",
    "FEATURE_NAME_MAX",
    "MODEL_NAME_MAX",
    "REASON_MAX",
    "ROUTING_KEY_MAX",
    "SOURCE_MAX",
    "VERSION_NAME_MAX",
    "check_length",
    "check_lengths",
    "check_reason",
    "check_version_name",
    "shown",
    "too_long",
]

MODEL_NAME_MAX = 64
"""A model name: the name of its directory."""
VERSION_NAME_MAX = 32
"""A version name in a request or a split weight's key ("v" and a number)."""
REASON_MAX = 1024
"""The reason of a lifecycle change, kept in the model's history."""
FEATURE_NAME_MAX = 256
"""A feature name of a Train spec, or a feature key of a named Predict row."""
CLASS_LABEL_MAX = 256
"""A class label of a Train spec or chunk."""
ROUTING_KEY_MAX = 256
"""The key that picks the arm of a traffic split."""
SOURCE_MAX = 1024
"""Where a version came from (a Train spec's or a fitted version's lineage source), kept in its metadata."""


def too_long(field: str, limit: int, length: int, what: str = "") -> InvalidInput:
    """The FIELD_TOO_LONG error for ``field``, ``length`` characters long where ``limit`` is allowed.

    ``what`` names the offending text when it is not the whole field (a map key, say).
    """
    return InvalidInput(
        f"{what or field} is {length} characters long; at most {limit} are allowed.",
        reason="FIELD_TOO_LONG",
        violations=[(field, f"{what or 'the text'} must have at most {limit} characters")],
        metadata={"field": field, "limit": limit, "length": length},
    )


def check_length(value: str, field: str, limit: int) -> str:
    """Return ``value`` if it has at most ``limit`` characters, else raise FIELD_TOO_LONG."""
    if len(value) > limit:
        raise too_long(field, limit, len(value))
    return value


def check_lengths(values: Iterable[str], field: str, limit: int) -> None:
    """Raise FIELD_TOO_LONG naming ``field[i]`` for the first of ``values`` longer than ``limit``."""
    for index, value in enumerate(values):
        if len(value) > limit:
            raise too_long(f"{field}[{index}]", limit, len(value))


def check_reason(reason: str) -> str:
    """Return the reason of a lifecycle change if it fits ``REASON_MAX``."""
    return check_length(reason, "reason", REASON_MAX)


def check_version_name(version: str, field: str = "version") -> str:
    """Return a requested version name if it fits ``VERSION_NAME_MAX``."""
    return check_length(version, field, VERSION_NAME_MAX)


def shown(text: str, limit: int = MODEL_NAME_MAX) -> str:
    """``repr(text)`` for a message, cut after ``limit`` characters so no error echoes a huge value."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
