"""The client commands of ``regserve``: train, predict, info, health, and the model lifecycle.

They talk to a server only through the public client library (``regserve.client``)
and read CSV and Parquet files with ``regserve.server.datasets.tables`` (pyarrow, the
``files`` extra, imported only by the commands that read a file).  Each takes the
parsed arguments and returns the exit status.  With ``--output json`` each prints
the JSON of the response message of the call it makes (predict: JSON Lines, one
object per row; see ``render``).
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
from grpc_health.v1 import health_pb2

from regserve.client import InvalidArgument, ModelAdminClient, NotFound, RegressionClient, VersionFeaturesDiffer
from regserve.client._calls import same_feature_count, same_features
from regserve.server.cli.render import (
    print_failure,
    print_json,
    print_model_info,
    print_states,
    print_statuses,
    print_trained,
    print_versions,
    write_predictions,
    write_predictions_json,
)
from regserve.server.datasets.row_chunks import printable_path
from regserve.server.errors import InvalidInput
from regserve.server.registry.text_limits import SOURCE_MAX
from regserve.server.rpc.methods import SERVICE_NAMES
from regserve.v1 import model_service_pb2, regression_service_pb2, types_pb2

__all__ = [
    "cmd_delete",
    "cmd_freeze",
    "cmd_health",
    "cmd_info",
    "cmd_models",
    "cmd_predict",
    "cmd_promote",
    "cmd_rollback",
    "cmd_split",
    "cmd_status",
    "cmd_train",
    "cmd_unfreeze",
    "cmd_versions",
    "connection",
    "parse_weights",
]


def connection(args) -> dict:
    """The keyword arguments of a client's connection, from the flags every client command has."""
    # The certificate is checked against this name instead of the address called (a loopback one, in a container).
    name = args.tls_server_name
    return {
        "timeout": args.timeout,
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "token": args.token,
        "options": [("grpc.ssl_target_name_override", name)] if name else [],
    }


def _json(args) -> bool:
    return args.output == "json"


def _client(args) -> RegressionClient:
    return RegressionClient(args.server, **connection(args))


def _admin_client(args) -> ModelAdminClient:
    return ModelAdminClient(args.server, **connection(args))


def _train_options(args) -> dict:
    """The training flags that were given; the server's defaults apply to the rest."""
    options = {
        "alpha": args.alpha,
        "c": args.c,
        "standardize": args.standardize,
        "learning_rate": args.learning_rate,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "validation_fraction": args.validation_fraction,
        "cv_folds": args.cv,
        "seed": args.seed,
        "promote": args.promote,
    }
    return {k: v for k, v in options.items() if v is not None}


def _open_table(args, source: str, target: str | None, classifier: bool = False, feature_columns=None):
    """``source`` opened for streaming, or None after saying that pyarrow is missing."""
    try:
        from regserve.server.datasets.tables import open_table
    except ImportError as exc:
        print_failure(f"regserve {args.command} reads files with pyarrow: install regserve[files] ({exc})", _json(args))
        return None
    return open_table(
        source, target, classifier=classifier, chunk_rows=args.chunk_rows, feature_columns=feature_columns
    )


def lineage_source(args, prefix: str, path: str, suffix: str = "") -> str:
    """What a version made from the file at ``path`` records as its source: ``--source`` when given, else
    ``prefix + path + suffix``.

    The path is made printable (a name that is not UTF-8 keeps its bytes as escapes), and a
    path too long for ``SOURCE_MAX`` loses its start, so the file's own name stays.
    """
    if args.source is not None:
        return args.source
    printable = printable_path(path)
    room = SOURCE_MAX - len(prefix) - len(suffix)
    if len(printable) > room:
        printable = "…" + printable[len(printable) - room + 1 :]
    return prefix + printable + suffix


def _progress_bar(args, table):
    """A tqdm bar on stderr, or None with JSON output, where stderr carries only the error object a script parses.

    tqdm is imported only for a bar: a script's run is spared its import.
    """
    if _json(args):
        return None
    from tqdm import tqdm

    return tqdm(total=table.size, unit=table.unit, unit_scale=True, desc=f"train {args.model}", file=sys.stderr)


