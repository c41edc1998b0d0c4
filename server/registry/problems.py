"""What is wrong with a stored model or version, reported beside it instead of failing a listing.

A damaged file of one model (its ``state.json``, a version's ``metadata.json`` or
``weights.npz``) must not hide the other models, nor the model itself: listings and
status carry a ``Problem`` where the file is, and the rest answers as usual.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from regserve.server.errors import RegserveError, Unavailable
from regserve.server.registry.state import ModelState, VersionMetadata, version_number

__all__ = ["ModelReport", "Problem", "no_serving_version"]


@dataclass(frozen=True)
class Problem:
    """Why something stored cannot be used: an UPPER_SNAKE ``reason`` and a sentence."""

    reason: str
    message: str

    @classmethod
    def of(cls, error: RegserveError) -> Problem:
        """The problem a domain error reports."""
        return cls(error.reason, error.message)


_NO_PROBLEMS: Mapping[str, Problem] = MappingProxyType({})


@dataclass(frozen=True)
class ModelReport:
    """One model as listings and status show it, with what is wrong with it.

    ``state`` is the default (empty) state when ``problem`` says it could not be read.
    """

    model: str
    state: ModelState
    versions: tuple[VersionMetadata, ...]
    """The usable stored versions, in version order."""
    problem: Problem | None = None
    """Why the model's serving state could not be read; None when it was read."""
    damaged: Mapping[str, Problem] = field(default_factory=lambda: _NO_PROBLEMS)
    """Stored versions whose files are missing or unreadable, by version."""
    load_failures: Mapping[str, Problem] = field(default_factory=lambda: _NO_PROBLEMS)
    """Versions this server was to route to but could not load, by version."""
    served_generation: int = 0
    """The generation of the state this server routes the model by; 0 when it routes nothing for it yet."""

    @property
    def version_names(self) -> tuple[str, ...]:
        """Every stored version, usable or damaged, in version order."""
        names = {m.version for m in self.versions} | set(self.damaged)
        return tuple(sorted(names, key=version_number))

    def version_problem(self, version: str) -> Problem | None:
        """Why ``version`` cannot be used, as far as is known; None when nothing is known to be wrong."""
        return self.damaged.get(version) or self.load_failures.get(version)

    @property
    def serving_problem(self) -> Problem | None:
        """Why the serving version named by the state is not served; None when it is, or when none is named."""
        return self.version_problem(self.state.serving) if self.state.serving else None


def no_serving_version(model: str, version: str | None, problem: Problem | None) -> Unavailable:
    """UNAVAILABLE ``NO_SERVING_VERSION`` for ``model``, saying why when ``problem`` is known.

    ``version`` is the version that could not be served, None when the whole model could
    not be routed; the problem's reason goes in the ``cause`` metadata.
    """
    if problem is None:
        return Unavailable(
            f"Model {model!r} has no serving version.", reason="NO_SERVING_VERSION", metadata={"model": model}
        )
    what = f"version {version} is not served" if version else "it cannot be routed"
    metadata = {"model": model, "cause": problem.reason} | ({"version": version} if version else {})
    return Unavailable(
        f"Model {model!r} has no serving version: {what}: {problem.message} ({problem.reason})",
        reason="NO_SERVING_VERSION",
        metadata=metadata,
    )
