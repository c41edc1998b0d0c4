"""The in-memory serving layer over the registry: loaded models, hot swap, replica polling.

Every request resolves its model through one immutable routing snapshot (model name ->
``_ModelRoute``).  Readers take no lock: a swap builds a whole new snapshot and replaces
``self._snapshot`` in one assignment, so a request in flight keeps the ``ServedModel`` it
resolved and a new request sees the new one.  Writers (admin calls, the polling thread)
serialise on one lock.  No version is routed before it passed its checksum, loaded as a
``LinearModel`` and reproduced its stored probe predictions.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from regserve.server.errors import (
    FailedPrecondition,
    IntegrityError,
    NotFound,
    RegserveError,
    Unavailable,
)
from regserve.server.models.estimator import LinearModel
from regserve.server.registry.disk import ModelRegistry, check_model_name
from regserve.server.registry.routing import SplitTable

__all__ = ["ModelStore", "ServedModel"]

logger = logging.getLogger(__name__)

PROBE_ROWS = 8
_PROBE_KEYS = ("probe_inputs", "probe_outputs", "probe_probabilities")
_PROBE_RTOL = 1e-9


@dataclass(frozen=True)
class ServedModel:
    """One verified version, ready to predict."""

    name: str
    version: str
    estimator: LinearModel
    metadata: dict
    """The stored metadata.json content (feature_names, kind, metrics, ...)."""
    feature_index: Mapping[str, int]
    """Feature name -> column, for features given by name; empty when names are unknown."""


@dataclass(frozen=True)
class _ModelRoute:
    generation: int
    serving: ServedModel | None
    split: SplitTable | None
    arms: Mapping[str, ServedModel]
    frozen: frozenset[str]
    versions: frozenset[str]

    def signature(self) -> tuple:
        serving = self.serving.version if self.serving else None
        return self.generation, serving, tuple(sorted(self.arms)), self.frozen, self.versions


class ModelStore:
    """Serves the models of a ``ModelRegistry`` from memory.

    Parameters
    ----------
    registry : ModelRegistry
    poll_interval : float
        Seconds between checks for changes made by other processes (see ``start``).
    """

    def __init__(self, registry: ModelRegistry, *, poll_interval: float = 2.0) -> None:
        self.registry = registry
        self.poll_interval = poll_interval
        self._snapshot: Mapping[str, _ModelRoute] = MappingProxyType({})
        self._loaded: dict[tuple[str, str], ServedModel] = {}
        self._token: tuple | None = None
        self._write_lock = threading.RLock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- reading

    def has_serving_model(self) -> bool:
        """True when at least one model can answer a request without a version."""
        return any(r.serving is not None or r.split is not None for r in self._snapshot.values())

    def model_names(self) -> list[str]:
        """Names of the models this store knows, sorted."""
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
        itself when a traffic split chose it, and ``"serving"`` otherwise.
        """
        route = self._snapshot.get(model)
        if route is None:
            raise NotFound(
                f"Model {model!r} does not exist.",
                reason="UNKNOWN_MODEL",
                violations=[("model", f"no model named {model!r}")],
                metadata={"model": model},
            )
        if version:
            return self._resolve_version(route, model, version, allow_frozen), "explicit"
        if route.split is not None:
            arm = route.split.choose(routing_key)
            return route.arms[arm], arm
        if route.serving is None:
            raise Unavailable(
                f"Model {model!r} has no serving version.",
                reason="NO_SERVING_VERSION",
                metadata={"model": model},
            )
        return route.serving, "serving"

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

    def _resolve_version(self, route: _ModelRoute, model: str, version: str, allow_frozen: bool) -> ServedModel:
        if version in route.frozen and not allow_frozen:
            raise FailedPrecondition(
                f"Version {version} of model {model!r} is frozen.",
                reason="VERSION_FROZEN",
                violations=[("version", f"version {version} is frozen")],
                metadata={"model": model, "version": version},
            )
        if version not in route.versions:
            raise NotFound(
                f"Model {model!r} has no version {version!r}.",
                reason="UNKNOWN_VERSION",
                violations=[("version", f"no version {version!r} of model {model!r}")],
                metadata={"model": model, "version": version},
            )
        served = route.arms.get(version) or self._loaded.get((model, version))
        if served is None and route.serving is not None and route.serving.version == version:
            served = route.serving
        if served is None:
            with self._write_lock:
                served = self._load_verified(model, version)
        return served

    def serving_state(self, model: str, version: str) -> str:
        """``"in_split"``, ``"serving"``, ``"frozen"`` or ``"available"`` for one version."""
        route = self._snapshot.get(model)
        if route is None:
            return "available"
        if route.split is not None and version in route.arms:
            return "in_split"
        if route.serving is not None and route.serving.version == version:
            return "serving"
        return "frozen" if version in route.frozen else "available"

    # ----------------------------------------------------------------- loading

    def _load_verified(self, model: str, version: str, *, use_cache: bool = True) -> ServedModel:
        """Load one version and check checksum, arrays and probe; cache the result."""
        if use_cache and (cached := self._loaded.get((model, version))) is not None:
            return cached
        arrays, metadata = self.registry.load_version(model, version)
        probe = {key: arrays.pop(key, None) for key in _PROBE_KEYS}
        estimator = LinearModel.from_arrays(str(metadata.get("kind")), arrays)
        _check_probe(estimator, probe, model, version)
        names = metadata.get("feature_names") or ()
        index = {str(n): i for i, n in enumerate(names)}
        if len(index) != estimator.n_features_in_:
            index = {}
        served = ServedModel(model, version, estimator, metadata, MappingProxyType(index))
        self._loaded[(model, version)] = served
        return served

    def _build_route(self, model: str, *, strict: bool) -> _ModelRoute:
        """Read the model's state from disk and load what it routes to.

        ``strict``: a version that fails to load raises; otherwise it is logged and left
        out (the model may then have no serving version).
        """
        state = self.registry.read_state(model)
        versions = frozenset(m["version"] for m in self.registry.list_versions(model))

        def load(version: str) -> ServedModel | None:
            try:
                return self._load_verified(model, version)
            except RegserveError as exc:
                if strict:
                    raise
                logger.error("model %s version %s is not served: %s (%s)", model, version, exc.message, exc.reason)
                return None

        serving = load(state["serving"]) if state["serving"] else None
        arms = {v: s for v in state["split"] if (s := load(v)) is not None}
        weights = {v: w for v, w in state["split"].items() if v in arms}
        split = SplitTable(weights) if any(w > 0 for w in weights.values()) else None
        return _ModelRoute(
            generation=int(state["generation"]),
            serving=serving,
            split=split,
            arms=MappingProxyType(arms if split else {}),
            frozen=frozenset(state["frozen"]),
            versions=versions,
        )

    def _rebuild(self, models: Iterable[str], *, initial: bool = False) -> bool:
        """Rebuild the routes of ``models`` and publish a new snapshot; True if any changed.

        A route that fails to build keeps its previous version (a bad new state never
        replaces a good one); with no previous route, what can be loaded is served.
        Callers hold the write lock.
        """
        old = self._snapshot
        new = dict(old)
        for model in models:
            try:
                new[model] = self._build_route(model, strict=not initial)
                continue
            except NotFound as exc:
                if exc.reason == "UNKNOWN_MODEL":  # deleted by another process
                    new.pop(model, None)
                    continue
                error: Exception = exc
            except (RegserveError, OSError) as exc:
                error = exc
            if model in old:
                logger.error("model %s: keeping the previous routing: %s", model, error)
                continue
            try:
                new[model] = self._build_route(model, strict=False)
            except (RegserveError, OSError) as exc:
                logger.error("model %s cannot be loaded: %s", model, exc)
        live = {(m, v) for m, route in new.items() for v in route.versions}
        for key in [k for k in self._loaded if k not in live]:
            del self._loaded[key]
        # The swap: one assignment; readers holding the old mapping finish on it.
        self._snapshot = MappingProxyType(new)
        return old.keys() != new.keys() or any(old[m].signature() != new[m].signature() for m in new)

    def load_all(self) -> None:
        """Load every model's serving version and split arms (at start-up).

        A version failing its checks is logged and skipped, never served.
        """
        with self._write_lock:
            self._token = self.registry.snapshot_token()
            self._rebuild(self.registry.list_models(), initial=True)
        logger.info("loaded models: %s", ", ".join(self.model_names()) or "none")

    def refresh(self) -> bool:
        """Pick up changes made by other processes; True if the routing changed.

        Errors are logged, never raised: the previous snapshot stays.
        """
        try:
            token = self.registry.snapshot_token()
            if token == self._token:
                return False
            with self._write_lock:
                models = set(self.registry.list_models()) | set(self._snapshot)
                changed = self._rebuild(sorted(models))
                self._token = token
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

    def add_version(
        self,
        model: str,
        estimator: LinearModel,
        metadata: dict,
        *,
        promote: bool = True,
        gate: bool = False,
    ) -> tuple[dict, bool, str]:
        """Store a trained model as a new version, and promote it if asked and allowed.

        The stored arrays are ``estimator.to_arrays()`` plus a probe: ``probe_inputs``
        (8 rows around the training feature means), ``probe_outputs`` (their
        predictions) and, for classifiers, ``probe_probabilities``.

        With ``gate``, the new version is promoted only when its validation metric is no
        worse than the serving version's (``mse`` lower or equal for regressors,
        ``accuracy`` higher or equal for classifiers); the first version of a model is
        always promoted when ``promote`` is set.

        Returns
        -------
        metadata : dict
            As stored.
        promoted : bool
        reason : str
            Why it was or was not promoted.
        """
        check_model_name(model)
        metadata = {**metadata, "kind": estimator.kind}
        probe_inputs = _probe_inputs(metadata, estimator)
        arrays = {**estimator.to_arrays(), "probe_inputs": probe_inputs}
        arrays["probe_outputs"] = estimator.predict(probe_inputs)
        if estimator.is_classifier:
            arrays["probe_probabilities"] = estimator.predict_proba(probe_inputs)
        with self._write_lock:
            stored = self.registry.create_version(model, arrays, metadata)
            version = stored["version"]
            serving = self.registry.read_state(model)["serving"]
            if not promote:
                promoted, reason = False, "promotion was not requested"
            elif serving is None:
                promoted, reason = True, "first serving version of the model"
            elif gate:
                promoted, reason = self._gate(model, serving, stored, estimator.is_classifier)
            else:
                promoted, reason = True, "promoted on request"
            if promoted:
                self.promote(model, version, reason)
            else:
                self._rebuild([model])
        logger.info("model %s version %s stored; promoted=%s (%s)", model, version, promoted, reason)
        return stored, promoted, reason

    def _gate(self, model: str, serving: str, new: dict, classifier: bool) -> tuple[bool, str]:
        name, better = ("accuracy", max) if classifier else ("mse", min)
        old_value = _validation_metric(self.registry.describe(model, serving), name)
        new_value = _validation_metric(new, name)
        for version, value in ((new["version"], new_value), (serving, old_value)):
            if value is None:
                return False, f"gate: {version} has no validation {name}; not promoted"
        verb = "higher" if classifier else "lower"
        if better(new_value, old_value) == new_value:
            return True, (
                f"gate: validation {name} {new_value:.6g} of {new['version']} is {verb} than or "
                f"equal to {old_value:.6g} of {serving}"
            )
        return False, (
            f"gate: validation {name} {new_value:.6g} of {new['version']} is worse than "
            f"{old_value:.6g} of {serving}; not promoted"
        )

    def promote(self, model: str, version: str, reason: str = "") -> dict:
        """Verify ``version`` from disk, make it serving, and swap it in; return the state.

        Nothing changes when the version fails its checksum or probe (IntegrityError).
        """
        with self._write_lock:
            self._load_verified(model, version, use_cache=False)
            state = self.registry.promote(model, version, reason)
            self._rebuild([model])
        return state

    def rollback(self, model: str, reason: str = "") -> dict:
        """Serve the previous version again, after verifying it; return the state."""
        with self._write_lock:
            target = self.registry.peek_rollback(model)
            if target is not None:
                self._load_verified(model, target, use_cache=False)
            state = self.registry.rollback(model, reason)
            self._rebuild([model])
        return state

    def freeze(self, model: str, version: str, reason: str = "") -> dict:
        """Freeze a version (no longer routed nor predicted by name); return the state."""
        with self._write_lock:
            state = self.registry.freeze(model, version, reason)
            self._rebuild([model])
        return state

    def unfreeze(self, model: str, version: str, reason: str = "") -> dict:
        """Unfreeze a version; return the state."""
        with self._write_lock:
            state = self.registry.unfreeze(model, version, reason)
            self._rebuild([model])
        return state

    def set_split(self, model: str, weights: Mapping[str, float], reason: str = "") -> dict:
        """Verify every existing arm, then set the traffic split; return the state."""
        with self._write_lock:
            existing = {m["version"] for m in self.registry.list_versions(model)}
            for version in weights:
                if version in existing:
                    self._load_verified(model, version, use_cache=False)
            state = self.registry.set_split(model, weights, reason)
            self._rebuild([model])
        return state

    def delete_version(self, model: str, version: str, reason: str = "") -> dict:
        """Delete a version that is neither serving nor in the split; return the state."""
        with self._write_lock:
            state = self.registry.delete_version(model, version, reason)
            self._rebuild([model])
        return state


