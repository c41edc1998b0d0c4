"""Building a store's routing snapshot: versions loaded and verified, and what failed to load.

``RouteBuilder`` turns the stored state of models into ``ModelRoute`` values.  It keeps
the verified versions it loaded (so a swap reloads nothing it has), and remembers why
routing differs from the stored state: the versions that failed their checks, by
model, and the models that could not be routed at all.  ``ModelStore`` owns one and
holds the write lock around every call that builds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from regserve.server.errors import RegserveError, UnknownModel
from regserve.server.models.drift import DriftReference
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.probe import verified_estimator
from regserve.server.registry.problems import Problem
from regserve.server.registry.routes import ModelRoute, ServedModel, build_route, served_model

__all__ = ["RouteBuilder"]

logger = logging.getLogger(__name__)

Snapshot = Mapping[str, ModelRoute]


class RouteBuilder:
    """Loads, verifies and caches versions of ``registry``, and builds the routes of its models."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self.loaded: dict[tuple[str, str], ServedModel] = {}
        """Verified versions by (model, version)."""
        self.load_failures: dict[str, Mapping[str, Problem]] = {}
        """By model: the versions its last build was to route to but could not load, with why."""
        self.unroutable: dict[str, Problem] = {}
        """Stored models with no route at all (their state cannot be read), with why."""

    def load_verified(self, model: str, version: str, *, use_cache: bool = True) -> ServedModel:
        """Load one version and check checksum, arrays and probe; cache the result."""
        if use_cache and (cached := self.loaded.get((model, version))) is not None:
            return cached
        arrays, metadata = self._registry.load_version(model, version)
        estimator = verified_estimator(metadata.kind, arrays, model, version)
        drift = DriftReference.from_arrays(arrays, estimator.n_features_in_)
        served = served_model(model, version, estimator, metadata, drift)
        self.loaded[(model, version)] = served
        return served

    def build(self, model: str, *, strict: bool) -> ModelRoute:
        """Read the model's state from disk and load what it routes to.

        ``strict``: a version that fails to load raises; otherwise it is logged and left
        out (the model may then have no serving version).  Either way the failure is
        kept in ``load_failures``.
        """
        state = self._registry.read_state(model)
        versions = frozenset(m.version for m in self._registry.list_versions(model))
        failures: dict[str, Problem] = {}
        self.load_failures[model] = MappingProxyType(failures)

        def load(version: str) -> ServedModel | None:
            try:
                return self.load_verified(model, version)
            except RegserveError as exc:
                failures[version] = Problem.of(exc)
                if strict:
                    raise
                logger.error("model %s version %s is not served: %s (%s)", model, version, exc.message, exc.reason)
                return None

        return build_route(state, versions, load)

    def rebuild(self, old: Snapshot, models: Iterable[str], *, initial: bool = False) -> Snapshot:
        """A new snapshot: ``old`` with the routes of ``models`` rebuilt.

        A route that fails to build keeps its previous version (a bad new state never
        replaces a good one); with no previous route, what can be loaded is served.
        """
        new = dict(old)
        for model in models:
            self.unroutable.pop(model, None)
            try:
                new[model] = self.build(model, strict=not initial)
                continue
            except UnknownModel:  # deleted by another process
                new.pop(model, None)
                self.load_failures.pop(model, None)
                continue
            except (RegserveError, OSError) as exc:
                error: Exception = exc
            if model in old:
                logger.error("model %s: keeping the previous routing: %s", model, error)
                continue
            try:
                new[model] = self.build(model, strict=False)
            except (RegserveError, OSError) as exc:
                logger.error("model %s cannot be loaded: %s", model, exc)
                self.unroutable[model] = _problem_of(exc)
        live = {(m, v) for m, route in new.items() for v in route.versions}
        for key in [k for k in self.loaded if k not in live]:
            del self.loaded[key]
        return MappingProxyType(new)


def _problem_of(error: Exception) -> Problem:
    if isinstance(error, RegserveError):
        return Problem.of(error)
    detail = error.strerror if isinstance(error, OSError) else type(error).__name__
    return Problem("REGISTRY_UNREADABLE", f"The files of the model cannot be read ({detail}).")
