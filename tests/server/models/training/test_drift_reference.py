"""The drift reference a training run stores: deciles of the training rows, their moments, predicted classes.

The edges come from the bottom-k sample of the training rows drawn during intake (``EdgeSample``).
"""

from __future__ import annotations

import numpy as np
import pytest

from regserve.server.models.drift import BINS
from regserve.server.models.training import TrainSpec
from regserve.server.models.training import drift_reference as drift_module
from regserve.server.models.training import spool as spool_module
from regserve.server.models.training import trainer as trainer_module
from regserve.server.models.training.drift_reference import EdgeSample
from regserve.server.models.training.sampling import DRIFT_EDGE_STREAM, RowGroups, row_keys
from tests.server.models.training.helpers import train, uneven_splits


def _bottom_k_rows(X, training, seed, k):
    """The training rows of ``X`` with the k smallest draws of (seed, global row index), by brute force."""
    keys = row_keys(seed, DRIFT_EDGE_STREAM, 0, len(X))
    index = np.flatnonzero(training)
    return X[index[np.argsort(keys[index])[:k]]]


def _deciles(rows):
    return np.quantile(rows, np.arange(1, BINS) / BINS, axis=0).T


def test_linear_reference_holds_training_deciles_mean_and_std():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(5_000, 3)) * [1.0, 5.0, 0.1] + [0.0, 100.0, -3.0]
    y = X @ [1.0, 2.0, 3.0] + rng.normal(size=5_000)
    result = train(TrainSpec(kind="linear", validation_fraction=0.0, seed=3), X, y)
    reference = result.drift_reference
    assert reference is not None and reference.class_proportions is None
    assert reference.edges.shape == (3, BINS - 1)
    # Every training row is sampled here, so the edges are the exact deciles and each bin holds a tenth.
    np.testing.assert_allclose(reference.edges, np.quantile(X, np.arange(1, BINS) / BINS, axis=0).T)
    np.testing.assert_allclose(reference.proportions, np.full((3, BINS), 0.1), atol=1e-3)
    np.testing.assert_allclose(reference.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(reference.std, X.std(axis=0), rtol=1e-10)


def test_only_training_rows_make_the_reference():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(2_000, 2))
    y = X.sum(axis=1)
    result = train(TrainSpec(kind="linear", validation_fraction=0.5, seed=1), X, y)
    assert result.metadata["n_train"] < 2_000
    reference = result.drift_reference
    assert reference is not None
    # Shares are counted over the n_train training rows: each is a multiple of 1 / n_train.
    np.testing.assert_allclose(reference.proportions.sum(axis=1), 1.0)
    counts = reference.proportions * result.metadata["n_train"]
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)


def test_edges_come_from_a_bounded_sample_and_proportions_from_every_row(monkeypatch):
    monkeypatch.setattr(drift_module, "EDGE_SAMPLE_ROWS", 500)
    rng = np.random.default_rng(13)
    X = rng.uniform(size=(20_000, 2))
    y = X.sum(axis=1)
    reference = train(TrainSpec(kind="linear", validation_fraction=0.0, seed=5), X, y).drift_reference
    assert reference is not None
    # The edges are the deciles of the 500 rows with the smallest draws: within a few hundredths of the true ones.
    np.testing.assert_allclose(reference.edges, _deciles(_bottom_k_rows(X, np.ones(len(X), bool), 5, 500)), rtol=1e-15)
    np.testing.assert_allclose(reference.edges, np.tile(np.arange(1, BINS) / BINS, (2, 1)), atol=0.05)
    expected = np.stack(
        [np.bincount(np.searchsorted(reference.edges[j], X[:, j], side="right"), minlength=BINS) for j in range(2)]
    ) / len(X)
    np.testing.assert_allclose(reference.proportions, expected, rtol=1e-12)


def test_bins_counted_in_two_threads_are_every_training_row_counted_once(monkeypatch):
    # Once the edges are taken, the scoring thread counts half of each block and the store thread the rest;
    # from the fourth block on the edges are certain to be taken (the scoring waits for the first block's count).
    monkeypatch.setattr(spool_module, "_READ_BLOCK", 8_000)  # 6,000 training rows a block
    counted_here = []
    update = trainer_module._ScoreLane.update

    def spy(lane, X, y, rows=None):
        counted_here.append(rows.shape[0] if rows is not None and lane.counts is not None else 0)
        update(lane, X, y, rows)

    monkeypatch.setattr(trainer_module._ScoreLane, "update", spy)
    rng = np.random.default_rng(16)
    X = rng.normal(size=(60_000, 3)) * [1.0, 3.0, 0.2]
    y = X @ [1.0, -1.0, 2.0] + rng.normal(size=60_000)
    result = train(TrainSpec(kind="linear", validation_fraction=0.25, seed=4), X, y)
    reference = result.drift_reference
    assert reference is not None and 0 < sum(counted_here) < result.metadata["n_train"]
    training = RowGroups(4, 0.25, 1).take(0, len(X))[0] >= 0
    expected = np.stack(
        [
            np.bincount(np.searchsorted(reference.edges[j], X[training, j], side="right"), minlength=BINS)
            for j in range(3)
        ]
    )
    np.testing.assert_array_equal(np.round(reference.proportions * training.sum()).astype(int), expected)


