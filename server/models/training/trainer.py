"""``Trainer``: fold a stream of chunks into a fitted ``LinearModel``, score it and describe the run.

``Trainer`` accepts the data set chunk by chunk and never holds it whole:

* each chunk is checked (``chunks``) and each row assigned to the training or
  validation split, and to a cross-validation fold, by seeded draws indexed by
  its *global* row number (``sampling``), so the assignment does not depend on
  how the stream was chunked;
* for the training rows and the validation rows it keeps centred moments of
  ``[x, y]`` merged with Chan et al.'s pairwise update (``moments``): enough
  for the closed form, the standardization and the feature statistics, in
  O(d²) memory;
* the training rows also feed a bounded sample keyed by their global row
  numbers, from which the drift reference's bin edges are drawn
  (``drift_reference``);
* every row is also spooled to a file in this process's spool directory
  (``spool_directory``), read back through ``np.memmap`` in blocks for the
  iterative solvers and each cross-validation fold's moments (``spool``), so
  the folds cost O(d²) memory each, not O(folds·d²); after the fit, one read
  of the spool feeds the training and validation metrics, the inference
  statistics (``statistics``), the drift reference's bin counts and the
  validation sample (``validation_sample``).

What the run will cost is estimated and checked against ``TrainingLimits``
(``budget``) as soon as the spec, the features, the classes and the rows are
known, before anything is allocated for them; ``interrupt`` is called for every
chunk, block, iteration and fold, so a run stops soon after its caller goes
away, its deadline passes or the server shuts down.

The same rows sent in one chunk or in hundreds give the same model (up to
rounding in the moment merges) and the same metadata, duration aside.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import os
import tempfile
import time
from typing import BinaryIO

import joblib
import numpy as np

from regserve.server.errors import FailedPrecondition, InvalidInput, ResourceExhausted
from regserve.server.models import solvers, statistics
from regserve.server.models.estimator import LinearModel
from regserve.server.models.executors import side_by_side
from regserve.server.models.interrupt import Interrupt, uninterrupted
from regserve.server.models.scoring import ModelScores
from regserve.server.models.training.budget import DEFAULT_LIMITS, RunSize, TrainingBudget, TrainingLimits
from regserve.server.models.training.chunks import checked_features, checked_labels, checked_targets
from regserve.server.models.training.drift_reference import DriftCounts, EdgeSample, build_drift_reference
from regserve.server.models.training.fitting import check_model_finite, fit_model, settle_final_loss
from regserve.server.models.training.labels import LabelTable
from regserve.server.models.training.moments import Moments
from regserve.server.models.training.sampling import RowGroups
from regserve.server.models.training.separation import find_separation
from regserve.server.models.training.spec import TrainResult, TrainSpec
from regserve.server.models.training.spool import SpoolFile, SpoolView
from regserve.server.models.training.spool_directory import process_spool_dir
from regserve.server.models.training.validation_sample import SampleDraw

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)

_COUNTS_AHEAD = 3
"""Blocks of the scoring pass that may wait for their drift bin counts: each is at most ``spool.BLOCK_BYTES``."""
_SHARED_SCORE_ROWS = 4096
"""Fewest rows of a block whose scoring is shared with a second thread."""
_SHARED_SCORE_VALUES = 2**17
"""Most entries (1 MiB) of the inference accumulator that a second scoring thread may hold a copy of."""
_STOPS_ON_THE_LOSS = ("gd", "sgd")
"""Solvers that stop on a small change of the loss, which does not bound the distance to the optimum:
their coefficients get no statistics (the closed form is exact, Newton stops on the gradient's norm)."""


class Trainer:
    """Folds a stream of chunks into a model. Context manager; ``close()`` removes temp files.

    Parameters
    ----------
    spec : TrainSpec
        Validated on construction.
    spool_dir : path, optional
        Where the temporary spool file lives; default this process's directory
        under ``default_spool_root()`` (see ``spool_directory``).
    limits : TrainingLimits, optional
        The most the run may use; past them it is refused (``TRAINING_TOO_LARGE``).
    interrupt : Interrupt, optional
        Called between steps; whatever it raises stops the run and leaves nothing behind.

    Raises
    ------
    InvalidInput
        For a bad spec.
    ResourceExhausted
        ``TRAINING_TOO_LARGE`` when the spec alone needs more than ``limits``.
    """

    def __init__(
        self,
        spec: TrainSpec,
        *,
        spool_dir: str | os.PathLike | None = None,
        limits: TrainingLimits = DEFAULT_LIMITS,
        interrupt: Interrupt = uninterrupted,
    ) -> None:
        spec.validate()
        self.spec = spec
        self._budget = TrainingBudget(spec, limits)
        self._interrupt = interrupt
        self._started = time.perf_counter()
        self._d = len(spec.feature_names) or None
        self._n = 0
        self._n_train = 0
        self._hash = hashlib.sha256()
        self._declared = set(spec.class_labels) or None
        self._n_folds = spec.cv_folds or 1
        self._labels = LabelTable(self._n_folds)
        self._budget.check(self._size())
        # The training rows' moments, then the validation rows', from the first chunk on.
        self._moments: tuple[Moments, Moments] | None = None
        # The training rows the drift reference's bin edges come from, drawn as they arrive.
        self._edge_sample: EdgeSample | None = None
        self._groups = RowGroups(spec.seed, spec.validation_fraction, self._n_folds)
        self._fold_rows = np.zeros(self._n_folds, dtype=np.int64)
        directory = process_spool_dir() if spool_dir is None else spool_dir
        fd, spool_path = tempfile.mkstemp(prefix="regserve-spool-", suffix=".f64", dir=directory)
        self._spool_path: str | None = spool_path
        self._spool: BinaryIO | None = os.fdopen(fd, "wb")
        # A chunk's fingerprint and spool write run in this thread while the next chunk is received,
        # checked and added to the moments: hashlib and file writes release the GIL for large buffers.
        self._store_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="regserve-spool")
        self._stored: concurrent.futures.Future | None = None
        # The moments' centred rows of each chunk, reused from chunk to chunk; released when the intake ends.
        self._scratch = np.empty(0)
        self._finished = False

    @property
    def rows_seen(self) -> int:
        """Rows accepted so far."""
        return self._n

    def _size(self, rows: int = 0, train_rows: int = 0) -> RunSize:
        """What is known of the run, with ``rows`` (``train_rows`` of them for training) more."""
        classes = max(len(self._labels), len(self.spec.class_labels))
        return RunSize(self._d or 0, classes, self._n + rows, self._n_train + train_rows)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spool file; safe to call more than once."""
        if self._stored is not None:
            concurrent.futures.wait([self._stored])  # its error, if any, no longer matters to a closed run
            self._stored = None
        self._store_thread.shutdown()
        if self._spool is not None:
            spool, self._spool = self._spool, None
            with contextlib.suppress(OSError):  # a write still buffered may fail on a full disk; it is removed anyway
                spool.close()
        if self._spool_path is not None:
            try:
                os.unlink(self._spool_path)
            except FileNotFoundError:
                pass
            self._spool_path = None

    # ------------------------------------------------------------------ intake

    def add_chunk(self, X: np.ndarray, y: np.ndarray) -> None:
        """Validate and absorb rows ``X`` (n, d) with targets or labels ``y`` (n,).

        Raises InvalidInput for bad rows, ResourceExhausted ``TRAINING_TOO_LARGE``
        once the rows, features or classes sent so far need more than the limits
        (which also closes the trainer), and whatever ``interrupt`` raises.
        """
        self._interrupt()
        if self._finished or self._spool is None:
            raise FailedPrecondition("This trainer has finished or been closed.", reason="TRAINER_CLOSED")
        self._settle()
        X, y = np.asarray(X), np.asarray(y)
        if X.ndim == 2 and X.shape[0] == 0 and y.size == 0:
            return
        X, targets, labels = self._checked(X, y)
        n, d = X.shape
        group, n_train = self._groups.take(self._n, n)
        if labels is not None:
            targets = self._labels.ids(labels, group)
        try:
            self._budget.check(self._size(n, n_train))
        except ResourceExhausted:
            self.close()  # the labels already count this chunk: a refused run cannot go on
            raise
        if self._moments is None or self._edge_sample is None:
            p = d + (self.spec.kind != "logistic")
            self._moments = (Moments(p), Moments(p))
            self._edge_sample = EdgeSample(self.spec.seed, d)
        # One [x, y, group] array feeds the fingerprint, the moments and the spool, so each row is copied once.
        rows = np.empty((n, d + 2), dtype="<f8")
        rows[:, :d], rows[:, d], rows[:, d + 1] = X, targets, group
        # The labels as their ids' spellings, taken now: the table grows while the store thread hashes.
        spelled = None if labels is None else self._labels.labels()
        self._stored = self._store_thread.submit(self._store, self._spool, rows, spelled)
        V = rows[:, : d + (self.spec.kind != "logistic")]
        training = group >= 0
        if self._scratch.size < V.size:
            self._scratch = np.empty(V.size)
        if n_train == n:
            self._moments[0].add(V, self._scratch)
        else:
            self._moments[0].add(V[training], self._scratch)
            self._moments[1].add(V[~training], self._scratch)
        self._edge_sample.add(self._n, rows[:, :d], None if n_train == n else training)
        self._n += n
        self._n_train += n_train
        self._fold_rows += np.bincount(group[training].astype(np.intp), minlength=self._n_folds)

    def _checked(self, X: np.ndarray, y: np.ndarray):
        """Return ``(X float64, targets or None, labels or None)`` or raise InvalidInput."""
        X = checked_features(X, y, self._d, self._n)
        self._d = X.shape[1]
        if self.spec.kind != "logistic":
            return X, checked_targets(y, self._n), None
        return X, None, checked_labels(y, self._n, self._declared)

    def _settle(self) -> None:
        """Wait for the last chunk's fingerprint and spool write; raise what they raised."""
        stored, self._stored = self._stored, None
        if stored is not None:
            stored.result()

    def _store(self, spool: BinaryIO, rows: np.ndarray, labels: list[str] | None) -> None:
        """Hash spool ``rows`` into the fingerprint and append them to the spool file ``spool``.

        ``labels`` spells the label ids in the rows' y column (None for regression targets),
        so no row's label is looked up by its text again.
        """
        if labels is None:
            self._fingerprint(rows, None)
        else:
            _hash_labelled(self._hash, rows, labels, rows[:, -2].astype(np.intp))
        spool.write(rows.data)

    def _fingerprint(self, rows: np.ndarray, labels: np.ndarray | None) -> None:
        """Hash spool ``rows`` [x, y, group] (little-endian float64) in the fingerprint's byte format.

        Row-major [x, y] bytes, row after row, or for labels (one per row) each row's x bytes
        and then its label as a 4-byte little-endian length and UTF-8 bytes: identical however
        the rows are chunked.
        """
        d = rows.shape[1] - 2
        if labels is None:
            self._hash.update(np.ascontiguousarray(rows[:, : d + 1]).data)
            return
        values, inverse = np.unique(labels, return_inverse=True)
        _hash_labelled(self._hash, rows, [str(v) for v in values], inverse.ravel())

    # ------------------------------------------------------------------ fitting

    def finish(self) -> TrainResult:
        """Fit the model, score it, and remove the spool file (also when raising).

        Raises
        ------
        InvalidInput
            ``EMPTY_TRAINING_SET``, ``SINGLE_CLASS`` or ``TOO_FEW_ROWS``.
        ResourceExhausted
            ``TRAINING_TOO_LARGE`` when the fit of these rows needs more than the limits.
        """
        writer, spool_path = self._spool, self._spool_path
        if self._finished or writer is None or spool_path is None:
            raise FailedPrecondition("This trainer has finished or been closed.", reason="TRAINER_CLOSED")
        self._finished = True
        try:
            return self._finish(writer, spool_path)
        finally:
            self.close()

    def _finish(self, writer: BinaryIO, spool_path: str) -> TrainResult:
        spec = self.spec
        self._settle()
        self._scratch = np.empty(0)
        d, moments, edge_sample = self._check_sizes()
        classes, label_map = self._classes()
        self._budget.check(self._size())
        writer.close()
        self._spool = None
        spool = SpoolFile(spool_path, (self._n, d + 2))
        # The drift edges' quantiles are taken in the store thread, idle by now, while the model is fitted.
        edges = self._store_thread.submit(edge_sample.edges)
        try:
            folds = list(range(self._n_folds))
            model, info = self._fit(spool, folds, moments[0], classes, label_map)
            check_model_finite(model, spec)
            warnings = self._separation(model, spool, folds, label_map)
            if warnings:
                info.converged = False  # the tolerance was met only because the weights ran off
            else:
                warnings = self._convergence(info)
            # Separated classes have no finite maximum-likelihood estimate for standard errors to describe,
            # and a fit that stopped short is not the estimate they describe.
            scores = self._score(model, spool, folds, moments[0], edges, label_map, inference=not warnings)
            training, validation, model.inference, drift_counts, sample = scores
            settle_final_loss(info, spec, model, training, self._n_train)
            cv = self._cross_validate(spool, classes, label_map) if spec.cv_folds else None
            confusion = training.get("confusion_matrix") if classes is not None else None
            reference = build_drift_reference(drift_counts, moments[0], confusion)
        except np.linalg.LinAlgError as exc:
            raise InvalidInput(
                f"The solver failed on this data ({exc}); scale the features or add a penalty.",
                reason="NUMERICAL_FAILURE",
                violations=[("chunks", "the data makes the problem numerically unsolvable")],
            ) from exc
        finally:
            del spool
        names = list(spec.feature_names) or [f"x{j}" for j in range(d)]
        metadata = {
            "kind": spec.kind,
            "solver": spec.resolved_solver,
            "spec": spec.to_dict(),
            "n_samples": self._n,
            "n_train": self._n_train,
            "n_validation": self._n - self._n_train,
            "n_features": d,
            "feature_names": names,
            "classes": None if classes is None else list(classes),
            "fingerprint": self._hash.hexdigest(),
            "feature_stats": self._feature_stats(names),
            "training_metrics": training,
            "validation_metrics": validation,
            "cv_metrics": cv,
            "solver_info": dataclasses.asdict(info),
            "warnings": warnings + self._data_warnings(classes, d),
            "inference_note": self._inference_note(model, warnings, d),
            "validation_sample_rows": 0 if sample is None else len(sample[1]),
            "duration_seconds": time.perf_counter() - self._started,
        }
        logger.info(
            "trained %s/%s on %d rows x %d features in %.3fs",
            spec.kind,
            metadata["solver"],
            self._n,
            d,
            metadata["duration_seconds"],
        )
        return TrainResult(
            model=model, metadata=_json_ready(metadata), validation_sample=sample, drift_reference=reference
        )

    def _check_sizes(self) -> tuple[int, tuple[Moments, Moments], EdgeSample]:
        """The feature count, the moments and the edge sample, once the rows sent are enough for the spec."""
        spec, n_validation = self.spec, self._n - self._n_train
        if self._n == 0 or self._d is None or self._moments is None or self._edge_sample is None:
            raise InvalidInput(
                "No training rows were sent.",
                reason="EMPTY_TRAINING_SET",
                violations=[("chunks", "send at least one row")],
            )
        if spec.validation_fraction > 0 and (n_validation < 1 or self._n_train < 2):
            raise InvalidInput(
                f"{self._n} rows give {n_validation} validation and {self._n_train} training rows.",
                reason="TOO_FEW_ROWS",
                violations=[("spec.validation_fraction", "needs >= 1 validation and >= 2 training rows")],
            )
        # A fold is dealt by its rows' global indices, so a few training rows may leave one empty.
        if spec.cv_folds and (self._n_train < spec.cv_folds or not self._fold_rows.all()):
            raise InvalidInput(
                f"{self._n_train} training rows cannot fill {spec.cv_folds} folds.",
                reason="TOO_FEW_ROWS",
                violations=[("spec.cv_folds", f"needs at least {spec.cv_folds} training rows")],
            )
        return self._d, self._moments, self._edge_sample

    def _classes(self) -> tuple[tuple[str, ...] | None, np.ndarray | None]:
        """Sorted classes and the map from first-seen label id to class index."""
        if self.spec.kind != "logistic":
            return None, None
        return self._labels.classes()

    def _fit(
        self, spool: SpoolFile, groups: list[int], moments: Moments, classes, label_map
    ) -> tuple[LinearModel, solvers.SolverInfo]:
        """Fit on the training groups (folds) ``groups``, whose rows have the moments ``moments``."""
        d = spool.shape[1] - 2  # spool rows are [x, y or label id, group]
        return fit_model(self.spec, d, moments, spool, self._chosen(groups), classes, label_map, self._interrupt)

    def _chosen(self, groups: list[int]) -> list[int] | None:
        """``groups``, or None when they hold every spooled row: a view of all rows reads no group column."""
        every = set(range(self._n_folds)) | ({-1} if self._n > self._n_train else set())
        return None if every <= set(groups) else groups

    def _score(
        self,
        model: LinearModel,
        spool: SpoolFile,
        folds: list[int],
        moments: Moments,
        edges: concurrent.futures.Future,
        label_map,
        *,
        inference: bool,
    ):
        """Everything the finish phase reads the rows for, from one read of the spool.

        ``edges`` is the store thread's job that takes the drift edges; the bins are counted in that
        thread after it, so the scoring does not wait for the edges, and once they are taken this
        thread counts half of each block's bins itself.

        Returns the training metrics, the validation metrics (None without a split), the
        inference (None where it does not apply, or when ``inference`` is False), the
        training rows' drift bin counts and the validation sample (None without a split).
        """
        d = spool.shape[1] - 2
        n_validation = self._n - self._n_train
        groups = folds + ([-1] if n_validation else [])
        view = SpoolView(spool, self._chosen(groups), 0.0, 1.0, 0, label_map, n_outputs=model.coef_.shape[0])
        # Each training block is scored in two halves, the second in a second thread with tallies of
        # its own, added in at the end: the same rows go to the same half whatever the scheduling.
        # A second inference accumulator (p x p) is only worth its memory while it is small.
        tally = self._inference_tally(model, moments) if inference else None
        lanes = [_ScoreLane(model, tally)]
        if tally is None or (model.coef_.shape[1] + 1) ** 2 <= _SHARED_SCORE_VALUES:
            lanes.append(_ScoreLane(model, None if tally is None else tally.fork()))
        validation = ModelScores(model) if n_validation else None
        draw = SampleDraw(n_validation, d, self.spec.seed) if n_validation else None
        # Queued behind the edges' job in the same one-worker thread, so it runs once they are taken.
        made = self._store_thread.submit(lambda: DriftCounts(edges.result(), d + 2))
        # The bins are counted in the intake's thread, idle by now, while this one scores: NumPy's
        # comparisons and BLAS release the GIL.  Up to _COUNTS_AHEAD blocks wait for their count, so
        # this thread is not held back block by block while that one starts behind the edges' job.
        # Once the edges are taken, this thread counts the first half of each block itself, into
        # counts of its own: the counting costs more than the scoring, and counts add exactly.
        counting: collections.deque[concurrent.futures.Future] = collections.deque()
        for block in view.rows():
            self._interrupt()
            if validation is not None and draw is not None:
                held_out = block[:, -1] < 0
                if held_out.any():
                    X, y = view.xy(block[held_out])
                    validation.update(X, y)
                    draw.update(X, y)
                    block = block[~held_out]
                if block.shape[0] == 0:
                    continue
            while len(counting) >= _COUNTS_AHEAD:
                counting.popleft().result()
            shared = block.shape[0] // 2 if made.done() and block.shape[0] >= _SHARED_SCORE_ROWS else 0
            if shared and lanes[0].counts is None:
                lanes[0].counts = DriftCounts(made.result().edges, d + 2)
            counting.append(self._store_thread.submit(lambda rows: made.result().update(rows), block[shared:]))
            X, y = view.xy(block)
            half = X.shape[0] // 2 if len(lanes) > 1 and X.shape[0] >= _SHARED_SCORE_ROWS else 0
            side_by_side(
                functools.partial(lanes[0].update, X[: half or None], y[: half or None], block[:shared]),
                functools.partial(lanes[1].update, X[half:], y[half:]) if half else None,
            )
        for job in counting:
            job.result()
        counts = made.result()
        if lanes[0].counts is not None:
            counts.counts += lanes[0].counts.counts
        for lane in lanes[1:]:
            lanes[0].merge(lane)
        training, statistics_tally = lanes[0].metrics, lanes[0].tally
        return (
            training.result(),
            None if validation is None else validation.result(),
            None if statistics_tally is None else statistics_tally.result(),
            counts,
            None if draw is None else draw.result(),
        )

    def _convergence(self, info: solvers.SolverInfo) -> list[dict]:
        """The warning of an iterative fit that stopped before its tolerance was met, if any."""
        if info.converged is not False:
            return []
        solver = self.spec.resolved_solver
        return [
            {
                "reason": "NOT_CONVERGED",
                "message": (
                    f"The {solver} solver stopped after {info.iterations} iterations without meeting its tolerance: "
                    "the coefficients are not the minimum of the objective. Use the closed form (linear, ridge) or "
                    "Newton (logistic), standardize the features, or allow more epochs or iterations."
                ),
            }
        ]

    def _data_warnings(self, classes: tuple[str, ...] | None, d: int) -> list[dict]:
        """Warnings about what the training rows let the fit say: a class no training row holds, and an
        unpenalized linear fit with no more training rows than parameters."""
        spec, found = self.spec, []
        if classes is not None:
            untrained = self._labels.untrained()
            if untrained:
                shown = ", ".join(repr(label) for label in untrained[:5])
                found.append(
                    {
                        "reason": "CLASS_NOT_IN_TRAINING",
                        "message": (
                            f"No training row holds the class {shown}: every row of it fell in the validation split, "
                            "so the model never predicts it. Send more rows of it, or change --seed or "
                            "--validation-fraction."
                        ),
                    }
                )
        parameters = d + int(spec.fit_intercept)
        if spec.kind != "logistic" and not spec.penalised and self._n_train <= parameters:
            found.append(
                {
                    "reason": "TOO_FEW_ROWS_FOR_PARAMETERS",
                    "message": (
                        f"{self._n_train} training rows for {parameters} parameters: the fit passes through every "
                        "training row, so the training metrics say nothing about new rows. Send more rows than "
                        "parameters, or add a penalty (ridge)."
                    ),
                }
            )
        return found

    def _inference_note(self, model: LinearModel, warnings: list[dict], d: int) -> str | None:
        """Why a fit that ``statistics`` would describe carries no inference; None when it carries it or is
        of a kind the statistics never describe (their own note says why)."""
        spec = self.spec
        n_classes = len(model.classes_ or ())
        if model.inference is not None or statistics.unavailable_note(spec.kind, spec.penalised, n_classes):
            return None
        if warnings:
            return (
                f"{warnings[0]['reason'].lower().replace('_', ' ')} (see the warnings): the coefficients are not the "
                "estimate that standard errors, tests and intervals describe"
            )
        if spec.resolved_solver in _STOPS_ON_THE_LOSS:
            return (
                f"{spec.resolved_solver} stops when the loss changes by less than its tolerance, short of the optimum "
                "that standard errors, tests and intervals describe; train with "
                + ("newton" if spec.kind == "logistic" else "the closed form")
                + " for them"
            )
        parameters = d + int(spec.fit_intercept)
        if self._n_train <= parameters:
            return (
                f"{self._n_train} training rows for {parameters} parameters leave no residual degrees of freedom, "
                "so no standard errors can be estimated"
            )
        what = "XᵀX" if spec.kind == "linear" else "the Hessian"
        return (
            f"{what} of the training rows is singular (a constant or collinear feature): the coefficients are not "
            "identified, so no standard errors can be estimated; drop or combine the redundant features"
        )

    def _inference_tally(self, model: LinearModel, moments: Moments):
        """The tally of the covariances and fit statistics for tests and intervals; None for fits they do not describe.

        Only unpenalized linear and binary logistic fits get them (``statistics``).
        """
        spec = self.spec
        binary = model.classes_ is None or len(model.classes_) == 2
        if spec.kind == "ridge" or spec.penalised or not binary or spec.resolved_solver in _STOPS_ON_THE_LOSS:
            return None
        if spec.kind == "linear":
            return statistics.LinearInferenceTally(model, moments, fit_intercept=spec.fit_intercept)
        return statistics.LogisticInferenceTally(model, fit_intercept=spec.fit_intercept)

    def _moments_of(self, spool: SpoolFile, groups: list[int]) -> Moments:
        """The moments of the spooled rows of ``groups``, as the stream's moments are kept."""
        p = spool.shape[1] - 2 + (self.spec.kind != "logistic")  # [x] or [x, y]
        moments = Moments(p)
        for block in SpoolView(spool, groups, 0.0, 1.0, 0, None).rows():
            self._interrupt()
            moments.add(block[:, :p])
        return moments

    def _separation(self, model: LinearModel, spool: SpoolFile, groups: list[int], label_map) -> list[dict]:
        """The separation warning of an unpenalised logistic fit on the rows of ``groups``, if any."""
        if self.spec.kind != "logistic" or self.spec.penalised:
            return []
        view = SpoolView(spool, self._chosen(groups), 0.0, 1.0, 0, label_map)
        warning = find_separation(view.raw_blocks(), self._n_train, model, self.spec.fit_intercept, self._interrupt)
        return [] if warning is None else [warning]

    def _evaluate(self, model: LinearModel, spool, groups, label_map) -> dict:
        """Metrics of ``model`` on the spooled rows of ``groups`` (-1 = validation)."""
        view = SpoolView(spool, groups, 0.0, 1.0, 0, label_map, n_outputs=model.coef_.shape[0])
        metrics = ModelScores(model)
        for X, y in view.raw_blocks():
            self._interrupt()
            metrics.update(X, y)
        return metrics.result()

    def _cross_validate(self, spool, classes, label_map) -> dict:
        """k-fold scores, folds fitted in parallel threads (NumPy releases the GIL).

        Each fold's training moments are read back from the spool when the fold is
        fitted, so only the folds in progress hold theirs.
        """
        k = self._n_folds

        def run(fold: int) -> dict:
            self._interrupt()
            rest = [g for g in range(k) if g != fold]
            model, _ = self._fit(spool, rest, self._moments_of(spool, rest), classes, label_map)
            scores = self._evaluate(model, spool, [fold], label_map)
            return {name: v for name, v in scores.items() if v is None or isinstance(v, float)}

        jobs = self._budget.cv_jobs(self._size(), os.cpu_count() or 1)
        per_fold = joblib.Parallel(n_jobs=jobs, backend="threading")(joblib.delayed(run)(j) for j in range(k))
        mean, std = {}, {}
        for name in per_fold[0]:
            values = [fold[name] for fold in per_fold if fold[name] is not None]
            mean[name] = float(np.mean(values)) if values else None
            std[name] = float(np.std(values)) if values else None
        return {"folds": k, "mean": mean, "std": std, "per_fold": per_fold}

    def _feature_stats(self, names: list[str]) -> list[dict]:
        total = Moments.combined(list(self._moments or ()))
        std = np.sqrt(np.maximum(np.diag(total.comoment), 0.0) / total.n)
        return [
            {
                "name": name,
                "mean": float(total.mean[j]),
                "std": float(std[j]),
                "min": float(total.min[j]),
                "max": float(total.max[j]),
            }
            for j, name in enumerate(names)
        ]


