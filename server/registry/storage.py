"""Where the registry's bytes live: a POSIX directory or an object store, behind one small interface.

Keys are ``/``-separated paths relative to the registry's root.  Every backend offers
the same operations: read an object with a tag that changes whenever its bytes do,
create an object only if it does not exist yet (S3 ``If-None-Match: *``), replace an
object only if it still carries a given tag (S3 ``If-Match``), list, delete, and
publish a group of files so that it appears whole or not at all.

``LocalStorage`` keeps the POSIX layout of earlier releases: a compare-and-swap holds
the ``fcntl.flock`` of the model's ``.lock`` file, a version directory is assembled
under a ``.tmp-*`` name and renamed into place.  ``ObjectStorage`` speaks to any
fsspec file system whose conditional writes it knows (S3 through s3fs); a version
is visible once its ``_complete`` marker object exists, which is written last and
deleted first.  ``open_storage`` picks one from a path or URL.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from regserve.server.errors import Unavailable
from regserve.server.registry.files import (
    TMP_PREFIX,
    atomic_write_bytes,
    fsync_dir,
    remove_temporary,
    temporary_path,
)

__all__ = [
    "COMPLETE",
    "SUPPORTED_SCHEMES",
    "Blob",
    "LocalStorage",
    "ObjectStorage",
    "S3_ATTEMPTS",
    "S3_CONNECT_TIMEOUT_SECONDS",
    "Storage",
    "check_location",
    "open_storage",
    "s3_client_config",
]

COMPLETE = "_complete"
"""The object that makes a published group visible on object storage; written last, deleted first."""

SUPPORTED_SCHEMES = ("file://", "s3://")
"""The URL schemes ``--model-dir`` accepts besides plain paths."""

_LOCK = ".lock"

S3_CONNECT_TIMEOUT_SECONDS = 3.0
"""How long one S3 request waits for its connection before it counts as failed."""

S3_READ_TIMEOUT_SECONDS = 5.0
"""How long one S3 request waits for the store's answer (botocore's default is 60 s): a store that
accepts connections and then hangs fails a call within about ``S3_ATTEMPTS`` times this."""

S3_ATTEMPTS = 3
"""Tries of one S3 request (botocore's standard retry mode) before the registry answers REGISTRY_UNAVAILABLE."""


@dataclass(frozen=True)
class Blob:
    """An object's bytes and the tag to pass to ``Storage.replace`` to change it."""

    data: bytes
    etag: str


class Storage(Protocol):
    """The operations the registry needs from where it keeps its files."""

    url: str
    """Where the registry lives, as the operator gave it."""

    def read(self, key: str) -> Blob | None:
        """The object at ``key`` with its tag, or None when there is none."""
        ...

    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if nothing is there; False when something is."""
        ...

    def replace(self, key: str, data: bytes, etag: str) -> bool:
        """Write ``data`` at ``key`` only if its tag is still ``etag``; False when it is not."""
        ...

    def children(self, prefix: str) -> list[str]:
        """Names of the sub-directories (prefixes) directly below ``prefix``."""
        ...

    def tags(self, prefix: str) -> dict[str, str | None]:
        """Every object below ``prefix``, with its tag when the listing gives one cheaply."""
        ...

    def published(self, prefix: str) -> dict[str, frozenset[str]]:
        """Each complete group directly below ``prefix``, with the names of its files."""
        ...

    def publish(self, prefix: str, files: Mapping[str, bytes]) -> bool:
        """Store ``files`` under ``prefix`` so they appear at once; False when ``prefix`` is taken."""
        ...

    def unpublish(self, prefix: str, names: frozenset[str]) -> None:
        """Take the group at ``prefix`` out of every listing first, then remove its files."""
        ...

    def clean(self, prefix: str) -> None:
        """Make sure ``prefix`` can be listed, and remove what a crash left below it (temporary files)."""
        ...


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _content_tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalStorage:
    """A POSIX directory; safe to share between processes of one host (or a volume with working flock)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = root
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise OSError(exc.errno, f"the registry directory {root} cannot be made: {exc.strerror}") from None

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    @contextlib.contextmanager
    def _lock(self, directory: str) -> Iterator[None]:
        """Hold the flock of ``directory``'s ``.lock`` file (exclusive across processes and threads).

        Temporary files are made only under it, so ``clean`` never removes one in use.
        """
        os.makedirs(directory, exist_ok=True)
        # Each call opens its own file description, so flock also excludes other threads.
        with open(os.path.join(directory, _LOCK), "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def read(self, key: str) -> Blob | None:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        # The bytes are the tag: a state never repeats, because its generation grows on every write.
        return Blob(data, _content_tag(data))

    def create(self, key: str, data: bytes) -> bool:
        with self._lock(os.path.dirname(self._path(key))):
            if os.path.exists(self._path(key)):
                return False
            atomic_write_bytes(self._path(key), data)
            return True

    def replace(self, key: str, data: bytes, etag: str) -> bool:
        with self._lock(os.path.dirname(self._path(key))):
            current = self.read(key)
            if current is None or current.etag != etag:
                return False
            atomic_write_bytes(self._path(key), data)
            return True

    def children(self, prefix: str) -> list[str]:
        directory = self._path(prefix)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith(TMP_PREFIX) and os.path.isdir(os.path.join(directory, n)))

    def tags(self, prefix: str) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        top = self._path(prefix)
        for directory, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(TMP_PREFIX)]
            relative = os.path.relpath(directory, self.root).replace(os.sep, "/")
            for name in names:
                if not name.startswith(TMP_PREFIX) and name != _LOCK:
                    found[_join(relative, name)] = None
        return found

    def published(self, prefix: str) -> dict[str, frozenset[str]]:
        directory = self._path(prefix)
        groups = {}
        for name in self.children(prefix):
            try:
                groups[name] = frozenset(os.listdir(os.path.join(directory, name)))
            except FileNotFoundError:  # deleted since it was listed
                continue
        return groups

    def publish(self, prefix: str, files: Mapping[str, bytes]) -> bool:
        target = self._path(prefix)
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        with self._lock(os.path.dirname(parent)):
            tmp = temporary_path(os.path.dirname(parent))
            os.mkdir(tmp)
            try:
                for name, data in files.items():
                    atomic_write_bytes(os.path.join(tmp, name), data)
                try:
                    # rename() onto an existing non-empty directory fails, so a group is never overwritten.
                    os.rename(tmp, target)
                except OSError:
                    if os.path.exists(target):
                        return False
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            fsync_dir(parent)
        return True

    def unpublish(self, prefix: str, names: frozenset[str]) -> None:
        target = self._path(prefix)
        parent = os.path.dirname(target)
        with self._lock(os.path.dirname(parent)):
            tmp = temporary_path(os.path.dirname(parent), "deleted-")
            # Renaming first takes the group out of every listing in one step.
            os.rename(target, tmp)
            fsync_dir(parent)
            shutil.rmtree(tmp, ignore_errors=True)

    def clean(self, prefix: str) -> None:
        os.makedirs(self._path(prefix), exist_ok=True)
        for model in self.children(prefix):
            directory = self._path(_join(prefix, model))
            try:
                with self._lock(directory):
                    remove_temporary([directory, os.path.join(directory, "versions")])
            except OSError:  # a read-only volume still serves; the leftovers stay ignored
                continue


