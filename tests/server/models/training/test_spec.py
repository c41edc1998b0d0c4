"""TrainSpec validation: each bad hyperparameter is refused by name, before any spool file exists."""

import pytest

from regserve.server.errors import InvalidInput
from regserve.server.models.training import Trainer, TrainSpec


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"alpha": -1.0}, "spec.alpha"),
        ({"alpha": float("nan")}, "spec.alpha"),
        ({"learning_rate": 0.0}, "spec.learning_rate"),
        ({"kind": "tree"}, "spec.kind"),
        ({"solver": "magic"}, "spec.solver"),
        ({"solver": "newton"}, "spec.solver"),
        ({"kind": "logistic", "solver": "closed_form"}, "spec.solver"),
        ({"validation_fraction": 1.0}, "spec.validation_fraction"),
        ({"validation_fraction": -0.1}, "spec.validation_fraction"),
        ({"cv_folds": 1}, "spec.cv_folds"),
        ({"cv_folds": -2}, "spec.cv_folds"),
        ({"epochs": 0}, "spec.epochs"),
        ({"batch_size": 0}, "spec.batch_size"),
        ({"max_iterations": 0}, "spec.max_iterations"),
        ({"tolerance": -1.0}, "spec.tolerance"),
        ({"seed": -1}, "spec.seed"),
        ({"feature_names": ("a", "a")}, "spec.feature_names"),
    ],
)
def test_invalid_specs_name_the_field(changes, field, tmp_path):
    with pytest.raises(InvalidInput) as info:
        Trainer(TrainSpec(**changes), spool_dir=tmp_path)
    assert info.value.reason == "INVALID_HYPERPARAMETER"
    assert info.value.violations[0][0] == field
    assert list(tmp_path.iterdir()) == []
