"""Reading one stored version: its ``metadata.json``, then its ``weights.npz`` against the checksum.

A version directory is renamed into place whole, so a ``vN`` directory with a file
missing or unreadable has been damaged since: it is reported (NOT_FOUND
``INCOMPLETE_VERSION`` or ``CORRUPT_METADATA``), never taken for a version that does
not exist.  Weights that fail their checksum answer ``CHECKSUM_MISMATCH``, bytes that
are no ``.npz`` of plain arrays ``CORRUPT_WEIGHTS``: both FAILED_PRECONDITION.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from regserve.server.errors import IntegrityError, NotFound, UnknownVersion
from regserve.server.registry.file_checks import check_metadata_json
from regserve.server.registry.files import npz_arrays
from regserve.server.registry.state import VersionMetadata, version_number

__all__ = ["METADATA", "WEIGHTS", "read_metadata", "read_weights"]

WEIGHTS = "weights.npz"
METADATA = "metadata.json"


def _damaged(model: str, version: str, reason: str, detail: str) -> NotFound:
    return NotFound(
        f"Version {version} of model {model!r} cannot be used: {detail}.",
        reason=reason,
        violations=[("version", f"version {version} is damaged: {detail}")],
        metadata={"model": model, "version": version},
    )


def read_metadata(version_dir: str, model: str, version: str) -> VersionMetadata:
    """The metadata of the version stored in ``version_dir``.

    Raises UnknownVersion when there is no such version; NotFound
    ``INCOMPLETE_VERSION`` (a file is missing) or ``CORRUPT_METADATA`` (it cannot be
    read, is not JSON, or holds values of the wrong type) when it is damaged.
    """
    if not version_number(version):
        raise UnknownVersion(model, version)
    try:
        with open(os.path.join(version_dir, METADATA), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if not os.path.isdir(version_dir):
            raise UnknownVersion(model, version) from None
        raise _damaged(model, version, "INCOMPLETE_VERSION", f"its {METADATA} is missing") from None
    except OSError as exc:
        raise _damaged(model, version, "CORRUPT_METADATA", f"its {METADATA} cannot be read ({exc.strerror})") from exc
    try:
        metadata = json.loads(data)
        if not isinstance(metadata, dict):
            raise ValueError("it holds no JSON object")
        check_metadata_json(metadata)
    except (ValueError, RecursionError) as exc:
        raise _damaged(model, version, "CORRUPT_METADATA", f"its {METADATA} is invalid: {exc}") from exc
    if not os.path.isfile(os.path.join(version_dir, WEIGHTS)):
        raise _damaged(model, version, "INCOMPLETE_VERSION", f"its {WEIGHTS} is missing")
    return VersionMetadata.from_json(metadata)


def _integrity(model: str, version: str, reason: str, detail: str) -> IntegrityError:
    return IntegrityError(
        f"Version {version} of model {model!r} {detail}.",
        reason=reason,
        metadata={"model": model, "version": version},
    )


def read_weights(version_dir: str, metadata: VersionMetadata, model: str, version: str) -> dict[str, np.ndarray]:
    """The arrays of the version in ``version_dir``, once their bytes match ``metadata.sha256``."""
    try:
        with open(os.path.join(version_dir, WEIGHTS), "rb") as f:
            payload = f.read()
    except OSError as exc:
        raise _integrity(model, version, "CORRUPT_WEIGHTS", f"has unreadable weights ({exc.strerror})") from exc
    # Hash and parse the same bytes, so nothing can change between check and use.
    if hashlib.sha256(payload).hexdigest() != metadata.sha256:
        raise _integrity(model, version, "CHECKSUM_MISMATCH", "fails its checksum")
    try:
        return npz_arrays(payload)
    except ValueError as exc:
        raise _integrity(model, version, "CORRUPT_WEIGHTS", "has unreadable weights") from exc
