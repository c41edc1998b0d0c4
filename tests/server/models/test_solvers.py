"""Solvers against independent closed forms, lstsq and scikit-learn."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from regserve.server.models import solvers
from regserve.server.models.objective import make_objective


class ArraySource:
    """An in-memory BlockSource cut into uneven blocks."""

    def __init__(self, Z, y, block=97):
        self.Z, self.y, self.n, self.block = Z, y, len(y), block

    def blocks(self):
        for start in range(0, self.n, self.block):
            yield self.Z[start : start + self.block], self.y[start : start + self.block]

    def shuffled_blocks(self, rng):
        order = rng.permutation(self.n)
        yield self.Z[order], self.y[order]


def _moments(X, y):
    V = np.column_stack([X, y])
    mean = V.mean(axis=0)
    return len(y), mean, (V - mean).T @ (V - mean)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)) * [1.0, 10.0, 0.1, 3.0] + [5.0, -2.0, 0.0, 1.0]
    y = X @ np.array([1.0, -0.2, 4.0, 0.5]) + 2.0 + rng.normal(size=200)
    return X, y


def test_ols_matches_lstsq_on_the_augmented_design(problem):
    X, y = problem
    d = X.shape[1]
    coef, intercept, info = solvers.solve_least_squares(
        *_moments(X, y), alpha=0.0, fit_intercept=True, shift=np.zeros(d), scale=np.ones(d)
    )
    expected = np.linalg.lstsq(np.column_stack([np.ones(len(y)), X]), y, rcond=None)[0]
    np.testing.assert_allclose(np.r_[intercept, coef], expected, rtol=1e-10)
    assert info.rank == d and info.fallback is None and info.condition_number > 1


def test_ridge_matches_its_normal_equations_with_standardization(problem):
    X, y = problem
    mu, sd = X.mean(axis=0), X.std(axis=0)
    coef, intercept, _ = solvers.solve_least_squares(*_moments(X, y), alpha=3.0, fit_intercept=True, shift=mu, scale=sd)
    Zc = (X - mu) / sd
    expected = np.linalg.solve(Zc.T @ Zc + 3.0 * np.eye(4), Zc.T @ (y - y.mean()))
    np.testing.assert_allclose(coef, expected, rtol=1e-10)
    np.testing.assert_allclose(intercept, y.mean(), rtol=1e-12)


def test_ridge_without_intercept_matches_its_normal_equations(problem):
    X, y = problem
    shift, scale = np.array([1.0, 2.0, 0.0, -1.0]), np.array([2.0, 1.0, 0.5, 1.0])
    coef, intercept, _ = solvers.solve_least_squares(
        *_moments(X, y), alpha=0.5, fit_intercept=False, shift=shift, scale=scale
    )
    Z = (X - shift) / scale
    np.testing.assert_allclose(coef, np.linalg.solve(Z.T @ Z + 0.5 * np.eye(4), Z.T @ y), rtol=1e-10)
    assert intercept == 0.0


def test_singular_gram_falls_back_to_the_minimum_norm_solution(problem):
    X, y = problem
    X = np.column_stack([X, X[:, 0] * 2.0, np.full(len(y), 3.0)])  # collinear and constant columns
    d = X.shape[1]
    coef, intercept, info = solvers.solve_least_squares(
        *_moments(X, y), alpha=0.0, fit_intercept=True, shift=np.zeros(d), scale=np.ones(d)
    )
    Xc = X - X.mean(axis=0)
    expected = np.linalg.lstsq(Xc, y - y.mean(), rcond=None)[0]
    assert info.fallback == "lstsq" and info.rank == 4
    np.testing.assert_allclose(coef, expected, rtol=1e-6, atol=1e-9)
    assert np.isfinite(intercept)


@pytest.fixture
def standardized():
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(1500, 5))
    Z = (Z - Z.mean(axis=0)) / Z.std(axis=0)
    y = Z @ rng.normal(size=5) + 1.5 + rng.normal(scale=0.5, size=1500)
    labels = np.digitize(Z[:, 0] - Z[:, 1] + rng.logistic(size=1500), [-1.0, 1.0])
    return Z, y, labels


def _ridge_optimum(Z, y, l2):
    n = len(y)
    Zc = Z - Z.mean(axis=0)
    w = np.linalg.solve(Zc.T @ Zc + n * l2 * np.eye(Z.shape[1]), Zc.T @ (y - y.mean()))
    b = y.mean() - Z.mean(axis=0) @ w
    r = Z @ w + b - y
    return 0.5 * (r @ r) / n + 0.5 * l2 * (w @ w)


@pytest.mark.parametrize("solver", ["gd", "sgd"])
def test_iterative_regression_reaches_the_optimum_loss(standardized, solver):
    Z, y, _ = standardized
    objective = make_objective(ArraySource(Z, y), kind="ridge", n_classes=0, d=5, l2=0.01, fit_intercept=True)
    if solver == "gd":
        _, info = solvers.solve_gd(objective, learning_rate=0.5, epochs=1000, tolerance=1e-14)
    else:
        _, info = solvers.solve_sgd(objective, learning_rate=0.05, epochs=300, batch_size=32, tolerance=1e-14, seed=0)
    optimum = _ridge_optimum(Z, y, 0.01)
    assert info.converged
    assert abs(info.final_loss - optimum) <= 1e-6 * optimum


def test_gd_halves_a_learning_rate_that_would_diverge(standardized):
    Z, y, _ = standardized
    objective = make_objective(ArraySource(Z, y), kind="linear", n_classes=0, d=5, l2=0.0, fit_intercept=True)
    _, info = solvers.solve_gd(objective, learning_rate=50.0, epochs=2000, tolerance=1e-14)
    assert np.isfinite(info.final_loss)
    assert abs(info.final_loss - _ridge_optimum(Z, y, 0.0)) <= 1e-6 * info.final_loss


def _sklearn_logistic(Z, labels, l2):
    model = LogisticRegression(C=1.0 / (l2 * len(labels)), tol=1e-12, max_iter=10_000)
    return model.fit(Z, labels)


@pytest.mark.parametrize("binary", [True, False])
def test_newton_matches_sklearn_logistic(standardized, binary):
    Z, _, labels = standardized
    if binary:
        labels = (labels == 2).astype(np.intp)
    K = len(np.unique(labels))
    objective = make_objective(ArraySource(Z, labels), kind="logistic", n_classes=K, d=5, l2=0.01, fit_intercept=True)
    theta, info = solvers.solve_newton(objective, max_iterations=50, tolerance=1e-10)
    assert info.converged and info.iterations < 20
    reference = _sklearn_logistic(Z, labels, 0.01)
    np.testing.assert_allclose(theta[:, 1:], reference.coef_, rtol=1e-5, atol=1e-6)
    intercept = theta[:, 0]
    np.testing.assert_allclose(
        intercept - intercept.mean() * (K > 2), reference.intercept_ - reference.intercept_.mean() * (K > 2), atol=1e-6
    )
    # sklearn's own objective at its solution cannot beat the Newton optimum.
    W = np.c_[reference.intercept_, reference.coef_]
    theirs = objective.evaluate(W if K > 2 else W[:1])[0]
    assert info.final_loss <= theirs * (1 + 1e-12)
    np.testing.assert_allclose(info.final_loss, theirs, rtol=1e-8)


@pytest.mark.parametrize("solver", ["gd", "sgd"])
@pytest.mark.parametrize("binary", [True, False])
def test_iterative_logistic_reaches_the_newton_optimum(standardized, solver, binary):
    Z, _, labels = standardized
    if binary:
        labels = (labels == 2).astype(np.intp)
    K = len(np.unique(labels))
    objective = make_objective(ArraySource(Z, labels), kind="logistic", n_classes=K, d=5, l2=0.01, fit_intercept=True)
    _, best = solvers.solve_newton(objective, max_iterations=50, tolerance=1e-12)
    if solver == "gd":
        _, info = solvers.solve_gd(objective, learning_rate=2.0, epochs=3000, tolerance=1e-15)
    else:
        _, info = solvers.solve_sgd(objective, learning_rate=0.2, epochs=300, batch_size=64, tolerance=1e-15, seed=1)
    assert abs(info.final_loss - best.final_loss) <= 1e-6 * best.final_loss


def test_newton_without_penalty_handles_the_softmax_gauge(standardized):
    Z, _, labels = standardized
    objective = make_objective(ArraySource(Z, labels), kind="logistic", n_classes=3, d=5, l2=0.0, fit_intercept=True)
    theta, info = solvers.solve_newton(objective, max_iterations=50, tolerance=1e-10)
    assert info.converged and info.fallback is None
    np.testing.assert_allclose(theta.sum(axis=0), 0.0, atol=1e-9)


def test_blockwise_substitution_solves_triangular_systems_across_blocks():
    rng = np.random.default_rng(31)
    for n in (1, 127, 128, 129, 300):
        lower = np.tril(rng.normal(size=(n, n))) + n * np.eye(n)
        b = rng.normal(size=n)
        np.testing.assert_allclose(solvers._substitute(lower, b, forward=True), np.linalg.solve(lower, b), rtol=1e-12)
        np.testing.assert_allclose(
            solvers._substitute(lower.T, b, forward=False), np.linalg.solve(lower.T, b), rtol=1e-12
        )


def test_the_rank_from_the_eigenvalues_is_numpys_matrix_rank():
    rng = np.random.default_rng(32)
    A = rng.normal(size=(50, 8))
    for gram in (A.T @ A, (A[:, :3] @ rng.normal(size=(3, 8))).T @ A[:, :3] @ rng.normal(size=(3, 8))):
        gram = (gram + gram.T) / 2
        assert solvers.rank_of(np.linalg.eigvalsh(gram)) == np.linalg.matrix_rank(gram, hermitian=True)


class CountingSource(ArraySource):
    """An ArraySource that counts the passes made over it."""

    passes = 0

    def blocks(self):
        self.passes += 1
        return super().blocks()


@pytest.mark.parametrize("binary", [True, False])
def test_newton_from_a_strided_sample_reaches_the_same_optimum_in_fewer_passes(binary, monkeypatch):
    rng = np.random.default_rng(8)
    Z = rng.normal(size=(20_000, 5))
    labels = np.digitize(
        Z @ [1.0, -2.0, 0.5, 0.0, 1.5] + rng.logistic(size=20_000), [-1.0, 1.0] if not binary else [0.5]
    )
    K = len(np.unique(labels))

    def run(sample_rows):
        monkeypatch.setattr(solvers, "WARM_START_ROWS", sample_rows)
        source = CountingSource(Z, labels, block=4096)
        objective = make_objective(source, kind="logistic", n_classes=K, d=5, l2=0.01, fit_intercept=True)
        theta, info = solvers.solve_newton(objective, max_iterations=50, tolerance=1e-10)
        assert info.converged
        return theta, info, source.passes

    cold, cold_info, cold_passes = run(10**9)  # a sample of no row: Newton from zero
    warm, warm_info, warm_passes = run(2000)  # every 10th row
    np.testing.assert_allclose(warm, cold, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(warm_info.final_loss, cold_info.final_loss, rtol=1e-12)
    assert warm_info.iterations < cold_info.iterations
    assert warm_passes < cold_passes


def test_without_a_warm_start_newton_starts_from_zero_and_reaches_the_same_optimum(monkeypatch):
    rng = np.random.default_rng(9)
    Z = rng.normal(size=(20_000, 5))
    labels = (Z @ [1.0, -2.0, 0.5, 0.0, 1.5] + rng.logistic(size=20_000) > 0.5).astype(np.intp)
    monkeypatch.setattr(solvers, "WARM_START_ROWS", 2000)
    results = []
    for warm_start in (True, False):
        source = ArraySource(Z, labels)
        objective = make_objective(source, kind="logistic", n_classes=2, d=5, l2=0.01, fit_intercept=True)
        evaluated = []
        evaluate = objective.evaluate

        def spy(theta, hessian=False, evaluate=evaluate, evaluated=evaluated):
            evaluated.append(theta.copy())
            return evaluate(theta, hessian)

        monkeypatch.setattr(objective, "evaluate", spy)
        theta, info = solvers.solve_newton(objective, max_iterations=50, tolerance=1e-10, warm_start=warm_start)
        assert info.converged
        results.append((theta, evaluated[0]))
    (warm, first_warm), (cold, first_cold) = results
    assert np.abs(first_warm).max() > 0 and np.all(first_cold == 0)
    np.testing.assert_allclose(cold, warm, rtol=1e-8, atol=1e-9)


def test_a_warm_start_worse_than_zero_is_dropped(standardized, monkeypatch):
    Z, _, labels = standardized
    labels = (labels == 2).astype(np.intp)
    labels[::5] = 1 - labels[::5]  # the strided sample (every 5th row) sees every label flipped
    monkeypatch.setattr(solvers, "WARM_START_ROWS", 300)
    objective = make_objective(ArraySource(Z, labels), kind="logistic", n_classes=2, d=5, l2=0.01, fit_intercept=True)
    evaluated = []
    evaluate = objective.evaluate

    def spy(theta, hessian=False):
        evaluated.append(theta.copy())
        return evaluate(theta, hessian)

    monkeypatch.setattr(objective, "evaluate", spy)
    theta, info = solvers.solve_newton(objective, max_iterations=50, tolerance=1e-10)
    assert np.abs(evaluated[0]).max() > 0 and np.all(evaluated[1] == 0)  # the warm start, then zero
    reference = _sklearn_logistic(Z, labels, 0.01)
    assert info.converged
    np.testing.assert_allclose(theta[0, 1:], reference.coef_[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("margin", [solvers._QUADRATIC_MARGIN, 0.0])
def test_newton_skips_the_hessian_of_its_last_step_without_changing_a_step(standardized, monkeypatch, classes, margin):
    """Margin 0 predicts every step after the first to be the last, so most predictions are wrong and
    their steps are evaluated again with the Hessian; the iterates must be those of plain Newton either way."""
    Z, _, labels = standardized
    if classes == 2:
        labels = (labels == 2).astype(np.intp)

    def run(quadratic_margin):
        monkeypatch.setattr(solvers, "_QUADRATIC_MARGIN", quadratic_margin)
        objective = make_objective(
            ArraySource(Z, labels), kind="logistic", n_classes=classes, d=5, l2=0.01, fit_intercept=True
        )
        calls = []
        evaluate = objective.evaluate

        def spy(theta, hessian=False):
            calls.append((theta.copy(), hessian))
            return evaluate(theta, hessian)

        monkeypatch.setattr(objective, "evaluate", spy)
        theta, info = solvers.solve_newton(objective, max_iterations=50, tolerance=1e-12, warm_start=False)
        return theta, info, calls

    plain_theta, plain_info, plain_calls = run(np.inf)  # no step is ever predicted to be the last
    theta, info, calls = run(margin)
    assert all(hessian for _, hessian in plain_calls)
    assert calls[-1][1] is False  # the step that met the tolerance computed no Hessian
    with_hessian = [(t, h) for t, h in calls if h]
    assert [t.tolist() for t, _ in with_hessian] == [t.tolist() for t, _ in plain_calls[:-1]]
    np.testing.assert_array_equal(theta, plain_theta)
    assert (info.iterations, info.converged, info.final_loss) == (
        plain_info.iterations,
        plain_info.converged,
        plain_info.final_loss,
    )
    if margin == 0.0:
        assert len(calls) > len(plain_calls)  # wrong predictions cost a pass each, and change no step
    else:
        assert len(calls) == len(plain_calls)


def test_newton_keeps_the_hessian_where_a_pass_without_it_would_add_in_another_order(monkeypatch):
    # 10 classes x 41 parameters: a pass with the Hessian runs in one thread, one without in two.
    rng = np.random.default_rng(22)
    Z = rng.normal(size=(3_000, 40))
    labels = rng.integers(0, 10, size=3_000)
    results = []
    for margin in (np.inf, solvers._QUADRATIC_MARGIN):
        monkeypatch.setattr(solvers, "_QUADRATIC_MARGIN", margin)
        objective = make_objective(
            ArraySource(Z, labels, block=700), kind="logistic", n_classes=10, d=40, l2=0.1, fit_intercept=True
        )
        assert not objective.shares_hessian_passes
        hessians = []
        evaluate = objective.evaluate

        def spy(theta, hessian=False, evaluate=evaluate, hessians=hessians):
            hessians.append(hessian)
            return evaluate(theta, hessian)

        monkeypatch.setattr(objective, "evaluate", spy)
        results.append(
            (*solvers.solve_newton(objective, max_iterations=50, tolerance=1e-12, warm_start=False), hessians)
        )
    (plain, plain_info, _), (theta, info, hessians) = results
    assert all(hessians) and info.converged
    np.testing.assert_array_equal(theta, plain)
    assert info.final_loss == plain_info.final_loss
