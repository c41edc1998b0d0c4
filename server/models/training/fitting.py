"""Fitting one model on some spooled groups: standardization, the solver, the divergence check."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from regserve.server.errors import InvalidInput
from regserve.server.models import solvers
from regserve.server.models.estimator import LinearModel
from regserve.server.models.interrupt import Interrupt, uninterrupted
from regserve.server.models.objective import BlockSource, Objective, make_objective
from regserve.server.models.training.moments import Moments
from regserve.server.models.training.spec import TrainSpec
from regserve.server.models.training.spool import SpoolFile, SpoolView

__all__ = ["check_model_finite", "fit_model", "model_from_theta"]


def fit_model(
    spec: TrainSpec,
    d: int,
    m: Moments,
    spool: SpoolFile,
    groups: list[int] | None,
    classes: tuple[str, ...] | None,
    label_map: np.ndarray | None,
    interrupt: Interrupt = uninterrupted,
) -> tuple[LinearModel, solvers.SolverInfo]:
    """Fit on the spooled training groups (folds) ``groups`` (None: every spooled row), whose merged moments
    are ``m``.

    ``d`` is the feature count; ``m`` holds the moments of ``[x, y]`` for
    regression, of ``x`` for logistic; ``label_map`` maps first-seen label ids
    to indices in ``classes``; ``interrupt`` is called between the solver's steps.
    """
    shift, scale = _standardization(m, d) if spec.standardize else (np.zeros(d), np.ones(d))
    solver = spec.resolved_solver
    interrupt()
    if solver == "closed_form":
        weights, bias, info = solvers.solve_least_squares(
            m.n, m.mean, m.comoment, alpha=spec.alpha or 0.0, fit_intercept=spec.fit_intercept, shift=shift, scale=scale
        )
        coef, intercept = weights[None, :], np.array([bias])
    else:
        logistic = spec.kind == "logistic"
        n_classes = len(classes) if classes is not None else 0
        view = SpoolView(spool, groups, shift, scale, m.n, label_map, n_outputs=n_classes if n_classes > 2 else 1)
        newton = solver == "newton"
        source: BlockSource = _Unscaled(view) if newton else view
        objective = make_objective(
            source,
            kind=spec.kind,
            n_classes=n_classes,
            d=d,
            l2=spec.l2(m.n),
            fit_intercept=spec.fit_intercept,
            interrupt=interrupt,
        )
        if newton:
            # Newton's passes standardize each step of rows in cache, not each block into a scaled copy.
            objective.standardize_as_read(shift, scale)
        start = 0.0 if logistic else float(m.mean[-1])  # Regression starts from ȳ.
        theta, info = _solve_iteratively(spec, objective, start)
        return model_from_theta(spec, theta, shift, scale, classes), info
    return _model(spec, coef, intercept, shift, scale, classes), info


def model_from_theta(
    spec: TrainSpec, theta: np.ndarray, shift: np.ndarray, scale: np.ndarray, classes: tuple[str, ...] | None
) -> LinearModel:
    """The model of an iterative solver's parameters ``theta`` (outputs × [intercept,] features)."""
    if spec.fit_intercept:
        return _model(spec, theta[:, 1:], theta[:, 0], shift, scale, classes)
    return _model(spec, theta, np.zeros(theta.shape[0]), shift, scale, classes)


def _model(spec: TrainSpec, coef, intercept, shift, scale, classes) -> LinearModel:
    standardized = spec.standardize
    return LinearModel(
        spec.kind,
        coef,
        intercept,
        mean=shift if standardized else None,
        scale=scale if standardized else None,
        classes=classes,
    )


class _Unscaled:
    """A view's rows as they were spooled, for an objective that standardizes them as it reads."""

    def __init__(self, view: SpoolView) -> None:
        self.n, self._view = view.n, view

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self._view.raw_blocks()

    def every(self, stride: int) -> tuple[np.ndarray, np.ndarray] | None:
        return self._view.raw_every(stride)

    def shuffled_blocks(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError("unscaled rows serve Newton's method, which reads them in order")


def _standardization(m: Moments, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Shift (the means) and scale (the population stds) of the ``d`` features, each of shape (d,)."""
    shift = m.mean[:d].copy()
    std = np.sqrt(np.maximum(np.diag(m.comoment)[:d], 0.0) / m.n)
    # A constant column's std is zero up to rounding of its mean; scale 1 keeps it finite.
    scale = np.where(std > 1e-12 * np.abs(shift), std, 1.0)
    scale[std == 0] = 1.0
    return shift, scale


def _solve_iteratively(spec: TrainSpec, objective: Objective, start: float) -> tuple[np.ndarray, solvers.SolverInfo]:
    """Run the spec's Newton, gd or sgd solver from intercept ``start``; theta has shape (n_outputs, n_params)."""
    solver = spec.resolved_solver
    if solver == "newton":
        return solvers.solve_newton(objective, max_iterations=spec.max_iterations, tolerance=spec.tolerance)
    if solver == "gd":
        return solvers.solve_gd(
            objective,
            learning_rate=spec.learning_rate,
            epochs=spec.epochs,
            tolerance=spec.tolerance,
            intercept=start,
        )
    return solvers.solve_sgd(
        objective,
        learning_rate=spec.learning_rate,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        tolerance=spec.tolerance,
        seed=spec.seed,
        intercept=start,
    )


def settle_final_loss(
    info: solvers.SolverInfo, spec: TrainSpec, model: LinearModel, training: dict, n_train: int
) -> None:
    """Give a closed-form fit, whose solver reports no loss, its objective ½·MSE + (alpha/n)/2·‖w‖² from the
    ``training`` metrics of its ``n_train`` rows; a solver's own loss is left as it is."""
    if info.final_loss is None and training.get("mse") is not None:
        info.final_loss = 0.5 * training["mse"] + 0.5 * spec.l2(n_train) * float((model.coef_**2).sum())


def check_model_finite(model: LinearModel, spec: TrainSpec) -> None:
    """Refuse a fit whose coefficients overflowed, so no unusable version is ever stored."""
    if np.isfinite(model.coef_).all() and np.isfinite(model.intercept_).all():
        return
    iterative = spec.resolved_solver in ("gd", "sgd")
    field = "spec.learning_rate" if iterative else "chunks"
    hint = "lower the learning rate or standardize the features" if iterative else "scale the data"
    raise InvalidInput(
        f"Training diverged: the coefficients are not finite; {hint}.",
        reason="TRAINING_DIVERGED",
        violations=[(field, hint)],
    )
