"""The versioned on-disk model registry.

Layout under a root directory::

    <root>/models/<model>/versions/<vN>/weights.npz    arrays, loaded with allow_pickle=False
    <root>/models/<model>/versions/<vN>/metadata.json  sha256 of weights.npz, version, model,
                                                       created_at, plus the caller's metadata
    <root>/models/<model>/state.json                   serving state (``ModelState``)
    <root>/models/<model>/.lock                        fcntl.flock lock shared by processes

A version is immutable once written.  It is assembled in a ``.tmp-*`` directory next to
``versions/``, fsynced and renamed into place in one step, so readers never see half a
version; ``.tmp-*`` leftovers from a crash are never listed and are removed under the
model lock.  Every change to a model happens under its flock, after re-reading its state
from disk, so several processes can share one root.  The rules of each change live in
``lifecycle``; this module reads, locks and writes.  Pickle is never used: it runs code.
A ``vN`` directory with a file missing or unreadable is damaged, not absent: it is left
out of ``list_versions`` and reported by ``scan_versions`` (see ``version_files``).
Reasons and version names are length-checked before a change reads anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace

import numpy as np

from regserve.server.errors import NotFound, RegserveError, UnknownModel, UnknownVersion
from regserve.server.registry import lifecycle
from regserve.server.registry.files import (
    atomic_write_bytes,
    fsync_dir,
    npz_bytes,
    remove_temporary,
    temporary_path,
)
from regserve.server.registry.problems import Problem
from regserve.server.registry.routing import check_split_weights
from regserve.server.registry.state import (
    ModelState,
    StateUpdate,
    VersionMetadata,
    check_model_name,
    is_model_name,
    utc_timestamp,
    version_number,
)
from regserve.server.registry.state_file import STATE_MAX_BYTES, encode_state, read_state, read_state_json
from regserve.server.registry.text_limits import check_reason, check_version_name
from regserve.server.registry.version_files import METADATA, WEIGHTS, read_metadata, read_weights

__all__ = ["ModelRegistry", "check_model_name", "version_number"]

logger = logging.getLogger(__name__)

_STATE = "state.json"


class ModelRegistry:
    """Versioned store of model arrays and metadata, with per-model serving state.

    Every change of serving state returns a ``StateUpdate``: the state after the call,
    and whether the call wrote it (a call that changes nothing writes nothing).

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
                    self._shrink_state(model)
            except OSError:  # a read-only volume still serves; the leftovers stay ignored
                logger.warning("could not clean temporary files of model %s", model)

    def _shrink_state(self, model: str) -> None:
        """Rewrite a state file larger than this code writes (from before the bound), so polls stay cheap."""
        path = self._state_path(model)
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        if size > STATE_MAX_BYTES:
            try:
                self._write_state(model, self._read_state_file(model))
            except RegserveError as exc:
                logger.error("model %s: %s", model, exc.message)
                return
            logger.warning("model %s: trimmed the history of a state file of %d bytes", model, size)

    # ----------------------------------------------------------------- paths and locks

    def _model_dir(self, model: str) -> str:
        return os.path.join(self._models_dir, check_model_name(model))

    def _existing_model_dir(self, model: str) -> str:
        path = self._model_dir(model)
        if not os.path.isdir(os.path.join(path, "versions")):
            raise UnknownModel(model)
        return path

    def _version_dir(self, model: str, version: str) -> str:
        return os.path.join(self._model_dir(model), "versions", version)

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
        remove_temporary([model_dir, os.path.join(model_dir, "versions")])

    # ----------------------------------------------------------------- versions

    def _version_names(self, model: str) -> list[str]:
        """Names of every ``vN`` directory (complete or not), in version order."""
        try:
            names = os.listdir(os.path.join(self._model_dir(model), "versions"))
        except FileNotFoundError:
            return []
        return sorted((n for n in names if version_number(n)), key=version_number)

    def _read_metadata(self, model: str, version: str) -> VersionMetadata:
        """Metadata of a usable version (see ``version_files.read_metadata`` for the errors)."""
        return read_metadata(self._version_dir(model, version), model, version)

    def _has_version(self, model: str, version: str) -> bool:
        """True when ``version`` is stored whole, with readable metadata."""
        try:
            self._read_metadata(model, version)
        except NotFound:
            return False
        return True

    def _check_version(self, model: str, version: str) -> None:
        """Raise unless ``version`` is stored whole: UNKNOWN_VERSION, or why it is damaged."""
        self._read_metadata(model, check_version_name(version))

    def list_models(self) -> list[str]:
        """Names of all models, sorted."""
        try:
            names = os.listdir(self._models_dir)
        except FileNotFoundError:
            return []
        return sorted(
            n for n in names if is_model_name(n) and os.path.isdir(os.path.join(self._models_dir, n, "versions"))
        )

    def _scan_versions(self, model: str) -> tuple[list[VersionMetadata], dict[str, Problem]]:
        """The usable versions of ``model`` and, by version, why each damaged one is not."""
        self._existing_model_dir(model)
        usable, damaged = [], {}
        for version in self._version_names(model):
            try:
                usable.append(self._read_metadata(model, version))
            except NotFound as exc:
                damaged[version] = Problem.of(exc)
        return usable, damaged

    def list_versions(self, model: str) -> list[VersionMetadata]:
        """Metadata of every usable version of ``model``, in version order; damaged ones are left out."""
        return self._scan_versions(model)[0]

    def scan_versions(self, model: str) -> tuple[list[VersionMetadata], dict[str, Problem]]:
        """``list_versions`` and the damaged versions (version -> why) from one reading of the directory."""
        return self._scan_versions(model)

    def describe(self, model: str, version: str) -> VersionMetadata:
        """The stored metadata of one version.

        Raises UnknownVersion, or NotFound ``INCOMPLETE_VERSION`` / ``CORRUPT_METADATA``
        for a damaged version.
        """
        self._existing_model_dir(model)
        return self._read_metadata(model, check_version_name(version))

    def create_version(self, model: str, arrays: Mapping[str, np.ndarray], metadata: Mapping) -> VersionMetadata:
        """Store a new immutable version and return its metadata.

        Parameters
        ----------
        model : str
            The model name; the model is created on its first version.
        arrays : mapping of str to ndarray
            Numeric or unicode arrays, saved with ``np.savez``.
        metadata : mapping
            JSON-serialisable facts stored beside the arrays; the keys ``sha256``,
            ``version``, ``model`` and ``created_at`` are set by the registry.
        """
        model_dir = self._model_dir(model)
        payload = npz_bytes(arrays)
        os.makedirs(os.path.join(model_dir, "versions"), exist_ok=True)
        with self._lock(model):
            self._remove_stale_tmp(model)
            state = self._read_state_file(model)
            existing = [version_number(v) for v in self._version_names(model)]
            number = max([state.last_version, *existing]) + 1
            version = f"v{number}"
            stored = dict(metadata)
            stored.update(
                model=model,
                version=version,
                created_at=utc_timestamp(),
                sha256=hashlib.sha256(payload).hexdigest(),
            )
            meta_bytes = json.dumps(stored, indent=2, sort_keys=True).encode()
            tmp = temporary_path(model_dir)
            os.mkdir(tmp)
            try:
                atomic_write_bytes(os.path.join(tmp, WEIGHTS), payload)
                atomic_write_bytes(os.path.join(tmp, METADATA), meta_bytes)
                os.rename(tmp, self._version_dir(model, version))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(os.path.join(model_dir, "versions"))
            fsync_dir(model_dir)
            # Recording the highest number ever given means a deleted number is never reused,
            # so a replica's cache keyed by (model, version) cannot serve stale weights.
            self._write_state(model, replace(state, last_version=number))
        logger.info("created model %s version %s", model, version)
        return VersionMetadata.from_json(stored)

    def load_version(self, model: str, version: str) -> tuple[dict[str, np.ndarray], VersionMetadata]:
        """Load one version's arrays after checking their SHA-256.

        Returns
        -------
        arrays : dict of str to ndarray
            Fully materialised; no file stays open.
        metadata : VersionMetadata
        """
        metadata = self.describe(model, version)
        return read_weights(self._version_dir(model, version), metadata, model, version), metadata

    def delete_version(self, model: str, version: str, reason: str = "") -> StateUpdate:
        """Remove a version that is neither serving nor in the split; a damaged one too."""
        check_reason(reason)
        model_dir = self._existing_model_dir(model)
        with self._lock(model):
            state = self._read_state_file(model)
            if check_version_name(version) not in self._version_names(model):
                raise UnknownVersion(model, version)
            new = lifecycle.delete(state, model, version, reason)
            # Renaming first takes the version out of every listing in one step.
            tmp = temporary_path(model_dir, "deleted-")
            os.rename(self._version_dir(model, version), tmp)
            fsync_dir(os.path.join(model_dir, "versions"))
            shutil.rmtree(tmp, ignore_errors=True)
            written = self._write_state(model, new)
        logger.info("deleted model %s version %s", model, version)
        return StateUpdate(written, True)

    # ----------------------------------------------------------------- serving state

    def _state_path(self, model: str) -> str:
        return os.path.join(self._model_dir(model), _STATE)

    def _read_state_file(self, model: str) -> ModelState:
        """The model's state (see ``state_file.read_state``); raises CORRUPT_STATE when unreadable."""
        return read_state(self._state_path(model), model)

    def _write_state(self, model: str, state: ModelState) -> ModelState:
        """Write ``state`` as the next generation, bounded (``state_file.encode_state``); return what was written."""
        state, data = encode_state(state)
        atomic_write_bytes(self._state_path(model), data)
        return state

    def _update_state(self, model: str, change: Callable[[ModelState], ModelState]) -> StateUpdate:
        """Apply ``change`` (old state -> new state) under the model's lock; write only a new state."""
        self._existing_model_dir(model)
        with self._lock(model):
            state = self._read_state_file(model)
            new = change(state)
            if new is state:
                return StateUpdate(state, False)
            return StateUpdate(self._write_state(model, new), True)

    def read_state(self, model: str) -> ModelState:
        """The serving state of ``model``."""
        self._existing_model_dir(model)
        return self._read_state_file(model)

    def state_generation(self, model: str) -> int:
        """The model's state generation; it grows on every state change."""
        return self.read_state(model).generation

    def snapshot_token(self) -> tuple:
        """A fingerprint of the whole registry's serving state, cheap enough to poll.

        It holds each model's state generation, which every state change increments,
        and its number of versions.  File metadata alone is not enough: an atomic
        replacement can reuse the inode, size and timestamp tick of the file it replaces.
        """
        token = []
        for model in self.list_models():
            try:
                # The generation alone, without building the typed state: this runs on every poll.
                generation = int(read_state_json(self._state_path(model), model).get("generation", 0))
            except (OSError, ValueError, TypeError, RegserveError):
                generation = None
            token.append((model, generation, len(self._version_names(model))))
        return tuple(token)

    def promote(self, model: str, version: str, reason: str = "") -> StateUpdate:
        """Make ``version`` the serving version (see ``lifecycle.promote``)."""
        check_reason(reason)

        def change(state: ModelState) -> ModelState:
            self._check_version(model, version)
            return lifecycle.promote(state, model, version, reason)

        update = self._update_state(model, change)
        if update.changed:
            logger.info("model %s: promoted %s (was %s)", model, version, update.state.history[-1].from_version)
        return update

    def peek_rollback(self, model: str) -> str | None:
        """The version ``rollback`` would serve now, or None; changes nothing."""
        return lifecycle.rollback_target(self.read_state(model), lambda v: self._has_version(model, v))[0]

    def rollback(self, model: str, reason: str = "") -> StateUpdate:
        """Serve the most recent previous version still present and not frozen (see ``lifecycle.rollback``)."""
        check_reason(reason)
        update = self._update_state(
            model, lambda state: lifecycle.rollback(state, model, reason, lambda v: self._has_version(model, v))
        )
        switch = update.state.history[-1]
        logger.info("model %s: rolled back to %s (was %s)", model, switch.to_version, switch.from_version)
        return update

    def freeze(self, model: str, version: str, reason: str = "") -> StateUpdate:
        """Exclude ``version`` from routing and prediction; idempotent."""
        check_reason(reason)

        def change(state: ModelState) -> ModelState:
            self._check_version(model, version)
            return lifecycle.freeze(state, model, version, reason)

        return self._update_state(model, change)

    def unfreeze(self, model: str, version: str, reason: str = "") -> StateUpdate:
        """Allow ``version`` to be routed again; idempotent."""
        check_reason(reason)

        def change(state: ModelState) -> ModelState:
            self._check_version(model, version)
            return lifecycle.unfreeze(state, version, reason)

        return self._update_state(model, change)

    def set_split(self, model: str, weights: Mapping[str, float], reason: str = "") -> StateUpdate:
        """Set the A/B traffic split (version -> weight); an empty mapping clears it.

        Weights are relative: they need not sum to 1 or 100.  The serving version is
        unchanged and answers again once the split is cleared.
        """
        check_reason(reason)
        self._existing_model_dir(model)
        split = check_split_weights(weights)
        update = self._update_state(
            model, lambda state: lifecycle.set_split(state, model, split, reason, lambda v: self._has_version(model, v))
        )
        if update.changed:
            logger.info("model %s: traffic split %s", model, split or "cleared")
        return update
