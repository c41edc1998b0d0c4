"""The embedded default: demo models trained from datasets that ship inside the package.

``diabetes`` is a linear regression on the diabetes data of Efron, Hastie,
Johnstone and Tibshirani (2004), 442 patients, 10 features, the target a
measure of disease progression; ``iris`` is a multinomial logistic regression
on Fisher's iris data (1936), 150 flowers, 4 features, 3 species.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from regserve.server import __version__
from regserve.server.datasets.csv_reader import read_csv_chunks
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


def train_demo_model(store: ModelStore, name: str, *, spool_dir: str = "") -> None:
    """Train the demo model ``name`` from its bundled CSV and store it as serving.

    Rows are spooled under ``spool_dir`` (see ``--spool-dir``; empty: the default root).
    """
    filename, target, options = DEMO_MODELS[name]
    with resources.files("regserve.server.datasets").joinpath(filename).open() as stream:
        feature_names, chunks = read_csv_chunks(stream, target)
        spec = TrainSpec(feature_names=tuple(feature_names), **options)
        with Trainer(spec, spool_dir=process_spool_dir(spool_dir or None)) as trainer:
            for chunk in chunks:
                trainer.add_chunk(chunk.features, chunk.targets(classifier=spec.kind == "logistic"))
            result = trainer.finish()
    metadata = {**result.metadata, "regserve_version": __version__, "source": f"bundled dataset {filename}"}
    store.add_version(name, result.model, metadata, promote=True, sample=result.validation_sample)
    logger.info("trained demo model %s from the bundled %s", name, filename)


def ensure_demo_models(store: ModelStore, *, spool_dir: str = "") -> None:
    """Train the demo models when the registry holds no model at all, spooling under ``spool_dir``."""
    if store.model_names():
        return
    for name in DEMO_MODELS:
        train_demo_model(store, name, spool_dir=spool_dir)
