"""The probe stored with every version: rows and the answers the model gave them at training.

A version is served only if, once loaded, it reproduces its probe answers, so weights that
were changed after training (even with a matching checksum) are never routed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from regserve.server.errors import IntegrityError, RegserveError
from regserve.server.models.estimator import LinearModel

__all__ = ["PROBE_ROWS", "probe_arrays", "verified_estimator"]

PROBE_ROWS = 8
_PROBE_KEYS = ("probe_inputs", "probe_outputs", "probe_probabilities")
_PROBE_RTOL = 1e-9


def _probe_inputs(metadata: Mapping, estimator: LinearModel) -> np.ndarray:
    """8 rows spread around the training means, shape (8, n_features).

    Centres and spreads come from ``metadata["feature_stats"]`` (mean, std per feature),
    else from the estimator's own scaler, else 0 and 1.  The first row is the centre.
    """
    d = estimator.n_features_in_
    center, spread = np.zeros(d), np.ones(d)
    stats = metadata.get("feature_stats") or ()
    if len(stats) == d:
        center = np.array([float(s.get("mean") or 0.0) for s in stats])
        spread = np.array([float(s.get("std") or 0.0) for s in stats])
    elif getattr(estimator, "mean_", None) is not None:
        center, spread = np.array(estimator.mean_), np.array(estimator.scale_)
    center = np.where(np.isfinite(center), center, 0.0)
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    offsets = np.random.default_rng(0).uniform(-2.0, 2.0, size=(PROBE_ROWS, d))
    offsets[0] = 0.0
    return center + offsets * spread


def probe_arrays(metadata: Mapping, estimator: LinearModel) -> dict[str, np.ndarray]:
    """The probe to store beside ``estimator.to_arrays()``.

    ``probe_inputs`` (8 rows around the training feature means, from ``metadata``'s
    ``feature_stats``), ``probe_outputs`` (their predictions) and, for classifiers,
    ``probe_probabilities``.
    """
    inputs = _probe_inputs(metadata, estimator)
    arrays = {"probe_inputs": inputs, "probe_outputs": estimator.predict(inputs)}
    if estimator.is_classifier:
        arrays["probe_probabilities"] = estimator.predict_proba(inputs)
    return arrays


def verified_estimator(kind: str, arrays: dict[str, np.ndarray], model: str, version: str) -> LinearModel:
    """Rebuild a stored version's estimator from its ``arrays`` and check it against its probe.

    The probe arrays are taken out of ``arrays``.  Raises IntegrityError CORRUPT_WEIGHTS
    when the arrays describe no model of ``kind`` (or hold a probe of the wrong type or
    shape), PROBE_MISMATCH when the probe is missing or the model no longer reproduces it.
    """
    probe = {key: arrays.pop(key, None) for key in _PROBE_KEYS}
    try:
        estimator = LinearModel.from_arrays(kind, arrays)
    except IntegrityError as exc:
        raise _corrupt_weights(model, version, exc.message) from exc
    _check_probe_arrays(estimator, probe, model, version)
    _check_probe(estimator, probe, model, version)
    return estimator


def _corrupt_weights(model: str, version: str, sentence: str) -> IntegrityError:
    return IntegrityError(
        f"Version {version} of model {model!r} has corrupt weights. {sentence}",
        reason="CORRUPT_WEIGHTS",
        metadata={"model": model, "version": version},
    )


def _check_probe_arrays(estimator: LinearModel, probe: Mapping, model: str, version: str) -> None:
    """Refuse probe arrays that are not float arrays of the shapes the estimator answers in."""
    inputs = probe["probe_inputs"]
    arrays = [a for a in probe.values() if a is not None]
    if any(a.dtype.kind != "f" for a in arrays):
        raise _corrupt_weights(model, version, "A probe array is not floating point.")
    if inputs is not None and (inputs.ndim != 2 or inputs.shape[1] != estimator.n_features_in_):
        raise _corrupt_weights(model, version, f"The probe inputs have shape {inputs.shape}.")


def _check_probe(estimator: LinearModel, probe: Mapping, model: str, version: str) -> None:
    def mismatch(detail: str) -> IntegrityError:
        return IntegrityError(
            f"Version {version} of model {model!r} fails its probe: {detail}.",
            reason="PROBE_MISMATCH",
            metadata={"model": model, "version": version},
        )

    inputs, expected = probe["probe_inputs"], probe["probe_outputs"]
    if inputs is None or expected is None:
        raise mismatch("no stored probe")
    try:
        checks = [(estimator.predict(inputs), expected)]
        if probe["probe_probabilities"] is not None:
            checks.append((estimator.predict_proba(inputs), probe["probe_probabilities"]))
    except RegserveError as exc:
        raise mismatch(exc.message) from exc
    for got, want in checks:
        if got.shape != want.shape or not np.isfinite(got).all():
            raise mismatch("the outputs are not finite or have the wrong shape")
        atol = 1e-12 * max(1.0, float(np.max(np.abs(want), initial=0.0)))
        if not np.allclose(got, want, rtol=_PROBE_RTOL, atol=atol):
            raise mismatch("the outputs differ from the stored ones")
