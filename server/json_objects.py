"""JSON objects that name a key twice are refused: which value was meant is not known, and two readers
of one document (a filter in front, the server) could each take another."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["DuplicateKey", "json_error", "unique_keys"]


class DuplicateKey(ValueError):
    """A JSON object named ``key`` more than once."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key[:64]!r} is given twice in one object")
        self.key = key


def json_error(exc: ValueError) -> str:
    """What is wrong with a JSON text ``json.loads`` refused, in the document's terms.

    Python refuses integers of more than ``sys.get_int_max_str_digits()`` digits with advice for
    its own programmers, which a client cannot follow.
    """
    if "int_max_str_digits" in str(exc):
        return f"an integer has more than {sys.get_int_max_str_digits():,} digits"
    return str(exc)


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook``: the object, or DuplicateKey."""
    document = dict(pairs)
    if len(document) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return document