def test_the_same_rows_in_other_chunks_give_the_same_reference():
    rng = np.random.default_rng(14)
    X = rng.normal(size=(3_000, 2))
    y = X[:, 0] - X[:, 1]
    spec = TrainSpec(kind="linear", validation_fraction=0.2, seed=9)
    one = train(spec, X, y).drift_reference
    many = train(spec, X, y, chunks=[17, 900, 2_001]).drift_reference
    assert one is not None and many is not None
    np.testing.assert_array_equal(one.edges, many.edges)
    np.testing.assert_array_equal(one.proportions, many.proportions)


def test_classifier_reference_holds_the_classes_the_model_predicts():
    rng = np.random.default_rng(15)
    X = rng.normal(size=(3_000, 2))
    labels = np.where(X[:, 0] + 0.3 * rng.normal(size=3_000) > 0.5, "yes", "no")
    result = train(TrainSpec(kind="logistic", validation_fraction=0.0, seed=2), X, labels)
    reference = result.drift_reference
    assert reference is not None and reference.class_proportions is not None
    predicted = result.model.predict_proba(X).argmax(axis=1)
    np.testing.assert_allclose(reference.class_proportions, np.bincount(predicted, minlength=2) / len(X))
    assert reference.class_proportions.sum() == pytest.approx(1.0)


def test_the_edge_sample_is_the_training_rows_with_the_smallest_draws_however_chunked(monkeypatch):
    monkeypatch.setattr(drift_module, "EDGE_SAMPLE_ROWS", 300)
    rng = np.random.default_rng(16)
    X = rng.normal(size=(5_000, 3))
    training = RowGroups(4, 0.25, 1).take(0, len(X))[0] >= 0
    expected = _bottom_k_rows(X, training, 4, 300)
    for chunks in ([], [2_500], uneven_splits(len(X), 97, seed=3)):
        sample = EdgeSample(4, 3)
        for first, piece in zip([0, *chunks], np.split(np.arange(len(X)), chunks), strict=True):
            sample.add(first, X[piece], training[piece])
        assert sample.size == 300
        kept = sample.rows
        np.testing.assert_array_equal(kept[np.lexsort(kept.T)], expected[np.lexsort(expected.T)])


def test_with_a_split_the_edges_come_from_training_rows_only(monkeypatch):
    monkeypatch.setattr(drift_module, "EDGE_SAMPLE_ROWS", 400)
    rng = np.random.default_rng(17)
    X = rng.normal(size=(4_000, 2))
    # Held-out rows far from the training rows would move any decile they got into.
    held_out = RowGroups(8, 0.5, 1).take(0, len(X))[0] < 0
    X[held_out] += 1_000.0
    result = train(TrainSpec(kind="linear", validation_fraction=0.5, seed=8), X, X.sum(axis=1), chunks=[999, 3_001])
    reference = result.drift_reference
    assert reference is not None
    np.testing.assert_allclose(reference.edges, _deciles(_bottom_k_rows(X, ~held_out, 8, 400)), rtol=1e-15)
    assert reference.edges.max() < 10


def test_the_edge_sample_holds_at_most_its_share_of_values(monkeypatch):
    monkeypatch.setattr(drift_module, "EDGE_SAMPLE_VALUES", 1_000)
    sample = EdgeSample(0, 40)
    assert sample.capacity == 25
    rng = np.random.default_rng(18)
    for first in range(0, 2_000, 500):
        sample.add(first, rng.normal(size=(500, 40)))
    assert sample.size == 25 and sample.edges().shape == (40, BINS - 1)


@pytest.mark.parametrize("rows", [1, 2, 3, 10, 1_001, 30_000])
def test_edges_are_np_quantile_of_the_sample_to_the_bit(rows):
    rng = np.random.default_rng(rows)
    X = rng.standard_normal((rows, 6))
    X[:, 0] = np.round(X[:, 0])  # ties
    X[:, 1] = 3.0  # a constant feature
    sample = EdgeSample(5, 6)
    sample.add(0, X)
    expected = np.quantile(sample.rows, np.arange(1, BINS) / BINS, axis=0).T
    assert np.array_equal(sample.edges(), expected)


def test_edges_of_one_feature_leave_the_sample_as_it_was():
    rng = np.random.default_rng(3)
    sample = EdgeSample(5, 1)
    sample.add(0, rng.standard_normal((500, 1)))
    before = sample.rows.copy()
    assert np.array_equal(sample.edges(), np.quantile(before, np.arange(1, BINS) / BINS, axis=0).T)
    assert np.array_equal(sample.rows, before)