def _precondition_failed(exc: BaseException) -> bool:
    """True when ``exc`` (as s3fs raises it) says a conditional write lost its race."""
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if not isinstance(response, dict):
        return False
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    # 409 ConditionalRequestConflict: another conditional write to the key was in progress.
    return code in {"PreconditionFailed", "ConditionalRequestConflict"} or status in {409, 412}


def s3_client_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The botocore ``Config`` settings of the registry's S3 client, given the process's environment.

    botocore's own default (legacy mode, 5 attempts with growing pauses) holds a call about
    9 s when the store refuses connections, and s3fs runs that up to 5 times over on a timeout;
    here one request is tried ``S3_ATTEMPTS`` times in all, each connection waited for
    ``S3_CONNECT_TIMEOUT_SECONDS`` and each answer ``S3_READ_TIMEOUT_SECONDS``.  AWS_MAX_ATTEMPTS
    and AWS_RETRY_MODE, when set, still choose.
    """
    retries: dict[str, Any] = {}
    if "AWS_RETRY_MODE" not in environ:
        retries["mode"] = "standard"
    if "AWS_MAX_ATTEMPTS" not in environ:
        retries["total_max_attempts"] = S3_ATTEMPTS
    return {"connect_timeout": S3_CONNECT_TIMEOUT_SECONDS, "read_timeout": S3_READ_TIMEOUT_SECONDS, "retries": retries}


class ObjectStorage:
    """An S3 bucket (or S3-compatible store) under a prefix, through s3fs.

    s3fs's listing cache is off, so every listing sees other replicas' writes.  The
    endpoint, keys and region come from the usual AWS settings (``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles);
    how long an unreachable store holds a call is bounded (``s3_client_config``).
    """

    def __init__(self, url: str, fs: Any = None) -> None:
        parts = urlsplit(url)
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]  # no type information

        # botocore's connection errors (refused, timed out, DNS) are no OSError.
        self._failures: tuple[type[BaseException], ...] = (OSError, BotoCoreError)
        if fs is None:
            import s3fs  # type: ignore[import-untyped]  # s3fs ships no type information

            fs = s3fs.S3FileSystem(
                skip_instance_cache=True, use_listings_cache=False, config_kwargs=s3_client_config(os.environ)
            )
            # botocore retries already (see s3_client_config); s3fs's own loop would multiply its tries.
            fs.retries = 1
        self.fs = fs
        with self._reachable():
            if not fs.exists(self.bucket):
                raise Unavailable(
                    f"The registry's bucket {self.bucket!r} does not exist, cannot be seen with these credentials, "
                    f"or the store ({os.environ.get('AWS_ENDPOINT_URL') or 'AWS S3'}) cannot be reached.",
                    reason="REGISTRY_UNAVAILABLE",
                    metadata={"registry": url},
                )

    def _key(self, key: str) -> str:
        return _join(self.prefix, key)

    def _path(self, key: str) -> str:
        return _join(self.bucket, self.prefix, key)

    def _relative(self, path: str) -> str:
        base = _join(self.bucket, self.prefix)
        return path[len(base) :].strip("/")

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Turn the store's failures (network, permissions, missing bucket) into UNAVAILABLE."""
        try:
            yield
        except FileNotFoundError:
            raise
        except self._failures as exc:
            raise Unavailable(
                f"The registry at {self.url} cannot be reached: {exc}.",
                reason="REGISTRY_UNAVAILABLE",
                metadata={"registry": self.url},
            ) from exc

    def read(self, key: str) -> Blob | None:
        from fsspec.asyn import sync  # type: ignore[import-untyped]  # fsspec ships no type information

        async def get() -> Blob:
            response = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self._key(key))
            body = response["Body"]
            try:
                data = await body.read()
            finally:
                body.close()
            # Bytes and tag from one response, so the tag is the one of these bytes.
            return Blob(data, response["ETag"])

        try:
            with self._reachable():
                return sync(self.fs.loop, get)
        except FileNotFoundError:
            return None

    def _put(self, key: str, data: bytes, **condition: str) -> bool:
        try:
            with self._reachable():
                self.fs.call_s3("put_object", Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
        except Unavailable as exc:
            if exc.__cause__ is not None and _precondition_failed(exc.__cause__):
                return False  # another writer got there first
            raise
        except FileNotFoundError as exc:
            if "IfMatch" in condition:
                return False  # the object to replace is gone, so its tag cannot match
            raise Unavailable(
                f"The registry's bucket {self.bucket!r} is gone.",
                reason="REGISTRY_UNAVAILABLE",
                metadata={"registry": self.url},
            ) from exc
        return True

    def create(self, key: str, data: bytes) -> bool:
        return self._put(key, data, IfNoneMatch="*")

    def replace(self, key: str, data: bytes, etag: str) -> bool:
        return self._put(key, data, IfMatch=etag)

    def children(self, prefix: str) -> list[str]:
        try:
            with self._reachable():
                entries = self.fs.ls(self._path(prefix), detail=True, refresh=True)
        except FileNotFoundError:
            return []
        names = (self._relative(e["name"]).rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")
        return sorted(n for n in names if n)

    def tags(self, prefix: str) -> dict[str, str | None]:
        try:
            with self._reachable():
                # One LIST request per 1,000 keys, each with its ETag.
                found = self.fs.find(self._path(prefix), detail=True, withdirs=False)
        except FileNotFoundError:
            return {}
        return {self._relative(path): info.get("ETag") for path, info in found.items()}

    def published(self, prefix: str) -> dict[str, frozenset[str]]:
        groups: dict[str, set[str]] = {}
        for key in self.tags(prefix):
            rest = key[len(prefix.strip("/")) :].strip("/")
            if "/" in rest:
                group, name = rest.split("/", 1)
                groups.setdefault(group, set()).add(name)
        return {group: frozenset(names - {COMPLETE}) for group, names in groups.items() if COMPLETE in names}

    def publish(self, prefix: str, files: Mapping[str, bytes]) -> bool:
        for name, data in files.items():
            if not self.create(_join(prefix, name), data):
                return False
        # The marker goes last: until it exists, listings leave the group out.
        return self.create(_join(prefix, COMPLETE), b"")

    def unpublish(self, prefix: str, names: frozenset[str]) -> None:
        # The marker goes first: the group leaves every listing before any of its files goes.
        with self._reachable():
            for name in (COMPLETE, *sorted(names)):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self._path(_join(prefix, name)))

    def clean(self, prefix: str) -> None:
        """Object writes are atomic, so there is nothing half-written to remove."""


def check_location(location: str) -> None:
    """Raise ValueError when ``location`` names a store this installation cannot use safely."""
    if "://" not in location or location.lower().startswith("file://"):
        path = urlsplit(location).path if "://" in location else location
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"--model-dir {location}: a file, not a directory")
        return
    scheme = location.split("://", 1)[0].lower()
    supported = ", ".join(SUPPORTED_SCHEMES)
    if scheme == "s3":
        if not urlsplit(location).netloc:
            raise ValueError(f"--model-dir {location!r} names no bucket (use s3://bucket/prefix)")
        if importlib.util.find_spec("s3fs") is None:
            raise ValueError("--model-dir s3://... needs s3fs: install regserve[s3]")
        return
    raise ValueError(
        f"--model-dir {location!r}: the registry needs conditional writes (compare-and-swap) to share "
        f"state safely, and supports plain paths, {supported} only"
    )


def open_storage(location: str | os.PathLike[str]) -> Storage:
    """The backend for a plain path, a ``file://`` URL or an ``s3://bucket/prefix`` URL."""
    location = os.fspath(location)
    check_location(location)
    if location.lower().startswith("file://"):
        return LocalStorage(urlsplit(location).path)
    if location.lower().startswith("s3://"):
        return ObjectStorage(location)
    return LocalStorage(location)
