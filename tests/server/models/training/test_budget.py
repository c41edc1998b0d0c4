"""Work and memory limits: a run past them is refused up front, naming the limit, the estimate and the field."""

import time

import numpy as np
import pytest

from regserve.server.errors import FailedPrecondition, InvalidInput, ResourceExhausted
from regserve.server.models.training import MAX_CLASSES, MAX_CV_FOLDS, MAX_FEATURES, Trainer, TrainingLimits, TrainSpec
from regserve.server.models.training.budget import RunSize, TrainingBudget


def _refusal(info: pytest.ExceptionInfo, limit: str, field: str) -> ResourceExhausted:
    error = info.value
    assert isinstance(error, ResourceExhausted) and error.reason == "TRAINING_TOO_LARGE"
    assert error.metadata["limit"] == limit and error.violations[0][0] == field
    assert int(error.metadata["estimate"]) > int(error.metadata["allowed"])
    return error


def test_a_runaway_gd_is_refused_by_its_spec_before_any_row(tmp_path):
    """The issue's epochs=2**32-1, tolerance=0: refused when the spec arrives, nothing spooled."""
    with pytest.raises(ResourceExhausted) as info:
        Trainer(TrainSpec(solver="gd", epochs=2**32 - 1, tolerance=0.0), spool_dir=tmp_path)
    error = _refusal(info, "max_train_gflop", "spec.epochs")
    assert error.metadata["allowed"] == "200" and "--max-train-gflop" in error.message
    assert list(tmp_path.iterdir()) == []


def test_ridge_with_100_folds_on_1024_features_is_refused_at_its_first_chunk(tmp_path):
    """The issue's 200 x 1,024 ridge with 100 folds: refused before the moments are allocated."""
    rng = np.random.default_rng(16)
    trainer = Trainer(TrainSpec(kind="ridge", alpha=1.0, cv_folds=100), spool_dir=tmp_path)
    started = time.perf_counter()
    with trainer, pytest.raises(ResourceExhausted) as info:
        trainer.add_chunk(rng.normal(size=(200, 1024)), rng.normal(size=200))
    assert time.perf_counter() - started < 5.0  # a refusal, not a fit
    _refusal(info, "max_train_gflop", "spec.cv_folds")
    assert trainer._moments is None and trainer.rows_seen == 0
    assert list(tmp_path.iterdir()) == []


def test_newton_with_600_labels_is_refused_at_the_chunk_that_brings_them(tmp_path):
    rng = np.random.default_rng(17)
    X, labels = rng.normal(size=(1000, 10)), rng.permutation(np.arange(1000) % 600).astype(float)
    trainer = Trainer(TrainSpec(kind="logistic", solver="newton", max_iterations=1), spool_dir=tmp_path)
    with trainer, pytest.raises(ResourceExhausted) as info:
        trainer.add_chunk(X, labels)
    _refusal(info, "max_train_gflop", "spec.solver")
    assert trainer.rows_seen == 0
    with Trainer(TrainSpec(kind="logistic", solver="gd", epochs=5), spool_dir=tmp_path) as cheaper:
        cheaper.add_chunk(X, labels)  # the same rows by gradient descent are affordable
        assert len(cheaper.finish().model.classes_) == 600


def test_newton_on_the_most_features_is_refused_for_its_memory_when_the_spec_arrives(tmp_path):
    names = tuple(f"x{j}" for j in range(MAX_FEATURES))
    spec = TrainSpec(kind="logistic", feature_names=names, class_labels=("a", "b", "c"))
    with pytest.raises(ResourceExhausted) as info:
        Trainer(spec, spool_dir=tmp_path)
    error = _refusal(info, "max_train_memory_mb", "spec.solver")
    assert error.metadata["unit"] == "MiB" and "--max-train-memory-mb" in error.message


def test_a_lower_memory_limit_refuses_the_closed_form_it_cannot_hold(tmp_path):
    rng = np.random.default_rng(18)
    small = TrainingLimits(memory_mb=16)
    with Trainer(TrainSpec(), spool_dir=tmp_path, limits=small) as fits:
        fits.add_chunk(rng.normal(size=(50, 100)), rng.normal(size=50))
    trainer = Trainer(TrainSpec(), spool_dir=tmp_path, limits=small)
    with trainer, pytest.raises(ResourceExhausted) as info:
        trainer.add_chunk(rng.normal(size=(50, 600)), rng.normal(size=50))
    _refusal(info, "max_train_memory_mb", "chunk.features")


