"""Separated classes under an unpenalised logistic fit, where the maximum-likelihood estimate does not exist.

The classes are *separated* when some non-zero direction ``B`` of the parameters
(intercepts included) orders every training row's own class at least as high as
any other, ``(β_{y_i} - β_k)ᵀ x̃_i ≥ 0`` for every row ``i`` and class ``k``,
``x̃ = [1, x]``; for two classes ``s_i · βᵀ x̃_i ≥ 0`` with ``s_i = ±1``.  Then the
log-likelihood keeps rising along ``B`` and has no maximum (Albert and Anderson,
1984): *complete* separation when every inequality can be strict, *quasi-complete*
when only some can.  Newton's method still meets its gradient tolerance there,
because the separated rows' probabilities reach 0 or 1 while the weights grow.

The test is exact where it can be afforded: two linear programs (Konis, 2007,
as R's ``detectseparation`` runs them) with ``scipy.optimize.linprog`` (HiGHS),
on the training rows, each feature scaled to a largest magnitude of 1, which
moves no inequality's sign:

1. maximise ``Σ`` of the margins subject to every margin ``≥ 0`` and ``B`` in
   ``[-1, 1]``: a positive optimum means separation;
2. then maximise ``t`` subject to every margin ``≥ t``, ``t ≤ 1``: a positive
   optimum means complete separation.

Without SciPy, or when the programs would hold more than ``LP_MAX_VALUES``
coefficients, only complete separation is detected, by its definition: the
fitted parameters themselves order every training row's own class strictly
first (a training accuracy of 1 with no ties).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from regserve.server.models.estimator import LinearModel
from regserve.server.models.interrupt import Interrupt, uninterrupted

__all__ = ["LP_MAX_VALUES", "complete_separation_warning", "find_separation", "strictly_ordered"]

LP_MAX_VALUES = 4_000_000
"""Most coefficients (constraints × parameters) the linear programs may hold: 32 MiB as float64."""
_MARGIN_TOLERANCE = 1e-7
"""A margin above this, with features and parameters within [-1, 1], is taken as strictly positive."""


def find_separation(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    n_rows: int,
    model: LinearModel,
    fit_intercept: bool,
    interrupt: Interrupt = uninterrupted,
) -> dict | None:
    """A warning ``{"reason", "message"}`` when the training rows' classes are separated, else None.

    ``blocks`` are the unscaled training rows ``(X, class index)``, ``n_rows`` of them;
    ``model`` is the unpenalised fit on them.
    """
    n_classes = len(model.classes_ or ())
    q = model.coef_.shape[1] + int(fit_intercept)
    constraints = n_rows * max(n_classes - 1, 1)
    linprog = _linprog()
    if linprog is not None and constraints * (q * (n_classes if n_classes > 2 else 1) + 1) <= LP_MAX_VALUES:
        X, y = _gather(blocks, interrupt)
        return _by_linear_programs(linprog, X, y, n_classes, fit_intercept, interrupt)
    if strictly_ordered(blocks, model, interrupt):
        return _warning("COMPLETE", n_rows, n_rows)
    return None


def _linprog():
    try:
        from scipy.optimize import linprog
    except ImportError:
        return None
    return linprog


def _gather(blocks: Iterable[tuple[np.ndarray, np.ndarray]], interrupt: Interrupt) -> tuple[np.ndarray, np.ndarray]:
    Xs, ys = [], []
    for X, y in blocks:
        interrupt()
        Xs.append(X)
        ys.append(y.astype(np.intp))
    return np.concatenate(Xs), np.concatenate(ys)


def _margin_matrix(X: np.ndarray, y: np.ndarray, n_classes: int, fit_intercept: bool) -> np.ndarray:
    """Rows ``M`` with ``M @ vec(B)`` the margins: one per row (binary) or per row and rival class."""
    peak = np.abs(X).max(axis=0)
    peak[peak == 0] = 1.0
    A = X / peak  # column scaling maps one separating direction onto another
    if fit_intercept:
        A = np.hstack([np.ones((A.shape[0], 1)), A])
    if n_classes <= 2:
        return A * np.where(y == 1, 1.0, -1.0)[:, None]
    n, q = A.shape
    rows, rivals = np.nonzero(np.arange(n_classes)[None, :] != y[:, None])
    M = np.zeros((rows.size, n_classes, q))
    M[np.arange(rows.size), y[rows]] = A[rows]
    M[np.arange(rows.size), rivals] = -A[rows]
    return M.reshape(rows.size, n_classes * q)


def _by_linear_programs(linprog, X, y, n_classes: int, fit_intercept: bool, interrupt: Interrupt) -> dict | None:
    M = _margin_matrix(X, y, n_classes, fit_intercept)
    m, p = M.shape
    interrupt()
    # 1: maximise Σ margins with every margin >= 0 and the parameters in [-1, 1].
    first = linprog(-M.sum(axis=0), A_ub=-M, b_ub=np.zeros(m), bounds=(-1.0, 1.0), method="highs")
    if first.status != 0:
        return None
    margins = M @ first.x
    separated = int((margins > _MARGIN_TOLERANCE).sum())
    if separated == 0:
        return None
    interrupt()
    # 2: maximise t with every margin >= t: the variables are [B, t].
    cost = np.zeros(p + 1)
    cost[-1] = -1.0
    second = linprog(
        cost,
        A_ub=np.hstack([-M, np.ones((m, 1))]),
        b_ub=np.zeros(m),
        bounds=[(-1.0, 1.0)] * p + [(None, 1.0)],
        method="highs",
    )
    if second.status == 0 and second.x[-1] > _MARGIN_TOLERANCE:
        return _warning("COMPLETE", X.shape[0], X.shape[0])
    rows_separated = separated if n_classes <= 2 else _rows_with_a_positive_margin(margins, X.shape[0])
    return _warning("QUASI_COMPLETE", rows_separated, X.shape[0])


def _rows_with_a_positive_margin(margins: np.ndarray, n: int) -> int:
    # The multinomial margins come row by row, K - 1 rivals each.
    return int((margins.reshape(n, -1) > _MARGIN_TOLERANCE).any(axis=1).sum())


def strictly_ordered(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]], model: LinearModel, interrupt: Interrupt = uninterrupted
) -> bool:
    """Whether the fitted scores put every row's own class strictly above every other class."""
    for X, y in blocks:
        interrupt()
        scores = model._decision_function(X)
        index = y.astype(np.intp)
        if scores.shape[1] == 1:
            margin = scores[:, 0] * np.where(index == 1, 1.0, -1.0)
        else:
            own = scores[np.arange(index.size), index]
            scores[np.arange(index.size), index] = -np.inf
            margin = own - scores.max(axis=1)
        if not (margin > 0).all():
            return False
    return True


def complete_separation_warning(n: int) -> dict:
    """The warning of complete separation of ``n`` training rows, as ``find_separation`` gives it."""
    return _warning("COMPLETE", n, n)


def _warning(kind: str, separated: int, n: int) -> dict:
    if kind == "COMPLETE":
        what = f"complete separation: linear boundaries put each of the {n} training rows strictly on its class's side"
    else:
        what = (
            f"quasi-complete separation: linear boundaries put {separated} of the {n} training rows strictly on "
            "their class's side and the rest on a boundary, none on a wrong side"
        )
    return {
        "reason": f"{kind}_SEPARATION",
        "message": (
            f"The classes show {what}, so the unpenalised maximum-likelihood estimate does not exist: the weights "
            "grow without bound and the fitted probabilities of those rows reach 0 or 1. Keep the default penalty "
            "(c = 1) or give alpha > 0, or drop the separating features."
        ),
    }
