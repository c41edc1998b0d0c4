"""Solvers behind ``regserve.server.models.training`` (package-internal API).

Every solver minimises a *mean-scaled* objective over the n training rows::

    F(θ) = (1/n) Σ loss_i(θ) + (l2/2) ‖W‖²          (intercepts never penalised)

with ``loss = ½ r²`` for regression and the log-loss for logistic models.  The
trainer picks ``l2``: ``alpha / n`` for ridge (so ``alpha`` means what it does
in ``sklearn.linear_model.Ridge``) and ``alpha`` for logistic (so
``LogisticRegression(C=1 / (alpha * n))`` is the same problem).

The closed form works on sufficient statistics; the iterative solvers read
the training rows through a ``BlockSource``, block by block, so the data set
is never in memory at once.  Parameters are held as ``theta`` of shape
(n_outputs, q): column 0 is the intercept when one is fitted, the rest are
the weights on the (standardized) features.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "BlockSource",
    "SolverInfo",
    "make_objective",
    "solve_gd",
    "solve_least_squares",
    "solve_newton",
    "solve_sgd",
]

logger = logging.getLogger(__name__)

# Above this condition number (of the equilibrated system) Cholesky's answer
# is not trusted and the rank-revealing least-squares solve takes over.
_MAX_CONDITION = 1e12


@dataclass
class SolverInfo:
    """What a solver reports about its run; every field may be ``None``."""

    rank: int | None = None
    condition_number: float | None = None
    fallback: str | None = None
    iterations: int | None = None
    converged: bool | None = None
    final_loss: float | None = None


class BlockSource(Protocol):
    """Training rows in blocks: ``Z`` (m, d) standardized features, ``y`` (m,).

    ``y`` holds targets for regression and class indices for logistic models.
    """

    n: int

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def shuffled_blocks(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


# --------------------------------------------------------------------------- closed form


def solve_least_squares(
    n: int,
    mean: np.ndarray,
    comoment: np.ndarray,
    *,
    alpha: float,
    fit_intercept: bool,
    shift: np.ndarray,
    scale: np.ndarray,
) -> tuple[np.ndarray, float, SolverInfo]:
    """Ridge/OLS from the centred moments of ``[x, y]`` over the training rows.

    Parameters
    ----------
    n : int
        Number of training rows.
    mean : ndarray of shape (d + 1,)
        Means of the d features and (last) the target.
    comoment : ndarray of shape (d + 1, d + 1)
        ``Σ (v - mean)(v - mean)ᵀ`` over rows ``v = [x, y]``.
    alpha : float
        Ridge strength on the sum-of-squares scale, as in scikit-learn's Ridge.
    shift, scale : ndarray of shape (d,)
        The model sees ``z = (x - shift) / scale``.

    Returns
    -------
    coef : ndarray of shape (d,), intercept : float, info : SolverInfo
    """
    # The centred moments of z follow from those of x without another pass.
    zbar = (mean[:-1] - shift) / scale
    ybar = mean[-1]
    gram = comoment[:-1, :-1] / np.outer(scale, scale)
    rhs = comoment[:-1, -1] / scale
    if not fit_intercept:
        # Uncentred Σ zzᵀ = C + n z̄z̄ᵀ and Σ zy = c + n z̄ȳ: sums of PSD parts, no cancellation.
        gram = gram + n * np.outer(zbar, zbar)
        rhs = rhs + n * zbar * ybar
    gram[np.diag_indices_from(gram)] += alpha
    coef, info = _solve_spd(gram, rhs)
    intercept = float(ybar - zbar @ coef) if fit_intercept else 0.0
    return coef, intercept, info


def _solve_spd(gram: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, SolverInfo]:
    """Solve ``gram @ w = rhs`` for a symmetric positive semi-definite ``gram``."""
    # Equilibrate (D⁻¹GD⁻¹)(Dw) = D⁻¹b so the conditioning reflects the problem, not the units.
    d = np.sqrt(np.diag(gram))
    d[d == 0] = 1.0
    scaled = gram / np.outer(d, d)
    eig = np.linalg.eigvalsh(scaled)
    condition = eig[-1] / eig[0] if eig[0] > 0 else np.inf
    info = SolverInfo(
        rank=int(np.linalg.matrix_rank(scaled, hermitian=True)),
        condition_number=float(condition) if np.isfinite(condition) else None,
    )
    if condition <= _MAX_CONDITION:
        try:
            return _cholesky_solve(scaled, rhs / d) / d, info
        except np.linalg.LinAlgError:
            pass
    logger.info("ill-conditioned system (cond=%.3g): minimum-norm lstsq fallback", condition)
    info.fallback = "lstsq"
    # lstsq on the Gram system returns pinv(XᵀX)Xᵀy, the minimum-norm least-squares solution.
    return np.linalg.lstsq(gram, rhs, rcond=None)[0], info


def _cholesky_solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    # G = LLᵀ, then L u = b and Lᵀ w = u.
    lower = np.linalg.cholesky(gram)
    return np.linalg.solve(lower.T, np.linalg.solve(lower, rhs))


# --------------------------------------------------------------------------- losses


def _design(Z: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """``[1, Z]`` of shape (m, d + 1) when an intercept is fitted, else ``Z``."""
    return np.hstack([np.ones((Z.shape[0], 1)), Z]) if fit_intercept else Z


def _block_terms(loss: str, S: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Loss sum, dloss/dscores (m, n_outputs) and probabilities for scores ``S`` (m, n_outputs)."""
    if loss == "squared":
        # ½ Σ (s - y)²,  d/ds = s - y.
        r = S[:, 0] - y
        return 0.5 * float(r @ r), r[:, None], None
    if S.shape[1] == 1:
        # Σ log(1 + eˢ) - t·s,  d/ds = σ(s) - t.
        s, t = S[:, 0], (y == 1)
        p = np.exp(-np.logaddexp(0.0, -s))
        return float(np.logaddexp(0.0, s).sum() - s[t].sum()), (p - t)[:, None], p[:, None]
    # Σ logsumexp(s) - s_y,  d/ds = softmax(s) - onehot(y).
    rows = np.arange(S.shape[0])
    top = S.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(S - top).sum(axis=1))
    P = np.exp(S - lse[:, None])
    residual = P.copy()
    residual[rows, y] -= 1.0
    return float((lse - S[rows, y]).sum()), residual, P


