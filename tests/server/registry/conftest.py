"""Registries on both backends: a directory under tmp_path, and a bucket of a real S3 API on loopback.

The S3 API is moto's server mode, started once per session on 127.0.0.1 with a port
the OS picks; each test gets a bucket of its own.  The AWS_* variables point every
S3 client of the session (and the servers it starts) at it.
"""

from __future__ import annotations

import itertools
import logging
import os

import pytest

from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.storage import LocalStorage, ObjectStorage

_BUCKETS = itertools.count(1)


@pytest.fixture(scope="session")
def s3_endpoint():
    """The endpoint URL of a moto S3 server on loopback, with the AWS_* variables set for it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    settings = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield endpoint
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()


@pytest.fixture
def s3_url(s3_endpoint):
    """``s3://<a new bucket>/registry``."""
    import s3fs

    bucket = f"regserve-test-{next(_BUCKETS)}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/registry"


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
