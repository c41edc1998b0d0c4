"""The versioned on-disk model registry.

Layout under a root directory::

    <root>/models/<model>/versions/<vN>/weights.npz    arrays, loaded with allow_pickle=False
    <root>/models/<model>/versions/<vN>/metadata.json  sha256 of weights.npz, version, model,
                                                       created_at, plus the caller's metadata
    <root>/models/<model>/state.json                   serving state (see ``read_state``)
    <root>/models/<model>/.lock                        fcntl.flock lock shared by processes

A version is immutable once written.  It is assembled in a ``.tmp-*`` directory next to
``versions/``, fsynced and renamed into place in one step, so readers never see half a
version; ``.tmp-*`` leftovers from a crash are never listed and are removed under the
model lock.  Every change to a model happens under its flock, after re-reading its state
from disk, so several processes can share one root.  Pickle is never used: it runs code.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

import numpy as np

from regserve.server.errors import FailedPrecondition, IntegrityError, InvalidInput, NotFound, RegserveError

__all__ = ["ModelRegistry", "check_model_name", "version_number"]

logger = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION = re.compile(r"v([1-9][0-9]*)")
_ARRAY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ARRAY_KINDS = "biufcU"  # bool, int, uint, float, complex, unicode: nothing that needs pickle
_TMP_PREFIX = ".tmp-"
_HISTORY_LIMIT = 100
_PREVIOUS_LIMIT = 100
_WEIGHTS = "weights.npz"
_METADATA = "metadata.json"
_STATE = "state.json"


def version_number(version: str) -> int:
    """Return N for a version named ``"vN"``, or 0 when the name is not of that form."""
    match = _VERSION.fullmatch(version)
    return int(match.group(1)) if match else 0


def check_model_name(model: str) -> str:
    """Return ``model`` if it is a valid model name, else raise INVALID_MODEL_NAME."""
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise InvalidInput(
            f"Model name {model!r} is invalid: use 1-64 letters, digits, '_', '.', '-',"
            " starting with a letter or digit.",
            reason="INVALID_MODEL_NAME",
            violations=[("model", "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")],
        )
    return model


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file."""
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
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
    _fsync_dir(directory)


def _default_state() -> dict:
    return {
        "generation": 0,
        "serving": None,
        "previous": [],
        "frozen": [],
        "split": {},
        "history": [],
        "last_version": 0,
    }


