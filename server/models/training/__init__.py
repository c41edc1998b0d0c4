"""Streaming training: fold chunks of rows into a fitted ``LinearModel``.

The public face of the package; its modules each hold one part:

* ``spec``: ``TrainSpec`` (hyperparameters and their validation) and ``TrainResult``;
* ``chunks``: the checks on each incoming chunk;
* ``sampling``: the seeded assignment of rows to the validation split and the folds;
* ``moments``: the streamed moments of the rows of each split and fold;
* ``labels``: class labels' first-seen ids, counts and natural order;
* ``spool``: reading back the spool file of rows in blocks;
* ``fitting``: one fit, from moments or spooled blocks, and its divergence check;
* ``trainer``: ``Trainer``, which takes the chunks and drives the rest.
"""

from regserve.server.models.training.chunks import MAX_ABS_VALUE
from regserve.server.models.training.spec import KINDS, MAX_CV_FOLDS, MAX_FEATURES, SOLVERS, TrainResult, TrainSpec
from regserve.server.models.training.trainer import Trainer

__all__ = ["KINDS", "MAX_ABS_VALUE", "MAX_CV_FOLDS", "MAX_FEATURES", "SOLVERS", "TrainResult", "TrainSpec", "Trainer"]
