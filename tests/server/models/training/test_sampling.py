"""Row groups: a function of the row's global index and the seed, the documented split rule, every fold used."""

from itertools import pairwise

import numpy as np
import pytest

from regserve.server.errors import InvalidInput
from regserve.server.models.training import TrainSpec
from regserve.server.models.training.sampling import RowGroups, row_uniforms, splitmix64
from tests.server.models.training.helpers import assert_close_tree, train, uneven_splits


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


def test_splitmix64_gives_the_reference_outputs():
    # The first outputs of SplitMix64 seeded with 1234567 (Vigna's splitmix64.c): mix(1234567 + i·γ), i = 1, 2.
    gamma = 0x9E3779B97F4A7C15
    states = np.array([(1234567 + i * gamma) % 2**64 for i in (1, 2)], dtype=np.uint64)
    assert splitmix64(states).tolist() == [6457827717110365317, 3203168211198807973]


def test_row_groups_hold_out_the_documented_rows_and_deal_each_window_every_fold():
    group, n_train = RowGroups(seed=3, validation_fraction=0.25, n_folds=4).take(0, 5000)
    np.testing.assert_array_equal(group < 0, row_uniforms(3, 0, 5000) < 0.25)
    assert n_train == int((group >= 0).sum())
    assert abs((group < 0).mean() - 0.25) < 0.02
    # Each window of 4 global rows deals the 4 folds once; held-out rows leave their fold's place empty.
    folds = RowGroups(seed=3, validation_fraction=0.25, n_folds=4).folds(0, 5000)
    assert (np.sort(folds.reshape(-1, 4), axis=1) == np.arange(4)).all()
    np.testing.assert_array_equal(group[group >= 0], folds[group >= 0])


def test_a_rows_group_depends_only_on_its_index_and_the_seed():
    groups = RowGroups(seed=11, validation_fraction=0.3, n_folds=5)
    whole, _ = groups.take(0, 10_007)
    bounds = [0, *uneven_splits(10_007, 12, seed=2), 10_007]
    parts = [RowGroups(seed=11, validation_fraction=0.3, n_folds=5).take(a, b - a)[0] for a, b in pairwise(bounds)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # A range taken on its own, as a worker holding only those rows would.
    np.testing.assert_array_equal(groups.take(7_777, 3)[0], whole[7_777:7_780])
    other, _ = RowGroups(seed=12, validation_fraction=0.3, n_folds=5).take(0, 10_007)
    assert not np.array_equal(other, whole)
    assert groups.take(5, 0)[0].shape == (0,)


def test_the_same_rows_in_other_chunks_give_the_identical_model_and_metrics(diabetes):
    X, y = diabetes
    spec = TrainSpec(kind="ridge", alpha=0.5, validation_fraction=0.25, cv_folds=4, seed=21)
    whole = train(spec, X, y)
    for chunks in ([1], [100, 101, 300], uneven_splits(len(y), 40, seed=5)):
        chunked = train(spec, X, y, chunks=chunks)
        np.testing.assert_allclose(chunked.model.coef_, whole.model.coef_, rtol=1e-10, atol=1e-12)
        assert chunked.metadata["n_validation"] == whole.metadata["n_validation"]
        assert chunked.metadata["fingerprint"] == whole.metadata["fingerprint"]
        assert_close_tree(chunked.metadata["validation_metrics"], whole.metadata["validation_metrics"], 1e-10)
        assert_close_tree(chunked.metadata["cv_metrics"], whole.metadata["cv_metrics"], 1e-10)


def test_a_fold_left_empty_by_the_split_is_refused():
    X = np.arange(8.0)[:, None]
    # With 8 rows, seed 0 and 80% held out, some fold of 4 has no training row.
    spec = TrainSpec(cv_folds=4, validation_fraction=0.8, seed=0)
    group, n_train = RowGroups(0, 0.8, 4).take(0, 8)
    assert n_train >= 2 and len(set(group[group >= 0].tolist())) < 4
    with pytest.raises(InvalidInput) as refused:
        train(spec, X, X[:, 0])
    assert refused.value.reason == "TOO_FEW_ROWS"
