"""Every loop of training calls its interrupt: a run stops once the interrupt fires, its spool removed."""

import numpy as np
import pytest

from regserve.server.errors import Cancelled
from regserve.server.models.training import Trainer, TrainingLimits, TrainSpec

UNLIMITED = TrainingLimits(memory_mb=1 << 20, gflop=1e12)
FIRES_AT = 50


class StopAt:
    """An interrupt that raises Cancelled from its ``call``-th call on, and counts its calls.

    Counting calls rather than seconds keeps the test independent of the machine's speed: a
    loop that never called its interrupt would run its 10**9 epochs instead of stopping.
    """

    def __init__(self, call: int) -> None:
        self.fires_at = call
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls >= self.fires_at:
            raise Cancelled("stopped by the test")


def _rows(n, d, classes=0, seed=30):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if classes:
        return X, (np.arange(n) % classes).astype(float)
    return X, X @ rng.normal(size=d) + rng.normal(size=n)


@pytest.mark.parametrize(
    ("spec", "data"),
    [
        (TrainSpec(solver="gd", epochs=10**9, tolerance=0.0), _rows(400, 5)),
        (TrainSpec(solver="sgd", epochs=10**9, batch_size=1, tolerance=0.0), _rows(400, 5)),
        (TrainSpec(kind="logistic", solver="newton", max_iterations=10**6, tolerance=0.0), _rows(3000, 10, 150)),
        (TrainSpec(kind="ridge", alpha=1.0, cv_folds=100), _rows(300, 400)),
        (TrainSpec(kind="logistic", solver="gd", epochs=10**9, tolerance=0.0, cv_folds=5), _rows(400, 3, 3)),
    ],
    ids=["gd", "sgd", "newton-150-classes", "closed-form-100-folds", "gd-folds"],
)
def test_a_run_stops_once_its_interrupt_fires(spec, data, tmp_path):
    interrupt = StopAt(FIRES_AT)
    with Trainer(spec, spool_dir=tmp_path, limits=UNLIMITED, interrupt=interrupt) as trainer:
        trainer.add_chunk(*data)
        with pytest.raises(Cancelled):
            trainer.finish()
    assert interrupt.calls >= FIRES_AT  # folds fitted in parallel threads may each make one more call
    assert list(tmp_path.iterdir()) == []  # the spool file went with the run


def test_a_chunk_after_the_interrupt_fired_is_refused(tmp_path):
    interrupt = StopAt(1)
    with pytest.raises(Cancelled), Trainer(TrainSpec(), spool_dir=tmp_path, interrupt=interrupt) as trainer:
        trainer.add_chunk(*_rows(10, 2))
    assert trainer.rows_seen == 0 and list(tmp_path.iterdir()) == []


def test_an_interrupt_that_never_fires_changes_nothing(tmp_path):
    X, y = _rows(500, 4)
    spec = TrainSpec(kind="ridge", alpha=0.5, cv_folds=3, solver="gd", epochs=50, validation_fraction=0.2)
    with Trainer(spec, spool_dir=tmp_path) as plain:
        plain.add_chunk(X, y)
        expected = plain.finish()
    interrupt = StopAt(10**12)
    with Trainer(spec, spool_dir=tmp_path, interrupt=interrupt) as watched:
        watched.add_chunk(X, y)
        result = watched.finish()
    np.testing.assert_array_equal(result.model.coef_, expected.model.coef_)
    assert result.metadata["cv_metrics"] == expected.metadata["cv_metrics"]
    assert interrupt.calls > 50  # at least once per epoch
