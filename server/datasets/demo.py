"""The embedded default: demo models trained from datasets that ship inside the package.

``diabetes`` is a linear regression on the diabetes data of Efron, Hastie,
Johnstone and Tibshirani (2004), 442 patients, 10 features, the target a
measure of disease progression; ``iris`` is a multinomial logistic regression
on Fisher's iris data (1936), 150 flowers, 4 features, 3 species.
"""

from __future__ import annotations

import csv
import logging
from importlib import resources
from typing import Any

import numpy as np

from regserve.server import __version__
from regserve.server.errors import AlreadyExists
from regserve.server.models.training import Trainer, TrainSpec, process_spool_dir
from regserve.server.registry.store import ModelStore

__all__ = ["DEMO_MODELS", "ensure_demo_models", "train_demo_model"]

logger = logging.getLogger(__name__)

DEMO_MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "diabetes": ("diabetes.csv", "progression", dict(kind="linear", validation_fraction=0.2, seed=7)),
    "iris": (
        "iris.csv",
        "species",
        dict(kind="logistic", standardize=True, alpha=0.01, validation_fraction=0.2, seed=7),
    ),
}


def train_demo_model(store: ModelStore, name: str, *, spool_dir: str = "", only_if_new_model: bool = False) -> None:
    """Train the demo model ``name`` from its bundled CSV and store it as serving.

    Rows are spooled under ``spool_dir`` (see ``--spool-dir``; empty: the default root).
    With ``only_if_new_model``, AlreadyExists ``MODEL_EXISTS`` when the registry holds
    the model already, and nothing is stored.
    """
    filename, target, options = DEMO_MODELS[name]
    feature_names, X, y = _bundled_rows(filename, target, classifier=options["kind"] == "logistic")
    spec = TrainSpec(feature_names=tuple(feature_names), **options)
    with Trainer(spec, spool_dir=process_spool_dir(spool_dir or None)) as trainer:
        trainer.add_chunk(X, y)
        result = trainer.finish()
    metadata = {**result.metadata, "regserve_version": __version__, "source": f"bundled dataset {filename}"}
    store.add_version(
        name,
        result.model,
        metadata,
        promote=True,
        only_if_new_model=only_if_new_model,
        sample=result.validation_sample,
        drift=result.drift_reference,
    )
    logger.info("trained demo model %s from the bundled %s", name, filename)


def _bundled_rows(filename: str, target: str, classifier: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The feature names, features (n, d) and target (n,) of a bundled CSV file.

    These few hundred clean rows are read with the standard library, so a server
    needs no pyarrow (the ``files`` extra) to train its demo models.
    """
    text = resources.files("regserve.server.datasets").joinpath(filename).read_text(encoding="utf-8")
    header, *rows = list(csv.reader(text.splitlines()))
    t = header.index(target)
    cells = np.array(rows, dtype=np.str_)
    features = np.delete(cells, t, axis=1).astype(np.float64)
    return (
        [name for j, name in enumerate(header) if j != t],
        features,
        cells[:, t] if classifier else cells[:, t].astype(np.float64),
    )


def ensure_demo_models(store: ModelStore, *, spool_dir: str = "") -> None:
    """Train the demo models missing from a registry that holds no other model, spooling under ``spool_dir``.

    Replicas starting at once on one empty registry may all train a demo model; the
    registry stores it for exactly one of them (``only_if_new_model``), so each demo
    model has one version.  The others route it from the registry once the winner has
    promoted it: at the refresh that ends this call, else at the next poll.
    """
    if set(store.list_models()) - DEMO_MODELS.keys():
        return
    for name in DEMO_MODELS:
        # Listed again for each model: a replica that started a little later skips the training.
        if name in store.list_models():
            continue
        try:
            train_demo_model(store, name, spool_dir=spool_dir, only_if_new_model=True)
        except AlreadyExists:
            logger.info("demo model %s was stored by another replica meanwhile; serving that one", name)
    store.refresh()
