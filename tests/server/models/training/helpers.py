"""Helpers for the training tests: run a ``Trainer`` over arrays, split them unevenly, compare result trees."""

import numpy as np

from regserve.server.models.training import Trainer


def train(spec, X, y, *, chunks=None, spool_dir=None):
    """Fit in one chunk, or split at the given row indices."""
    with Trainer(spec, spool_dir=spool_dir) as trainer:
        for Xc, yc in zip(np.split(X, chunks or []), np.split(y, chunks or []), strict=True):
            trainer.add_chunk(Xc, yc)
        return trainer.finish()


def uneven_splits(n, count, seed=0):
    return sorted(np.random.default_rng(seed).choice(np.arange(1, n), size=count - 1, replace=False).tolist())


def assert_close_tree(a, b, tol):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_close_tree(a[key], b[key], tol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_close_tree(x, y, tol)
    elif isinstance(a, float):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    else:
        assert a == b
