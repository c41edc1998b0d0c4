"""The validation sample a version keeps in its ``weights.npz``, beside the model and its probe.

Stored in the same file, the sample is covered by the version's checksum and published
with it, pickle-free; it is bounded at training (``validation_sample``), so it adds at
most a few megabytes to a version's load.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from regserve.server.errors import IntegrityError

__all__ = ["SAMPLE_KEYS", "sample_arrays", "stored_sample"]

SAMPLE_KEYS = ("validation_inputs", "validation_targets")


def sample_arrays(sample: tuple[np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The arrays to store for ``sample`` (rows, targets or class indices); none for no sample."""
    if sample is None:
        return {}
    inputs, targets = (np.ascontiguousarray(a, dtype=np.float64) for a in sample)
    return dict(zip(SAMPLE_KEYS, (inputs, targets), strict=True))


def stored_sample(
    arrays: Mapping[str, np.ndarray], n_features: int, model: str, version: str
) -> tuple[np.ndarray, np.ndarray]:
    """The sample in a version's ``arrays``: (k, n_features) rows and (k,) targets; empty when none was stored.

    Raises IntegrityError ``CORRUPT_WEIGHTS`` when the arrays are not such a sample.
    """
    inputs, targets = (arrays.get(key) for key in SAMPLE_KEYS)
    if inputs is None and targets is None:
        return np.empty((0, n_features)), np.empty(0)
    if (
        inputs is None
        or targets is None
        or inputs.dtype.kind != "f"
        or targets.dtype.kind != "f"
        or inputs.ndim != 2
        or inputs.shape[1] != n_features
        or targets.shape != (inputs.shape[0],)
    ):
        raise IntegrityError(
            f"Version {version} of model {model!r} has a damaged validation sample.",
            reason="CORRUPT_WEIGHTS",
            metadata={"model": model, "version": version},
        )
    return inputs.astype(np.float64, copy=False), targets.astype(np.float64, copy=False)