def _validation_metric(metadata: Mapping, name: str) -> float | None:
    value = (metadata.get("validation_metrics") or {}).get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _probe_inputs(metadata: Mapping, estimator: LinearModel) -> np.ndarray:
    """8 rows spread around the training means, shape (8, n_features).

    Centres and spreads come from ``metadata["feature_stats"]`` (mean, std per feature),
    else from the estimator's own scaler, else 0 and 1.  The first row is the centre.
    """
    d = estimator.n_features_in_
    center, spread = np.zeros(d), np.ones(d)
    stats = metadata.get("feature_stats") or ()
    if len(stats) == d:
        center = np.array([float(s.get("mean") or 0.0) for s in stats])
        spread = np.array([float(s.get("std") or 0.0) for s in stats])
    elif getattr(estimator, "mean_", None) is not None:
        center, spread = np.array(estimator.mean_), np.array(estimator.scale_)
    center = np.where(np.isfinite(center), center, 0.0)
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    offsets = np.random.default_rng(0).uniform(-2.0, 2.0, size=(PROBE_ROWS, d))
    offsets[0] = 0.0
    return center + offsets * spread


def _check_probe(estimator: LinearModel, probe: Mapping, model: str, version: str) -> None:
    def mismatch(detail: str) -> IntegrityError:
        return IntegrityError(
            f"Version {version} of model {model!r} fails its probe: {detail}.",
            reason="PROBE_MISMATCH",
            metadata={"model": model, "version": version},
        )

    inputs, expected = probe["probe_inputs"], probe["probe_outputs"]
    if inputs is None or expected is None:
        raise mismatch("no stored probe")
    try:
        checks = [(estimator.predict(inputs), expected)]
        if probe["probe_probabilities"] is not None:
            checks.append((estimator.predict_proba(inputs), probe["probe_probabilities"]))
    except RegserveError as exc:
        raise mismatch(exc.message) from exc
    for got, want in checks:
        if got.shape != want.shape or not np.isfinite(got).all():
            raise mismatch("the outputs are not finite or have the wrong shape")
        atol = 1e-12 * max(1.0, float(np.max(np.abs(want), initial=0.0)))
        if not np.allclose(got, want, rtol=_PROBE_RTOL, atol=atol):
            raise mismatch("the outputs differ from the stored ones")
