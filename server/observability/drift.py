"""Drift of live rows against each version's training rows, tallied off the request path.

Predict, BatchPredict and ModelInfer hand every answered block of rows to
``DriftMonitor.observe``, which only appends a reference to the rows to a bounded
queue (a full queue drops the block and counts it).  A background thread, and every
reader before it reads, folds the queue into one ``_Window`` per (model, version):
each block is binned into the version's training quantile bins (``bin_counts``), its
per-feature sums kept, and for a classifier its predicted classes counted.

Binning costs about what predicting does, so a fold tallies at most
``sample_rows_per_second`` × ``interval`` rows of a version: when more were answered
since the last fold, that many are drawn from them uniformly, without replacement (a
seeded generator of the monitor's own), and the rest are counted as sampled out.  A
uniform sample leaves the expected bin shares, and so the PSI, what they would be on
every row; the window then spans the most recent tallied rows.

The window is sliding, over the most recent rows: it keeps ``STEPS`` buckets of
``window_rows / STEPS`` rows, the newest one filling, so it covers between
(STEPS - 1) / STEPS and all of the last ``window_rows`` rows.  Drift is reported once
the window holds at least one full bucket; then, per feature, the population
stability index against the training bins and the shift of the mean in training
standard deviations, and for a classifier the PSI of the predicted classes against
the share of training rows the model gives each class.  A PSI above ``threshold``
flags the feature.

Versions stored without a ``DriftReference`` (before drift detection, or from fitted
parameters) are skipped.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from regserve.server.models.drift import BINS, DriftReference, bin_counts, psi
from regserve.server.registry.events import RegistryEvent
from regserve.server.registry.routes import ServedModel

__all__ = [
    "DEFAULT_QUEUE_BLOCKS",
    "DEFAULT_SAMPLE_ROWS_PER_SECOND",
    "STEPS",
    "DriftCollector",
    "DriftMonitor",
    "FeatureDrift",
    "VersionDrift",
]

logger = logging.getLogger(__name__)

STEPS = 10
"""Buckets a window slides by."""
DEFAULT_QUEUE_BLOCKS = 16_384
"""Blocks of rows the queue holds before new ones are dropped."""
DEFAULT_SAMPLE_ROWS_PER_SECOND = 20_000
"""Most rows of one version tallied per second; more are sampled uniformly down to it."""


@dataclass(frozen=True)
class FeatureDrift:
    """The drift of one feature over the window."""

    name: str
    psi: float
    mean_shift: float
    """(window mean - training mean) / training standard deviation; ±inf for a constant training feature that moved."""
    flagged: bool


@dataclass(frozen=True)
class VersionDrift:
    """The drift of one version over its window."""

    rows: int
    """Rows in the window."""
    threshold: float
    features: tuple[FeatureDrift, ...]
    class_psi: float | None = None
    """PSI of the predicted classes; None for a regression."""
    class_flagged: bool = False

    @property
    def flagged_features(self) -> int:
        return sum(feature.flagged for feature in self.features)


class _Bucket:
    """Tallies of some rows: count, per-feature bin counts and sums, predicted-class counts."""

    __slots__ = ("classes", "counts", "rows", "sums")

    def __init__(self, n_features: int, n_classes: int) -> None:
        self.rows = 0
        self.counts = np.zeros((n_features, BINS), dtype=np.int64)
        self.sums = np.zeros(n_features)
        self.classes = np.zeros(n_classes, dtype=np.int64)


class _Window:
    """The sliding window of one version."""

    def __init__(self, reference: DriftReference, names: tuple[str, ...], window_rows: int) -> None:
        self.reference, self.names = reference, names
        self._step = max(1, window_rows // STEPS)  # rounded down, so the window never spans more than asked
        n_classes = 0 if reference.class_proportions is None else reference.class_proportions.size
        self._shape = (reference.n_features, n_classes)
        self._full: collections.deque[_Bucket] = collections.deque(maxlen=STEPS - 1)
        self._current = _Bucket(*self._shape)

    def add(self, X: np.ndarray, values: np.ndarray) -> None:
        """Tally rows ``X`` (n, n_features) and their predictions ``values`` (n,), bucket by bucket."""
        start = 0
        while start < len(X):
            bucket = self._current
            stop = min(len(X), start + self._step - bucket.rows)
            part = X[start:stop]
            bucket.rows += len(part)
            bucket.counts += bin_counts(part, self.reference.edges)
            bucket.sums += part.sum(axis=0)
            if bucket.classes.size:
                bucket.classes += np.bincount(values[start:stop].astype(np.intp), minlength=bucket.classes.size)
            if bucket.rows == self._step:
                self._full.append(bucket)
                self._current = _Bucket(*self._shape)
            start = stop

    def drift(self, threshold: float) -> VersionDrift | None:
        """The drift over the window; None until it holds a full bucket."""
        if not self._full:
            return None
        buckets = [*self._full, self._current]
        rows = sum(b.rows for b in buckets)
        counts = np.sum([b.counts for b in buckets], axis=0)
        sums = np.sum([b.sums for b in buckets], axis=0)
        reference = self.reference
        values = psi(reference.proportions, counts)
        shift = _mean_shift(sums / rows, reference.mean, reference.std)
        features = tuple(
            FeatureDrift(name, float(p), float(s), bool(p > threshold))
            for name, p, s in zip(self.names, values, shift, strict=True)
        )
        if reference.class_proportions is None:
            return VersionDrift(rows, threshold, features)
        class_psi = float(psi(reference.class_proportions, np.sum([b.classes for b in buckets], axis=0)))
        return VersionDrift(rows, threshold, features, class_psi, class_psi > threshold)


def _mean_shift(mean: np.ndarray, train_mean: np.ndarray, train_std: np.ndarray) -> np.ndarray:
    delta = mean - train_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = delta / train_std
    # A feature constant in training has no scale: unmoved is no shift, moved is an infinite one.
    constant = train_std == 0
    shift[constant] = np.where(delta[constant] == 0, 0.0, np.copysign(np.inf, delta[constant]))
    return shift


def _ignore(served: ServedModel, X: np.ndarray, values: np.ndarray) -> None:
    """What ``observe`` is when drift is off."""


class DriftMonitor:
    """Per-version drift windows of the rows this process predicts.

    Parameters
    ----------
    window_rows : int
        Rows a window spans; 0 turns drift off (``observe`` does nothing).
    threshold : float
        The PSI above which a feature (or the predicted classes) is flagged.
    queue_blocks : int
        Blocks of rows waiting to be tallied before new ones are dropped.
    interval : float
        Seconds between two folds of the queue by the background thread.
    sample_rows_per_second : int
        Rows of one version a fold tallies at most, per second of ``interval``; 0 tallies every row.
    """

    def __init__(
        self,
        window_rows: int = 10_000,
        threshold: float = 0.2,
        *,
        queue_blocks: int = DEFAULT_QUEUE_BLOCKS,
        interval: float = 0.1,
        sample_rows_per_second: int = DEFAULT_SAMPLE_ROWS_PER_SECOND,
    ) -> None:
        self.window_rows, self.threshold, self.interval = window_rows, threshold, interval
        self._fold_rows = math.ceil(sample_rows_per_second * interval) if sample_rows_per_second > 0 else 0
        self._rng = np.random.default_rng(0x5EED)  # which rows are tallied needs no secrecy, only uniformity
        self._sampled_out = 0
        self._limit = queue_blocks
        self._queue: collections.deque[tuple[ServedModel, np.ndarray, np.ndarray]] = collections.deque()
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()
        self._drop_lock = threading.Lock()  # apart from ``_lock``, so a drop never waits for a fold
        self._dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if window_rows <= 0:
            self.observe = _ignore  # type: ignore[method-assign]

    def observe(self, served: ServedModel, X: np.ndarray, values: np.ndarray) -> None:
        """Queue rows ``X`` (n, n_features) that ``served`` answered with ``values`` (n,); the request path's part."""
        queue = self._queue
        if len(queue) < self._limit:
            queue.append((served, X, values))
        else:
            self._count_drop()

    def _count_drop(self) -> None:
        with self._drop_lock:
            self._dropped += 1

    @property
    def dropped(self) -> int:
        """Blocks of rows dropped because the queue was full."""
        return self._dropped

    @property
    def sampled_out(self) -> int:
        """Rows answered but left out of the tallies by the per-fold sample."""
        return self._sampled_out

    def drain(self) -> None:
        """Tally every queued block into its version's window."""
        with self._lock:
            pending = self._queue
            grouped: dict[tuple[str, str], list[tuple[ServedModel, np.ndarray, np.ndarray]]] = {}
            try:
                while True:  # popleft is atomic: a block queued meanwhile is taken now or next time
                    item = pending.popleft()
                    if item[0].drift is not None:
                        grouped.setdefault((item[0].name, item[0].version), []).append(item)
            except IndexError:
                pass
            for key, items in grouped.items():
                window = self._windows.get(key)
                if window is None:
                    served = items[0][0]
                    window = self._window(served)
                    self._windows[key] = window
                X, values = self._sample([x for _, x, _ in items], [v for _, _, v in items])
                window.add(X, values)

    def _sample(self, blocks: list[np.ndarray], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``blocks`` (and their ``values``) to tally: all, or a uniform sample of the fold's budget.

        Only the chosen rows are copied, so a fold of a fast stream costs the budget, not the stream.
        """
        sizes = [len(block) for block in blocks]
        total = sum(sizes)
        budget = self._fold_rows
        if not budget or total <= budget:
            if len(blocks) == 1:
                return blocks[0], values[0]
            return np.concatenate(blocks), np.concatenate(values)
        self._sampled_out += total - budget
        picks = np.sort(self._rng.choice(total, size=budget, replace=False))
        bounds = np.searchsorted(picks, np.cumsum([0, *sizes]))
        X_parts, value_parts, offset = [], [], 0
        for block, value, size, lo, hi in zip(blocks, values, sizes, bounds[:-1], bounds[1:], strict=True):
            if hi > lo:
                rows = picks[lo:hi] - offset
                X_parts.append(block[rows])
                value_parts.append(value[rows])
            offset += size
        return np.concatenate(X_parts), np.concatenate(value_parts)

    def _window(self, served: ServedModel) -> _Window:
        reference = served.drift
        assert reference is not None
        names = tuple(served.metadata.feature_names)
        if len(names) != reference.n_features:
            names = tuple(f"x{j}" for j in range(reference.n_features))
        return _Window(reference, names, self.window_rows)

    def summary(self, model: str, version: str) -> VersionDrift | None:
        """The drift of one version now; None when it has no reference or too few rows yet."""
        self.drain()
        with self._lock:
            window = self._windows.get((model, version))
            return None if window is None else window.drift(self.threshold)

    def summaries(self) -> list[tuple[tuple[str, str], VersionDrift]]:
        """((model, version), drift) of every version with drift to report, for exporters."""
        self.drain()
        with self._lock:
            found = [(key, window.drift(self.threshold)) for key, window in self._windows.items()]
        return [(key, drift) for key, drift in found if drift is not None]

    def forget_deleted(self, event: RegistryEvent) -> None:
        """Drop the window of a version this process deleted (a ``ModelStore`` listener), so its series end."""
        if event.action == "delete" and event.version is not None:
            self.drain()
            with self._lock:
                self._windows.pop((event.model, event.version), None)

    def start(self) -> None:
        """Fold the queue every ``interval`` seconds in a daemon thread, so it does not fill between reads."""
        if self._thread is not None or self.window_rows <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="regserve-drift", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.drain()
            except Exception:
                logger.exception("tallying rows for drift failed; those rows are left out")

    def stop(self) -> None:
        """Stop the background thread and wait for it."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()


class DriftCollector(Collector):
    """The drift gauges of a ``DriftMonitor``, computed at scrape time."""

    def __init__(self, monitor: DriftMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        per_feature = ["model", "version", "feature"]
        per_version = ["model", "version"]
        psi_family = GaugeMetricFamily(
            "regserve_drift_psi",
            "Population stability index of a feature over the drift window, against the training rows' deciles.",
            labels=per_feature,
        )
        shift_family = GaugeMetricFamily(
            "regserve_drift_mean_shift",
            "Shift of a feature's mean over the drift window, in training standard deviations.",
            labels=per_feature,
        )
        class_family = GaugeMetricFamily(
            "regserve_drift_class_psi",
            "Population stability index of a classifier's predicted classes over the drift window.",
            labels=per_version,
        )
        flagged_family = GaugeMetricFamily(
            "regserve_drift_flagged",
            "Features whose PSI is above --drift-threshold over the drift window.",
            labels=per_version,
        )
        rows_family = GaugeMetricFamily(
            "regserve_drift_window_rows", "Rows in the drift window of a version.", labels=per_version
        )
        for (model, version), drift in self._monitor.summaries():
            for feature in drift.features:
                psi_family.add_metric([model, version, feature.name], feature.psi)
                shift_family.add_metric([model, version, feature.name], feature.mean_shift)
            if drift.class_psi is not None:
                class_family.add_metric([model, version], drift.class_psi)
            flagged_family.add_metric([model, version], drift.flagged_features)
            rows_family.add_metric([model, version], drift.rows)
        yield psi_family
        yield shift_family
        yield class_family
        yield flagged_family
        yield rows_family
        yield CounterMetricFamily(
            "regserve_drift_dropped_blocks",
            "Blocks of predicted rows left out of drift because the queue was full.",
            value=self._monitor.dropped,
        )
        yield CounterMetricFamily(
            "regserve_drift_sampled_out_rows",
            "Predicted rows left out of drift by the per-version sample of at most 20,000 rows a second.",
            value=self._monitor.sampled_out,
        )
