"""What one training will cost, estimated from what is known of it, and the refusal of a run past the limits.

The estimates are made as soon as something is known (the spec; the feature
count, from the spec's names or the first chunk; the classes, as labels arrive;
the rows, as they stream) and again before fitting, so a run this server cannot
afford is refused before it allocates or computes: RESOURCE_EXHAUSTED
``TRAINING_TOO_LARGE``, naming the limit, the estimate and the spec field that
weighs most.  Every count is a lower bound until the stream ends, so an early
refusal is never wrong.

Memory counts the largest arrays alive at once: the streamed p × p moments
(p = d + 1 for regression, d for logistic), the copies a closed-form solve
makes of its p × p system, the blocks of rows read back from the spool,
Newton's (K·q)² Hessian and its factor, and the same again for every
cross-validation fold fitted in parallel.  Work counts floating-point
operations of the fit, the scores and the cross-validation (reading the stream
is paid as it arrives, bounded by the caller's deadline): epochs × rows ×
features × outputs for gd and sgd, a p³ solve per fit for the closed form,
Newton's (K·q)² Hessian per evaluation and (K·q)³ factor per iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from regserve.server.errors import ResourceExhausted
from regserve.server.models.training.spec import TrainSpec
from regserve.server.models.training.spool import block_rows

__all__ = ["DEFAULT_LIMITS", "RunSize", "TrainingBudget", "TrainingLimits"]

MIB = 1024 * 1024

_STEP = 50_000
"""Operations one Python-level step (a block read, a mini-batch, a line-search step) counts as,
so that loops over tiny data are not free."""
_NEWTON_ITERATIONS = 25
"""Newton iterations a run is priced at, at most: more than enough for a quadratically convergent fit."""
_PASS_COPIES = 6
"""Arrays of one block's size alive during a pass: the read, the next block read ahead, the
chosen rows, the scaled features, the design matrix and the scores."""

_ADVICE = {
    "chunk.features": "send fewer features",
    "chunk.targets": "send fewer classes",
    "chunks": "send fewer rows",
    "spec.cv_folds": "ask for fewer folds",
    "spec.epochs": "ask for fewer epochs or send fewer rows",
    "spec.max_iterations": "ask for fewer iterations",
    "spec.solver": "use solver gd or sgd: Newton's Hessian grows with (classes × features)²",
}


@dataclass(frozen=True)
class TrainingLimits:
    """The most one training may use: ``memory_mb`` MiB at its peak and ``gflop`` billion operations."""

    memory_mb: int = 2048
    gflop: float = 200.0


DEFAULT_LIMITS = TrainingLimits()


@dataclass(frozen=True)
class RunSize:
    """What is known of a run: features, classes (0 for regression), rows, training rows."""

    features: int
    classes: int = 0
    rows: int = 0
    train_rows: int = 0


@dataclass(frozen=True)
class _Shape:
    """The sizes the costs are written in."""

    d: int  # features
    p: int  # width of the streamed moments
    q: int  # parameters per output
    outputs: int  # 1, or K for a multinomial model
    classes: int
    n: int  # spool rows (every pass reads them all)
    n_train: int

    @classmethod
    def of(cls, spec: TrainSpec, size: RunSize) -> _Shape:
        logistic = spec.kind == "logistic"
        d = max(size.features, 1)
        return cls(
            d=d,
            p=d if logistic else d + 1,
            q=d + int(spec.fit_intercept),
            outputs=size.classes if logistic and size.classes > 2 else 1,
            classes=size.classes,
            n=size.rows,
            n_train=size.train_rows,
        )


Terms = list[tuple[str, float]]
"""Costs as (the spec field or request part that drives it, amount) pairs."""


class TrainingBudget:
    """Estimates what a run of ``spec`` costs and refuses it past ``limits``."""

    def __init__(self, spec: TrainSpec, limits: TrainingLimits) -> None:
        self.spec, self.limits = spec, limits

    def check(self, size: RunSize) -> None:
        """Raise ResourceExhausted ``TRAINING_TOO_LARGE`` when a run of ``size`` needs more than the limits."""
        memory = self.memory(size, jobs=1)
        _refuse_past(memory, self.limits.memory_mb * MIB, "max_train_memory_mb", MIB, "MiB", "of memory")
        _refuse_past(self.work(size), self.limits.gflop * 1e9, "max_train_gflop", 1e9, "billion", "operations")

    def cv_jobs(self, size: RunSize, cpus: int) -> int:
        """How many cross-validation folds to fit at once: up to ``cpus``, as many as the memory limit allows."""
        jobs = max(1, min(self.spec.cv_folds, cpus))
        while jobs > 1 and _total(self.memory(size, jobs)) > self.limits.memory_mb * MIB:
            jobs -= 1
        return jobs

    def memory(self, size: RunSize, jobs: int) -> Terms:
        """Peak bytes of a run of ``size`` fitting ``jobs`` cross-validation folds at once."""
        s = _Shape.of(self.spec, size)
        square = 8.0 * s.p * s.p
        # The training and validation moments; the confusion matrices of every score, as arrays and as JSON.
        kept: Terms = [("chunk.features", 2 * square), ("chunk.targets", 100.0 * s.classes**2 * (2 + jobs))]
        fit = self._fit_memory(s)
        if not self.spec.cv_folds:
            return kept + fit
        # A fold's fit adds the moments of the other folds and their running sum.
        fold = [(field, amount * jobs) for field, amount in fit] + [("spec.cv_folds", 2 * square * jobs)]
        return kept + max(fit, fold, key=_total)

    def _fit_memory(self, s: _Shape) -> Terms:
        if self.spec.resolved_solver == "closed_form":
            return [("chunk.features", 5 * 8.0 * s.p * s.p)]
        rows = min(block_rows(s.d + 2, s.outputs), max(s.n, 1))
        terms: Terms = [("chunks", _PASS_COPIES * 8.0 * rows * (s.d + 2 + s.outputs))]
        terms.append(("chunk.features", 8 * 8.0 * s.outputs * s.q))  # θ, gradients, candidates
        if self.spec.resolved_solver == "newton":
            terms.append(("spec.solver", 4 * 8.0 * (s.outputs * s.q) ** 2))  # two Hessians, a factor, a copy
        return terms

    def work(self, size: RunSize) -> Terms:
        """Operations of the fit, the scores and the cross-validation of a run of ``size``."""
        s = _Shape.of(self.spec, size)
        terms = self._fit_work(s, s.n_train)
        terms.append(("chunks", 2 * _pass(s, s.n)))  # training and validation scores
        folds = self.spec.cv_folds
        if folds:
            # Each fold reads its training rows' moments back, fits and scores.
            n_fit = s.n_train * (folds - 1) / folds
            fit = _total(self._fit_work(s, n_fit))
            terms.append(("spec.cv_folds", folds * (fit + 2 * _pass(s, s.n) + 2 * n_fit * s.p * s.p)))
        return terms

    def _fit_work(self, s: _Shape, n_fit: float) -> Terms:
        spec = self.spec
        solver = spec.resolved_solver
        if solver == "closed_form":
            return [("chunk.features", 5 / 3 * s.p**3)]  # eigenvalues and a Cholesky factor
        evaluation = _pass(s, s.n) + 6 * n_fit * s.q * s.outputs
        if solver == "gd":
            return [("spec.epochs", (spec.epochs + 1.0) * evaluation)]
        if solver == "sgd":
            batches = math.ceil(n_fit / spec.batch_size) + 1
            epoch = evaluation + _pass(s, s.n) + 8 * n_fit * s.q * s.outputs + batches * _STEP
            return [("spec.epochs", (spec.epochs + 1.0) * epoch)]
        size = s.outputs * s.q
        blocks = math.ceil(s.n / block_rows(s.d + 2, s.outputs)) + 1
        hessian = 2 * n_fit * size**2 + s.outputs**2 / 2 * blocks * _STEP
        # Newton converges quadratically: past a few dozen iterations a run is stopped by the
        # caller's deadline or the interrupt, so pricing all of max_iterations would refuse
        # ordinary fits (1,000,000 × 20 at the default limit) that finish in under ten.
        iterations = float(min(spec.max_iterations, _NEWTON_ITERATIONS))
        evaluations = 1 + 2 * iterations  # the start, then about two line-search steps per iteration
        factors = iterations * size**3 / 3  # a Cholesky factor of the Hessian per iteration
        return [("spec.max_iterations", evaluations * evaluation), ("spec.solver", evaluations * hessian + factors)]


def _pass(s: _Shape, rows: float) -> float:
    """Operations of reading ``rows`` spool rows back in blocks."""
    blocks = math.ceil(rows / block_rows(s.d + 2, s.outputs)) + 1
    return 3 * rows * (s.d + 2) + 2 * blocks * _STEP


def _total(terms: Terms) -> float:
    return sum(amount for _, amount in terms)


def _refuse_past(terms: Terms, limit: float, setting: str, unit: float, unit_name: str, what: str) -> None:
    """Raise ``TRAINING_TOO_LARGE`` when ``terms`` add up to more than ``limit``, naming the largest term's field."""
    estimate = _total(terms)
    if estimate <= limit:
        return
    by_field: dict[str, float] = {}
    for field, amount in terms:
        by_field[field] = by_field.get(field, 0.0) + amount
    field = max(by_field, key=by_field.__getitem__)
    needed, allowed = math.ceil(estimate / unit), math.floor(limit / unit)
    raise ResourceExhausted(
        f"This training would need about {needed:,} {unit_name} {what}; this server allows "
        f"{allowed:,} {unit_name} per training (--{setting.replace('_', '-')}): {_ADVICE[field]}.",
        reason="TRAINING_TOO_LARGE",
        violations=[(field, _ADVICE[field])],
        metadata={"limit": setting, "allowed": allowed, "estimate": needed, "unit": unit_name},
    )
