"""The promotion gate: a new version replaces the serving one only if it validates no worse."""

from __future__ import annotations

import math

from regserve.server.registry.state import VersionMetadata

__all__ = ["passes_gate"]


def _validation_metric(metadata: VersionMetadata, name: str) -> float | None:
    value = (metadata.validation_metrics or {}).get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def passes_gate(new: VersionMetadata, serving: VersionMetadata, classifier: bool) -> tuple[bool, str]:
    """Whether ``new`` may replace ``serving``, and why.

    It may when its validation metric is no worse: ``mse`` lower or equal for
    regressors, ``accuracy`` higher or equal for classifiers.  A version without that
    metric, on either side, does not pass.
    """
    name, better = ("accuracy", max) if classifier else ("mse", min)
    old_value = _validation_metric(serving, name)
    new_value = _validation_metric(new, name)
    if new_value is None or old_value is None:
        version = new.version if new_value is None else serving.version
        return False, f"gate: {version} has no validation {name}; not promoted"
    verb = "higher" if classifier else "lower"
    if better(new_value, old_value) == new_value:
        return True, (
            f"gate: validation {name} {new_value:.6g} of {new.version} is {verb} than or "
            f"equal to {old_value:.6g} of {serving.version}"
        )
    return False, (
        f"gate: validation {name} {new_value:.6g} of {new.version} is worse than "
        f"{old_value:.6g} of {serving.version}; not promoted"
    )