class _Objective:
    """``F(θ) = (1/n) Σ loss + (l2/2)‖W‖² (+ gauge)`` with gradient and, on request, Hessian."""

    def __init__(
        self,
        data: BlockSource,
        loss: str,
        n_outputs: int,
        d: int,
        *,
        l2: float,
        fit_intercept: bool,
        gauge: float = 0.0,
    ) -> None:
        self.data, self.loss, self.l2, self.gauge = data, loss, l2, gauge
        self.fit_intercept = fit_intercept
        self.shape = (n_outputs, d + int(fit_intercept))
        self.penalised = np.ones(self.shape[1])
        if fit_intercept:
            self.penalised[0] = 0.0

    def penalty(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        # (l2/2)‖W‖² + (γ/2)‖Σₖθₖ‖²; the gauge term only pins the softmax's free shift.
        w = theta * self.penalised
        total = theta.sum(axis=0)
        value = 0.5 * self.l2 * float((w * w).sum()) + 0.5 * self.gauge * float(total @ total)
        return value, self.l2 * w + self.gauge * total

    def batch_gradient(
        self, Z: np.ndarray, y: np.ndarray, theta: np.ndarray, anchor: np.ndarray, anchor_gradient: np.ndarray
    ) -> np.ndarray:
        """Variance-reduced mini-batch gradient at ``theta`` (SVRG's control variate).

        ``∇f_B(θ) - ∇f_B(θ̃) + ∇F(θ̃)``: unbiased, and its noise vanishes as θ and
        the anchor θ̃ approach the optimum.
        """
        A = _design(Z, self.fit_intercept)
        k = theta.shape[0]
        S = A @ np.concatenate([theta, anchor]).T
        _, now, _ = _block_terms(self.loss, S[:, :k], y)
        _, then, _ = _block_terms(self.loss, S[:, k:], y)
        # The penalty's gradient is linear, so its part of the difference is pen'(θ - θ̃).
        return (now - then).T @ A / Z.shape[0] + anchor_gradient + self.penalty(theta - anchor)[1]

    def evaluate(self, theta: np.ndarray, hessian: bool = False):
        """One pass: ``(F, gradient (n_outputs, q), Hessian (n_outputs·q,)² or None)``."""
        total, grad = 0.0, np.zeros(self.shape)
        k, q = self.shape
        H: np.ndarray | None = np.zeros((k, q, k, q)) if hessian else None
        for Z, y in self.data.blocks():
            A = _design(Z, self.fit_intercept)
            value, residual, P = _block_terms(self.loss, A @ theta.T, y)
            total += value
            grad += residual.T @ A
            if H is not None:
                _add_logistic_hessian(H, A, P)
        n = self.data.n
        pen_value, pen_grad = self.penalty(theta)
        F, G = total / n + pen_value, grad / n + pen_grad
        if H is not None:
            H = H.reshape(k * q, k * q) / n
            H[np.diag_indices_from(H)] += self.l2 * np.tile(self.penalised, k)
            H += self.gauge * np.kron(np.ones((k, k)), np.eye(q))
        return F, G, H


def _add_logistic_hessian(H: np.ndarray, A: np.ndarray, P: np.ndarray | None) -> None:
    """Add ``Σ AᵀD_{kl}A`` to H (K, q, K, q), ``D_{kl} = diag(p_k(δ_kl - p_l))``."""
    if P is None:
        raise ValueError("only the logistic loss has a Hessian here")
    if P.shape[1] == 1:
        # Binary: Aᵀ diag(p(1 - p)) A.
        p = P[:, 0]
        H[0, :, 0, :] += (A * (p * (1 - p))[:, None]).T @ A
        return
    K = P.shape[1]
    for a in range(K):
        for b in range(a, K):
            weight = P[:, a] * ((a == b) - P[:, b])
            block = (A * weight[:, None]).T @ A
            H[a, :, b, :] += block
            if a != b:
                H[b, :, a, :] += block.T


# --------------------------------------------------------------------------- iterative solvers


def _initial_theta(objective: _Objective, intercept: float) -> np.ndarray:
    theta = np.zeros(objective.shape)
    if objective.fit_intercept:
        theta[:, 0] = intercept
    return theta


def solve_gd(
    objective: _Objective, *, learning_rate: float, epochs: int, tolerance: float, intercept: float = 0.0
) -> tuple[np.ndarray, SolverInfo]:
    """Full-batch gradient descent: ``θ ← θ - η ∇F(θ)``, one pass per iteration.

    A step that raises F is undone and η halved, so a too-large learning rate
    slows the run instead of diverging.  Stops when F changes by less than
    ``tolerance`` relatively.  Returns ``theta`` and the run's info.
    """
    theta = _initial_theta(objective, intercept)
    F, G, _ = objective.evaluate(theta)
    eta, converged, iterations = learning_rate, False, 0
    for _ in range(epochs):
        iterations += 1
        candidate = theta - eta * G
        F_new, G_new, _ = objective.evaluate(candidate)
        if not F_new <= F:
            eta /= 2.0
            continue
        change = (F - F_new) / max(abs(F), np.finfo(float).tiny)
        theta, F, G = candidate, F_new, G_new
        if change < tolerance:
            converged = True
            break
    return theta, SolverInfo(iterations=iterations, converged=converged, final_loss=F)


def solve_sgd(
    objective: _Objective,
    *,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    tolerance: float,
    seed: int,
    intercept: float = 0.0,
) -> tuple[np.ndarray, SolverInfo]:
    """Mini-batch SGD over seeded shuffled batches, variance-reduced (SVRG).

    Each epoch anchors at the current point θ̃ with its full gradient (from the
    pass that evaluates F anyway), then steps ``θ ← θ - η (∇f_B(θ) - ∇f_B(θ̃) +
    ∇F(θ̃))`` over shuffled mini-batches.  Plain SGD with a constant η only
    reaches a noise ball around the optimum; the control variate lets the same
    η converge to it (Johnson & Zhang, 2013).  An epoch that raises F is undone
    and η halved.  Stops when an accepted epoch changes F by less than
    ``tolerance`` relatively.
    """
    rng = np.random.default_rng(seed)
    theta = _initial_theta(objective, intercept)
    F, G, _ = objective.evaluate(theta)
    eta, converged, epoch = learning_rate, False, 0
    for _ in range(epochs):
        epoch += 1
        candidate = theta.copy()
        for Z, y in objective.data.shuffled_blocks(rng):
            for start in range(0, y.shape[0], batch_size):
                stop = start + batch_size
                candidate -= eta * objective.batch_gradient(Z[start:stop], y[start:stop], candidate, theta, G)
        F_new, G_new, _ = objective.evaluate(candidate)
        if not F_new <= F:
            eta /= 2.0
            if eta < learning_rate * 1e-12:
                break
            continue
        change = (F - F_new) / max(abs(F), np.finfo(float).tiny)
        theta, F, G = candidate, F_new, G_new
        if change < tolerance:
            converged = True
            break
    return theta, SolverInfo(iterations=epoch, converged=converged, final_loss=F)


def solve_newton(objective: _Objective, *, max_iterations: int, tolerance: float) -> tuple[np.ndarray, SolverInfo]:
    """Newton/IRLS: ``θ ← θ - t H⁻¹∇F`` with a backtracking (Armijo) step ``t``.

    Stops when ``‖∇F‖₂ < tolerance``.  H is solved by Cholesky, falling back to
    least squares where it is singular (separable or collinear data).
    """
    theta = np.zeros(objective.shape)
    F, G, H = objective.evaluate(theta, hessian=True)
    converged, iterations, fallback = False, 0, None
    roundoff = 8 * np.finfo(float).eps
    while not (converged := float(np.linalg.norm(G)) < tolerance) and iterations < max_iterations:
        iterations += 1
        step, used = _newton_step(H, G.ravel())
        fallback = fallback or used
        step = step.reshape(objective.shape)
        slope, t = float((G * step).sum()), 1.0
        while t > 1e-10:
            candidate = theta - t * step
            F_new, G_new, H_new = objective.evaluate(candidate, hessian=True)
            # Near the optimum F's decrease drowns in rounding; a smaller gradient then decides.
            if F_new <= F - 1e-4 * t * slope or (
                F_new <= F + roundoff * abs(F) and np.linalg.norm(G_new) < np.linalg.norm(G)
            ):
                break
            t /= 2.0
        else:
            logger.info("newton line search stalled at iteration %d", iterations)
            break
        theta, F, G, H = candidate, F_new, G_new, H_new
    gauge = 0.5 * objective.gauge * float(theta.sum(axis=0) @ theta.sum(axis=0))
    return theta, SolverInfo(iterations=iterations, converged=converged, final_loss=F - gauge, fallback=fallback)


def _newton_step(H: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, str | None]:
    try:
        return _cholesky_solve(H, g), None
    except np.linalg.LinAlgError:
        # Minimum-norm step along the directions the Hessian can see.
        return np.linalg.lstsq(H, g, rcond=None)[0], "lstsq"


def make_objective(
    data: BlockSource, *, kind: str, n_classes: int, d: int, l2: float, fit_intercept: bool
) -> _Objective:
    """The objective for ``kind`` over ``data``; see the module docstring for F."""
    if kind != "logistic":
        return _Objective(data, "squared", 1, d, l2=l2, fit_intercept=fit_intercept)
    if n_classes == 2:
        return _Objective(data, "log", 1, d, l2=l2, fit_intercept=fit_intercept)
    # The softmax is unchanged by adding one vector to every class's parameters;
    # the gauge (γ/2)‖Σₖθₖ‖² removes that flat direction without moving the optimum,
    # because any optimum of the penalised problem already has Σₖθₖ = 0 where it matters.
    return _Objective(data, "log", n_classes, d, l2=l2, fit_intercept=fit_intercept, gauge=1.0)
