"""What the store's routing snapshot holds per model: verified versions and how to reach them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from regserve.server.models.drift import DriftReference
from regserve.server.models.estimator import LinearModel
from regserve.server.registry.routing import SplitTable
from regserve.server.registry.state import ModelState, VersionMetadata

__all__ = ["ModelRoute", "ServedModel", "build_route", "served_model"]


@dataclass(frozen=True)
class ServedModel:
    """One verified version, ready to predict."""

    name: str
    version: str
    estimator: LinearModel
    metadata: VersionMetadata
    """The stored metadata.json content (feature_names, kind, metrics, ...)."""
    feature_index: Mapping[str, int]
    """Feature name -> column, for features given by name; empty when names are unknown."""
    classes: tuple[str, ...] = ()
    """A classifier's class labels, in the order of its probabilities; empty for a regression."""
    drift: DriftReference | None = None
    """What live rows are compared with for drift; None for versions stored without it."""


def served_model(
    model: str, version: str, estimator: LinearModel, metadata: VersionMetadata, drift: DriftReference | None = None
) -> ServedModel:
    """A verified version with its feature index (empty unless there is one name per column)."""
    index = {name: i for i, name in enumerate(metadata.feature_names)}
    if len(index) != estimator.n_features_in_:
        index = {}
    return ServedModel(model, version, estimator, metadata, MappingProxyType(index), estimator.classes_ or (), drift)


@dataclass(frozen=True)
class ModelRoute:
    """A model as requests see it: its serving version, its split and the versions that exist."""

    state: ModelState
    """The stored state the route was built from."""
    serving: ServedModel | None
    split: SplitTable | None
    arms: Mapping[str, ServedModel]
    frozen: frozenset[str]
    versions: frozenset[str]

    @property
    def generation(self) -> int:
        return self.state.generation

    def signature(self) -> tuple:
        """What routing depends on; a new route with the same signature changes no answer."""
        serving = self.serving.version if self.serving else None
        return self.generation, serving, tuple(sorted(self.arms)), self.frozen, self.versions


def build_route(state: ModelState, versions: frozenset[str], load: Callable[[str], ServedModel | None]) -> ModelRoute:
    """The route of a model in ``state`` with stored ``versions``.

    ``load`` gives a verified version, or None for one that is not to be served; the
    split keeps only the arms it gives, and is off when none of those has weight.
    """
    serving = load(state.serving) if state.serving else None
    arms = {v: s for v in state.split if (s := load(v)) is not None}
    weights = {v: w for v, w in state.split.items() if v in arms}
    split = SplitTable(weights) if any(w > 0 for w in weights.values()) else None
    return ModelRoute(
        state=state,
        serving=serving,
        split=split,
        arms=MappingProxyType(arms if split else {}),
        frozen=frozenset(state.frozen),
        versions=versions,
    )
