"""The validation sample kept with a trained model: bounded, seeded, drawn from the validation rows only."""

from __future__ import annotations

import numpy as np

from regserve.server.models.training import SAMPLE_ROWS, SAMPLE_VALUES, Trainer, TrainSpec
from regserve.server.models.training.sampling import RowGroups
from regserve.server.models.training.validation_sample import sample_size


def _regression_rows(n, d, seed=11):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, X @ rng.normal(size=d) + rng.normal(size=n)


def _train(spec, X, y, tmp_path, chunk_rows=None):
    with Trainer(spec, spool_dir=tmp_path) as trainer:
        step = chunk_rows or X.shape[0]
        for start in range(0, X.shape[0], step):
            trainer.add_chunk(X[start : start + step], y[start : start + step])
        return trainer.finish()


def test_the_sample_is_every_validation_row_when_there_are_few(tmp_path):
    X, y = _regression_rows(500, 3)
    spec = TrainSpec(validation_fraction=0.3, seed=4)
    result = _train(spec, X, y, tmp_path)
    held_out = RowGroups(4, 0.3, 1).take(0, 500)[0] == -1
    inputs, targets = result.validation_sample
    np.testing.assert_array_equal(inputs, X[held_out])
    np.testing.assert_array_equal(targets, y[held_out])
    assert result.metadata["validation_sample_rows"] == held_out.sum() == result.metadata["n_validation"]


def test_the_sample_is_bounded_seeded_and_independent_of_chunking(tmp_path):
    X, y = _regression_rows(12_000, 2)
    spec = TrainSpec(validation_fraction=0.5, seed=9)
    whole = _train(spec, X, y, tmp_path)
    chunked = _train(spec, X, y, tmp_path, chunk_rows=777)
    inputs, targets = whole.validation_sample
    assert inputs.shape == (SAMPLE_ROWS, 2) and targets.shape == (SAMPLE_ROWS,)
    np.testing.assert_array_equal(chunked.validation_sample[0], inputs)
    np.testing.assert_array_equal(chunked.validation_sample[1], targets)
    # Every sampled row is a distinct validation row, with its own target.
    held_out = RowGroups(9, 0.5, 1).take(0, 12_000)[0] == -1
    index = {row.tobytes(): i for i, row in enumerate(X)}
    rows = [index[row.tobytes()] for row in inputs]
    assert len(set(rows)) == SAMPLE_ROWS and held_out[rows].all()
    np.testing.assert_array_equal(y[rows], targets)
    other_seed = _train(TrainSpec(validation_fraction=0.5, seed=10), X, y, tmp_path)
    assert not np.array_equal(other_seed.validation_sample[0], inputs)


def test_many_features_bound_the_values_not_only_the_rows(tmp_path):
    assert sample_size(10_000, 1000) == SAMPLE_VALUES // 1000 < SAMPLE_ROWS
    assert sample_size(10_000, 1) == SAMPLE_ROWS
    assert sample_size(7, 3) == 7
    X, y = _regression_rows(600, 1000)
    result = _train(TrainSpec(kind="ridge", alpha=1.0, validation_fraction=0.8, seed=1), X, y, tmp_path)
    assert result.validation_sample[0].shape == (SAMPLE_VALUES // 1000, 1000)


def test_a_classifier_keeps_class_indices_in_the_order_of_its_classes(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 2))
    names = np.array(["zebra", "ant", "moose"])
    labels = names[np.argmax(X @ rng.normal(size=(2, 3)), axis=1)]
    result = _train(TrainSpec(kind="logistic", validation_fraction=0.4, seed=2), X, labels, tmp_path)
    inputs, targets = result.validation_sample
    classes = result.model.classes_
    assert classes == ("ant", "moose", "zebra")
    index = {row.tobytes(): i for i, row in enumerate(X)}
    expected = [classes.index(labels[index[row.tobytes()]]) for row in inputs]
    np.testing.assert_array_equal(targets, expected)


def test_no_validation_split_keeps_no_sample(tmp_path):
    X, y = _regression_rows(100, 2)
    result = _train(TrainSpec(validation_fraction=0.0), X, y, tmp_path)
    assert result.validation_sample is None and result.metadata["validation_sample_rows"] == 0
