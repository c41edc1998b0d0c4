"""The in-memory serving layer over the registry: loaded models, hot swap, replica polling.

Every request resolves its model through one immutable routing snapshot (model name ->
``ModelRoute``).  Readers take no lock: a swap builds a whole new snapshot and replaces
``self._snapshot`` in one assignment, so a request in flight keeps the ``ServedModel`` it
resolved and a new request sees the new one.  Writers (admin calls, the polling thread)
serialise on one lock.  No version is routed before it passed its checksum, loaded as a
``LinearModel`` and reproduced its stored probe predictions.

The store is the one door to the registry: listings and states are read from disk
through it (so changes made through another replica show at once), every change goes
through it, and each change is reported as a ``RegistryEvent`` where it is made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import numpy as np

from regserve.server.errors import (
    IntegrityError,
    RegserveError,
    Unavailable,
    UnknownModel,
    UnknownVersion,
    VersionFrozen,
)
from regserve.server.models.drift import DriftReference
from regserve.server.models.estimator import LinearModel
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.events import EventCallback, RegistryAction, RegistryEvent
from regserve.server.registry.probe import probe_arrays
from regserve.server.registry.problems import ModelReport, Problem, no_serving_version
from regserve.server.registry.promotion_gate import passes_gate
from regserve.server.registry.route_builder import RouteBuilder
from regserve.server.registry.routes import ModelRoute, ServedModel
from regserve.server.registry.samples import sample_arrays, stored_sample
from regserve.server.registry.state import (
    ModelState,
    ServingRole,
    StateUpdate,
    VersionMetadata,
    check_model_name,
)
from regserve.server.registry.text_limits import (
    MODEL_NAME_MAX,
    ROUTING_KEY_MAX,
    check_length,
    check_reason,
    check_version_name,
)

__all__ = ["ModelStore", "ServedModel"]

logger = logging.getLogger(__name__)


class ModelStore:
    """Serves the models of a ``ModelRegistry`` from memory.

    Parameters
    ----------
    registry : ModelRegistry
    poll_interval : float
        Seconds between checks for changes made by other processes (see ``start``).
    on_event : callable taking a RegistryEvent, optional
        Called right after each change this store makes to the registry, on the thread
        that made it; an exception it raises is logged, never raised.  ``listen`` adds more.
    """

    def __init__(
        self, registry: ModelRegistry, *, poll_interval: float = 2.0, on_event: EventCallback | None = None
    ) -> None:
        self._registry = registry
        self.poll_interval = poll_interval
        self._listeners: list[EventCallback] = [on_event] if on_event is not None else []
        self._snapshot: Mapping[str, ModelRoute] = MappingProxyType({})
        self._builder = RouteBuilder(registry)
        self._token: tuple | None = None
        self._unreachable = False  # the last refresh found the store unreachable (logged once per outage)
        self._write_lock = threading.RLock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- routing (memory)

    def has_serving_model(self) -> bool:
        """True when at least one model can answer a request without a version."""
        return any(r.serving is not None or r.split is not None for r in self._snapshot.values())

    def model_names(self) -> list[str]:
        """Names of the models this store routes, sorted."""
        return sorted(self._snapshot)

    @staticmethod
    def check_model_name(model: str) -> str:
        """Return ``model`` if it is a valid name, else raise INVALID_MODEL_NAME."""
        return check_model_name(model)

    def resolve(
        self, model: str, version: str = "", routing_key: str = "", *, allow_frozen: bool = False
    ) -> ServedModel:
        """The model version that answers a request.  The hot path: no disk, no lock.

        With ``version``, that version (loaded and verified from disk on its first use);
        a frozen one is refused unless ``allow_frozen`` (for describing it).  Without it,
        the split's arm for ``routing_key`` when a split is set, else the serving version.
        A version made by another process is known once ``refresh`` has seen it.
        """
        return self.route(model, version, routing_key, allow_frozen=allow_frozen)[0]

    def route(
        self, model: str, version: str = "", routing_key: str = "", *, allow_frozen: bool = False
    ) -> tuple[ServedModel, str]:
        """Like ``resolve``, and also how the version was chosen: its traffic arm.

        The arm is ``"explicit"`` when the request named the version, the version
        itself when a traffic split chose it, and ``"serving"`` otherwise.  Without a
        version to answer, NO_SERVING_VERSION says why, when this store knows.
        """
        # Refused with or without a split, so a key never starts failing when a split begins.
        if routing_key and len(routing_key) > ROUTING_KEY_MAX:
            check_length(routing_key, "routing_key", ROUTING_KEY_MAX)
        route = self._snapshot.get(model)
        if route is None:
            raise self._not_routed(model)
        if version:
            return self._resolve_version(route, model, version, allow_frozen), "explicit"
        if route.split is not None:
            arm = route.split.choose(routing_key)
            return route.arms[arm], arm
        if route.serving is None:
            state = route.state
            failures = self._builder.load_failures.get(model, {})
            failed = next((v for v in (state.serving, *state.split) if v in failures), None)
            raise no_serving_version(model, failed, failures.get(failed or ""))
        return route.serving, "serving"

    def _not_routed(self, model: str) -> RegserveError:
        """UNKNOWN_MODEL, or NO_SERVING_VERSION when the model is stored but could not be routed."""
        problem = self._builder.unroutable.get(model)
        if problem is not None:
            return no_serving_version(model, None, problem)
        check_length(model, "model", MODEL_NAME_MAX)
        return UnknownModel(model)

    def describe(self, model: str, version: str = "") -> ServedModel:
        """The version ModelInfo describes: the named one (frozen ones too), else the serving one.

        Without a serving version, a split's heaviest arm stands in; unlike ``resolve``,
        the answer never depends on a random draw.
        """
        if version:
            return self.resolve(model, version, allow_frozen=True)
        route = self._snapshot.get(model)
        if route is not None and route.serving is not None:
            return route.serving
        if route is not None and route.split is not None:
            arm = max(zip(route.split.weights, route.split.arms, strict=True))[1]
            return route.arms[arm]
        return self.resolve(model)  # raises UNKNOWN_MODEL or NO_SERVING_VERSION

    def _resolve_version(self, route: ModelRoute, model: str, version: str, allow_frozen: bool) -> ServedModel:
        if version in route.frozen and not allow_frozen:
            raise VersionFrozen(model, version)
        if version not in route.versions:
            # A damaged version says so (describe raises why); one not yet refreshed is unknown here.
            self._registry.describe(model, check_version_name(version))
            raise UnknownVersion(model, version)
        served = route.arms.get(version) or self._builder.loaded.get((model, version))
        if served is None and route.serving is not None and route.serving.version == version:
            served = route.serving
        if served is None:
            with self._write_lock:
                served = self._builder.load_verified(model, version)
        return served

    def serving_state(self, model: str, version: str) -> ServingRole:
        """The role of one version (``ModelState.role_of``) in the state this store routes by."""
        route = self._snapshot.get(model)
        return "available" if route is None else route.state.role_of(version)

    # ----------------------------------------------------------------- the registry (disk)

    def list_models(self) -> list[str]:
        """Names of every model in the registry, read from disk, sorted."""
        return self._registry.list_models()

    def read_state(self, model: str) -> ModelState:
        """The stored serving state of ``model``, read from disk."""
        return self._registry.read_state(model)

    def list_versions(self, model: str) -> list[VersionMetadata]:
        """The metadata of every usable stored version of ``model``, read from disk, in version order."""
        return self._registry.list_versions(model)

    def validation_sample(self, model: str, version: str) -> tuple[np.ndarray, np.ndarray]:
        """The validation sample stored with ``version`` (``samples.stored_sample``), read from disk.

        The version is checked as ``describe`` checks it, and its file against its checksum.
        """
        served = self.describe(model, version)
        arrays, _ = self._registry.load_version(model, served.version)
        return stored_sample(arrays, served.estimator.n_features_in_, model, served.version)

    def report(self, model: str) -> ModelReport:
        """``model`` as listings show it, read from disk, with what is wrong with it.

        An unreadable state is reported in the answer (``ModelReport.problem``), not
        raised, so one damaged model never fails a listing of all of them; so are
        damaged versions, and versions this store could not load.
        """
        versions, damaged = self._registry.scan_versions(model)
        try:
            state, problem = self._registry.read_state(model), None
        except IntegrityError as exc:
            state, problem = ModelState(), Problem.of(exc)
        failures = self._builder.load_failures.get(model, {})
        route = self._snapshot.get(model)
        served = route.generation if route is not None else 0
        return ModelReport(model, state, tuple(versions), problem, damaged, failures, served)

    def reports(self) -> list[ModelReport]:
        """``report`` of every model in the registry, by name; a model deleted meanwhile is left out."""
        reports = []
        for model in self._registry.list_models():
            try:
                reports.append(self.report(model))
            except UnknownModel:
                continue
        return reports

    # ----------------------------------------------------------------- loading

    def _rebuild(self, models: Iterable[str], *, initial: bool = False) -> bool:
        """Rebuild the routes of ``models`` (``RouteBuilder.rebuild``) and publish them; True if any changed.

        Callers hold the write lock.
        """
        old = self._snapshot
        new = self._builder.rebuild(old, models, initial=initial)
        # The swap: one assignment; readers holding the old mapping finish on it.
        self._snapshot = new
        return old.keys() != new.keys() or any(old[m].signature() != new[m].signature() for m in new)

    def load_all(self) -> None:
        """Load every model's serving version and split arms (at start-up).

        A version failing its checks is logged and skipped, never served.
        """
        with self._write_lock:
            self._token = self._registry.snapshot_token()
            self._rebuild(self._registry.list_models(), initial=True)
        logger.info("loaded models: %s", ", ".join(self.model_names()) or "none")

    def refresh(self) -> bool:
        """Pick up changes made by other processes; True if the routing changed.

        Errors are logged, never raised: the previous snapshot stays.
        """
        try:
            token = self._registry.snapshot_token()
            if self._unreachable:
                # Said here, before the early return: a store back with nothing changed has the same token.
                logger.info("the registry can be read again")
                self._unreachable = False
            if token == self._token:
                return False
            with self._write_lock:
                models = set(self._registry.list_models()) | set(self._snapshot)
                changed = self._rebuild(sorted(models))
                self._token = token
        except Unavailable as error:
            # An outage of the store is expected: one line when it begins, one when it ends, no traceback.
            if not self._unreachable:
                logger.warning("the registry cannot be read (%s); keeping the current models", error.message)
            self._unreachable = True
            return False
        except Exception:
            logger.exception("refreshing from the registry failed; keeping the current models")
            return False
        if changed:
            logger.info("registry changed; routing refreshed")
        return changed

    def start(self, on_change: Callable[[], None] | None = None) -> None:
        """Poll the registry every ``poll_interval`` seconds in a daemon thread.

        ``on_change`` is called after a refresh that changed the routing.
        """
        if self._thread is not None:
            return
        self._stop_event.clear()

        def poll() -> None:
            while not self._stop_event.wait(self.poll_interval):
                if self.refresh() and on_change is not None:
                    try:
                        on_change()
                    except Exception:
                        logger.exception("on_change callback failed")

        self._thread = threading.Thread(target=poll, name="regserve-registry-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the polling thread and wait for it."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop_event.set()
            thread.join()

    # ----------------------------------------------------------------- changing

    def listen(self, on_event: EventCallback) -> None:
        """Call ``on_event`` too after each change, as ``on_event`` of the constructor is."""
        self._listeners.append(on_event)

    def _emit(self, model: str, action: RegistryAction, version: str | None) -> None:
        event = RegistryEvent(model, action, version)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("a registry event listener failed on %s of model %s", action, model)

    def _changed(self, model: str, update: StateUpdate, action: RegistryAction, version: str | None) -> ModelState:
        """Report a state change if ``update`` made one, then swap the model's routing in."""
        if update.changed:
            self._emit(model, action, version)
        self._rebuild([model])
        return update.state

    def add_version(
        self,
        model: str,
        estimator: LinearModel,
        metadata: Mapping,
        *,
        promote: bool = True,
        gate: bool = False,
        only_if_new_model: bool = False,
        sample: tuple[np.ndarray, np.ndarray] | None = None,
        drift: DriftReference | None = None,
    ) -> tuple[VersionMetadata, bool, str]:
        """Store a trained model as a new version, and promote it if asked and allowed.

        The stored arrays are ``estimator.to_arrays()`` plus a probe (``probe_arrays``)
        built around ``metadata["feature_stats"]``, and the validation ``sample`` (rows,
        targets or class indices) when given (``samples``), and the ``drift`` reference when given.

        With ``gate``, the new version is promoted only when it passes ``passes_gate``
        against the serving version; the first version of a model is always promoted
        when ``promote`` is set.  With ``only_if_new_model``, the version is stored only
        as the model's first (``ModelRegistry.create_version``), else AlreadyExists.

        Returns
        -------
        metadata : VersionMetadata
            As stored.
        promoted : bool
        reason : str
            Why it was or was not promoted.
        """
        check_model_name(model)
        metadata = {**metadata, "kind": estimator.kind}
        arrays = {**estimator.to_arrays(), **probe_arrays(metadata, estimator), **sample_arrays(sample)}
        if drift is not None:
            arrays.update(drift.to_arrays())
        with self._write_lock:
            stored = self._registry.create_version(model, arrays, metadata, only_if_new_model=only_if_new_model)
            version = stored.version
            self._emit(model, "create", version)
            serving = self._registry.read_state(model).serving
            if not promote:
                promoted, reason = False, "promotion was not requested"
            elif serving is None:
                promoted, reason = True, "first serving version of the model"
            elif gate:
                promoted, reason = passes_gate(stored, self._registry.describe(model, serving), estimator.is_classifier)
            else:
                promoted, reason = True, "promoted on request"
            if promoted:
                self.promote(model, version, reason)
            else:
                self._rebuild([model])
        logger.info("model %s version %s stored; promoted=%s (%s)", model, version, promoted, reason)
        return stored, promoted, reason

    def promote(self, model: str, version: str, reason: str = "") -> ModelState:
        """Verify ``version`` from disk, make it serving, and swap it in; return the state.

        Nothing changes when the version fails its checksum or probe (IntegrityError).
        """
        check_reason(reason)
        with self._write_lock:
            self._builder.load_verified(model, version, use_cache=False)
            update = self._registry.promote(model, version, reason)
            return self._changed(model, update, "promote", version)

    def rollback(self, model: str, reason: str = "") -> ModelState:
        """Serve the previous version again, after verifying it; return the state."""
        check_reason(reason)
        with self._write_lock:
            target = self._registry.peek_rollback(model)
            if target is not None:
                self._builder.load_verified(model, target, use_cache=False)
            update = self._registry.rollback(model, reason)
            return self._changed(model, update, "rollback", update.state.serving)

    def freeze(self, model: str, version: str, reason: str = "") -> ModelState:
        """Freeze a version (no longer routed nor predicted by name); return the state."""
        with self._write_lock:
            return self._changed(model, self._registry.freeze(model, version, reason), "freeze", version)

    def unfreeze(self, model: str, version: str, reason: str = "") -> ModelState:
        """Unfreeze a version; return the state."""
        with self._write_lock:
            return self._changed(model, self._registry.unfreeze(model, version, reason), "unfreeze", version)

    def set_split(self, model: str, weights: Mapping[str, float], reason: str = "") -> ModelState:
        """Verify every existing arm, then set the traffic split; return the state."""
        check_reason(reason)
        with self._write_lock:
            existing = {m.version for m in self._registry.list_versions(model)}
            for version in weights:
                if version in existing:
                    self._builder.load_verified(model, version, use_cache=False)
            return self._changed(model, self._registry.set_split(model, weights, reason), "split", None)

    def delete_version(self, model: str, version: str, reason: str = "") -> ModelState:
        """Delete a version that is neither serving nor in the split; return the state."""
        with self._write_lock:
            return self._changed(model, self._registry.delete_version(model, version, reason), "delete", version)
