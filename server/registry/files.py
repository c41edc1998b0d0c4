"""Crash-safe files for the registry: atomic replacement, fsynced directories, npz arrays.

Everything is first written under a ``.tmp-*`` name in the target's directory, fsynced,
then renamed into place, so a reader sees the old file or the new one, never half of
one.  Leftovers of a crash keep their ``.tmp-`` prefix and are removed with
``remove_temporary``.  Arrays are stored with ``np.savez`` and read with
``allow_pickle=False``: pickle runs code.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "TMP_PREFIX",
    "atomic_write_bytes",
    "fsync_dir",
    "npz_arrays",
    "npz_bytes",
    "remove_temporary",
    "temporary_path",
]

TMP_PREFIX = ".tmp-"
"""Names starting with this are work in progress or crash leftovers, never registry content."""

_ARRAY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ARRAY_KINDS = "biufcU"  # bool, int, uint, float, complex, unicode: nothing that needs pickle


def temporary_path(directory: str, label: str = "") -> str:
    """A fresh ``.tmp-`` path inside ``directory`` (nothing is created)."""
    return os.path.join(directory, f"{TMP_PREFIX}{label}{uuid.uuid4().hex}")


def fsync_dir(path: str) -> None:
    """Flush a directory's entries (creations, renames) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file."""
    directory = os.path.dirname(path)
    tmp = temporary_path(directory)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def remove_temporary(directories: Iterable[str]) -> None:
    """Delete every ``.tmp-*`` entry of ``directories``; callers make sure none is in use."""
    for directory in directories:
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(directory):
                if name.startswith(TMP_PREFIX):
                    path = os.path.join(directory, name)
                    if os.path.isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The ``.npz`` file of ``arrays``; refuses names that are not identifiers and object dtypes.

    Raises
    ------
    ValueError
        An array name is not an identifier.
    TypeError
        An array's dtype would need pickle (object arrays, structured dtypes).
    """
    checked: dict[str, Any] = {}  # Any: np.savez's own keywords share its **kwds with the arrays
    for name, value in arrays.items():
        array = np.asarray(value)
        if not isinstance(name, str) or not _ARRAY_NAME.fullmatch(name):
            raise ValueError(f"array name {name!r} is not an identifier")
        if array.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"array {name!r} has dtype {array.dtype}, which would need pickle")
        checked[name] = array
    buffer = io.BytesIO()
    np.savez(buffer, **checked)
    return buffer.getvalue()


def npz_arrays(payload: bytes) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file's bytes, fully materialised, never unpickled.

    Raises ValueError, naming the cause, when the bytes are not such a file.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            # ``np.savez`` stores its members uncompressed: a member larger than the whole
            # file is a damaged or hostile archive, refused before anything is inflated.
            if any(member.file_size > len(payload) for member in archive.infolist()):
                raise ValueError("a member is larger than the archive")
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            return {name: np.array(npz[name]) for name in npz.files}
    except ValueError:
        raise
    # The zip and npy readers raise many types on damaged bytes (BadZipFile, KeyError,
    # EOFError, zlib.error, MemoryError for an absurd declared shape, ...): all mean "not an npz".
    except Exception as exc:
        raise ValueError(f"not an npz file of arrays: {type(exc).__name__}") from exc