class _ScoreLane:
    """One thread's share of the finish phase's scoring: the training metrics, the inference tally and,
    once ``counts`` is set, drift bin counts of its own."""

    def __init__(self, model: LinearModel, tally) -> None:
        self.metrics = ModelScores(model)
        self.tally = tally
        self.counts: DriftCounts | None = None

    def update(self, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Score ``X``, ``y``; count spool ``rows`` (a C-contiguous block) into ``counts``."""
        if rows is not None and rows.shape[0] and self.counts is not None:
            self.counts.update(rows)
        if X.shape[0] == 0:
            return
        self.metrics.update(X, y)
        if self.tally is not None:
            self.tally.update(X, y)

    def merge(self, other: _ScoreLane) -> None:
        self.metrics.merge(other.metrics)
        if self.tally is not None:
            self.tally.merge(other.tally)


def _hash_labelled(digest, rows: np.ndarray, spellings: list[str], index: np.ndarray) -> None:
    """Hash each row's x bytes and then its label ``spellings[index[i]]`` as a 4-byte little-endian
    length and UTF-8 bytes; ``rows`` are spool rows [x, y, group]."""
    d = rows.shape[1] - 2
    encoded = [len(raw).to_bytes(4, "little") + raw for raw in (label.encode("utf-8") for label in spellings)]
    x_bytes = np.ascontiguousarray(rows[:, :d]).view(np.uint8)
    if len({len(e) for e in encoded}) == 1:
        # Labels of one encoded width (the usual case) make the byte stream a 2-D array.
        table = np.frombuffer(b"".join(encoded), dtype=np.uint8).reshape(len(encoded), -1)
        digest.update(np.hstack([x_bytes, table[index]]).data)
        return
    flat, width = x_bytes.tobytes(), x_bytes.shape[1]
    digest.update(b"".join(flat[i * width : (i + 1) * width] + encoded[j] for i, j in enumerate(index.tolist())))


def _json_ready(value):
    """Plain Python containers and scalars, with non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
