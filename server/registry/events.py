"""Registry events: what ``ModelStore`` reports each time it changes the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["EventCallback", "RegistryAction", "RegistryEvent"]

RegistryAction = Literal["create", "promote", "rollback", "freeze", "unfreeze", "split", "delete"]


@dataclass(frozen=True)
class RegistryEvent:
    """One change made to a model.

    ``version`` is the version created, promoted, rolled back to, frozen, unfrozen or
    deleted; None for a change of the traffic split.
    """

    model: str
    action: RegistryAction
    version: str | None = None


EventCallback = Callable[[RegistryEvent], None]
"""Called with each event, on the thread that made the change."""
