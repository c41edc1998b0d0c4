"""The check a long computation calls between its steps, so that it can be stopped."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Interrupt", "uninterrupted"]

Interrupt = Callable[[], None]
"""Called between steps of training: returns to go on, raises a ``RegserveError`` to stop.

Training calls it at least once per iteration, epoch, mini-batch, fold and block of
rows read, so it must cost next to nothing (read a clock, test a flag).
"""


def uninterrupted() -> None:
    """An ``Interrupt`` that never stops anything."""
