"""Checks on one incoming chunk: shapes, dtypes, finite values and class labels.

Every refusal is an ``InvalidInput`` naming the field and, where it applies,
the first bad row by its global number in the stream.
"""

from __future__ import annotations

import numpy as np

from regserve.server.errors import InvalidInput
from regserve.server.models.class_labels import whole_number_labels
from regserve.server.models.numeric import MAX_ABS_VALUE, trainable, untrainable
from regserve.server.models.training.spec import MAX_FEATURES

__all__ = ["MAX_ABS_VALUE", "check_finite", "checked_features", "checked_labels", "checked_targets"]


def checked_features(X: np.ndarray, y: np.ndarray, expected: int | None, first_row: int) -> np.ndarray:
    """``X`` (n, d) as float64, after checking its shape, the target count and its values.

    ``expected`` is the feature count set by the spec or the first chunk (None
    before either); ``first_row`` is the global number of the chunk's first row.
    """
    if X.ndim != 2 or X.shape[1] == 0 or (expected is not None and X.shape[1] != expected):
        got = f"{X.shape[1]} columns" if X.ndim == 2 else f"a {X.ndim}-D array"
        want = f"{expected} features" if expected else "a 2-D array with at least one feature"
        # ``expected`` is unknown until the spec or a first chunk sets it, and a count needs a 2-D chunk.
        counts = {"expected": expected} if expected else {}
        counts.update({"actual": X.shape[1]} if X.ndim == 2 else {"dimensions": X.ndim})
        raise InvalidInput(
            f"Expected {want} per row, got {got}.",
            reason="FEATURE_COUNT_MISMATCH",
            violations=[("chunk.features", f"expected {want}, got {got}")],
            metadata=counts,
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
    check_finite(X, "chunk.features", first_row)
    return X


def checked_targets(y: np.ndarray, first_row: int) -> np.ndarray:
    """Regression targets ``y`` (n,) as float64, refused unless numeric and finite."""
    if y.dtype.kind not in "fiu":
        raise InvalidInput(
            "Regression targets must be numbers.",
            reason="INVALID_DTYPE",
            violations=[("chunk.targets", "targets must be float64")],
        )
    y = y.astype(np.float64, copy=False)
    check_finite(y, "chunk.targets", first_row)
    return y


def check_finite(A: np.ndarray, field: str, first_row: int) -> None:
    """Refuse NaN, infinity and magnitudes whose squares overflow, naming the first bad row."""
    if trainable(A):
        return
    bad = untrainable(A)
    if not bad.any():
        return
    row = int(np.argmax(bad.any(axis=1) if A.ndim == 2 else bad))
    metadata = {"row": first_row + row}
    if A.ndim == 2:
        metadata["column"] = int(np.argmax(bad[row]))
    value = A[row, metadata["column"]] if A.ndim == 2 else A[row]
    # Rows count from 0 over the whole stream, as the client's arrays index them.
    where = f"Row {first_row + row} (from 0), " + (f"column {metadata['column']}," if A.ndim == 2 else "its target,")
    if np.isfinite(value):
        raise InvalidInput(
            f"{where} holds {float(value):g}; training takes magnitudes up to {MAX_ABS_VALUE:g}.",
            reason="VALUE_TOO_LARGE",
            violations=[(field, f"values must lie within ±{MAX_ABS_VALUE:g}")],
            metadata=metadata,
        )
    raise InvalidInput(
        f"{where} holds a NaN or infinite value.",
        reason="NON_FINITE_VALUE",
        violations=[(field, "values must be finite")],
        metadata=metadata,
    )


def checked_labels(y: np.ndarray, first_row: int, declared: set[str] | None) -> np.ndarray:
    """Class labels ``y`` (n,) as a str array; integral floats become their integer text.

    ``declared`` holds the spec's class labels, or None when any label is accepted.
    """
    if y.dtype.kind in "fiu":
        y = y.astype(np.float64, copy=False)
        check_finite(y, "chunk.targets", first_row)
        fractional = y != np.round(y)
        if fractional.any():
            row = first_row + int(np.argmax(fractional))
            raise InvalidInput(
                f"Row {row} has a non-integral class label.",
                reason="INVALID_LABEL",
                violations=[("chunk.targets", "numeric labels must be integers")],
                metadata={"row": row},
            )
        y = whole_number_labels(y)
    elif y.dtype.kind != "U":
        raise InvalidInput(
            "Class labels must be strings or integers.",
            reason="INVALID_DTYPE",
            violations=[("chunk.targets", "labels must be str or integral float64")],
        )
    empty = y == ""
    if empty.any():
        row = first_row + int(np.argmax(empty))
        raise InvalidInput(
            f"Row {row} has an empty class label.",
            reason="EMPTY_LABEL",
            violations=[("chunk.targets", "class labels must be non-empty")],
            metadata={"row": row},
        )
    if declared is not None:
        unknown = ~np.isin(y, np.array(sorted(declared), dtype=np.str_))
        if unknown.any():
            row = int(np.argmax(unknown))
            raise InvalidInput(
                f"Row {first_row + row} has label {str(y[row])!r} outside the declared classes.",
                reason="UNKNOWN_LABEL",
                violations=[("chunk.targets", f"label {str(y[row])!r} is not declared")],
                metadata={"row": first_row + row},
            )
    return y
