"""Streaming training: fold chunks of rows into a fitted ``LinearModel``.

The public face of the package; its modules each hold one part:

* ``spec``: ``TrainSpec`` (hyperparameters and their validation) and ``TrainResult``;
* ``chunks``: the checks on each incoming chunk;
* ``sampling``: the seeded assignment of rows to the validation split and the folds;
* ``moments``: the streamed moments of the rows of each split and fold;
* ``labels``: class labels' first-seen ids, counts and natural order;
* ``spool``: reading back the spool file of rows in blocks;
* ``spool_directory``: the directory of spool files each server process claims, and the
  removal of those left by processes that are gone;
* ``budget``: what a run will cost, and its refusal past ``TrainingLimits``;
* ``fitting``: one fit, from moments or spooled blocks, and its divergence check;
* ``validation_sample``: the bounded, seeded sample of validation rows kept with the model;
* ``trainer``: ``Trainer``, which takes the chunks and drives the rest.
"""

from regserve.server.models.training.budget import DEFAULT_LIMITS, TrainingLimits
from regserve.server.models.training.chunks import MAX_ABS_VALUE
from regserve.server.models.training.spec import (
    KINDS,
    MAX_CLASSES,
    MAX_CV_FOLDS,
    MAX_FEATURES,
    SOLVERS,
    TrainResult,
    TrainSpec,
)
from regserve.server.models.training.spool_directory import default_spool_root, process_spool_dir
from regserve.server.models.training.trainer import Trainer
from regserve.server.models.training.validation_sample import SAMPLE_ROWS, SAMPLE_VALUES

__all__ = [
    "DEFAULT_LIMITS",
    "KINDS",
    "MAX_ABS_VALUE",
    "MAX_CLASSES",
    "MAX_CV_FOLDS",
    "MAX_FEATURES",
    "SAMPLE_ROWS",
    "SAMPLE_VALUES",
    "SOLVERS",
    "TrainResult",
    "TrainSpec",
    "Trainer",
    "TrainingLimits",
    "default_spool_root",
    "process_spool_dir",
]