def test_rows_that_push_the_work_past_the_limit_are_refused_mid_stream(tmp_path):
    rng = np.random.default_rng(19)
    limits = TrainingLimits(gflop=0.5)
    trainer = Trainer(TrainSpec(solver="gd", epochs=200, tolerance=0.0), spool_dir=tmp_path, limits=limits)
    with pytest.raises(ResourceExhausted) as info:
        for _ in range(100):
            trainer.add_chunk(rng.normal(size=(1000, 5)), rng.normal(size=1000))
    _refusal(info, "max_train_gflop", "spec.epochs")
    assert 0 < trainer.rows_seen < 100_000
    assert list(tmp_path.iterdir()) == []  # the refusal closed the trainer and removed its spool
    with pytest.raises(FailedPrecondition):  # a refused run cannot go on
        trainer.add_chunk(rng.normal(size=(1, 5)), rng.normal(size=1))


def test_work_grows_with_each_dimension_of_the_run():
    def work(spec, size):
        return sum(amount for _, amount in TrainingBudget(spec, TrainingLimits()).work(size))

    base = RunSize(features=10, rows=100_000, train_rows=100_000)
    gd = TrainSpec(solver="gd", epochs=100)
    assert work(TrainSpec(solver="gd", epochs=200), base) > 1.9 * work(gd, base)
    assert work(gd, RunSize(10, 0, 1_000_000, 1_000_000)) > 9 * work(gd, base)
    assert work(gd, RunSize(100, 0, 100_000, 100_000)) > 5 * work(gd, base)
    assert work(TrainSpec(cv_folds=10), RunSize(500, 0, 1000, 1000)) > 9 * work(
        TrainSpec(), RunSize(500, 0, 1000, 1000)
    )
    newton = TrainSpec(kind="logistic")
    assert work(newton, RunSize(10, 40, 1000, 1000)) > 50 * work(newton, RunSize(10, 4, 1000, 1000))


def test_the_documented_maxima_are_served_or_refused_clearly():
    """4,096 features fit the default limits; with 100 folds the run is refused, never a MemoryError."""
    budget = TrainingBudget(TrainSpec(kind="ridge"), TrainingLimits())
    budget.check(RunSize(MAX_FEATURES, 0, 100_000, 100_000))
    folds = TrainingBudget(TrainSpec(kind="ridge", cv_folds=MAX_CV_FOLDS), TrainingLimits())
    with pytest.raises(ResourceExhausted) as info:
        folds.check(RunSize(MAX_FEATURES, 0, 1000, 1000))
    _refusal(info, "max_train_gflop", "spec.cv_folds")
    # Were the work allowed, the folds would be fitted one at a time to stay within the memory limit.
    assert folds.cv_jobs(RunSize(MAX_FEATURES, 0, 1000, 1000), cpus=2) == 1
    assert folds.cv_jobs(RunSize(100, 0, 1000, 1000), cpus=2) == 2


def test_more_classes_than_the_maximum_are_invalid(tmp_path):
    with pytest.raises(InvalidInput) as info:
        Trainer(TrainSpec(kind="logistic", class_labels=tuple(map(str, range(MAX_CLASSES + 1)))), spool_dir=tmp_path)
    assert info.value.violations[0][0] == "spec.class_labels"
    labels = np.arange(MAX_CLASSES + 1).astype(float)
    trainer = Trainer(TrainSpec(kind="logistic", solver="gd"), spool_dir=tmp_path)
    with trainer, pytest.raises(InvalidInput) as info:
        trainer.add_chunk(np.zeros((MAX_CLASSES, 1)), labels[:-1])
        trainer.add_chunk(np.zeros((1, 1)), labels[-1:])
    assert info.value.reason == "TOO_MANY_CLASSES" and trainer.rows_seen == MAX_CLASSES


def test_an_ordinary_newton_fit_of_a_million_rows_fits_the_default_work_limit():
    """1,000,000 × 20 binary logistic regression with Newton's defaults is not refused by its price."""
    budget = TrainingBudget(TrainSpec(kind="logistic", solver="newton"), TrainingLimits())
    size = RunSize(features=20, classes=2, rows=1_000_000, train_rows=1_000_000)
    budget.check(size)
    # The price still grows with the iterations a caller allows, up to the cap.
    few = TrainingBudget(TrainSpec(kind="logistic", solver="newton", max_iterations=5), TrainingLimits())
    assert sum(amount for _, amount in few.work(size)) < sum(amount for _, amount in budget.work(size))
