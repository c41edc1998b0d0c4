"""How numbers name classes: a whole number is the label of its integer text, 1.0 is "1".

The server spells numeric labels this way when a chunk brings them, and the file readers
spell numbers they send as text the same way, so one number is one class however it came.
Kept out of ``models.training`` so that reading a file does not import the trainer.
"""

from __future__ import annotations

import numpy as np

__all__ = ["whole_number_labels"]


def whole_number_labels(values: np.ndarray) -> np.ndarray:
    """Whole numbers ``values`` (n,), of any numeric dtype, as the class labels they stand for: 1.0 is "1"."""
    distinct, inverse = np.unique(values, return_inverse=True)
    return np.array([str(int(v)) for v in distinct.tolist()], dtype=np.str_)[inverse.ravel()]
