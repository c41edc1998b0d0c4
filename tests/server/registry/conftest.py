"""Registries on both backends: a directory under tmp_path, and a bucket of the S3 API on loopback.

The S3 API (``s3_endpoint``, ``s3_url``) comes from the suite's top-level conftest.
"""

from __future__ import annotations

import os

import pytest

from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.storage import LocalStorage, ObjectStorage


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    """Where a registry lives: a directory, or an S3 URL."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_url")


def raw_keys(registry: ModelRegistry, prefix: str = "models") -> list[str]:
    """Every object stored under ``prefix``, as the backend lists it."""
    return sorted(registry.storage.tags(prefix))


def raw_read(registry: ModelRegistry, key: str) -> bytes | None:
    blob = registry.storage.read(key)
    return blob.data if blob is not None else None


def raw_write(registry: ModelRegistry, key: str, data: bytes) -> None:
    """Overwrite an object behind the registry's back, as damage or another tool would."""
    storage = registry.storage
    if isinstance(storage, LocalStorage):
        path = os.path.join(storage.root, *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    else:
        assert isinstance(storage, ObjectStorage)
        storage.fs.pipe_file(f"{storage.bucket}/{storage.prefix}/{key}", data)


def raw_delete(registry: ModelRegistry, key: str) -> None:
    storage = registry.storage
    if isinstance(storage, LocalStorage):
        os.unlink(os.path.join(storage.root, *key.split("/")))
    else:
        assert isinstance(storage, ObjectStorage)
        storage.fs.rm_file(f"{storage.bucket}/{storage.prefix}/{key}")
