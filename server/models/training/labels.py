"""Class labels of a stream: first-seen ids, counts per group, and the natural order of the classes."""

from __future__ import annotations

import re

import numpy as np

from regserve.server.errors import InvalidInput
from regserve.server.models.training.spec import MAX_CLASSES

__all__ = ["LabelTable", "label_order"]

_INTEGER = re.compile(r"[+-]?[0-9]+")


def label_order(labels: list[str]) -> list[str]:
    """Natural order: numeric when every label is an integer, else lexicographic."""
    if all(_INTEGER.fullmatch(label) for label in labels):
        return sorted(labels, key=lambda label: (int(label), label))
    return sorted(labels)


class LabelTable:
    """Each label's first-seen id, and how many rows of each label every group holds.

    The groups are the training folds ``0..n_folds-1`` and the validation split
    (group -1, counted in row ``n_folds``).
    """

    def __init__(self, n_folds: int) -> None:
        self._n_folds = n_folds
        self._ids: dict[str, int] = {}  # label -> first-seen id
        self._counts = np.zeros((n_folds + 1, 0), dtype=np.int64)

    def ids(self, labels: np.ndarray, group: np.ndarray) -> np.ndarray:
        """First-seen ids of ``labels`` (stream order, so chunking-invariant); counts them per group."""
        values, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
        new = [label for label in (str(values[i]) for i in np.argsort(first)) if label not in self._ids]
        if len(self._ids) + len(new) > MAX_CLASSES:
            raise InvalidInput(
                f"The labels hold more than {MAX_CLASSES} classes; a classifier takes at most {MAX_CLASSES}.",
                reason="TOO_MANY_CLASSES",
                violations=[("chunk.targets", f"at most {MAX_CLASSES} distinct labels")],
                metadata={"limit": MAX_CLASSES},
            )
        for label in new:
            self._ids[label] = len(self._ids)
        ids = np.array([self._ids[str(v)] for v in values])[inverse]
        counts = np.zeros((self._n_folds + 1, len(self._ids)), dtype=np.int64)
        counts[:, : self._counts.shape[1]] = self._counts
        np.add.at(counts, (np.where(group < 0, self._n_folds, group).astype(np.intp), ids), 1)
        self._counts = counts
        return ids.astype(np.float64)

    def labels(self) -> list[str]:
        """The labels seen, in the order of their ids (first seen first)."""
        return list(self._ids)

    def __len__(self) -> int:
        """The number of distinct labels seen."""
        return len(self._ids)

    def untrained(self) -> list[str]:
        """The labels seen only in the validation split, in the order of their ids."""
        trained = self._counts[: self._n_folds].sum(axis=0) > 0
        return [label for label, seen in zip(self._ids, trained, strict=True) if not seen]

    def classes(self) -> tuple[tuple[str, ...], np.ndarray]:
        """Sorted classes and the map from first-seen label id to class index.

        Raises ``InvalidInput(reason="SINGLE_CLASS")`` when the training folds hold fewer than two labels.
        """
        if int((self._counts[: self._n_folds].sum(axis=0) > 0).sum()) < 2:
            raise InvalidInput(
                "The training rows hold a single class; a classifier needs two or more.",
                reason="SINGLE_CLASS",
                violations=[("chunk.targets", "at least two distinct labels are required")],
            )
        classes = tuple(label_order(list(self._ids)))
        position = {label: k for k, label in enumerate(classes)}
        return classes, np.array([position[label] for label in self._ids], dtype=np.intp)
