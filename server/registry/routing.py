"""A/B arm choice: which version of a model answers a request under a traffic split.

The choice is a pure function of the split and a routing key.  The key is hashed to a
point in [0, 1) and the arm whose cumulative, normalised weight interval holds that
point answers, so one caller (one key) always lands on the same arm, on every replica.
Arms are laid out in version order (v2 before v10), never in dict order.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Mapping

from regserve.server.errors import InvalidInput
from regserve.server.registry.text_limits import VERSION_NAME_MAX, too_long

__all__ = ["SplitTable", "check_split_weights", "choose_arm", "key_point"]


def key_point(routing_key: str) -> float:
    """Map a routing key to a point in [0, 1): the first 8 bytes of its BLAKE2b hash."""
    digest = hashlib.blake2b(routing_key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _arm_order(version: str) -> tuple[int, str]:
    # "v10" sorts after "v9"; a name not of the form vN sorts by its text, first.
    digits = version[1:]
    if version.startswith("v") and digits.isdigit():
        return int(digits), version
    return -1, version


def _invalid_split(description: str) -> InvalidInput:
    return InvalidInput(
        f"The traffic split is invalid: {description}.",
        reason="INVALID_SPLIT",
        violations=[("weights", description)],
    )


def check_split_weights(weights: Mapping[str, object]) -> dict[str, float]:
    """The split ``weights`` (version -> relative weight) as floats in version order.

    Every weight must be a finite number >= 0, and at least one must be > 0 unless the
    mapping is empty (which clears a split); otherwise INVALID_SPLIT.  A version name
    longer than ``VERSION_NAME_MAX`` is refused with FIELD_TOO_LONG.
    """
    split: dict[str, float] = {}
    for version, weight in weights.items():
        if len(version) > VERSION_NAME_MAX:
            raise too_long("weights", VERSION_NAME_MAX, len(version), "a version name in weights")
        try:
            value = float(weight)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _invalid_split(f"the weight of {version!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise _invalid_split(f"the weight of {version!r} must be finite and >= 0")
        split[str(version)] = value
    if split and sum(split.values()) <= 0:
        raise _invalid_split("the weights must not all be zero")
    return dict(sorted(split.items(), key=lambda item: _arm_order(item[0])))


class SplitTable:
    """A traffic split prepared once for fast, repeated choices.

    Parameters
    ----------
    split : mapping of str to float
        Version -> relative weight (finite, >= 0, at least one > 0, as
        ``check_split_weights`` requires).  Arms with zero weight are dropped: they are
        never chosen.
    """

    __slots__ = ("arms", "bounds", "weights")

    def __init__(self, split: Mapping[str, float]) -> None:
        checked = check_split_weights(split)
        if not checked:
            raise _invalid_split("no arm has a positive weight")
        items = [(v, w) for v, w in checked.items() if w > 0]
        total = sum(w for _, w in items)
        self.arms: tuple[str, ...] = tuple(v for v, _ in items)
        self.weights: tuple[float, ...] = tuple(w / total for _, w in items)
        bounds, running = [], 0.0
        for _, weight in items:
            running += weight
            bounds.append(running / total)
        bounds[-1] = 1.0  # rounding must not leave a sliver past the last arm
        self.bounds: tuple[float, ...] = tuple(bounds)

    def choose(self, routing_key: str) -> str:
        """The arm for ``routing_key``; an empty key gets a fresh random draw each call."""
        point = key_point(routing_key) if routing_key else random.random()
        # bounds[i] is the (exclusive) upper end of arm i's interval.
        return self.arms[bisect.bisect_right(self.bounds, point)]

    def __repr__(self) -> str:
        shares = ", ".join(f"{v}: {w:.4g}" for v, w in zip(self.arms, self.weights, strict=True))
        return f"SplitTable({{{shares}}})"


def choose_arm(split: Mapping[str, float], routing_key: str) -> str:
    """The version of ``split`` that answers ``routing_key``.

    Deterministic for a non-empty key; an empty key is routed by ``random.random()``,
    so anonymous traffic still follows the weights on average.
    """
    return SplitTable(split).choose(routing_key)
