"""The versioned model registry, on a POSIX directory or on object storage (see ``storage``).

Layout under the registry's root (a directory, or ``s3://bucket/prefix``)::

    models/<model>/versions/<vN>/weights.npz    arrays, loaded with allow_pickle=False
    models/<model>/versions/<vN>/metadata.json  sha256 of weights.npz, version, model,
                                                created_at, plus the caller's metadata
    models/<model>/state.json                   serving state (``ModelState``)

A version is immutable once written and is published whole: a listing shows it only
once all its files are stored.  Its number is reserved first, by a compare-and-swap
of ``state.json``'s ``last_version``, so two writers never get the same number and a
deleted number is never given again.  Every change of serving state is a
compare-and-swap too: read the state and its tag, apply the rule from ``lifecycle``,
write only if the tag is unchanged, else read again and re-apply, a bounded number of
times.  Nothing is ever blindly overwritten, so replicas sharing one registry never
lose each other's changes.  Pickle is never used: it runs code.

A listed version with a file missing or unreadable is damaged, not absent: it is left
out of ``list_versions`` and reported by ``scan_versions`` (see ``version_files``).
Reasons and version names are length-checked before a change reads anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from regserve.server.errors import (
    AlreadyExists,
    NotFound,
    RegserveError,
    Unavailable,
    UnknownModel,
    UnknownVersion,
)
from regserve.server.registry import lifecycle
from regserve.server.registry.files import npz_bytes
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
from regserve.server.registry.state_file import (
    STATE_MAX_BYTES,
    corrupt_state,
    encode_state,
    parse_state,
    parse_state_json,
)
from regserve.server.registry.storage import Blob, Storage, open_storage
from regserve.server.registry.text_limits import check_reason, check_version_name
from regserve.server.registry.version_files import METADATA, WEIGHTS, damaged, parse_metadata, parse_weights

__all__ = ["CAS_ATTEMPTS", "ModelRegistry", "check_model_name", "version_number"]

logger = logging.getLogger(__name__)

_MODELS = "models"
_STATE = "state.json"

CAS_ATTEMPTS = 25
"""Compare-and-swap tries of one state change before it is refused UNAVAILABLE STATE_CONFLICT."""
_BACKOFF_SECONDS = 0.01
_BACKOFF_CAP_SECONDS = 0.5

Change = Callable[[ModelState], ModelState]


def _deleted(state: ModelState, version: str) -> bool:
    """True when the state records the deletion of ``version`` (its files may not be gone yet)."""
    return any(h.action == "delete" and h.to_version == version for h in state.history)


class ModelRegistry:
    """Versioned store of model arrays and metadata, with per-model serving state.

    Every change of serving state returns a ``StateUpdate``: the state after the call,
    and whether the call wrote it (a call that changes nothing writes nothing).

    Parameters
    ----------
    location : str or os.PathLike
        A directory (created if missing), a ``file://`` URL or an ``s3://bucket/prefix`` URL.
    storage : Storage, optional
        The backend to use instead of the one ``location`` names.
    """

    def __init__(self, location: str | os.PathLike[str], storage: Storage | None = None) -> None:
        self._storage = storage if storage is not None else open_storage(location)
        self.root = self._storage.url
        self._storage.clean(_MODELS)
        for model in self.list_models():
            self._shrink_state(model)

    @property
    def storage(self) -> Storage:
        """The backend holding the registry's objects."""
        return self._storage

    def _shrink_state(self, model: str) -> None:
        """Rewrite a state file larger than this code writes (from before the bound), so polls stay cheap."""
        try:
            blob = self._storage.read(self._state_key(model))
            if blob is None or len(blob.data) <= STATE_MAX_BYTES:
                return
            self._update_state(model, lambda state: replace(state))
        except (OSError, RegserveError) as exc:  # a read-only volume still serves
            logger.error("model %s: could not trim its state file: %s", model, exc)
            return
        logger.warning("model %s: trimmed the history of a state file of %d bytes", model, len(blob.data))

    # ----------------------------------------------------------------- keys

    def _model_key(self, model: str) -> str:
        return f"{_MODELS}/{check_model_name(model)}"

    def _versions_key(self, model: str) -> str:
        return f"{self._model_key(model)}/versions"

    def _version_key(self, model: str, version: str) -> str:
        return f"{self._versions_key(model)}/{version}"

    def _state_key(self, model: str) -> str:
        return f"{self._model_key(model)}/{_STATE}"

    def _model_exists(self, model: str) -> bool:
        if self._storage.children(self._versions_key(model)):
            return True
        try:
            return self._storage.read(self._state_key(model)) is not None
        except OSError:
            return True  # there is something, unreadable: reading its state says what

    def _existing_model(self, model: str) -> None:
        if not self._model_exists(model):
            raise UnknownModel(model)

    # ----------------------------------------------------------------- versions

    def _version_files(self, model: str) -> dict[str, frozenset[str]]:
        """Every published version of ``model`` (usable or damaged) with the names of its files."""
        groups = self._storage.published(self._versions_key(model))
        return {v: groups[v] for v in sorted((v for v in groups if version_number(v)), key=version_number)}

    def _read_metadata(self, model: str, version: str, files: frozenset[str]) -> VersionMetadata:
        """Metadata of a listed version; NotFound ``INCOMPLETE_VERSION`` / ``CORRUPT_METADATA`` when damaged."""
        try:
            blob = self._storage.read(f"{self._version_key(model, version)}/{METADATA}") if METADATA in files else None
        except OSError as exc:
            detail = f"its {METADATA} cannot be read ({exc.strerror})"
            raise damaged(model, version, "CORRUPT_METADATA", detail) from exc
        return parse_metadata(blob.data if blob is not None else None, files, model, version)

    def _metadata(self, model: str, version: str) -> VersionMetadata:
        """Metadata of a usable version: UNKNOWN_MODEL, UNKNOWN_VERSION, or why it is damaged."""
        files = self._version_files(model).get(version) if version_number(version) else None
        if files is None:
            self._existing_model(model)
            raise UnknownVersion(model, version)
        return self._read_metadata(model, version, files)

    def _exists_in(self, model: str, state: ModelState) -> Callable[[str], bool]:
        """``lifecycle``'s ``exists`` for one change: usable and not deleted, from one listing."""
        listing: dict[str, frozenset[str]] = {}

        def exists(version: str) -> bool:
            if _deleted(state, version) or not version_number(version):
                return False
            if not listing:
                listing.update(self._version_files(model))
            if version not in listing:
                return False
            try:
                self._read_metadata(model, version, listing[version])
            except NotFound:
                return False
            return True

        return exists

    def _check_version(self, model: str, version: str, state: ModelState) -> None:
        """Raise unless ``version`` is usable: UNKNOWN_VERSION (deleted too), or why it is damaged."""
        check_version_name(version)
        if _deleted(state, version):
            raise UnknownVersion(model, version)
        self._metadata(model, version)

    def list_models(self) -> list[str]:
        """Names of all models, sorted."""
        return [n for n in self._storage.children(_MODELS) if is_model_name(n)]

    def scan_versions(self, model: str) -> tuple[list[VersionMetadata], dict[str, Problem]]:
        """The usable versions of ``model`` and, by version, why each damaged one is not, from one listing."""
        files = self._version_files(model)
        if not files:
            self._existing_model(model)
        usable, broken = [], {}
        for version, names in files.items():
            try:
                usable.append(self._read_metadata(model, version, names))
            except NotFound as exc:
                broken[version] = Problem.of(exc)
        return usable, broken

    def list_versions(self, model: str) -> list[VersionMetadata]:
        """Metadata of every usable version of ``model``, in version order; damaged ones are left out."""
        return self.scan_versions(model)[0]

    def describe(self, model: str, version: str) -> VersionMetadata:
        """The stored metadata of one version.

        Raises UnknownVersion, or NotFound ``INCOMPLETE_VERSION`` / ``CORRUPT_METADATA``
        for a damaged version.
        """
        return self._metadata(model, check_version_name(version))

    def create_version(
        self, model: str, arrays: Mapping[str, np.ndarray], metadata: Mapping, *, only_if_new_model: bool = False
    ) -> VersionMetadata:
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
        only_if_new_model : bool
            Refuse with AlreadyExists ``MODEL_EXISTS`` when the model exists (a state or
            any version stored); decided by the number's compare-and-swap, so of writers
            racing to create one model exactly one succeeds.
        """
        check_model_name(model)
        payload = npz_bytes(arrays)

        def reserve(state: ModelState) -> ModelState:
            # Every vN prefix counts, complete or not, so a number never lands on leftovers.
            taken = [version_number(v) for v in self._storage.children(self._versions_key(model))]
            # A stored state has a generation of 1 or more; a missing one reads as generation 0.
            if only_if_new_model and (state.generation or state.last_version or taken):
                raise AlreadyExists(
                    f"Model {model!r} exists already.", reason="MODEL_EXISTS", metadata={"model": model}
                )
            return replace(state, last_version=max([state.last_version, *taken]) + 1)

        # Recording the number before writing means a number is never given twice nor reused,
        # so a replica's cache keyed by (model, version) cannot serve stale weights.
        number = self._update_state(model, reserve, must_exist=False).state.last_version
        version = f"v{number}"
        stored = dict(metadata)
        stored.update(
            model=model,
            version=version,
            created_at=utc_timestamp(),
            sha256=hashlib.sha256(payload).hexdigest(),
        )
        meta_bytes = json.dumps(stored, indent=2, sort_keys=True).encode()
        if not self._storage.publish(self._version_key(model, version), {WEIGHTS: payload, METADATA: meta_bytes}):
            raise Unavailable(
                f"Version {version} of model {model!r} was written by someone else meanwhile; try again.",
                reason="STATE_CONFLICT",
                metadata={"model": model, "version": version},
            )
        logger.info("created model %s version %s", model, version)
        return VersionMetadata.from_json(stored)

    def load_version(self, model: str, version: str) -> tuple[dict[str, np.ndarray], VersionMetadata]:
        """Load one version's arrays after checking their SHA-256.

        Returns
        -------
        arrays : dict of str to ndarray
            Fully materialised; nothing stays open.
        metadata : VersionMetadata
        """
        metadata = self.describe(model, version)
        try:
            blob = self._storage.read(f"{self._version_key(model, version)}/{WEIGHTS}")
        except OSError as exc:
            raise damaged(model, version, "CORRUPT_WEIGHTS", f"its {WEIGHTS} cannot be read ({exc.strerror})") from exc
        return parse_weights(blob.data if blob is not None else None, metadata, model, version), metadata

    def delete_version(self, model: str, version: str, reason: str = "") -> StateUpdate:
        """Remove a version that is neither serving nor in the split; a damaged one too.

        The deletion is recorded in the state first, so a concurrent promotion that
        re-reads the state refuses the version; then its files go, its marker first.
        """
        check_reason(reason)
        check_version_name(version)
        files = self._version_files(model).get(version)
        if files is None:
            self._existing_model(model)
            raise UnknownVersion(model, version)
        update = self._update_state(model, lambda state: lifecycle.delete(state, model, version, reason))
        self._storage.unpublish(self._version_key(model, version), files)
        logger.info("deleted model %s version %s", model, version)
        return StateUpdate(update.state, True)

    # ----------------------------------------------------------------- serving state

    def _read_tagged(self, model: str, must_exist: bool = True) -> tuple[ModelState, str | None]:
        """The model's state and its tag (None: no state stored yet); raises CORRUPT_STATE when unreadable."""
        try:
            blob = self._storage.read(self._state_key(model))
        except OSError as exc:
            raise corrupt_state(model, f"state.json cannot be read ({exc.strerror})") from exc
        if blob is None and must_exist and not self._storage.children(self._versions_key(model)):
            raise UnknownModel(model)
        return parse_state(blob.data if blob is not None else None, model), blob.etag if blob is not None else None

    def _update_state(self, model: str, change: Change, must_exist: bool = True) -> StateUpdate:
        """Apply ``change`` (old state -> new state) by compare-and-swap; write only a new state.

        A write that finds the state changed since it was read reads it again and
        re-applies ``change`` to it, so no one else's change is lost.
        """
        check_model_name(model)
        key = self._state_key(model)
        for attempt in range(CAS_ATTEMPTS):
            state, tag = self._read_tagged(model, must_exist)
            new = change(state)
            if new is state:
                return StateUpdate(state, False)
            written, data = encode_state(new)
            stored = self._storage.create(key, data) if tag is None else self._storage.replace(key, data, tag)
            if stored:
                return StateUpdate(written, True)
            # Jittered, growing pauses keep replicas that collide from colliding again in step.
            time.sleep(random.uniform(0, min(_BACKOFF_CAP_SECONDS, _BACKOFF_SECONDS * 2**attempt)))
        raise Unavailable(
            f"The serving state of model {model!r} kept changing under this change ({CAS_ATTEMPTS} tries); try again.",
            reason="STATE_CONFLICT",
            metadata={"model": model},
        )

    def read_state(self, model: str) -> ModelState:
        """The serving state of ``model``."""
        return self._read_tagged(model)[0]

    def state_generation(self, model: str) -> int:
        """The model's state generation; it grows on every state change."""
        return self.read_state(model).generation

    def snapshot_token(self) -> tuple:
        """A fingerprint of the whole registry, cheap enough to poll.

        One listing of ``models/`` (on S3: one LIST request per 1,000 objects, each with
        its ETag) gives every object; a state's ETag changes with its bytes.  Where the
        listing gives no tag (a POSIX directory) the state's generation is read instead:
        file metadata alone is not enough, since an atomic replacement can reuse the
        inode, size and timestamp tick of the file it replaces.
        """
        models: dict[str, list] = {}
        for key, tag in sorted(self._storage.tags(_MODELS).items()):
            parts = key.split("/")
            if len(parts) < 3 or not is_model_name(parts[1]):
                continue
            entry = models.setdefault(parts[1], [None, []])
            if parts[2:] == [_STATE]:
                entry[0] = tag if tag is not None else self._generation_or_none(parts[1])
            elif parts[2] == "versions":
                entry[1].append("/".join(parts[3:]))
        return tuple((model, state, tuple(files)) for model, (state, files) in sorted(models.items()))

    def _generation_or_none(self, model: str) -> int | None:
        try:
            blob: Blob | None = self._storage.read(self._state_key(model))
            # The generation alone, without building the typed state: this runs on every poll.
            return int(parse_state_json(blob.data if blob else None, model).get("generation", 0))
        except (OSError, ValueError, TypeError, RegserveError):
            return None

    def promote(self, model: str, version: str, reason: str = "") -> StateUpdate:
        """Make ``version`` the serving version (see ``lifecycle.promote``)."""
        check_reason(reason)

        def change(state: ModelState) -> ModelState:
            self._check_version(model, version, state)
            return lifecycle.promote(state, model, version, reason)

        update = self._update_state(model, change)
        if update.changed:
            logger.info("model %s: promoted %s (was %s)", model, version, update.state.history[-1].from_version)
        return update

    def peek_rollback(self, model: str) -> str | None:
        """The version ``rollback`` would serve now, or None; changes nothing."""
        state = self.read_state(model)
        return lifecycle.rollback_target(state, self._exists_in(model, state))[0]

    def rollback(self, model: str, reason: str = "") -> StateUpdate:
        """Serve the most recent previous version still present and not frozen (see ``lifecycle.rollback``)."""
        check_reason(reason)
        update = self._update_state(
            model, lambda state: lifecycle.rollback(state, model, reason, self._exists_in(model, state))
        )
        switch = update.state.history[-1]
        logger.info("model %s: rolled back to %s (was %s)", model, switch.to_version, switch.from_version)
        return update

    def freeze(self, model: str, version: str, reason: str = "") -> StateUpdate:
        """Exclude ``version`` from routing and prediction; idempotent."""
        check_reason(reason)

        def change(state: ModelState) -> ModelState:
            self._check_version(model, version, state)
            return lifecycle.freeze(state, model, version, reason)

        return self._update_state(model, change)

    def unfreeze(self, model: str, version: str, reason: str = "") -> StateUpdate:
        """Allow ``version`` to be routed again; idempotent."""
        check_reason(reason)

        def change(state: ModelState) -> ModelState:
            self._check_version(model, version, state)
            return lifecycle.unfreeze(state, version, reason)

        return self._update_state(model, change)

    def set_split(self, model: str, weights: Mapping[str, float], reason: str = "") -> StateUpdate:
        """Set the A/B traffic split (version -> weight); an empty mapping clears it.

        Weights are relative: they need not sum to 1 or 100.  The serving version is
        unchanged and answers again once the split is cleared.
        """
        check_reason(reason)
        self._existing_model(model)
        split = check_split_weights(weights)
        update = self._update_state(
            model, lambda state: lifecycle.set_split(state, model, split, reason, self._exists_in(model, state))
        )
        if update.changed:
            logger.info("model %s: traffic split %s", model, split or "cleared")
        return update
