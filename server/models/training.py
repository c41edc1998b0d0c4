"""Streaming training: fold chunks of rows into a fitted ``LinearModel``.

``Trainer`` accepts the data set chunk by chunk and never holds it whole:

* each row is assigned to the training or validation split, and to a
  cross-validation fold, by seeded draws indexed by its *global* row number,
  so the assignment does not depend on how the stream was chunked;
* per split/fold it keeps centred moments of ``[x, y]`` merged with Chan et
  al.'s pairwise update: enough for the closed form, the standardization and
  the feature statistics, in O(d²) memory;
* every row is also spooled to a temporary file, read back through
  ``np.memmap`` in blocks for the iterative solvers and the metrics.

The same rows sent in one chunk or in hundreds give the same model (up to
rounding in the moment merges) and the same metadata, duration aside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import joblib
import numpy as np

from regserve.server.errors import FailedPrecondition, InvalidInput
from regserve.server.models import solvers
from regserve.server.models.estimator import LinearModel
from regserve.server.models.scoring import ClassificationTally, RegressionTally

__all__ = ["KINDS", "SOLVERS", "TrainResult", "TrainSpec", "Trainer"]

logger = logging.getLogger(__name__)

KINDS = ("linear", "ridge", "logistic")
SOLVERS = ("auto", "closed_form", "gd", "sgd", "newton")
_SOLVERS_FOR = {
    "linear": ("auto", "closed_form", "gd", "sgd"),
    "ridge": ("auto", "closed_form", "gd", "sgd"),
    "logistic": ("auto", "newton", "gd", "sgd"),
}
_SPLIT_BLOCK = 4096  # rows per seeded draw of the validation split
_FOLD_WINDOWS = 1024  # windows of cv_folds training rows per seeded fold draw
_READ_BLOCK = 65_536  # spooled rows read back at a time
MAX_FEATURES = 4096
"""Most features a model may have: the statistics hold a (d+1)² matrix per fold."""
MAX_CV_FOLDS = 100
"""Most cross-validation folds: each fold keeps its own statistics."""
MAX_ABS_VALUE = 1e150
"""Largest magnitude accepted in training data: the square of anything larger overflows float64."""
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _invalid_spec(field: str, description: str) -> InvalidInput:
    return InvalidInput(f"{field}: {description}", reason="INVALID_HYPERPARAMETER", violations=[(field, description)])


@dataclass(frozen=True)
class TrainSpec:
    """Hyperparameters of one training run; ``validate()`` checks them.

    ``alpha`` is the L2 strength on the intercept-free weights.  For ridge it
    has scikit-learn Ridge's scale, ``‖y - Xw - b‖² + alpha‖w‖²``; for logistic
    the objective is ``mean log-loss + (alpha/2)‖W‖²``, which is
    ``LogisticRegression(C=1 / (alpha * n_train))``.
    """

    kind: str = "linear"
    solver: str = "auto"
    alpha: float = 0.0
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

    def validate(self) -> None:
        """Raise ``InvalidInput(reason="INVALID_HYPERPARAMETER")`` naming the first bad field."""
        if self.kind not in KINDS:
            raise _invalid_spec("spec.kind", f"must be one of {', '.join(KINDS)}")
        if self.solver not in SOLVERS:
            raise _invalid_spec("spec.solver", f"must be one of {', '.join(SOLVERS)}")
        if self.solver not in _SOLVERS_FOR[self.kind]:
            raise _invalid_spec("spec.solver", f"{self.solver} cannot fit a {self.kind} model")
        checks = [
            ("spec.alpha", _is_number(self.alpha) and self.alpha >= 0, "must be a finite number >= 0"),
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
            (
                "spec.class_labels",
                not self.class_labels or self.kind == "logistic",
                "only logistic models take class labels",
            ),
        ]
        for field, ok, description in checks:
            if not ok:
                raise _invalid_spec(field, description)

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


class _Moments:
    """Count, mean, centred comoment (Σ(v-m)(v-m)ᵀ), min and max of vectors of length p."""

    def __init__(self, p: int) -> None:
        self.n = 0
        self.mean = np.zeros(p)
        self.comoment = np.zeros((p, p))
        self.min = np.full(p, np.inf)
        self.max = np.full(p, -np.inf)

    def add(self, V: np.ndarray) -> None:
        """Fold in rows ``V`` of shape (m, p): two-pass moments of the block, then a merge."""
        if V.shape[0] == 0:
            return
        block = _Moments(V.shape[1])
        block.n, block.mean = V.shape[0], V.mean(axis=0)
        centred = V - block.mean
        block.comoment = centred.T @ centred
        block.min, block.max = V.min(axis=0), V.max(axis=0)
        self.merge(block)

    def merge(self, other: _Moments) -> None:
        # Chan et al.: C = C_a + C_b + δδᵀ·n_a·n_b/n, mean = m_a + δ·n_b/n, δ = m_b - m_a.
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.comoment = self.comoment + other.comoment + np.outer(delta, delta) * (self.n * other.n / n)
        self.mean = self.mean + delta * (other.n / n)
        self.n = n
        self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)

    @classmethod
    def combined(cls, parts: list[_Moments]) -> _Moments:
        total = cls(parts[0].mean.size)
        for part in parts:
            total.merge(part)
        return total


class _SeededDraws:
    """Per-row draws indexed by a global ordinal, generated in fixed seeded blocks."""

    def __init__(self, draw, block_len: int) -> None:
        self._draw, self._len, self._cached = draw, block_len, (-1, None)

    def take(self, start: int, count: int) -> np.ndarray:
        parts, stop = [], start + count
        while start < stop:
            block, offset = divmod(start, self._len)
            if self._cached[0] != block:
                self._cached = (block, self._draw(block))
            n = min(stop - start, self._len - offset)
            parts.append(self._cached[1][offset : offset + n])
            start += n
        return np.concatenate(parts) if parts else np.empty(0)


def _label_order(labels: list[str]) -> list[str]:
    """Natural order: numeric when every label is an integer, else lexicographic."""
    if all(_INTEGER.fullmatch(label) for label in labels):
        return sorted(labels, key=lambda label: (int(label), label))
    return sorted(labels)


class _SpoolFile:
    """The spool file as a read-only array of shape (n_rows, n_columns), mapped a window at a time.

    Each slice maps only the rows it asks for and copies them out, so the pages
    of one block are released before the next is read: one map of the whole
    file would keep every page it touched resident until the end.
    """

    def __init__(self, path: str, shape: tuple[int, int]) -> None:
        self.path, self.shape = path, shape
        self._row_bytes = shape[1] * 8

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        if stop <= start:
            return np.empty((0, self.shape[1]))
        window = np.memmap(
            self.path, dtype="<f8", mode="r", offset=start * self._row_bytes, shape=(stop - start, self.shape[1])
        )
        block = np.array(window)
        del window
        return block


class _SpoolView:
    """The spooled rows of some groups, as the ``BlockSource`` the solvers read.

    Spool rows are ``[x (d), y or label id, group]``; validation rows carry
    group -1, training rows their fold.
    """

    def __init__(
        self,
        spool: np.ndarray,
        groups: list[int],
        shift: np.ndarray,
        scale: np.ndarray,
        n: int,
        label_map: np.ndarray | None,
    ) -> None:
        self._spool, self._groups = spool, np.array(groups, dtype=np.float64)
        self._shift, self._scale, self.n, self._label_map = shift, scale, n, label_map

    def raw_blocks(self, order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Unscaled ``(X, y)`` blocks of the chosen groups, blocks in ``order``."""
        starts = np.arange(0, self._spool.shape[0], _READ_BLOCK)
        for start in starts if order is None else starts[order]:
            block = np.asarray(self._spool[start : start + _READ_BLOCK])
            block = block[np.isin(block[:, -1], self._groups)]
            if block.shape[0] == 0:
                continue
            y = block[:, -2]
            if self._label_map is not None:
                y = self._label_map[y.astype(np.intp)]
            yield block[:, :-2], y

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Standardized ``(Z, y)`` blocks in spool order."""
        return self._scaled(self.raw_blocks())

    def shuffled_blocks(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Blocks in random order, rows shuffled within each: a full shuffle up to
        # 65,536 rows and bounded memory beyond.
        n_blocks = -(-self._spool.shape[0] // _READ_BLOCK)
        for Z, y in self._scaled(self.raw_blocks(rng.permutation(n_blocks))):
            order = rng.permutation(y.shape[0])
            yield Z[order], y[order]

    def _scaled(self, blocks: Iterator[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for X, y in blocks:
            yield (X - self._shift) / self._scale, y


def _check_model_finite(model: LinearModel, spec: TrainSpec) -> None:
    """Refuse a fit whose coefficients overflowed, so no unusable version is ever stored."""
    if np.isfinite(model.coef_).all() and np.isfinite(model.intercept_).all():
        return
    iterative = spec.resolved_solver in ("gd", "sgd")
    field = "spec.learning_rate" if iterative else "chunks"
    hint = "lower the learning rate or standardize the features" if iterative else "scale the data"
    raise InvalidInput(
        f"Training diverged: the coefficients are not finite; {hint}.",
        reason="TRAINING_DIVERGED",
        violations=[(field, hint)],
    )


class Trainer:
    """Folds a stream of chunks into a model. Context manager; ``close()`` removes temp files.

    Parameters
    ----------
    spec : TrainSpec
        Validated on construction.
    spool_dir : path, optional
        Where the temporary spool file lives; default ``tempfile.gettempdir()``.
    """

    def __init__(self, spec: TrainSpec, *, spool_dir: str | os.PathLike | None = None) -> None:
        spec.validate()
        self.spec = spec
        self._started = time.perf_counter()
        self._d = len(spec.feature_names) or None
        self._n = 0
        self._n_train = 0
        self._hash = hashlib.sha256()
        self._labels: dict[str, int] = {}  # label -> first-seen id
        self._declared = set(spec.class_labels) or None
        self._n_folds = spec.cv_folds or 1
        self._moments: list[_Moments] | None = None  # folds 0..k-1, then validation
        self._label_counts = np.zeros((self._n_folds + 1, 0), dtype=np.int64)
        seed, fraction, k = spec.seed, spec.validation_fraction, self._n_folds
        self._held_out = _SeededDraws(lambda b: np.random.default_rng([seed, 0, b]).random(_SPLIT_BLOCK), _SPLIT_BLOCK)
        # Each window of k consecutive training rows gets a permutation of the folds,
        # so every fold is used as soon as k training rows exist.
        self._folds = _SeededDraws(
            lambda b: (
                np.random.default_rng([seed, 1, b]).permuted(np.tile(np.arange(k), (_FOLD_WINDOWS, 1)), axis=1).ravel()
            ),
            _FOLD_WINDOWS * k,
        )
        self._fraction = fraction
        fd, self._spool_path = tempfile.mkstemp(prefix="regserve-spool-", suffix=".f64", dir=spool_dir)
        self._spool = os.fdopen(fd, "wb")
        self._finished = False

    @property
    def rows_seen(self) -> int:
        """Rows accepted so far."""
        return self._n

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spool file; safe to call more than once."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._spool_path is not None:
            try:
                os.unlink(self._spool_path)
            except FileNotFoundError:
                pass
            self._spool_path = None

    # ------------------------------------------------------------------ intake

    def add_chunk(self, X: np.ndarray, y: np.ndarray) -> None:
        """Validate and absorb rows ``X`` (n, d) with targets or labels ``y`` (n,)."""
        if self._finished or self._spool is None:
            raise FailedPrecondition("This trainer has finished or been closed.", reason="TRAINER_CLOSED")
        X, y = np.asarray(X), np.asarray(y)
        if X.ndim == 2 and X.shape[0] == 0 and y.size == 0:
            return
        X, targets, labels = self._checked(X, y)
        n, d = X.shape
        if self._moments is None:
            p = d + (self.spec.kind != "logistic")
            self._moments = [_Moments(p) for _ in range(self._n_folds + 1)]
        held_out = self._held_out.take(self._n, n) < self._fraction
        group = np.full(n, -1.0)
        n_train = int(n - held_out.sum())
        group[~held_out] = self._folds.take(self._n_train, n_train)
        if labels is not None:
            targets = self._label_ids(labels, group)
        self._fingerprint(X, targets, labels)
        V = X if self.spec.kind == "logistic" else np.column_stack([X, targets])
        for g, moments in enumerate(self._moments):
            moments.add(V[group == (g if g < self._n_folds else -1)])
        self._spool.write(np.column_stack([X, targets, group]).astype("<f8", copy=False).tobytes())
        self._n += n
        self._n_train += n_train

    def _checked(self, X: np.ndarray, y: np.ndarray):
        """Return ``(X float64, targets or None, labels or None)`` or raise InvalidInput."""
        expected = self._d
        if X.ndim != 2 or X.shape[1] == 0 or (expected is not None and X.shape[1] != expected):
            got = f"{X.shape[1]} columns" if X.ndim == 2 else f"a {X.ndim}-D array"
            want = f"{expected} features" if expected else "a 2-D array with at least one feature"
            raise InvalidInput(
                f"Expected {want} per row, got {got}.",
                reason="FEATURE_COUNT_MISMATCH",
                violations=[("chunk.features", f"expected {want}, got {got}")],
            )
        if X.shape[1] > MAX_FEATURES:
            raise InvalidInput(
                f"Rows have {X.shape[1]} features; a model takes at most {MAX_FEATURES}.",
                reason="TOO_MANY_FEATURES",
                violations=[("chunk.features", f"at most {MAX_FEATURES} columns")],
            )
        n = X.shape[0]
        if y.ndim != 1 or y.shape[0] != n:
            raise InvalidInput(
                f"The chunk has {n} rows but targets of shape {y.shape}.",
                reason="TARGET_COUNT_MISMATCH",
                violations=[("chunk.targets", f"expected {n} targets, got shape {y.shape}")],
            )
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                "Features must be numbers.",
                reason="INVALID_DTYPE",
                violations=[("chunk.features", "features must be float64")],
            ) from exc
        self._check_finite(X, "chunk.features")
        self._d = X.shape[1]
        if self.spec.kind != "logistic":
            if y.dtype.kind not in "fiu":
                raise InvalidInput(
                    "Regression targets must be numbers.",
                    reason="INVALID_DTYPE",
                    violations=[("chunk.targets", "targets must be float64")],
                )
            y = y.astype(np.float64, copy=False)
            self._check_finite(y, "chunk.targets")
            return X, y, None
        return X, None, self._labels_of(y)

    def _check_finite(self, A: np.ndarray, field: str) -> None:
        """Refuse NaN, infinity and magnitudes whose squares overflow, naming the first bad row."""
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(A) <= MAX_ABS_VALUE)
        if not bad.any():
            return
        row = int(np.argmax(bad.any(axis=1) if A.ndim == 2 else bad))
        metadata = {"row": self._n + row}
        if A.ndim == 2:
            metadata["column"] = int(np.argmax(bad[row]))
        value = A[row, metadata["column"]] if A.ndim == 2 else A[row]
        if np.isfinite(value):
            raise InvalidInput(
                f"Row {self._n + row} holds {float(value):g}; training takes magnitudes up to {MAX_ABS_VALUE:g}.",
                reason="VALUE_TOO_LARGE",
                violations=[(field, f"values must lie within ±{MAX_ABS_VALUE:g}")],
                metadata=metadata,
            )
        raise InvalidInput(
            f"Row {self._n + row} holds a NaN or infinite value.",
            reason="NON_FINITE_VALUE",
            violations=[(field, "values must be finite")],
            metadata=metadata,
        )

    def _labels_of(self, y: np.ndarray) -> np.ndarray:
        """Class labels as a str array; integral floats become their integer text."""
        if y.dtype.kind in "fiu":
            y = y.astype(np.float64, copy=False)
            self._check_finite(y, "chunk.targets")
            fractional = y != np.round(y)
            if fractional.any():
                row = self._n + int(np.argmax(fractional))
                raise InvalidInput(
                    f"Row {row} has a non-integral class label.",
                    reason="INVALID_LABEL",
                    violations=[("chunk.targets", "numeric labels must be integers")],
                    metadata={"row": row},
                )
            values, inverse = np.unique(y, return_inverse=True)
            y = np.array([str(int(v)) for v in values], dtype=np.str_)[inverse]
        elif y.dtype.kind != "U":
            raise InvalidInput(
                "Class labels must be strings or integers.",
                reason="INVALID_DTYPE",
                violations=[("chunk.targets", "labels must be str or integral float64")],
            )
        empty = y == ""
        if empty.any():
            row = self._n + int(np.argmax(empty))
            raise InvalidInput(
                f"Row {row} has an empty class label.",
                reason="EMPTY_LABEL",
                violations=[("chunk.targets", "class labels must be non-empty")],
                metadata={"row": row},
            )
        if self._declared is not None:
            unknown = ~np.isin(y, np.array(sorted(self._declared), dtype=np.str_))
            if unknown.any():
                row = int(np.argmax(unknown))
                raise InvalidInput(
                    f"Row {self._n + row} has label {str(y[row])!r} outside the declared classes.",
                    reason="UNKNOWN_LABEL",
                    violations=[("chunk.targets", f"label {str(y[row])!r} is not declared")],
                    metadata={"row": self._n + row},
                )
        return y

    def _label_ids(self, labels: np.ndarray, group: np.ndarray) -> np.ndarray:
        """First-seen ids of ``labels`` (stream order, so chunking-invariant); counts them per group."""
        values, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
        for i in np.argsort(first):
            self._labels.setdefault(str(values[i]), len(self._labels))
        ids = np.array([self._labels[str(v)] for v in values])[inverse]
        counts = np.zeros((self._n_folds + 1, len(self._labels)), dtype=np.int64)
        counts[:, : self._label_counts.shape[1]] = self._label_counts
        np.add.at(counts, (np.where(group < 0, self._n_folds, group).astype(np.intp), ids), 1)
        self._label_counts = counts
        return ids.astype(np.float64)

    def _fingerprint(self, X: np.ndarray, targets: np.ndarray, labels: np.ndarray | None) -> None:
        # Row-major [x, y] bytes, row after row: identical however the rows are chunked.
        if labels is None:
            self._hash.update(np.column_stack([X, targets]).astype("<f8", copy=False).tobytes())
            return
        encoded = {}
        row_bytes = X.astype("<f8", copy=False).tobytes()
        width = 8 * X.shape[1]
        parts = []
        for i, label in enumerate(labels.tolist()):
            if label not in encoded:
                raw = label.encode("utf-8")
                encoded[label] = len(raw).to_bytes(4, "little") + raw
            parts.append(row_bytes[i * width : (i + 1) * width])
            parts.append(encoded[label])
        self._hash.update(b"".join(parts))

    # ------------------------------------------------------------------ fitting

    def finish(self) -> TrainResult:
        """Fit the model, score it, and remove the spool file (also when raising).

        Raises
        ------
        InvalidInput
            ``EMPTY_TRAINING_SET``, ``SINGLE_CLASS`` or ``TOO_FEW_ROWS``.
        """
        if self._finished or self._spool is None:
            raise FailedPrecondition("This trainer has finished or been closed.", reason="TRAINER_CLOSED")
        self._finished = True
        try:
            return self._finish()
        finally:
            self.close()

    def _finish(self) -> TrainResult:
        spec = self.spec
        self._check_sizes()
        classes, label_map = self._classes()
        self._spool.close()
        self._spool = None
        d = self._d
        spool = _SpoolFile(self._spool_path, (self._n, d + 2))
        try:
            folds = list(range(self._n_folds))
            model, info = self._fit(spool, folds, classes, label_map)
            _check_model_finite(model, spec)
            training = self._evaluate(model, spool, folds, label_map)
            if info.final_loss is None and training.get("mse") is not None:
                # The closed form's objective, ½·MSE + (alpha/n)/2·‖w‖², from the scoring pass.
                l2 = spec.alpha / self._n_train
                info.final_loss = 0.5 * training["mse"] + 0.5 * l2 * float((model.coef_**2).sum())
            validation = self._evaluate(model, spool, [-1], label_map) if self._n > self._n_train else None
            cv = self._cross_validate(spool, classes, label_map) if spec.cv_folds else None
        except np.linalg.LinAlgError as exc:
            raise InvalidInput(
                f"The solver failed on this data ({exc}); scale the features or add a penalty.",
                reason="NUMERICAL_FAILURE",
                violations=[("chunks", "the data makes the problem numerically unsolvable")],
            ) from exc
        finally:
            del spool
        names = list(spec.feature_names) or [f"x{j}" for j in range(d)]
        metadata = {
            "kind": spec.kind,
            "solver": spec.resolved_solver,
            "spec": spec.to_dict(),
            "n_samples": self._n,
            "n_train": self._n_train,
            "n_validation": self._n - self._n_train,
            "n_features": d,
            "feature_names": names,
            "classes": None if classes is None else list(classes),
            "fingerprint": self._hash.hexdigest(),
            "feature_stats": self._feature_stats(names),
            "training_metrics": training,
            "validation_metrics": validation,
            "cv_metrics": cv,
            "solver_info": dataclasses.asdict(info),
            "duration_seconds": time.perf_counter() - self._started,
        }
        logger.info(
            "trained %s/%s on %d rows x %d features in %.3fs",
            spec.kind,
            metadata["solver"],
            self._n,
            d,
            metadata["duration_seconds"],
        )
        return TrainResult(model=model, metadata=_json_ready(metadata))

    def _check_sizes(self) -> None:
        spec, n_validation = self.spec, self._n - self._n_train
        if self._n == 0:
            raise InvalidInput(
                "No training rows were sent.",
                reason="EMPTY_TRAINING_SET",
                violations=[("chunks", "send at least one row")],
            )
        if spec.validation_fraction > 0 and (n_validation < 1 or self._n_train < 2):
            raise InvalidInput(
                f"{self._n} rows give {n_validation} validation and {self._n_train} training rows.",
                reason="TOO_FEW_ROWS",
                violations=[("spec.validation_fraction", "needs >= 1 validation and >= 2 training rows")],
            )
        if spec.cv_folds and self._n_train < spec.cv_folds:
            raise InvalidInput(
                f"{self._n_train} training rows cannot fill {spec.cv_folds} folds.",
                reason="TOO_FEW_ROWS",
                violations=[("spec.cv_folds", f"needs at least {spec.cv_folds} training rows")],
            )

    def _classes(self) -> tuple[tuple[str, ...] | None, np.ndarray | None]:
        """Sorted classes and the map from first-seen label id to class index."""
        if self.spec.kind != "logistic":
            return None, None
        if int((self._label_counts[: self._n_folds].sum(axis=0) > 0).sum()) < 2:
            raise InvalidInput(
                "The training rows hold a single class; a classifier needs two or more.",
                reason="SINGLE_CLASS",
                violations=[("chunk.targets", "at least two distinct labels are required")],
            )
        classes = tuple(_label_order(list(self._labels)))
        position = {label: k for k, label in enumerate(classes)}
        return classes, np.array([position[label] for label in self._labels], dtype=np.intp)

    def _fit(self, spool, groups, classes, label_map) -> tuple[LinearModel, solvers.SolverInfo]:
        """Fit on the training groups (folds) ``groups``."""
        spec, d = self.spec, self._d
        m = _Moments.combined([self._moments[g] for g in groups])
        shift, scale = np.zeros(d), np.ones(d)
        if spec.standardize:
            shift = m.mean[:d].copy()
            std = np.sqrt(np.maximum(np.diag(m.comoment)[:d], 0.0) / m.n)
            # A constant column's std is zero up to rounding of its mean; scale 1 keeps it finite.
            scale = np.where(std > 1e-12 * np.abs(shift), std, 1.0)
            scale[std == 0] = 1.0
        solver = spec.resolved_solver
        if solver == "closed_form":
            coef, intercept, info = solvers.solve_least_squares(
                m.n, m.mean, m.comoment, alpha=spec.alpha, fit_intercept=spec.fit_intercept, shift=shift, scale=scale
            )
            coef, intercept = coef[None, :], np.array([intercept])
        else:
            logistic = spec.kind == "logistic"
            view = _SpoolView(spool, groups, shift, scale, m.n, label_map)
            objective = solvers.make_objective(
                view,
                kind=spec.kind,
                n_classes=len(classes) if logistic else 0,
                d=d,
                l2=spec.alpha if logistic else spec.alpha / m.n,
                fit_intercept=spec.fit_intercept,
            )
            start = 0.0 if logistic else float(m.mean[-1])  # Regression starts from ȳ.
            if solver == "newton":
                theta, info = solvers.solve_newton(
                    objective, max_iterations=spec.max_iterations, tolerance=spec.tolerance
                )
            elif solver == "gd":
                theta, info = solvers.solve_gd(
                    objective,
                    learning_rate=spec.learning_rate,
                    epochs=spec.epochs,
                    tolerance=spec.tolerance,
                    intercept=start,
                )
            else:
                theta, info = solvers.solve_sgd(
                    objective,
                    learning_rate=spec.learning_rate,
                    epochs=spec.epochs,
                    batch_size=spec.batch_size,
                    tolerance=spec.tolerance,
                    seed=spec.seed,
                    intercept=start,
                )
            if spec.fit_intercept:
                coef, intercept = theta[:, 1:], theta[:, 0]
            else:
                coef, intercept = theta, np.zeros(theta.shape[0])
        model = LinearModel(
            spec.kind,
            coef,
            intercept,
            mean=shift if spec.standardize else None,
            scale=scale if spec.standardize else None,
            classes=classes,
        )
        return model, info

    def _evaluate(self, model: LinearModel, spool, groups, label_map) -> dict:
        """Metrics of ``model`` on the spooled rows of ``groups`` (-1 = validation)."""
        view = _SpoolView(spool, groups, 0.0, 1.0, 0, label_map)
        if model.is_classifier:
            tally = ClassificationTally(model.classes_)
            for X, y in view.raw_blocks():
                tally.update(y, model._predict_log_proba(X))
        else:
            tally = RegressionTally()
            for X, y in view.raw_blocks():
                tally.update(y, model.predict(X))
        return tally.result()

    def _cross_validate(self, spool, classes, label_map) -> dict:
        """k-fold scores, folds fitted in parallel threads (NumPy releases the GIL)."""
        k = self._n_folds

        def run(fold: int) -> dict:
            model, _ = self._fit(spool, [g for g in range(k) if g != fold], classes, label_map)
            scores = self._evaluate(model, spool, [fold], label_map)
            return {name: v for name, v in scores.items() if v is None or isinstance(v, float)}

        jobs = max(1, min(k, os.cpu_count() or 1))
        per_fold = joblib.Parallel(n_jobs=jobs, backend="threading")(joblib.delayed(run)(j) for j in range(k))
        mean, std = {}, {}
        for name in per_fold[0]:
            values = [fold[name] for fold in per_fold if fold[name] is not None]
            mean[name] = float(np.mean(values)) if values else None
            std[name] = float(np.std(values)) if values else None
        return {"folds": k, "mean": mean, "std": std, "per_fold": per_fold}

    def _feature_stats(self, names: list[str]) -> list[dict]:
        total = _Moments.combined(self._moments)
        std = np.sqrt(np.maximum(np.diag(total.comoment), 0.0) / total.n)
        return [
            {
                "name": name,
                "mean": float(total.mean[j]),
                "std": float(std[j]),
                "min": float(total.min[j]),
                "max": float(total.max[j]),
            }
            for j, name in enumerate(names)
        ]


def _json_ready(value):
    """Plain Python containers and scalars, with non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
