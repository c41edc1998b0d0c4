"""The objective the iterative solvers minimise, read block by block from a ``BlockSource``.

Over the n training rows::

    F(θ) = (1/n) Σ loss_i(θ) + (l2/2) ‖W‖²          (intercepts never penalised)

with ``loss = ½ r²`` for regression and the log-loss for logistic models.
Parameters are held as ``theta`` of shape (n_outputs, q): column 0 is the
intercept when one is fitted, the rest are the weights on the (standardized)
features.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from regserve.server.models.executors import side_by_side
from regserve.server.models.interrupt import Interrupt, uninterrupted

__all__ = ["ArrayBlocks", "BlockSource", "Objective", "make_objective"]

_SHARED_HESSIAN = 2**17
"""Most Hessian entries (1 MiB) a pass may hold a second copy of, to share its steps with a second thread."""

_STEP_VALUES = 2**18
"""Values (2 MiB) of one step of a pass, up to ``_STEP_ROWS`` rows and down to 1,024: the step's design
matrix stays in cache for all of its products.

The step's design is held transposed, one row per parameter, so its standardization
and the Hessian's weighting run along rows of a step's length rather than along many
short rows of one value per parameter."""
_STEP_ROWS = 8192
"""Most rows of one step of a pass."""


class BlockSource(Protocol):
    """Training rows in blocks: ``Z`` (m, d) standardized features, ``y`` (m,).

    ``y`` holds targets for regression and class indices for logistic models.
    """

    n: int

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def shuffled_blocks(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


class ArrayBlocks:
    """A ``BlockSource`` over arrays in memory: ``Z`` (n, d) features as the objective reads them, ``y`` (n,)."""

    def __init__(self, Z: np.ndarray, y: np.ndarray) -> None:
        self.Z, self.y, self.n = Z, y, y.shape[0]

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield self.Z, self.y

    def shuffled_blocks(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = rng.permutation(self.n)
        yield self.Z[order], self.y[order]


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
        # Σ log(1 + eˢ) - t·s,  d/ds = σ(s) - t; from one exponential of -|s|, which cannot overflow:
        # log(1 + eˢ) = max(s, 0) + log1p(e^-|s|), σ(s) = 1 / (1 + e^-|s|) for s ≥ 0, else e^-|s| / (1 + e^-|s|).
        s, t = S[:, 0], (y == 1)
        e = np.exp(-np.abs(s))
        value = float(np.maximum(s, 0.0).sum() + np.log1p(e).sum() - s[t].sum())
        p = np.where(s >= 0, 1.0, e)
        p /= 1.0 + e
        return value, (p - t)[:, None], p[:, None]
    # Σ logsumexp(s) - s_y,  d/ds = softmax(s) - onehot(y).
    rows = np.arange(S.shape[0])
    top = S.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(S - top).sum(axis=1))
    P = np.exp(S - lse[:, None])
    residual = P.copy()
    residual[rows, y] -= 1.0
    return float((lse - S[rows, y]).sum()), residual, P


class Objective:
    """``F(θ) = (1/n) Σ loss + (l2/2)‖W‖² (+ gauge)`` with gradient and, on request, Hessian.

    ``interrupt`` is called for every block read and every mini-batch, so a
    solver built on the objective can be stopped between any two of them.
    """

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
        interrupt: Interrupt = uninterrupted,
    ) -> None:
        self.data, self.loss, self.l2, self.gauge = data, loss, l2, gauge
        self.fit_intercept = fit_intercept
        self.interrupt = interrupt
        self.shape = (n_outputs, d + int(fit_intercept))
        self.penalised = np.ones(self.shape[1])
        if fit_intercept:
            self.penalised[0] = 0.0
        self._standardization: tuple[np.ndarray, np.ndarray] | None = None

    def standardize_as_read(self, shift: np.ndarray, scale: np.ndarray) -> None:
        """Take the blocks' features as raw ``x`` and read them as ``z = (x - shift) / scale``.

        Each step's rows are standardized in the design buffer while they are in cache,
        with the same arithmetic as a standardized source, so no scaled copy of a whole
        block is made.
        """
        self._standardization = (shift, scale)

    def on(self, data: BlockSource) -> Objective:
        """The same objective (loss, penalty, intercept, standardization, interrupt) over other rows ``data``."""
        k, q = self.shape
        other = Objective(
            data,
            self.loss,
            k,
            q - int(self.fit_intercept),
            l2=self.l2,
            fit_intercept=self.fit_intercept,
            gauge=self.gauge,
            interrupt=self.interrupt,
        )
        other._standardization = self._standardization
        return other

    @property
    def shares_hessian_passes(self) -> bool:
        """Whether a pass with the Hessian shares its steps with a second thread, as one without always does:
        then the two passes add the loss and gradient in the same order."""
        k, q = self.shape
        return (k * q) ** 2 <= _SHARED_HESSIAN

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
        self.interrupt()
        if self._standardization is not None:
            shift, scale = self._standardization
            Z = Z - shift
            Z /= scale
        A = _design(Z, self.fit_intercept)
        k = theta.shape[0]
        S = A @ np.concatenate([theta, anchor]).T
        _, now, _ = _block_terms(self.loss, S[:, :k], y)
        _, then, _ = _block_terms(self.loss, S[:, k:], y)
        # The penalty's gradient is linear, so its part of the difference is pen'(θ - θ̃).
        return (now - then).T @ A / Z.shape[0] + anchor_gradient + self.penalty(theta - anchor)[1]

    def evaluate(self, theta: np.ndarray, hessian: bool = False):
        """One pass: ``(F, gradient (n_outputs, q), Hessian (n_outputs·q,)² or None)``.

        Each block's steps are dealt alternately to this thread and a second one, which
        sum their own shares; the shares are added in a fixed order, so the result does not
        depend on how the threads were scheduled.
        """
        k, q = self.shape
        # A second Hessian is only worth its memory while it is small.
        lanes = [_Lane(self, theta, hessian) for _ in range(2 if not hessian or self.shares_hessian_passes else 1)]
        for Z, y in self.data.blocks():
            self.interrupt()
            starts = range(0, y.shape[0], lanes[0].step)
            shared = len(lanes) > 1 and len(starts) > 1
            side_by_side(
                functools.partial(lanes[0].run, Z, y, starts[0::2] if shared else starts),
                functools.partial(lanes[1].run, Z, y, starts[1::2]) if shared else None,
            )
        total, grad, H = lanes[0].total, lanes[0].grad, lanes[0].H
        for lane in lanes[1:]:
            total += lane.total
            grad += lane.grad
            if H is not None:
                H += lane.H
        n = self.data.n
        pen_value, pen_grad = self.penalty(theta)
        F, G = total / n + pen_value, grad / n + pen_grad
        if H is not None:
            # In place: the Hessian is the largest array of a Newton run.
            H = H.reshape(k * q, k * q)
            H /= n
            H[np.diag_indices_from(H)] += self.l2 * np.tile(self.penalised, k)
            if self.gauge:
                # + γ·(1 1ᵀ ⊗ I_q): γ on the diagonal of every (class, class) block.
                diagonal = np.arange(q)
                H.reshape(k, q, k, q)[:, diagonal, :, diagonal] += self.gauge
        return F, G, H


class _Lane:
    """One thread's share of a pass: its own transposed design buffer [1, Z]ᵀ and its own sums."""

    def __init__(self, objective: Objective, theta: np.ndarray, hessian: bool) -> None:
        k, q = objective.shape
        self._objective, self._theta = objective, theta
        self.total, self.grad = 0.0, np.zeros((k, q))
        self.H: np.ndarray | None = np.zeros((k, q, k, q)) if hessian else None
        # One buffer for every step: no array per block, and its products read it from cache.
        self.step = max(1024, min(_STEP_ROWS, _STEP_VALUES // q))
        self._design = np.empty((q, self.step))
        self._first = int(objective.fit_intercept)
        self._design[: self._first] = 1.0
        standardization = objective._standardization
        self._columns = None if standardization is None else [a[:, None] for a in standardization]

    def run(self, Z: np.ndarray, y: np.ndarray, starts: range) -> None:
        """Add the steps of rows ``Z``, ``y`` that begin at ``starts``."""
        objective, first, columns = self._objective, self._first, self._columns
        for start in starts:
            stop = min(start + self.step, y.shape[0])
            AT = self._design[:, : stop - start]
            features = AT[first:]
            features[...] = Z[start:stop].T
            if columns is not None:
                features -= columns[0]
                features /= columns[1]
            value, residual, P = _block_terms(objective.loss, (self._theta @ AT).T, y[start:stop])
            self.total += value
            self.grad += (AT @ residual).T
            if self.H is not None:
                _add_logistic_hessian(self.H, AT, P, objective.interrupt)


def _add_logistic_hessian(H: np.ndarray, AT: np.ndarray, P: np.ndarray | None, interrupt: Interrupt) -> None:
    """Add ``Σ AᵀD_{kl}A`` to H (K, q, K, q), ``D_{kl} = diag(p_k(δ_kl - p_l))``, for the transposed design ``AT``."""
    if P is None:
        raise ValueError("only the logistic loss has a Hessian here")
    # Each block is ±SSᵀ with S = Aᵀ·√|weight|: one symmetric rank-k update (BLAS syrk), which is
    # several times faster than the general product (Aᵀ·weight)A on blocks of a few thousand rows.
    if P.shape[1] == 1:
        # Binary: Aᵀ diag(p(1 - p)) A.
        p = P[:, 0]
        S = AT * np.sqrt(p * (1 - p))
        H[0, :, 0, :] += S @ S.T
        return
    K = P.shape[1]
    for a in range(K):
        interrupt()
        for b in range(a, K):
            # p_a(1 - p_a) ≥ 0 on the diagonal, -p_a·p_b ≤ 0 off it.
            weight = P[:, a] * (1 - P[:, a]) if a == b else P[:, a] * P[:, b]
            S = AT * np.sqrt(weight)
            block = S @ S.T
            if a == b:
                H[a, :, a, :] += block
            else:
                H[a, :, b, :] -= block
                H[b, :, a, :] -= block


def make_objective(
    data: BlockSource,
    *,
    kind: str,
    n_classes: int,
    d: int,
    l2: float,
    fit_intercept: bool,
    interrupt: Interrupt = uninterrupted,
) -> Objective:
    """The objective for ``kind`` over ``data``; see the module docstring for F."""
    loss, n_outputs, gauge = "squared", 1, 0.0
    if kind == "logistic":
        loss = "log"
        if n_classes > 2:
            # The softmax is unchanged by adding one vector to every class's parameters;
            # the gauge (γ/2)‖Σₖθₖ‖² removes that flat direction without moving the optimum,
            # because any optimum of the penalised problem already has Σₖθₖ = 0 where it matters.
            n_outputs, gauge = n_classes, 1.0
    return Objective(data, loss, n_outputs, d, l2=l2, fit_intercept=fit_intercept, gauge=gauge, interrupt=interrupt)
