"""The spool read back in blocks: many small blocks give the same model as one."""

import numpy as np
import pytest

from regserve.server.models import solvers
from regserve.server.models.training import TrainSpec, spool
from tests.server.models.training.helpers import assert_close_tree, train


@pytest.mark.parametrize("kind, solver", [("logistic", "newton"), ("logistic", "sgd"), ("linear", "gd")])
def test_reading_the_spool_in_many_blocks_gives_the_same_model(monkeypatch, kind, solver):
    rng = np.random.default_rng(12)
    X = rng.normal(size=(700, 3))
    y = X @ [1.0, -1.0, 0.5] + rng.normal(size=700)
    if kind == "logistic":
        y = (y > 0).astype(float)
    spec = TrainSpec(
        kind=kind,
        solver=solver,
        alpha=0.1,
        fit_intercept=False,
        learning_rate=0.2,
        epochs=50,
        tolerance=1e-13,
        validation_fraction=0.1,
    )
    one_block = train(spec, X, y)
    monkeypatch.setattr(spool, "_READ_BLOCK", 64)
    many_blocks = train(spec, X, y)
    best = one_block.metadata["solver_info"]["final_loss"]
    assert abs(many_blocks.metadata["solver_info"]["final_loss"] - best) <= 1e-6 * best
    assert np.all(many_blocks.model.intercept_ == 0.0)
    assert_close_tree(one_block.metadata["validation_metrics"], many_blocks.metadata["validation_metrics"], 1e-4)


def test_the_closed_form_finish_reads_the_spool_once(monkeypatch):
    # Metrics, inference, drift counts and the validation sample all come from one read of each block.
    monkeypatch.setattr(spool, "_READ_BLOCK", 100)
    reads = []
    original = spool.SpoolFile.__getitem__

    def counted(self, rows):
        reads.append((rows.start, rows.stop))
        return original(self, rows)

    monkeypatch.setattr(spool.SpoolFile, "__getitem__", counted)
    rng = np.random.default_rng(13)
    X = rng.normal(size=(1_000, 3))
    result = train(TrainSpec(kind="linear", validation_fraction=0.2, seed=2), X, X @ [1.0, 2.0, 3.0] + 1.0)
    assert result.model.inference is not None and result.drift_reference is not None
    assert result.validation_sample is not None and result.metadata["validation_metrics"] is not None
    assert reads == [(start, start + 100) for start in range(0, 1_000, 100)]


def test_a_slice_of_the_spool_file_is_its_rows(tmp_path):
    rows = np.random.default_rng(4).normal(size=(1_000, 5))
    path = tmp_path / "spool.f64"
    path.write_bytes(rows.astype("<f8").tobytes())
    spooled = spool.SpoolFile(str(path), rows.shape)
    assert np.array_equal(spooled[0:1_000], rows)
    assert np.array_equal(spooled[37:411], rows[37:411])
    assert np.array_equal(spooled[990:2_000], rows[990:])
    assert spooled[500:500].shape == (0, 5)
    spooled[0:2].fill(0.0)  # a block is the caller's own array
    assert np.array_equal(spooled[0:2], rows[:2])


def test_a_spool_file_shorter_than_its_rows_is_an_error(tmp_path):
    path = tmp_path / "spool.f64"
    path.write_bytes(np.ones((3, 2)).tobytes())
    with pytest.raises(OSError, match="ends before row 4"):
        spool.SpoolFile(str(path), (4, 2))[0:4]


def test_every_nth_row_of_the_spool_file_is_a_copy_of_those_rows(tmp_path, monkeypatch):
    rows = np.random.default_rng(5).normal(size=(1_001, 4))
    path = tmp_path / "spool.f64"
    path.write_bytes(rows.astype("<f8").tobytes())
    spooled = spool.SpoolFile(str(path), rows.shape)
    for block_bytes in (spool.BLOCK_BYTES, 4_000):  # one mapping, and windows of 125 rows or of a stride
        monkeypatch.setattr(spool, "BLOCK_BYTES", block_bytes)
        for stride in (1, 4, 15, 1_000, 2_000):
            taken = spooled.every(stride)
            assert np.array_equal(taken, rows[::stride]), (block_bytes, stride)
    taken.fill(0.0)  # the caller's own array, not a mapping of the file
    assert np.array_equal(spooled.every(1_000), rows[::1_000])
    assert spool.SpoolFile(str(path), (0, 4)).every(3).shape == (0, 4)


@pytest.mark.parametrize("validation_fraction", [0.0, 0.2])
def test_newtons_warm_start_sample_taken_from_the_file_is_the_sample_a_pass_takes(monkeypatch, validation_fraction):
    # Without a split the strided sample comes straight from the file; with one, from a pass over the training
    # rows.  Either way the model must be the one the pass gives.
    monkeypatch.setattr(solvers, "WARM_START_ROWS", 400)
    monkeypatch.setattr(spool, "_READ_BLOCK", 997)
    rng = np.random.default_rng(14)
    X = rng.normal(size=(20_000, 3)) * [1.0, 4.0, 0.5] + [2.0, 0.0, -1.0]
    y = (X @ [1.0, -0.3, 2.0] + rng.logistic(size=20_000) > 1.0).astype(float)
    spec = TrainSpec(kind="logistic", solver="newton", standardize=True, validation_fraction=validation_fraction)
    taken = []
    raw_every = spool.SpoolView.raw_every

    def spy(self, stride):
        taken.append(raw_every(self, stride))
        return taken[-1]

    monkeypatch.setattr(spool.SpoolView, "raw_every", spy)
    mapped = train(spec, X, y)
    monkeypatch.setattr(spool.SpoolView, "raw_every", lambda self, stride: None)
    read = train(spec, X, y)
    assert len(taken) == 1 and (taken[0] is None) == (validation_fraction > 0)
    assert np.array_equal(mapped.model.coef_, read.model.coef_)
    assert np.array_equal(mapped.model.intercept_, read.model.intercept_)
    assert mapped.metadata["solver_info"] == read.metadata["solver_info"]
