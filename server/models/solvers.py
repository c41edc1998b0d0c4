"""Solvers behind ``regserve.server.models.training`` (package-internal API).

Every solver minimises a *mean-scaled* objective over the n training rows::

    F(θ) = (1/n) Σ loss_i(θ) + (l2/2) ‖W‖²          (intercepts never penalised)

with ``loss = ½ r²`` for regression and the log-loss for logistic models.  The
trainer picks ``l2``: ``alpha / n`` for ridge (so ``alpha`` means what it does
in ``sklearn.linear_model.Ridge``) and ``alpha`` for logistic (so
``LogisticRegression(C=1 / (alpha * n))`` is the same problem).

The closed form works on sufficient statistics; the iterative solvers read
the training rows through an ``Objective`` (``regserve.server.models.objective``),
block by block, so the data set is never in memory at once, and call its
``interrupt`` at every iteration, so a run can be stopped between any two.
Parameters are held as ``theta`` of shape (n_outputs, q): column 0 is the
intercept when one is fitted, the rest are the weights on the (standardized)
features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from regserve.server.models.objective import ArrayBlocks, Objective

__all__ = [
    "MAX_CONDITION",
    "SolverInfo",
    "rank_of",
    "solve_gd",
    "solve_least_squares",
    "solve_newton",
    "solve_sgd",
]

logger = logging.getLogger(__name__)

MAX_CONDITION = 1e12
"""Above this condition number (of the equilibrated system) Cholesky's answer is not trusted and the
rank-revealing least-squares solve takes over."""
_SUBSTITUTION_BLOCK = 128  # rows per diagonal block of a triangular solve
WARM_START_ROWS = 65_536
"""Most rows of the sample a Newton run over many more rows first converges on, in memory."""
_WARM_START_VALUES = 2**21  # most values (rows × parameters) that sample holds, 16 MiB
_WARM_START_STRIDE = 4  # a sample of fewer than 1 row in this many saves no pass over the data
_QUADRATIC_MARGIN = 1e3  # how far below the tolerance the observed rate must put a step to skip its Hessian


@dataclass
class SolverInfo:
    """What a solver reports about its run; every field may be ``None``."""

    rank: int | None = None
    condition_number: float | None = None
    fallback: str | None = None
    iterations: int | None = None
    converged: bool | None = None
    final_loss: float | None = None


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
    info = SolverInfo(rank=rank_of(eig), condition_number=float(condition) if np.isfinite(condition) else None)
    if condition <= MAX_CONDITION:
        try:
            return _cholesky_solve(scaled, rhs / d) / d, info
        except np.linalg.LinAlgError:
            pass
    logger.info("ill-conditioned system (cond=%.3g): minimum-norm lstsq fallback", condition)
    info.fallback = "lstsq"
    # lstsq on the Gram system returns pinv(XᵀX)Xᵀy, the minimum-norm least-squares solution.
    return np.linalg.lstsq(gram, rhs, rcond=None)[0], info


def rank_of(eigenvalues: np.ndarray) -> int:
    """The rank ``np.linalg.matrix_rank(hermitian=True)`` gives, from eigenvalues already computed."""
    singular = np.abs(eigenvalues)
    return int((singular > singular.max() * singular.size * np.finfo(float).eps).sum())


def _cholesky_solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    # G = LLᵀ, then L u = b and Lᵀ w = u.
    lower = np.linalg.cholesky(gram)
    return _substitute(lower.T, _substitute(lower, rhs, forward=True), forward=False)


def _substitute(T: np.ndarray, b: np.ndarray, *, forward: bool) -> np.ndarray:
    """Solve ``T x = b`` for a triangular ``T`` (n, n), lower when ``forward``, else upper; ``b`` (n,).

    Substitution by blocks of rows: a small dense solve on each diagonal block, then
    one product for the rows still to solve; O(n²) work where a general solve is O(n³).
    """
    x = np.array(b, dtype=np.float64)
    starts = range(0, x.shape[0], _SUBSTITUTION_BLOCK)
    for start in starts if forward else reversed(starts):
        stop = start + _SUBSTITUTION_BLOCK
        x[start:stop] = np.linalg.solve(T[start:stop, start:stop], x[start:stop])
        if forward:
            x[stop:] -= T[stop:, start:stop] @ x[start:stop]
        else:
            x[:start] -= T[:start, start:stop] @ x[start:stop]
    return x


# --------------------------------------------------------------------------- iterative solvers


def _initial_theta(objective: Objective, intercept: float) -> np.ndarray:
    theta = np.zeros(objective.shape)
    if objective.fit_intercept:
        theta[:, 0] = intercept
    return theta


def solve_gd(
    objective: Objective, *, learning_rate: float, epochs: int, tolerance: float, intercept: float = 0.0
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
        objective.interrupt()
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
    objective: Objective,
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
        objective.interrupt()
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


def solve_newton(
    objective: Objective, *, max_iterations: int, tolerance: float, warm_start: bool = True
) -> tuple[np.ndarray, SolverInfo]:
    """Newton/IRLS: ``θ ← θ - t H⁻¹∇F`` with a backtracking (Armijo) step ``t``.

    Stops when ``‖∇F‖₂ < tolerance``.  H is solved by Cholesky, falling back to
    least squares where it is singular (separable or collinear data).  The pass of a
    step that Newton's observed quadratic rate (‖∇F'‖ ≤ c‖∇F‖²) predicts to be the
    last computes no Hessian; should the step fall short, it is evaluated again with
    one, so the iterates and the stopping rule are those of plain Newton.

    On many rows the run starts from the optimum of a strided sample of them (see
    ``_warm_start``), a few quadratically converging steps from the full optimum,
    so it needs fewer passes over the data; ``iterations`` counts the steps on
    all the rows.  ``warm_start=False`` starts from zero: for rows that live
    elsewhere (a cluster), where gathering a sample would move them.
    """
    theta = np.zeros(objective.shape)
    start = None
    warm = _warm_start(objective, max_iterations=max_iterations, tolerance=tolerance) if warm_start else None
    if warm is not None:
        start = objective.evaluate(warm, hessian=True)
        # At θ = 0 every row's log-loss is log K (log 2 when binary): a worse start is dropped.
        if start[0] <= np.log(max(objective.shape[0], 2)):
            theta = warm
        else:
            start = None
    F, G, H = start if start is not None else objective.evaluate(theta, hessian=True)
    converged, iterations, fallback = False, 0, None
    roundoff = 8 * np.finfo(float).eps
    contraction = None  # the largest ‖∇F'‖ / ‖∇F‖² seen over full steps: Newton's quadratic rate
    while not (converged := float(np.linalg.norm(G)) < tolerance) and iterations < max_iterations:
        objective.interrupt()
        iterations += 1
        step, used = _newton_step(H, G.ravel())
        fallback = fallback or used
        step = step.reshape(objective.shape)
        slope, t = float((G * step).sum()), 1.0
        norm = float(np.linalg.norm(G))
        # A step the observed rate puts a thousandfold below the tolerance is most likely the last: its
        # pass skips the Hessian, the costlier half, and is repeated with it only if the step was not.
        # Only where both passes add the loss and gradient in one order, so F and ∇F are the same to the bit.
        last = (
            objective.shares_hessian_passes
            and contraction is not None
            and _QUADRATIC_MARGIN * contraction * norm * norm < tolerance
        )
        while t > 1e-10:
            objective.interrupt()
            candidate = theta - t * step
            F_new, G_new, H_new = objective.evaluate(candidate, hessian=not last)
            # Near the optimum F's decrease drowns in rounding; a smaller gradient then decides.
            if F_new <= F - 1e-4 * t * slope or (F_new <= F + roundoff * abs(F) and np.linalg.norm(G_new) < norm):
                break
            t /= 2.0
            del H_new  # a rejected candidate's Hessian must not sit beside the next one's
        else:
            logger.info("newton line search stalled at iteration %d", iterations)
            break
        if t == 1.0:
            rate = float(np.linalg.norm(G_new)) / max(norm * norm, np.finfo(float).tiny)
            contraction = rate if contraction is None else max(contraction, rate)
        if H_new is None and float(np.linalg.norm(G_new)) >= tolerance and iterations < max_iterations:
            F_new, G_new, H_new = objective.evaluate(candidate, hessian=True)
        theta, F, G, H = candidate, F_new, G_new, H_new
    gauge = 0.5 * objective.gauge * float(theta.sum(axis=0) @ theta.sum(axis=0))
    return theta, SolverInfo(iterations=iterations, converged=converged, final_loss=F - gauge, fallback=fallback)


def _warm_start(objective: Objective, *, max_iterations: int, tolerance: float) -> np.ndarray | None:
    """Newton's optimum on every s-th row, or None when the rows are too few to gain.

    A source with an ``every(stride)`` method (a spool of every row) hands those rows over
    without a pass; any other is read once.

    The sample's optimum lies within about 1/√(sample rows) of the full one, where
    Newton converges quadratically: two or three steps on all the rows instead of
    five or more from zero, for at most one extra pass that only reads.
    """
    rows = min(WARM_START_ROWS, _WARM_START_VALUES // (objective.shape[0] * objective.shape[1]))
    stride = objective.data.n // max(rows, 1)
    if stride < _WARM_START_STRIDE or rows < 20 * objective.shape[0] * objective.shape[1]:
        return None
    every = getattr(objective.data, "every", None)  # a source that can take the rows without a pass
    taken = every(stride) if every is not None else None
    if taken is None:
        Zs, ys, seen = [], [], 0
        for Z, y in objective.data.blocks():
            objective.interrupt()
            first = -seen % stride  # global rows 0, s, 2s, ... whatever the block boundaries
            Zs.append(Z[first::stride].copy())
            ys.append(y[first::stride].copy())
            seen += y.shape[0]
        taken = np.concatenate(Zs), np.concatenate(ys)
    sample = objective.on(ArrayBlocks(*taken))
    theta, _ = solve_newton(sample, max_iterations=max_iterations, tolerance=tolerance)
    return theta if np.isfinite(theta).all() else None


def _newton_step(H: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, str | None]:
    try:
        return _cholesky_solve(H, g), None
    except np.linalg.LinAlgError:
        # Minimum-norm step along the directions the Hessian can see.
        return np.linalg.lstsq(H, g, rcond=None)[0], "lstsq"
