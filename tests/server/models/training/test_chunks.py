"""Chunk checks: feature and target counts, non-finite values by global row, class labels; the spool is removed."""

import numpy as np
import pytest

from regserve.server.errors import InvalidInput
from regserve.server.models.training import Trainer, TrainSpec


def _chunk_error(spec, chunks, tmp_path):
    trainer = Trainer(spec, spool_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(InvalidInput) as info:
        for X, y in chunks:
            trainer.add_chunk(X, y)
    trainer.close()
    trainer.close()  # idempotent
    assert list(tmp_path.iterdir()) == []
    return info.value


def test_feature_count_must_stay_fixed(tmp_path):
    error = _chunk_error(TrainSpec(), [(np.zeros((3, 2)), np.zeros(3)), (np.zeros((2, 3)), np.zeros(2))], tmp_path)
    assert error.reason == "FEATURE_COUNT_MISMATCH" and error.violations[0][0] == "chunk.features"
    error = _chunk_error(TrainSpec(feature_names=("a", "b", "c")), [(np.zeros((3, 2)), np.zeros(3))], tmp_path)
    assert error.reason == "FEATURE_COUNT_MISMATCH" and error.violations[0][0] == "chunk.features"
    error = _chunk_error(TrainSpec(), [(np.zeros(3), np.zeros(3))], tmp_path)
    assert error.reason == "FEATURE_COUNT_MISMATCH"


def test_target_count_must_match(tmp_path):
    error = _chunk_error(TrainSpec(), [(np.zeros((3, 2)), np.zeros(4))], tmp_path)
    assert error.reason == "TARGET_COUNT_MISMATCH" and error.violations[0][0] == "chunk.targets"


def test_non_finite_values_report_the_global_row(tmp_path):
    X = np.ones((5, 3))
    X[3, 2] = np.nan
    error = _chunk_error(
        TrainSpec(), [(np.ones((7, 3)), np.ones(7)), (np.ones((0, 3)), np.ones(0)), (X, np.ones(5))], tmp_path
    )
    assert error.reason == "NON_FINITE_VALUE" and error.violations[0][0] == "chunk.features"
    assert error.metadata == {"row": "10", "column": "2"}
    assert error.message == "Row 10 (from 0), column 2, holds a NaN or infinite value."
    y = np.ones(5)
    y[1] = np.inf
    error = _chunk_error(TrainSpec(), [(np.ones((7, 3)), np.ones(7)), (np.ones((5, 3)), y)], tmp_path)
    assert error.reason == "NON_FINITE_VALUE" and error.violations[0][0] == "chunk.targets"
    assert error.metadata["row"] == "8"
    assert error.message == "Row 8 (from 0), its target, holds a NaN or infinite value."
    error = _chunk_error(TrainSpec(kind="logistic"), [(np.ones((5, 3)), y)], tmp_path)
    assert error.reason == "NON_FINITE_VALUE" and error.metadata["row"] == "1"


def test_labels_are_checked(tmp_path):
    spec = TrainSpec(kind="logistic", class_labels=("a", "b"))
    error = _chunk_error(
        spec, [(np.ones((2, 1)), np.array(["a", "b"])), (np.ones((3, 1)), np.array(["a", "c", "d"]))], tmp_path
    )
    assert error.reason == "UNKNOWN_LABEL" and error.violations[0][0] == "chunk.targets"
    assert error.metadata["row"] == "3"
    error = _chunk_error(
        TrainSpec(kind="logistic", class_labels=("0", "1")), [(np.ones((2, 1)), np.array([1.0, 2.0]))], tmp_path
    )
    assert error.reason == "UNKNOWN_LABEL" and error.metadata["row"] == "1"
    error = _chunk_error(TrainSpec(kind="logistic"), [(np.ones((2, 1)), np.array([1.0, 0.5]))], tmp_path)
    assert error.reason == "INVALID_LABEL" and error.violations[0][0] == "chunk.targets"
