"""Checking one stored version: its ``metadata.json``, then its ``weights.npz`` against the checksum.

A version is published whole (see ``storage``), so a listed version with a file
missing or unreadable has been damaged since: it is reported (NOT_FOUND
``INCOMPLETE_VERSION`` or ``CORRUPT_METADATA``), never taken for a version that does
not exist.  Weights that fail their checksum answer ``CHECKSUM_MISMATCH``, bytes that
are no ``.npz`` of plain arrays ``CORRUPT_WEIGHTS``: both FAILED_PRECONDITION.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from regserve.server.errors import IntegrityError, NotFound
from regserve.server.registry.file_checks import check_metadata_json
from regserve.server.registry.files import npz_arrays
from regserve.server.registry.state import VersionMetadata

__all__ = ["METADATA", "WEIGHTS", "damaged", "parse_metadata", "parse_weights"]

WEIGHTS = "weights.npz"
METADATA = "metadata.json"


def damaged(model: str, version: str, reason: str, detail: str) -> NotFound:
    """The error of a listed version that cannot be used; ``detail`` says why."""
    return NotFound(
        f"Version {version} of model {model!r} cannot be used: {detail}.",
        reason=reason,
        violations=[("version", f"version {version} is damaged: {detail}")],
        metadata={"model": model, "version": version},
    )


def parse_metadata(data: bytes | None, files: frozenset[str], model: str, version: str) -> VersionMetadata:
    """The metadata of a listed version, from the bytes of its ``metadata.json`` and the names of its files.

    Raises NotFound ``INCOMPLETE_VERSION`` (a file is missing) or ``CORRUPT_METADATA``
    (not JSON, or values of the wrong type) when the version is damaged.
    """
    if data is None:
        raise damaged(model, version, "INCOMPLETE_VERSION", f"its {METADATA} is missing")
    try:
        metadata = json.loads(data)
        if not isinstance(metadata, dict):
            raise ValueError("it holds no JSON object")
        check_metadata_json(metadata)
    except (ValueError, RecursionError) as exc:
        raise damaged(model, version, "CORRUPT_METADATA", f"its {METADATA} is invalid: {exc}") from exc
    if WEIGHTS not in files:
        raise damaged(model, version, "INCOMPLETE_VERSION", f"its {WEIGHTS} is missing")
    return VersionMetadata.from_json(metadata)


def _integrity(model: str, version: str, reason: str, detail: str) -> IntegrityError:
    return IntegrityError(
        f"Version {version} of model {model!r} {detail}.",
        reason=reason,
        metadata={"model": model, "version": version},
    )


def parse_weights(payload: bytes | None, metadata: VersionMetadata, model: str, version: str) -> dict[str, np.ndarray]:
    """The arrays of a version's ``weights.npz`` bytes, once they match ``metadata.sha256``."""
    if payload is None:
        raise _integrity(model, version, "CORRUPT_WEIGHTS", "has no weights any more")
    # Hash and parse the same bytes, so nothing can change between check and use.
    if hashlib.sha256(payload).hexdigest() != metadata.sha256:
        raise _integrity(model, version, "CHECKSUM_MISMATCH", "fails its checksum")
    try:
        return npz_arrays(payload)
    except ValueError as exc:
        raise _integrity(model, version, "CORRUPT_WEIGHTS", "has unreadable weights") from exc
