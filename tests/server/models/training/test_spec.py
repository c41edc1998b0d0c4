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
        ({"kind": "logistic", "c": 0.0}, "spec.c"),
        ({"kind": "logistic", "c": float("inf")}, "spec.c"),
        ({"kind": "logistic", "c": 1.0, "alpha": 0.0}, "spec.c"),
        ({"kind": "ridge", "c": 1.0}, "spec.c"),
    ],
)
def test_invalid_specs_name_the_field(changes, field, tmp_path):
    with pytest.raises(InvalidInput) as info:
        Trainer(TrainSpec(**changes), spool_dir=tmp_path)
    assert info.value.reason == "INVALID_HYPERPARAMETER"
    assert info.value.violations[0][0] == field
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "changes, alpha, c, l2_on_200_rows, penalised",
    [
        ({}, 0.0, None, 0.0, False),
        ({"kind": "ridge"}, 0.0, None, 0.0, False),
        ({"kind": "ridge", "alpha": 4.0}, 4.0, None, 0.02, True),
        ({"kind": "logistic"}, None, 1.0, 1 / 200, True),
        ({"kind": "logistic", "c": 0.5}, None, 0.5, 1 / 100, True),
        ({"kind": "logistic", "alpha": 0.0}, 0.0, None, 0.0, False),
        ({"kind": "logistic", "alpha": 0.1}, 0.1, None, 0.1, True),
    ],
)
def test_the_penalty_is_resolved_into_the_spec(changes, alpha, c, l2_on_200_rows, penalised):
    """A logistic spec without alpha or c takes c = 1 (LogisticRegression()); the stored dict says which."""
    spec = TrainSpec(**changes)
    spec.validate()
    assert (spec.alpha, spec.c, spec.penalised) == (alpha, c, penalised)
    assert spec.l2(200) == pytest.approx(l2_on_200_rows)
    assert (spec.to_dict()["alpha"], spec.to_dict()["c"]) == (alpha, c)
