"""What a training run takes and gives back: ``TrainSpec``, its validation, and ``TrainResult``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from regserve.server.errors import InvalidInput
from regserve.server.models.drift import DriftReference
from regserve.server.models.estimator import MODEL_KINDS, LinearModel

__all__ = ["KINDS", "MAX_CLASSES", "MAX_CV_FOLDS", "MAX_FEATURES", "SOLVERS", "TrainResult", "TrainSpec"]

KINDS = MODEL_KINDS
SOLVERS = ("auto", "closed_form", "gd", "sgd", "newton")
_SOLVERS_FOR = {
    "linear": ("auto", "closed_form", "gd", "sgd"),
    "ridge": ("auto", "closed_form", "gd", "sgd"),
    "logistic": ("auto", "newton", "gd", "sgd"),
}
MAX_FEATURES = 4096
"""Most features a model may have: the statistics hold a (d+1)² matrix per fold."""
MAX_CV_FOLDS = 100
"""Most cross-validation folds: each fold is one more fit."""
MAX_CLASSES = 1000
"""Most classes a classifier may have: its metadata keeps a K × K confusion matrix."""


def _invalid_spec(field: str, description: str) -> InvalidInput:
    return InvalidInput(f"{field}: {description}", reason="INVALID_HYPERPARAMETER", violations=[(field, description)])


@dataclass(frozen=True)
class TrainSpec:
    """Hyperparameters of one training run; ``validate()`` checks them.

    ``alpha`` is the L2 strength on the intercept-free weights.  For ridge it
    has scikit-learn Ridge's scale, ``‖y - Xw - b‖² + alpha‖w‖²``; for logistic
    the objective is ``mean log-loss + (alpha/2)‖W‖²``, which is
    ``LogisticRegression(C=1 / (alpha * n_train))``, and ``alpha=0`` is the
    unpenalised maximum-likelihood fit.

    ``c`` (logistic only, not with ``alpha``) is scikit-learn's C:
    ``C·Σ log-loss + ½‖W‖²`` on whatever rows are fitted, so each
    cross-validation fold is penalised as scikit-learn would penalise it.
    A logistic spec given neither takes ``c = 1``, the problem
    ``LogisticRegression()`` solves; a linear or ridge spec without ``alpha``
    takes 0.  Either way the resolved value is a field of the spec, so the
    spec stored with a version names the problem that was solved.
    """

    kind: str = "linear"
    solver: str = "auto"
    alpha: float | None = None
    c: float | None = None
    fit_intercept: bool = True
    standardize: bool = False
    learning_rate: float = 0.01
    epochs: int = 100
    batch_size: int = 32
    tolerance: float = 1e-8
    max_iterations: int = 100
    validation_fraction: float = 0.0
    cv_folds: int = 0
    seed: int = 0
    feature_names: tuple[str, ...] = ()
    class_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Resolved here, not in validate(), so every copy and stored dict carries the penalty used.
        if self.alpha is None and self.c is None:
            if self.kind == "logistic":
                object.__setattr__(self, "c", 1.0)
            else:
                object.__setattr__(self, "alpha", 0.0)

    def validate(self) -> None:
        """Raise ``InvalidInput(reason="INVALID_HYPERPARAMETER")`` naming the first bad field."""
        if self.kind not in KINDS:
            raise _invalid_spec("spec.kind", f"must be one of {', '.join(KINDS)}")
        if self.solver not in SOLVERS:
            raise _invalid_spec("spec.solver", f"must be one of {', '.join(SOLVERS)}")
        if self.solver not in _SOLVERS_FOR[self.kind]:
            raise _invalid_spec("spec.solver", f"{self.solver} cannot fit a {self.kind} model")
        checks = [
            (
                "spec.alpha",
                self.alpha is None or (_is_number(self.alpha) and self.alpha >= 0),
                "must be a finite number >= 0",
            ),
            ("spec.c", self.c is None or (_is_number(self.c) and self.c > 0), "must be a finite number > 0"),
            ("spec.c", self.c is None or self.kind == "logistic", "only logistic models take c; give alpha"),
            ("spec.c", self.c is None or self.alpha is None, "give alpha or c, not both"),
            (
                "spec.learning_rate",
                _is_number(self.learning_rate) and self.learning_rate > 0,
                "must be a finite number > 0",
            ),
            ("spec.tolerance", _is_number(self.tolerance) and self.tolerance >= 0, "must be a finite number >= 0"),
            (
                "spec.validation_fraction",
                _is_number(self.validation_fraction) and 0 <= self.validation_fraction < 1,
                "must lie in [0, 1)",
            ),
            (
                "spec.cv_folds",
                _is_int(self.cv_folds) and (self.cv_folds == 0 or 2 <= self.cv_folds <= MAX_CV_FOLDS),
                f"must be 0 (no cross-validation) or from 2 to {MAX_CV_FOLDS}",
            ),
            (
                "spec.feature_names",
                len(self.feature_names) <= MAX_FEATURES and all(self.feature_names),
                f"names must be non-empty, at most {MAX_FEATURES} of them",
            ),
            ("spec.epochs", _is_int(self.epochs) and self.epochs >= 1, "must be at least 1"),
            ("spec.batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "must be at least 1"),
            ("spec.max_iterations", _is_int(self.max_iterations) and self.max_iterations >= 1, "must be at least 1"),
            ("spec.seed", _is_int(self.seed) and self.seed >= 0, "must be an integer >= 0"),
            ("spec.feature_names", len(set(self.feature_names)) == len(self.feature_names), "names must be unique"),
            ("spec.class_labels", len(set(self.class_labels)) == len(self.class_labels), "labels must be unique"),
            ("spec.class_labels", len(self.class_labels) <= MAX_CLASSES, f"at most {MAX_CLASSES} labels"),
            (
                "spec.class_labels",
                not self.class_labels or self.kind == "logistic",
                "only logistic models take class labels",
            ),
        ]
        for field, ok, description in checks:
            if not ok:
                raise _invalid_spec(field, description)

    def l2(self, n: int) -> float:
        """The penalty of the mean-scaled objective ``mean loss + (l2/2)‖W‖²`` the solvers minimise on ``n`` rows."""
        if self.c is not None:
            return 1.0 / (self.c * n)
        alpha = self.alpha or 0.0
        return alpha if self.kind == "logistic" else alpha / n

    @property
    def penalised(self) -> bool:
        """Whether the weights carry an L2 penalty; False is the ordinary least-squares or maximum-likelihood fit."""
        return self.c is not None or bool(self.alpha)

    @property
    def resolved_solver(self) -> str:
        """The solver ``auto`` stands for: closed form for regression, Newton for logistic."""
        if self.solver != "auto":
            return self.solver
        return "newton" if self.kind == "logistic" else "closed_form"

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict, tuples as lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass
class TrainResult:
    """The fitted model and a JSON-serialisable description of the run."""

    model: LinearModel
    metadata: dict
    validation_sample: tuple[np.ndarray, np.ndarray] | None = None
    """Up to ``SAMPLE_ROWS`` validation rows and their targets or class indices; None without a validation split."""
    drift_reference: DriftReference | None = None
    """The training rows' bins and moments live rows are compared with (``drift``); None when not computed."""
