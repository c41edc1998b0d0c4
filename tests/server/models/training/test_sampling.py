"""Seeded row groups: draws independent of chunking, the documented split rule, every fold used."""

from itertools import pairwise

import numpy as np

from regserve.server.models.training import TrainSpec
from regserve.server.models.training.sampling import RowGroups, SeededDraws
from tests.server.models.training.helpers import assert_close_tree, train


def test_cross_validation_is_deterministic_and_uses_every_fold(diabetes):
    X, y = diabetes
    spec = TrainSpec(kind="ridge", solver="gd", alpha=1.0, standardize=True, cv_folds=5, learning_rate=0.5)
    first, again = train(spec, X, y), train(spec, X, y)
    assert first.metadata["cv_metrics"] == again.metadata["cv_metrics"]
    assert_close_tree(first.metadata["cv_metrics"], train(spec, X, y, chunks=[200]).metadata["cv_metrics"], 1e-10)
    folds = first.metadata["cv_metrics"]["per_fold"]
    assert len(folds) == 5 and len({f["mse"] for f in folds}) == 5


def test_minimal_cv_uses_every_fold():
    X = np.arange(6.0)[:, None]
    result = train(TrainSpec(cv_folds=3), X, 2 * X[:, 0] + 1)
    assert result.metadata["cv_metrics"]["folds"] == 3
    assert all(f["mse"] is not None for f in result.metadata["cv_metrics"]["per_fold"])


def test_seeded_draws_do_not_depend_on_how_they_are_taken():
    def draws():
        return SeededDraws(lambda block: np.random.default_rng([9, block]).random(100), 100)

    whole = draws().take(0, 1000)
    pieces = draws()
    bounds = [0, 1, 99, 100, 101, 350, 1000]
    taken = np.concatenate([pieces.take(start, stop - start) for start, stop in pairwise(bounds)])
    np.testing.assert_array_equal(taken, whole)
    np.testing.assert_array_equal(whole[100:200], np.random.default_rng([9, 1]).random(100))
    assert draws().take(5, 0).shape == (0,)


def test_row_groups_hold_out_the_documented_rows_and_deal_each_window_every_fold():
    group, n_train = RowGroups(seed=3, validation_fraction=0.25, n_folds=4).take(0, 0, 5000)
    uniforms = np.concatenate([np.random.default_rng([3, 0, block]).random(4096) for block in (0, 1)])[:5000]
    np.testing.assert_array_equal(group < 0, uniforms < 0.25)
    assert n_train == int((group >= 0).sum())
    folds = group[group >= 0]
    windows = folds[: len(folds) // 4 * 4].reshape(-1, 4)
    assert (np.sort(windows, axis=1) == np.arange(4)).all()
    chunked, row, training_row = RowGroups(seed=3, validation_fraction=0.25, n_folds=4), 0, 0
    parts = []
    for n in (1, 999, 3000, 1000):
        part, part_train = chunked.take(row, training_row, n)
        parts.append(part)
        row, training_row = row + n, training_row + part_train
    np.testing.assert_array_equal(np.concatenate(parts), group)