class ModelRegistry:
    """Versioned store of model arrays and metadata, with per-model serving state.

    Parameters
    ----------
    root : str or os.PathLike
        Directory holding ``models/``; created if missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self._models_dir = os.path.join(self.root, "models")
        os.makedirs(self._models_dir, exist_ok=True)
        for model in self.list_models():
            try:
                with self._lock(model):
                    self._remove_stale_tmp(model)
            except OSError:  # a read-only volume still serves; the leftovers stay ignored
                logger.warning("could not clean temporary files of model %s", model)

    # ----------------------------------------------------------------- paths and checks

    def _model_dir(self, model: str) -> str:
        return os.path.join(self._models_dir, check_model_name(model))

    def _existing_model_dir(self, model: str) -> str:
        path = self._model_dir(model)
        if not os.path.isdir(os.path.join(path, "versions")):
            raise NotFound(
                f"Model {model!r} does not exist.",
                reason="UNKNOWN_MODEL",
                violations=[("model", f"no model named {model!r}")],
                metadata={"model": model},
            )
        return path

    def _version_dir(self, model: str, version: str) -> str:
        return os.path.join(self._model_dir(model), "versions", version)

    def _unknown_version(self, model: str, version: str, field: str = "version") -> NotFound:
        return NotFound(
            f"Model {model!r} has no version {version!r}.",
            reason="UNKNOWN_VERSION",
            violations=[(field, f"no version {version!r} of model {model!r}")],
            metadata={"model": model, "version": version},
        )

    @contextlib.contextmanager
    def _lock(self, model: str) -> Iterator[None]:
        """Hold the model's flock (exclusive across processes and across threads)."""
        path = os.path.join(self._model_dir(model), ".lock")
        # Each call opens its own file description, so flock also excludes other threads.
        with open(path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _remove_stale_tmp(self, model: str) -> None:
        """Delete ``.tmp-*`` leftovers; callers hold the model lock, so none is in use."""
        model_dir = self._model_dir(model)
        for sub in (model_dir, os.path.join(model_dir, "versions")):
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(sub):
                    if name.startswith(_TMP_PREFIX):
                        path = os.path.join(sub, name)
                        if os.path.isdir(path):
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(path)

    # ----------------------------------------------------------------- versions

    def _version_names(self, model: str) -> list[str]:
        """Names of every ``vN`` directory (complete or not), in version order."""
        try:
            names = os.listdir(os.path.join(self._model_dir(model), "versions"))
        except FileNotFoundError:
            return []
        return sorted((n for n in names if version_number(n)), key=version_number)

    def _read_metadata(self, model: str, version: str) -> dict | None:
        """Metadata of a complete version, or None when it is missing or incomplete."""
        if not version_number(version):
            return None
        vdir = self._version_dir(model, version)
        try:
            with open(os.path.join(vdir, _METADATA), "rb") as f:
                metadata = json.loads(f.read())
        except (OSError, ValueError):
            return None
        if not isinstance(metadata, dict) or not os.path.isfile(os.path.join(vdir, _WEIGHTS)):
            return None
        return metadata

    def list_models(self) -> list[str]:
        """Names of all models, sorted."""
        try:
            names = os.listdir(self._models_dir)
        except FileNotFoundError:
            return []
        return sorted(
            n
            for n in names
            if _MODEL_NAME.fullmatch(n) and os.path.isdir(os.path.join(self._models_dir, n, "versions"))
        )

    def list_versions(self, model: str) -> list[dict]:
        """Metadata of every complete version of ``model``, in version order."""
        self._existing_model_dir(model)
        found = (self._read_metadata(model, v) for v in self._version_names(model))
        return [m for m in found if m is not None]

    def describe(self, model: str, version: str) -> dict:
        """The stored metadata of one version."""
        self._existing_model_dir(model)
        metadata = self._read_metadata(model, version)
        if metadata is None:
            raise self._unknown_version(model, version)
        return metadata

    def _has_version(self, model: str, version: str) -> bool:
        return self._read_metadata(model, version) is not None

    def create_version(self, model: str, arrays: Mapping[str, np.ndarray], metadata: dict) -> dict:
        """Store a new immutable version and return its metadata.

        Parameters
        ----------
        model : str
            The model name; the model is created on its first version.
        arrays : mapping of str to ndarray
            Numeric or unicode arrays, saved with ``np.savez``.
        metadata : dict
            JSON-serialisable facts stored beside the arrays; the keys ``sha256``,
            ``version``, ``model`` and ``created_at`` are set by the registry.
        """
        model_dir = self._model_dir(model)
        payload = _npz_bytes(arrays)
        os.makedirs(os.path.join(model_dir, "versions"), exist_ok=True)
        with self._lock(model):
            self._remove_stale_tmp(model)
            state = self._read_state_file(model)
            existing = [version_number(v) for v in self._version_names(model)]
            number = max([state.get("last_version", 0), *existing]) + 1
            version = f"v{number}"
            stored = dict(metadata)
            stored.update(
                model=model,
                version=version,
                created_at=_now(),
                sha256=hashlib.sha256(payload).hexdigest(),
            )
            meta_bytes = json.dumps(stored, indent=2, sort_keys=True).encode()
            tmp = os.path.join(model_dir, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
            os.mkdir(tmp)
            try:
                _atomic_write_bytes(os.path.join(tmp, _WEIGHTS), payload)
                _atomic_write_bytes(os.path.join(tmp, _METADATA), meta_bytes)
                os.rename(tmp, self._version_dir(model, version))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _fsync_dir(os.path.join(model_dir, "versions"))
            _fsync_dir(model_dir)
            # Recording the highest number ever given means a deleted number is never reused,
            # so a replica's cache keyed by (model, version) cannot serve stale weights.
            state["last_version"] = number
            self._write_state(model, state)
        logger.info("created model %s version %s", model, version)
        return stored

    def load_version(self, model: str, version: str) -> tuple[dict[str, np.ndarray], dict]:
        """Load one version's arrays after checking their SHA-256.

        Returns
        -------
        arrays : dict of str to ndarray
            Fully materialised; no file stays open.
        metadata : dict
        """
        metadata = self.describe(model, version)
        with open(os.path.join(self._version_dir(model, version), _WEIGHTS), "rb") as f:
            payload = f.read()
        # Hash and parse the same bytes, so nothing can change between check and use.
        if hashlib.sha256(payload).hexdigest() != metadata.get("sha256"):
            raise IntegrityError(
                f"Version {version} of model {model!r} fails its checksum.",
                reason="CHECKSUM_MISMATCH",
                metadata={"model": model, "version": version},
            )
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
                arrays = {name: np.array(npz[name]) for name in npz.files}
        except (ValueError, OSError) as exc:
            raise IntegrityError(
                f"Version {version} of model {model!r} has unreadable weights.",
                reason="CORRUPT_WEIGHTS",
                metadata={"model": model, "version": version},
            ) from exc
        return arrays, metadata

    def delete_version(self, model: str, version: str, reason: str = "") -> dict:
        """Remove a version that is neither serving nor in the split; return the new state."""
        model_dir = self._existing_model_dir(model)
        with self._lock(model):
            state = self._read_state_file(model)
            if not self._has_version(model, version):
                raise self._unknown_version(model, version)
            self._refuse_if_routed(model, version, state)
            # Renaming first takes the version out of every listing in one step.
            tmp = os.path.join(model_dir, f"{_TMP_PREFIX}deleted-{uuid.uuid4().hex}")
            os.rename(self._version_dir(model, version), tmp)
            _fsync_dir(os.path.join(model_dir, "versions"))
            shutil.rmtree(tmp, ignore_errors=True)
            state["previous"] = [v for v in state["previous"] if v != version]
            state["frozen"] = [v for v in state["frozen"] if v != version]
            _add_history(state, "delete", None, version, reason)
            self._write_state(model, state)
        logger.info("deleted model %s version %s", model, version)
        return state

    # ----------------------------------------------------------------- serving state

    def _state_path(self, model: str) -> str:
        return os.path.join(self._model_dir(model), _STATE)

    def _read_state_file(self, model: str) -> dict:
        state = _default_state()
        try:
            with open(self._state_path(model), "rb") as f:
                stored = json.loads(f.read())
        except FileNotFoundError:
            return state
        except ValueError as exc:
            raise IntegrityError(
                f"The serving state of model {model!r} is unreadable.",
                reason="CORRUPT_STATE",
                metadata={"model": model},
            ) from exc
        state.update(stored)
        return state

    def _write_state(self, model: str, state: dict) -> None:
        state["generation"] = int(state.get("generation", 0)) + 1
        state["history"] = state["history"][-_HISTORY_LIMIT:]
        state["previous"] = state["previous"][-_PREVIOUS_LIMIT:]
        # Compact: the C encoder is several times faster than the indenting one.
        data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
        _atomic_write_bytes(self._state_path(model), data)

    def read_state(self, model: str) -> dict:
        """The serving state of ``model``.

        Keys: ``generation`` (int, grows on every change), ``serving`` (version or None),
        ``previous`` (rollback stack, last on top), ``frozen`` (list), ``split``
        (version -> weight, empty when off), ``history`` (last 100 switches, oldest
        first), ``last_version`` (highest number ever assigned).
        """
        self._existing_model_dir(model)
        return self._read_state_file(model)

    def state_generation(self, model: str) -> int:
        """The model's state generation; it grows on every state change."""
        return int(self.read_state(model)["generation"])

    def snapshot_token(self) -> tuple:
        """A fingerprint of the whole registry's serving state, cheap enough to poll.

        It holds each model's state generation, which every state change increments,
        and its number of versions.  File metadata alone is not enough: an atomic
        replacement can reuse the inode, size and timestamp tick of the file it replaces.
        """
        token = []
        for model in self.list_models():
            try:
                generation = int(self._read_state_file(model)["generation"])
            except (OSError, ValueError, KeyError, RegserveError):
                generation = None
            token.append((model, generation, len(self._version_names(model))))
        return tuple(token)

    def _check_version(self, model: str, version: str, field: str = "version") -> None:
        if not self._has_version(model, version):
            raise self._unknown_version(model, version, field)

    @staticmethod
    def _refuse_if_frozen(model: str, version: str, state: dict, field: str = "version") -> None:
        if version in state["frozen"]:
            raise FailedPrecondition(
                f"Version {version} of model {model!r} is frozen; unfreeze it first.",
                reason="VERSION_FROZEN",
                violations=[(field, f"version {version} is frozen")],
                metadata={"model": model, "version": version},
            )

    @staticmethod
    def _refuse_if_routed(model: str, version: str, state: dict) -> None:
        if state["serving"] == version:
            raise FailedPrecondition(
                f"Version {version} of model {model!r} is serving; promote another first.",
                reason="VERSION_SERVING",
                violations=[("version", f"version {version} is the serving version")],
                metadata={"model": model, "version": version},
            )
        if version in state["split"]:
            raise FailedPrecondition(
                f"Version {version} of model {model!r} is in the traffic split; change it first.",
                reason="VERSION_IN_SPLIT",
                violations=[("version", f"version {version} is an arm of the traffic split")],
                metadata={"model": model, "version": version},
            )

    def promote(self, model: str, version: str, reason: str = "") -> dict:
        """Make ``version`` the serving version and return the new state.

        The old serving version goes on top of the rollback stack.  A promotion ends any
        A/B test: the traffic split is cleared.  Promoting the serving version while no
        split is set changes nothing.
        """
        self._existing_model_dir(model)
        with self._lock(model):
            state = self._read_state_file(model)
            self._check_version(model, version)
            self._refuse_if_frozen(model, version, state)
            old = state["serving"]
            if old == version and not state["split"]:
                return state
            if old is not None and old != version:
                state["previous"] = [v for v in state["previous"] if v != old] + [old]
            state["previous"] = [v for v in state["previous"] if v != version]
            state["serving"] = version
            state["split"] = {}
            _add_history(state, "promote", old, version, reason)
            self._write_state(model, state)
        logger.info("model %s: promoted %s (was %s)", model, version, old)
        return state

    def _rollback_target(self, model: str, state: dict) -> tuple[str | None, list[str]]:
        """The version a rollback would serve, and the stack left after popping it."""
        stack = list(state["previous"])
        while stack:
            candidate = stack.pop()
            usable = candidate != state["serving"] and candidate not in state["frozen"]
            if usable and self._has_version(model, candidate):
                return candidate, stack
        return None, []

    def peek_rollback(self, model: str) -> str | None:
        """The version ``rollback`` would serve now, or None; changes nothing."""
        return self._rollback_target(model, self.read_state(model))[0]

    def rollback(self, model: str, reason: str = "") -> dict:
        """Serve the most recent previous version still present and not frozen.

        Versions skipped on the way (deleted or frozen) leave the stack.  Like a
        promotion, a rollback clears the traffic split, which would otherwise hide it.
        """
        self._existing_model_dir(model)
        with self._lock(model):
            state = self._read_state_file(model)
            target, stack = self._rollback_target(model, state)
            if target is None:
                raise FailedPrecondition(
                    f"Model {model!r} has no previous version to roll back to.",
                    reason="NO_PREVIOUS_VERSION",
                    metadata={"model": model},
                )
            old = state["serving"]
            state.update(serving=target, previous=stack, split={})
            _add_history(state, "rollback", old, target, reason)
            self._write_state(model, state)
        logger.info("model %s: rolled back to %s (was %s)", model, target, old)
        return state

    def freeze(self, model: str, version: str, reason: str = "") -> dict:
        """Exclude ``version`` from routing and prediction; idempotent."""
        self._existing_model_dir(model)
        with self._lock(model):
            state = self._read_state_file(model)
            self._check_version(model, version)
            if version in state["frozen"]:
                return state
            self._refuse_if_routed(model, version, state)
            state["frozen"] = sorted([*state["frozen"], version], key=version_number)
            _add_history(state, "freeze", None, version, reason)
            self._write_state(model, state)
        return state

    def unfreeze(self, model: str, version: str, reason: str = "") -> dict:
        """Allow ``version`` to be routed again; idempotent."""
        self._existing_model_dir(model)
        with self._lock(model):
            state = self._read_state_file(model)
            self._check_version(model, version)
            if version not in state["frozen"]:
                return state
            state["frozen"] = [v for v in state["frozen"] if v != version]
            _add_history(state, "unfreeze", None, version, reason)
            self._write_state(model, state)
        return state

    def set_split(self, model: str, weights: Mapping[str, float], reason: str = "") -> dict:
        """Set the A/B traffic split (version -> weight); an empty mapping clears it.

        Weights are relative: they need not sum to 1 or 100.  The serving version is
        unchanged and answers again once the split is cleared.
        """
        self._existing_model_dir(model)
        split = _validate_weights(weights)
        with self._lock(model):
            state = self._read_state_file(model)
            for version in split:
                if not self._has_version(model, version):
                    # A weight naming no version is a bad argument of this call, not a lookup.
                    raise InvalidInput(
                        f"The traffic split names version {version!r}, which model {model!r} does not have.",
                        reason="UNKNOWN_VERSION",
                        violations=[(f"weights[{version}]", f"no version {version!r} of model {model!r}")],
                        metadata={"model": model, "version": version},
                    )
            for version in split:
                self._refuse_if_frozen(model, version, state, f"weights[{version}]")
            if split == state["split"]:
                return state
            state["split"] = split
            _add_history(state, "split", state["serving"], None, reason, split=split)
            self._write_state(model, state)
        logger.info("model %s: traffic split %s", model, split or "cleared")
        return state


def _add_history(state: dict, action: str, old: str | None, new: str | None, reason: str, **extra) -> None:
    state["history"].append({"at": _now(), "action": action, "from": old, "to": new, "reason": reason, **extra})


def _validate_weights(weights: Mapping[str, float]) -> dict[str, float]:
    def invalid(description: str) -> InvalidInput:
        return InvalidInput(
            f"The traffic split is invalid: {description}.",
            reason="INVALID_SPLIT",
            violations=[("weights", description)],
        )

    split: dict[str, float] = {}
    for version, weight in weights.items():
        try:
            value = float(weight)
        except (TypeError, ValueError):
            raise invalid(f"the weight of {version!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise invalid(f"the weight of {version!r} must be finite and >= 0")
        split[str(version)] = value
    if split and sum(split.values()) <= 0:
        raise invalid("the weights must not all be zero")
    return dict(sorted(split.items(), key=lambda item: version_number(item[0])))


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    checked = {}
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