def cmd_train(args) -> int:
    if args.dask:
        # Only this path imports dask (the dask extra).
        from regserve.server.cli.dask_training import cmd_train_dask

        return cmd_train_dask(args, _train_options(args))
    if "://" in args.file:
        raise InvalidInput(
            f"{args.file} is a URL: regserve train reads URLs (s3:// and other fsspec URLs) on a Dask cluster, "
            "where the data is; add --dask local for a cluster on this machine, or --dask SCHEDULER_ADDRESS",
            reason="URL_NEEDS_DASK",
            violations=[("file", "give --dask with a URL, or a local path")],
        )
    table = _open_table(args, args.file, args.target, args.kind == "logistic", args.feature_columns)
    if table is None:
        return 1
    with _client(args) as client:
        bar = _progress_bar(args, table)

        def pairs():
            for chunk in table.chunks:
                yield chunk.features, chunk.target
                if bar is not None:
                    bar.update(table.done() - bar.n)

        with contextlib.nullcontext() if bar is None else bar:  # a tqdm of total 0 is falsy
            response = client.train(
                args.model,
                chunks=pairs(),
                kind=args.kind,
                solver=args.solver,
                feature_names=table.feature_names,
                promotion_gate=args.promotion_gate,
                # The absolute path: the version's lineage outlives this working directory.
                source=lineage_source(args, "regserve train of ", os.path.abspath(args.file)),
                **_train_options(args),
            )
    if _json(args):
        print_json(response)
    else:
        print_trained(response)
    return 0


def cmd_predict(args) -> int:
    write = write_predictions_json if _json(args) else write_predictions
    with _client(args) as client:
        if args.features is not None:
            X = np.array([args.features])
            write(client.predict(args.model, X, version=args.version, interval=args.interval))
            return 0
        try:
            from regserve.server.datasets.tables import table_columns
        except ImportError as exc:
            print_failure(f"regserve predict reads files with pyarrow: install regserve[files] ({exc})", _json(args))
            return 1
        info = client.model_info(args.model, args.version)
        chosen = _columns_read(args.csv, table_columns(args.csv), info)
        table = _open_table(args, args.csv, None, feature_columns=chosen)
        if table is None:
            return 1
        # Each chunk's answers are printed as they arrive, so a file of any size streams through.
        rows = (chunk.features for chunk in table.chunks)
        try:
            _write_batches(client, args, info, rows, write)
        except VersionFeaturesDiffer as exc:
            raise InvalidInput(
                f"{exc} (--version)",
                reason="VERSION_FEATURES_DIFFER",
                violations=[("version", f"name one version, such as {info.version}")],
            ) from None
    return 0


def _write_batches(client: RegressionClient, args, info: types_pb2.ModelVersion, rows, write) -> None:
    """BatchPredict ``rows``, read for the version ``info``, writing each chunk's answers as they arrive.

    A traffic split may answer with another version than ModelInfo described: the client library's
    checks refuse one that reads other features (VersionFeaturesDiffer).
    """
    answered = False
    try:
        for prediction in client.iter_batch_predict(args.model, rows, version=args.version, interval=args.interval):
            if not answered and prediction.version != info.version:
                same_features(info, client.model_info(args.model, prediction.version))
            answered = True
            write(prediction)
    except InvalidArgument as exc:
        same_feature_count(exc, info)
        raise


def _columns_read(path: str, columns: list[str], info: types_pb2.ModelVersion) -> list[str] | None:
    """The columns of the file at ``path`` to send, in the model's order; None to send every column by position.

    The model's features are read by name when the file has them all (other columns, such as
    the target, are left out).  A model whose names are x0, x1, ... (it was trained without
    names) takes the columns by position when the file lacks them; any other model is
    refused with InvalidInput naming the features the file lacks.
    """
    names = list(info.feature_names)
    missing = [name for name in names if name not in columns]
    if not missing:
        return names
    if names == [f"x{j}" for j in range(len(names))]:
        return None
    raise InvalidInput(
        f"{path} has no column {', '.join(repr(name) for name in missing)} for {info.model} {info.version}, "
        f"which reads the columns {', '.join(names)} by name; the file's columns are {', '.join(columns)}",
        reason="MISSING_FEATURE_COLUMNS",
        violations=[("csv", f"lacks the model's feature {name}") for name in missing],
        metadata={"missing": ",".join(missing), "columns": ",".join(columns)},
    )


