"""What a report shows, gathered by the caller from the server: plain values only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ReportData", "ServingRow"]


@dataclass(frozen=True)
class ServingRow:
    """The serving statistics of one version, as GetStatus reports them."""

    version: str
    state: str
    requests: int
    errors: int
    rows: int
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p99_ms: float


@dataclass(frozen=True)
class ReportData:
    """One version of a model and what the served model answered on its validation sample.

    ``coefficients`` has one row per output, in the space the model was fitted in (the
    standardized features when ``standardized``).  ``sample_inputs`` and
    ``sample_targets`` are the stored validation rows (targets, or class indices into
    ``classes`` for a classifier); ``predictions`` are the server's answers on them
    (values, or class indices) and ``probabilities`` a classifier's class probabilities.
    """

    model: str
    version: str
    kind: str
    feature_names: Sequence[str]
    classes: Sequence[str]
    coefficients: np.ndarray
    intercepts: np.ndarray
    standardized: bool
    lineage: Sequence[tuple[str, str]]
    """Label and text of each fact of the version's lineage, in the order shown."""
    metrics: Mapping[str, Mapping[str, float]]
    """Column (``training``, ``validation``, ``cross-validation mean``, ...) -> metric -> value."""
    sample_inputs: np.ndarray
    sample_targets: np.ndarray
    predictions: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    serving: Sequence[ServingRow] = ()
    notes: Sequence[str] = field(default_factory=tuple)
    """Sentences shown on the page about what could not be shown, and why."""
    from_parameters: bool = False
    """Whether the version was stored from fitted parameters (an import, ``train --dask``), which carry no sample."""

    @property
    def is_classifier(self) -> bool:
        """True for a model with classes."""
        return bool(self.classes)
