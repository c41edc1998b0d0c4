"""Class labels of a stream: first-seen ids, counts per group, and the natural order of the classes."""

from __future__ import annotations

import re

import numpy as np

from regserve.server.errors import InvalidInput

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
        for i in np.argsort(first):
            self._ids.setdefault(str(values[i]), len(self._ids))
        ids = np.array([self._ids[str(v)] for v in values])[inverse]
        counts = np.zeros((self._n_folds + 1, len(self._ids)), dtype=np.int64)
        counts[:, : self._counts.shape[1]] = self._counts
        np.add.at(counts, (np.where(group < 0, self._n_folds, group).astype(np.intp), ids), 1)
        self._counts = counts
        return ids.astype(np.float64)

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
