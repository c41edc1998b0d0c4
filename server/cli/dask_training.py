"""``regserve train --dask``: the training passes run on a Dask cluster's workers, the model stored with CreateVersion.

The rows never reach the server, and reach this process only where noted below.  The
work is the single-node trainer's, split by partition (one Parquet file, or the one CSV
file, per task), with the trainer's own functions:

* a statistics pass: each worker reads its partition chunk by chunk, checks it
  (``chunks``), assigns each row to the validation split by its *global* row index
  (``sampling.RowGroups``; a partition's first global row comes from the Parquet
  metadata's row counts) and keeps the training and validation rows' ``Moments``, the
  labels it met and a SHA-256 of its rows in the trainer's fingerprint byte format;
  this process merges the moments in partition order;
* closed form and ridge: ``fit_model`` on the merged moments, as the trainer calls it;
* logistic: ``solvers.solve_newton`` on a ``ClusterObjective``, whose every evaluation
  is one distributed pass: each worker evaluates the trainer's ``Objective`` (loss sum,
  gradient, Hessian, all divided by the global training-row count) on its partition's
  training rows at the broadcast weights, and the parts are summed here with the
  penalty, which is the same ``Objective`` evaluated over no rows;
* a scoring pass: each worker folds its partition's rows into the trainer's
  ``ModelScores``, and this process merges the tallies (a few numbers per partition)
  in partition order.

Newton's method starts from zero on the cluster: the single-node warm start fits a
strided sample of the rows first, which here would mean gathering rows off the workers.
No rows, no targets and no features ever reach this process.

The data fingerprint is the SHA-256 of the partitions' own SHA-256 digests (each over
its rows in the single-node byte format) in partition order, prefixed ``dask:``: a
stream hash cannot be continued from another process's state, so it differs from the
single-node fingerprint of the same rows, and it is the same for the same files
whatever the cluster.

The files are local paths (which every worker must see at the same path) or fsspec
URLs of Parquet files (``s3://`` with the s3 extra; credentials from the workers'
environment), read row group by row group with the Parquet reader's own checks.  A CSV
file is a local path read by one task.  Not on this path: cross-validation and the gd
and sgd solvers (refused with ``INVALID_HYPERPARAMETER`` before a cluster starts).

``dask.distributed`` is the ``dask`` extra; it is imported only here, and only this
module of the CLI imports it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from regserve.server.cli.commands import lineage_source
from regserve.server.errors import InvalidInput
from regserve.server.models import solvers
from regserve.server.models.estimator import LinearModel
from regserve.server.models.objective import Objective, make_objective
from regserve.server.models.scoring import ModelScores
from regserve.server.models.training.chunks import checked_features, checked_labels, checked_targets
from regserve.server.models.training.fitting import (
    _standardization,
    check_model_finite,
    fit_model,
    model_from_theta,
    settle_final_loss,
)
from regserve.server.models.training.labels import LabelTable
from regserve.server.models.training.moments import Moments
from regserve.server.models.training.sampling import RowGroups
from regserve.server.models.training.separation import complete_separation_warning, strictly_ordered
from regserve.server.models.training.spec import TrainSpec
from regserve.server.models.training.trainer import Trainer
from regserve.server.rpc.convert import SOLVER_VALUES
from regserve.v1 import types_pb2

__all__ = [
    "ClusterObjective",
    "Partition",
    "Statistics",
    "cluster_client",
    "partitions",
    "train_on_cluster",
]

LOCAL_WORKERS = 2
"""Workers of ``--dask local`` without a count."""


@dataclass(frozen=True)
class Partition:
    """One task's rows: the file, its first row's global index and its row count (None: not yet counted)."""

    path: str
    first_row: int
    rows: int | None


@dataclass(frozen=True)
class Reading:
    """What every task needs to read and check its rows the same way."""

    target: str
    features: tuple[str, ...]
    kind: str
    chunk_rows: int
    seed: int
    validation_fraction: float


@dataclass
class Statistics:
    """A partition's (or, merged, the data set's) statistics pass."""

    rows: int
    train_rows: int
    train: Moments
    validation: Moments
    training_labels: list[str]
    validation_labels: list[str]
    digest: str


# --------------------------------------------------------------------------- the cluster


@contextlib.contextmanager
def cluster_client(address: str) -> Iterator[Any]:
    """A ``distributed.Client`` of ``address``: a scheduler's address, or ``local[:N]`` for a LocalCluster of N.

    The local cluster runs N single-threaded worker processes on 127.0.0.1 with no
    dashboard, and is closed on exit.
    """
    from distributed import Client, LocalCluster

    if address == "local" or address.startswith("local:"):
        count = address.partition(":")[2]
        if count and not (count.isdigit() and int(count) >= 1):
            raise ValueError(f"--dask local:N takes a worker count of at least 1, not {count!r}")
        workers = int(count) if count else LOCAL_WORKERS
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # A task's failure comes back to this process, which reports it once; the workers'
                # own log of it would put tracebacks before the message (and the JSON object) on stderr.
                silence_logs=logging.CRITICAL,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    with Client(address) as client:
        yield client


class StorageError(OSError):
    """The object store behind a URL could not be read: unreachable, no credentials, access denied."""

    reason = "STORAGE_ERROR"


_STORAGE_MODULES = frozenset({"botocore", "aiobotocore", "s3fs", "fsspec", "gcsfs", "adlfs", "aiohttp"})


@contextlib.contextmanager
def storage_errors(source: str) -> Iterator[None]:
    """Turn the object-store client's own exceptions (botocore's, s3fs's), which are not OSErrors, into
    ``StorageError`` naming ``source``, whether raised here or on a worker and sent back."""
    try:
        yield
    except Exception as exc:
        if (type(exc).__module__ or "").partition(".")[0] not in _STORAGE_MODULES:
            raise
        raise StorageError(
            f"could not read {source}: {exc} (check the store's address, AWS_ENDPOINT_URL for S3 "
            "elsewhere than AWS, and the credentials, as the workers see them)"
        ) from None


def is_url(source: str) -> bool:
    """Whether ``source`` is an fsspec URL (``s3://bucket/dir``) rather than a local path."""
    return "://" in source


def _fsspec():
    """fsspec (the s3 extra), imported only when a URL is read."""
    import fsspec  # type: ignore[import-untyped]  # fsspec ships no type information

    return fsspec


def _url_files(source: str) -> list[str]:
    """The Parquet files of the URL ``source`` (one file, a directory or a glob) in sorted order, as URLs."""
    from regserve.server.datasets import parquet_reader

    fs, path = _fsspec().core.url_to_fs(source)
    if glob.has_magic(path):
        files = sorted(fs.glob(path))
    elif fs.isdir(path):
        base = path.rstrip("/") + "/"
        files = sorted(name for name in fs.find(path) if parquet_reader.in_directory(name.removeprefix(base)))
    else:
        files = [path] if fs.exists(path) else []
    if not files:
        raise InvalidInput(
            f"no Parquet file at {source}",
            reason="NO_INPUT_FILES",
            violations=[("file", f"matches no file: {source}")],
        )
    return [fs.unstrip_protocol(name) for name in files]


def _parquet_metadata(path: str):
    """The footer metadata of a local or URL Parquet file."""
    from regserve.server.datasets.parquet_reader import open_file

    if not is_url(path):
        return open_file(path).metadata
    with _fsspec().open(path, "rb") as handle:
        return open_file(path, handle).metadata


def url_features(source: str, target: str, feature_columns, classifier: bool) -> list[str]:
    """The feature columns of the Parquet files at URL ``source``, each file's schema checked as the reader does."""
    from regserve.server.datasets import parquet_reader

    files = _url_files(source)
    schemas = [_parquet_metadata(path).schema.to_arrow_schema() for path in files]
    names = schemas[0].names
    if target not in names:
        raise InvalidInput(
            f"{files[0]} has no column {target!r}; its columns are {', '.join(names)}",
            reason="UNKNOWN_TARGET_COLUMN",
            violations=[("target", f"not a column of the Parquet data: {target}")],
        )
    features = list(feature_columns) if feature_columns else parquet_reader.default_features(schemas[0], target)
    first = None if feature_columns else files[0]
    for path, schema in zip(files, schemas, strict=True):
        parquet_reader._check_schema(path, schema, features, target, classifier, first)
    return features


def partitions(source: str) -> list[Partition]:
    """The partitions of ``source``: each Parquet file (local or URL) with its first global row, or the CSV."""
    from regserve.server.datasets import parquet_reader

    if is_url(source):
        files = _url_files(source)
    elif parquet_reader.is_parquet(source):
        files = parquet_reader.parquet_files(source)
    else:
        return [Partition(os.fspath(source), 0, None)]
    parts, first = [], 0
    for path in files:
        rows = _parquet_metadata(path).num_rows
        parts.append(Partition(path, first, rows))
        first += rows
    return parts


# --------------------------------------------------------------------------- worker tasks


def _pieces(part: Partition, reading: Reading) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(first row in the partition, X, target or labels)`` of each piece of ``part`` as its reader gives them."""
    logistic = reading.kind == "logistic"
    if not is_url(part.path):
        from regserve.server.datasets.tables import open_table

        table = open_table(
            part.path,
            reading.target,
            classifier=logistic,
            chunk_rows=reading.chunk_rows,
            feature_columns=list(reading.features),
        )
        for chunk in table.chunks:
            yield chunk.first_row, chunk.features, cast(np.ndarray, chunk.target)
        return
    from regserve.server.datasets import parquet_reader

    columns = [*reading.features, reading.target]
    row = 0
    # The local reader's row-group loop and checks, on a file opened through fsspec.
    with _fsspec().open(part.path, "rb") as handle, parquet_reader.open_file(part.path, handle) as parquet:
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=columns)
            for batch in table.to_batches(max_chunksize=reading.chunk_rows):
                X, y = parquet_reader._arrays(batch, part.path, row, len(reading.features), logistic)
                yield row, X, cast(np.ndarray, y)
                row += batch.num_rows


def _chunks(part: Partition, reading: Reading) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(first global row, X, targets or zeros, labels or None)`` of each checked chunk of ``part``."""
    for start, features, y in _pieces(part, reading):
        first = part.first_row + start
        X = checked_features(features, y, len(reading.features), first)
        if reading.kind == "logistic":
            yield first, X, np.zeros(X.shape[0]), checked_labels(y, first, None)
        else:
            yield first, X, checked_targets(y, first), None


def partition_statistics(part: Partition, reading: Reading) -> Statistics:
    """The statistics pass over one partition (a worker task)."""
    groups = RowGroups(reading.seed, reading.validation_fraction, 1)
    d = len(reading.features)
    p = d + (reading.kind != "logistic")
    train, validation = Moments(p), Moments(p)
    # The trainer's fingerprint method writes to ``_hash``; this partition's hash stands in for the stream's.
    fingerprint = SimpleNamespace(_hash=hashlib.sha256())
    seen: tuple[set[str], set[str]] = (set(), set())
    rows = train_rows = 0
    for first, X, targets, labels in _chunks(part, reading):
        n = X.shape[0]
        group, n_train = groups.take(first, n)
        block = np.empty((n, d + 2), dtype="<f8")
        block[:, :d], block[:, d], block[:, d + 1] = X, targets, group
        Trainer._fingerprint(cast(Any, fingerprint), block, labels)
        training = group >= 0
        V = block[:, :p]
        train.add(V[training])
        validation.add(V[~training])
        if labels is not None:
            seen[0].update(np.unique(labels[training]).tolist())
            seen[1].update(np.unique(labels[~training]).tolist())
        rows += n
        train_rows += n_train
    if part.rows is not None and rows != part.rows:
        raise InvalidInput(
            f"{part.path} held {rows} rows where its metadata says {part.rows}",
            reason="MALFORMED_PARQUET",
            violations=[("file", f"{part.path}: row count differs from its metadata")],
        )
    return Statistics(
        rows, train_rows, train, validation, sorted(seen[0]), sorted(seen[1]), fingerprint._hash.hexdigest()
    )


class _PartitionRows:
    """A partition's training rows as the ``BlockSource`` an ``Objective`` reads, standardized, chunk by chunk.

    ``n`` is the training-row count of the whole data set, so the ``Objective``'s sums
    over this partition come divided by it and the partitions' parts add up.
    """

    def __init__(self, part, reading, shift, scale, classes, n) -> None:
        self.part, self.reading, self.shift, self.scale, self.n = part, reading, shift, scale, n
        self.positions = None if classes is None else {label: k for k, label in enumerate(classes)}

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        groups = RowGroups(self.reading.seed, self.reading.validation_fraction, 1)
        for first, X, targets, labels in _chunks(self.part, self.reading):
            training = groups.take(first, X.shape[0])[0] >= 0
            y = targets if labels is None else _class_indices(labels, self.positions)
            Z = X[training] - self.shift
            Z /= self.scale
            yield Z, y[training]

    def shuffled_blocks(self, rng):
        raise NotImplementedError("the cluster path runs Newton's method, which reads the rows in order")


def _class_indices(labels: np.ndarray, positions) -> np.ndarray:
    values, inverse = np.unique(labels, return_inverse=True)
    return np.array([positions[str(v)] for v in values], dtype=np.intp)[inverse.ravel()]


def partition_objective(
    part: Partition, reading: Reading, setup: dict, theta: np.ndarray, hessian: bool
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """One partition's unpenalised share of ``F``, its gradient and its Hessian at ``theta`` (a worker task)."""
    rows = _PartitionRows(part, reading, setup["shift"], setup["scale"], setup["classes"], setup["n"])
    k, q = theta.shape
    objective = Objective(
        rows, setup["loss"], k, q - int(setup["fit_intercept"]), l2=0.0, fit_intercept=setup["fit_intercept"]
    )
    return objective.evaluate(theta, hessian)


def partition_scores(
    part: Partition, reading: Reading, model: LinearModel, separation: bool = False
) -> tuple[dict[str, ModelScores], bool]:
    """The metric tallies of a partition's training and validation rows (a few numbers, never the rows), and,
    with ``separation``, whether the model puts every training row strictly on its class's side (else False)."""
    groups = RowGroups(reading.seed, reading.validation_fraction, 1)
    positions = None if model.classes_ is None else {label: k for k, label in enumerate(model.classes_)}
    tallies = {split: ModelScores(model) for split in ("training", "validation")}
    ordered = separation
    for first, X, targets, labels in _chunks(part, reading):
        training = groups.take(first, X.shape[0])[0] >= 0
        y = targets if labels is None else _class_indices(labels, positions)
        if training.all():
            tallies["training"].update(X, y)
        else:
            tallies["training"].update(X[training], y[training])
            tallies["validation"].update(X[~training], y[~training])
        if ordered and training.any():
            ordered = strictly_ordered([(X[training], y[training])], model)
    return tallies, ordered


# --------------------------------------------------------------------------- this process


class ClusterObjective(Objective):
    """The trainer's ``Objective``, each evaluation one pass on the cluster plus the penalty computed here."""

    def __init__(self, base: Objective, run_pass: Callable[[np.ndarray, bool], list]) -> None:
        k, q = base.shape
        super().__init__(
            base.data,
            base.loss,
            k,
            q - int(base.fit_intercept),
            l2=base.l2,
            fit_intercept=base.fit_intercept,
            gauge=base.gauge,
            interrupt=base.interrupt,
        )
        self._run_pass = run_pass

    def evaluate(self, theta: np.ndarray, hessian: bool = False):
        # Over no rows the objective is exactly its penalty and gauge terms, with their Hessian.
        F, G, H = self.on(_NoRows(self.data.n)).evaluate(theta, hessian)
        for value, gradient, curvature in self._run_pass(theta, hessian):
            F += value
            G = G + gradient
            if H is not None:
                H += curvature.reshape(H.shape)
        return F, G, H


class _NoRows:
    """A ``BlockSource`` of no rows that stands for ``n`` of them."""

    def __init__(self, n: int) -> None:
        self.n = n

    def blocks(self):
        return iter(())

    def shuffled_blocks(self, rng):
        return iter(())


@dataclass
class ClusterResult:
    """A model trained on the cluster and what is known of its run."""

    model: LinearModel
    spec: TrainSpec
    rows: int
    train_rows: int
    fingerprint: str
    feature_stats: list[dict]
    training_metrics: dict
    validation_metrics: dict | None
    solver_info: solvers.SolverInfo
    warnings: list[dict]
    """Fit warnings (``reason``, ``message``), stored with the version."""


def merged(parts: Sequence[Statistics]) -> Statistics:
    """The data set's statistics from its partitions', merged in partition order."""
    digest = hashlib.sha256(b"".join(bytes.fromhex(s.digest) for s in parts)).hexdigest()
    return Statistics(
        sum(s.rows for s in parts),
        sum(s.train_rows for s in parts),
        Moments.combined([s.train for s in parts]),
        Moments.combined([s.validation for s in parts]),
        sorted({label for s in parts for label in s.training_labels}),
        sorted({label for s in parts for label in s.validation_labels}),
        "dask:" + digest,
    )


def _refuse_unsupported(spec: TrainSpec) -> None:
    if spec.cv_folds:
        raise InvalidInput(
            "--dask does not cross-validate; train without --cv",
            reason="INVALID_HYPERPARAMETER",
            violations=[("spec.cv_folds", "not available with --dask")],
        )
    if spec.resolved_solver in ("gd", "sgd"):
        raise InvalidInput(
            f"--dask fits with the closed form or Newton's method, not {spec.resolved_solver}",
            reason="INVALID_HYPERPARAMETER",
            violations=[("spec.solver", "closed_form or newton with --dask")],
        )


def _check_counts(spec: TrainSpec, total: Statistics) -> None:
    """The trainer's refusals of too few rows, for the merged counts."""
    n_validation = total.rows - total.train_rows
    if total.rows == 0:
        raise InvalidInput(
            "No training rows were sent.", reason="EMPTY_TRAINING_SET", violations=[("chunks", "send at least one row")]
        )
    if spec.validation_fraction > 0 and (n_validation < 1 or total.train_rows < 2):
        raise InvalidInput(
            f"{total.rows} rows give {n_validation} validation and {total.train_rows} training rows.",
            reason="TOO_FEW_ROWS",
            violations=[("spec.validation_fraction", "needs >= 1 validation and >= 2 training rows")],
        )


def _classes(total: Statistics) -> tuple[str, ...]:
    """The sorted classes, refusing a single training class, by the trainer's ``LabelTable``."""
    table = LabelTable(1)
    labels = np.array(total.training_labels + total.validation_labels, dtype=np.str_)
    groups = np.array([0.0] * len(total.training_labels) + [-1.0] * len(total.validation_labels))
    table.ids(labels, groups)
    return table.classes()[0]


def train_on_cluster(client, source: str, target: str, spec: TrainSpec, chunk_rows: int = 65536) -> ClusterResult:
    """Train ``spec`` on the rows of ``source`` (``target`` the column to predict) on the cluster of ``client``.

    ``spec.feature_names`` are the feature columns.  Raises InvalidInput as the trainer would.
    """
    spec.validate()
    _refuse_unsupported(spec)
    parts = partitions(source)
    reading = Reading(target, tuple(spec.feature_names), spec.kind, chunk_rows, spec.seed, spec.validation_fraction)
    d = len(reading.features)
    futures = [client.submit(partition_statistics, part, reading, pure=False) for part in parts]
    total = merged(client.gather(futures))
    _check_counts(spec, total)
    classes = _classes(total) if spec.kind == "logistic" else None
    if spec.resolved_solver == "closed_form":
        # The closed form reads nothing but the moments.
        model, info = fit_model(spec, d, total.train, cast(Any, None), [0], None, None)
    else:
        model, info = _fit_newton(client, parts, reading, spec, total, cast(tuple, classes))
    check_model_finite(model, spec)
    # Without the rows in one place the exact test (linear programs) cannot run; complete separation,
    # every training row strictly on its class's side, is checked by its definition where the rows are.
    separation = spec.kind == "logistic" and not spec.penalised
    training, validation, separated = _scores(client, parts, reading, model, total, separation)
    warnings = []
    if separated:
        warnings.append(complete_separation_warning(total.train_rows))
        info.converged = False  # the tolerance was met only because the weights ran off
    settle_final_loss(info, spec, model, training, total.train_rows)
    stats = Trainer._feature_stats(
        cast(Any, SimpleNamespace(_moments=(total.train, total.validation))), list(reading.features)
    )
    return ClusterResult(
        model, spec, total.rows, total.train_rows, total.digest, stats, training, validation, info, warnings
    )


def _settings(spec: TrainSpec) -> dict[str, Any]:
    """The spec's settings as CreateVersion takes them: the request itself gives the kind, the names and the classes."""
    own = ("kind", "feature_names", "class_labels")
    return {name: value for name, value in spec.to_dict().items() if name not in own and value is not None}


def _solver_report(spec: TrainSpec, info: solvers.SolverInfo) -> types_pb2.SolverReport:
    """The solver's report as CreateVersion stores it (a singular system's condition number is infinite)."""
    condition = info.condition_number
    return types_pb2.SolverReport(
        solver=SOLVER_VALUES[spec.resolved_solver],
        rank=info.rank or 0,
        condition_number=math.inf if condition is None and info.rank else float(condition or 0.0),
        least_squares_fallback=info.fallback is not None,
        iterations=info.iterations or 0,
        converged=bool(info.converged),
        final_loss=float(info.final_loss or 0.0),
    )


def _fit_newton(client, parts, reading, spec: TrainSpec, total: Statistics, classes: tuple[str, ...]):
    """Newton's method as ``fit_model`` runs it, every evaluation a pass on the cluster."""
    d = len(reading.features)
    m = total.train
    shift, scale = _standardization(m, d) if spec.standardize else (np.zeros(d), np.ones(d))
    base = make_objective(
        _NoRows(m.n), kind=spec.kind, n_classes=len(classes), d=d, l2=spec.l2(m.n), fit_intercept=spec.fit_intercept
    )
    setup = {
        "shift": shift,
        "scale": scale,
        "classes": classes,
        "n": m.n,
        "loss": base.loss,
        "fit_intercept": spec.fit_intercept,
    }
    shared = client.scatter([reading, setup], broadcast=True)

    def run_pass(theta: np.ndarray, hessian: bool) -> list:
        futures = [
            client.submit(partition_objective, part, shared[0], shared[1], theta, hessian, pure=False) for part in parts
        ]
        return client.gather(futures)

    objective = ClusterObjective(base.on(_NoRows(m.n)), run_pass)
    # No warm start: its sample would have to be gathered here, moving the rows off the workers.
    theta, info = solvers.solve_newton(
        objective, max_iterations=spec.max_iterations, tolerance=spec.tolerance, warm_start=False
    )
    return model_from_theta(spec, theta, shift, scale, classes), info


def _scores(
    client, parts, reading, model: LinearModel, total: Statistics, separation: bool
) -> tuple[dict, dict | None, bool]:
    """Training and validation metrics: partitions' tallies, made where their rows are, merged in partition order;
    and, with ``separation``, whether every training row lies strictly on its class's side."""
    tallies = {split: ModelScores(model) for split in ("training", "validation")}
    futures = [client.submit(partition_scores, part, reading, model, separation, pure=False) for part in parts]
    ordered = separation
    for future in futures:
        scores, part_ordered = future.result()
        for split, tally in scores.items():
            tallies[split].merge(tally)
        ordered = ordered and part_ordered
        future.release()
    validation = tallies["validation"].result() if total.rows > total.train_rows else None
    return tallies["training"].result(), validation, ordered


# --------------------------------------------------------------------------- the command


def cmd_train_dask(args, options: dict) -> int:
    """``regserve train PATH --dask ADDRESS``: train on the cluster, store the model with CreateVersion.

    ``options`` are the training flags that were given (``commands._train_options``).
    """
    with storage_errors(args.file):
        return _train_dask(args, dict(options), args.kind == "logistic")


def _train_dask(args, options: dict, classifier: bool) -> int:
    from regserve.client import ModelAdminClient
    from regserve.server.cli.commands import connection
    from regserve.server.cli.render import print_json, print_metrics, print_warnings
    from regserve.server.datasets.tables import open_table

    promote = options.pop("promote", True)
    # The columns are checked and the features named as the single-node command does; no row is read here.
    if is_url(args.file):
        features = url_features(args.file, args.target, args.feature_columns, classifier)
    else:
        features = open_table(
            args.file,
            args.target,
            classifier=classifier,
            chunk_rows=args.chunk_rows,
            feature_columns=args.feature_columns,
        ).feature_names
    spec = TrainSpec(kind=args.kind, solver=args.solver, feature_names=tuple(features), **options)
    spec.validate()
    _refuse_unsupported(spec)  # before a cluster is started for nothing
    with cluster_client(args.dask) as client:
        result = train_on_cluster(client, args.file, args.target, spec, chunk_rows=args.chunk_rows)
    model = result.model
    where = args.file if is_url(args.file) else os.path.abspath(args.file)  # the lineage outlives the working directory
    with ModelAdminClient(args.server, **connection(args)) as admin:
        response = admin.create_version(
            args.model,
            spec.kind,
            model.coef_,
            model.intercept_,
            feature_names=spec.feature_names,
            classes=model.classes_ or (),
            means=model.mean_,
            scales=model.scale_,
            training=_scalars(result.training_metrics),
            validation=_scalars(result.validation_metrics or {}),
            source=lineage_source(
                args, "regserve train --dask of ", where, f" ({result.rows} rows, {result.train_rows} training)"
            ),
            data_fingerprint=result.fingerprint,
            promote=promote,
            promotion_gate=args.promotion_gate,
            solver_report=_solver_report(spec, result.solver_info),
            feature_statistics=result.feature_stats,
            num_train=result.train_rows,
            num_validation=result.rows - result.train_rows,
            spec=_settings(spec),
            warnings=result.warnings,
        )
    if args.output == "json":
        print_json(response)
        return 0
    version = response.model_version
    state = "serving" if response.promoted else "not promoted"
    reason = f" ({response.promotion_reason})" if response.promotion_reason else ""
    info = result.solver_info
    print(f"{version.model} {version.version}: {result.rows} rows on the cluster, {state}{reason}")
    if info.iterations is None:
        print(f"solver      {spec.resolved_solver}")
    else:
        print(f"solver      {spec.resolved_solver}, {info.iterations} iterations, converged {info.converged}")
    print(f"fingerprint {result.fingerprint}")
    print_warnings(version)
    print_metrics(version)
    return 0


def _scalars(metrics: dict) -> dict[str, float]:
    """The finite scalar metrics, which are what a version stores."""
    return {
        name: float(value)
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
    }