def cmd_info(args) -> int:
    with _client(args) as client:
        version = client.model_info(args.model, args.version, confidence_level=args.confidence_level)
    if _json(args):
        print_json(regression_service_pb2.ModelInfoResponse(model_version=version))
    else:
        print_model_info(version)
    return 0


def cmd_health(args) -> int:
    with _client(args) as client:
        try:
            status = client.health(args.service)
        except NotFound as exc:
            # The health service says NOT_FOUND for a name it was never told of, with no message of its own.
            known = ", ".join(SERVICE_NAMES)
            raise NotFound(
                exc.code,
                f"the server reports no health for service {args.service!r}; give one of {known}, "
                "or no --service for the whole server",
                exc.reason,
                exc.metadata,
                exc.field_violations,
                exc.retry_after,
                exc.request_id,
            ) from None
    if _json(args):
        print_json(health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.ServingStatus.Value(status)))
    else:
        print(status)
    return 0 if status == "SERVING" else 1


def cmd_models(args) -> int:
    with _admin_client(args) as admin:
        states = admin.list_models()
    if _json(args):
        print_json(model_service_pb2.ListModelsResponse(models=states))
    else:
        print_states(states)
    return 0


def cmd_versions(args) -> int:
    with _admin_client(args) as admin:
        versions = admin.list_versions(args.model)
    if _json(args):
        print_json(model_service_pb2.ListVersionsResponse(versions=versions))
    else:
        print_versions(versions)
    return 0


def cmd_status(args) -> int:
    with _admin_client(args) as admin:
        response = admin.status_response(args.model)
    if _json(args):
        print_json(response)
    else:
        print_statuses(response.models, response.replica)
    return 0


def _change(args, call) -> int:
    """Run one lifecycle change and print the model's state after it (as ``{"state": ...}`` in JSON)."""
    with _admin_client(args) as admin:
        state = call(admin)
    if _json(args):
        # Every lifecycle method answers a message whose one field is this state.
        print_json(model_service_pb2.PromoteVersionResponse(state=state))
    else:
        print_states([state])
    return 0


def cmd_promote(args) -> int:
    return _change(args, lambda admin: admin.promote(args.model, args.version, args.reason))


def cmd_rollback(args) -> int:
    return _change(args, lambda admin: admin.rollback(args.model, args.reason))


def cmd_freeze(args) -> int:
    return _change(args, lambda admin: admin.freeze(args.model, args.version, args.reason))


def cmd_unfreeze(args) -> int:
    return _change(args, lambda admin: admin.unfreeze(args.model, args.version, args.reason))


def cmd_delete(args) -> int:
    return _change(args, lambda admin: admin.delete_version(args.model, args.version, args.reason))


def parse_weights(pairs: list[str]) -> dict[str, float]:
    """``["v1=90", "v2=10"]`` as ``{"v1": 90.0, "v2": 10.0}``; ValueError names the first malformed pair."""
    weights = {}
    for pair in pairs:
        version, _, weight = pair.partition("=")
        try:
            weights[version] = float(weight)
        except ValueError:
            version = ""
        if not version:
            raise ValueError(f"{pair!r} is not VERSION=WEIGHT")
    return weights


def cmd_split(args) -> int:
    if args.clear == bool(args.weights):
        print_failure("give VERSION=WEIGHT pairs or --clear, not both nor neither", _json(args))
        return 2
    try:
        weights = {} if args.clear else parse_weights(args.weights)
    except ValueError as exc:
        print_failure(exc, _json(args))
        return 2
    return _change(args, lambda admin: admin.set_split(args.model, weights, args.reason))
