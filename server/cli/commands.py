"""The ``regserve`` command line: serve, train, predict, info, and the model lifecycle.

Lifecycle commands: models, versions, promote, rollback, freeze, unfreeze, split,
delete, status; each prints a readable table of the model's state after the call.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from regserve.server.config import Settings, add_arguments

__all__ = ["main"]

DEFAULT_SERVER = os.environ.get("REGSERVE_SERVER", "127.0.0.1:50051")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _connection(args) -> dict:
    """The connection options shared by every client command."""
    return {
        "timeout": args.timeout,
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "token": args.token,
    }


def _client(args):
    from regserve.client import RegressionClient

    return RegressionClient(args.server, **_connection(args))


def cmd_gateway(args) -> int:
    from regserve.client import tls_credentials
    from regserve.server.gateway.app import run_gateway

    _configure_logging(args.log_level)
    credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca or args.tls_cert else None
    run_gateway(
        args.host,
        args.port,
        args.upstream,
        credentials=credentials,
        log_level=args.log_level,
        grace_period=args.grace_period,
        channels=args.channels,
    )
    return 0


def _admin_client(args):
    from regserve.client import ModelAdminClient

    return ModelAdminClient(args.server, **_connection(args))


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Print ``rows`` under ``header`` in left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_serve(args) -> int:
    from regserve.server.runtime.application import serve

    settings = Settings.from_args(args)
    _configure_logging(settings.log_level)
    return serve(settings)


def _train_options(args) -> dict:
    options = {
        "alpha": args.alpha,
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


def cmd_train(args) -> int:
    from tqdm import tqdm

    from regserve.server.datasets.csv_reader import read_csv_chunks

    path = Path(args.file)
    raw = path.open("rb")
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text, _client(args) as client:
        names, chunks = read_csv_chunks(text, args.target, args.chunk_rows)
        bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"train {args.model}", file=sys.stderr)

        def pairs():
            for chunk in chunks:
                yield chunk.features, chunk.targets(classifier=args.kind == "logistic")
                bar.update(raw.tell() - bar.n)

        with bar:
            response = client.train(
                args.model,
                chunks=pairs(),
                kind=args.kind,
                solver=args.solver,
                feature_names=names,
                promotion_gate=args.promotion_gate,
                **_train_options(args),
            )
    version = response.model_version
    state = "serving" if response.promoted else "not promoted"
    print(
        f"{version.model} {version.version}: {version.num_samples} rows, {state}"
        + (f" ({response.promotion_reason})" if response.promotion_reason else "")
    )
    _print_metrics(version)
    return 0


def _write_predictions(prediction) -> None:
    values = prediction.labels if prediction.labels is not None else prediction.values.tolist()
    sys.stdout.write("".join(f"{v}\n" if isinstance(v, str) else f"{v!r}\n" for v in values))


def cmd_predict(args) -> int:
    with _client(args) as client:
        if args.features is not None:
            X = np.array([[float(v) for v in args.features.split(",")]])
            _write_predictions(client.predict(args.model, X, version=args.version))
            return 0
        from regserve.server.datasets.csv_reader import read_csv_chunks

        # Each chunk's answers are printed as they arrive, so a file of any size streams through.
        with open(args.csv, newline="", encoding="utf-8") as stream:
            _, chunks = read_csv_chunks(stream, None, args.chunk_rows)
            for prediction in client.iter_batch_predict(args.model, (c.features for c in chunks), version=args.version):
                _write_predictions(prediction)
    return 0


def _print_metrics(version) -> None:
    rows = []
    for split, evaluation in (("training", version.training), ("validation", version.validation)):
        for name, value in sorted(evaluation.metrics.items()):
            rows.append((split, name, f"{value:.6g}"))
    for name, value in sorted(version.cross_validation.mean.items()):
        rows.append(
            (
                f"cv ({version.cross_validation.folds} folds)",
                name,
                f"{value:.6g} ± {version.cross_validation.std[name]:.2g}",
            )
        )
    if rows:
        _print_table(("split", "metric", "value"), rows)
    for split, evaluation in (("training", version.training), ("validation", version.validation)):
        if not evaluation.per_class:
            continue
        print(f"\n{split}: per class")
        _print_table(
            ("class", "precision", "recall", "f1", "support"),
            [
                (c.label, f"{c.precision:.4g}", f"{c.recall:.4g}", f"{c.f1:.4g}", str(c.support))
                for c in evaluation.per_class
            ],
        )
        matrix = evaluation.confusion_matrix
        if matrix.num_columns:
            labels = [c.label for c in evaluation.per_class]
            counts = [int(v) for v in matrix.values]
            width = matrix.num_columns
            print(f"\n{split}: confusion matrix (rows: true class, columns: predicted)")
            _print_table(
                ("", *labels),
                [(labels[i], *(str(n) for n in counts[i * width : (i + 1) * width])) for i in range(len(labels))],
            )


def cmd_info(args) -> int:
    from google.protobuf import json_format

    from regserve.v1 import types_pb2

    with _client(args) as client:
        version = client.model_info(args.model, args.version)
    if args.json:
        print(json_format.MessageToJson(version))
        return 0
    kind = types_pb2.ModelKind.Name(version.kind).removeprefix("MODEL_KIND_").lower()
    state = types_pb2.ServingState.Name(version.serving_state).removeprefix("SERVING_STATE_").lower()
    print(f"model       {version.model} {version.version} ({kind}, {state})")
    print(f"created     {version.create_time.ToJsonString()} by regserve {version.regserve_version}")
    print(f"features    {', '.join(version.feature_names)}")
    if version.classes:
        print(f"classes     {', '.join(version.classes)}")
    print(f"rows        {version.num_samples} ({version.num_train} train, {version.num_validation} validation)")
    print(f"data sha256 {version.data_fingerprint}")
    print(f"solver      {types_pb2.Solver.Name(version.solver_report.solver).removeprefix('SOLVER_').lower()}")
    print(f"intercepts  {json.dumps(list(version.intercepts))}")
    _print_metrics(version)
    return 0


def cmd_health(args) -> int:
    with _client(args) as client:
        status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def _state_name(value: int) -> str:
    from regserve.v1 import types_pb2

    return types_pb2.ServingState.Name(value).removeprefix("SERVING_STATE_").lower()


def _split_text(split) -> str:
    from regserve.server.registry.disk import version_number

    return ", ".join(f"{v}={w:g}" for v, w in sorted(split.items(), key=lambda item: version_number(item[0])))


def _print_states(states) -> None:
    rows = [
        (
            s.model,
            s.serving_version or "-",
            _split_text(s.traffic_split) or "-",
            ", ".join(s.frozen_versions) or "-",
            ", ".join(s.versions),
            str(s.generation),
        )
        for s in states
    ]
    _print_table(("model", "serving", "split", "frozen", "versions", "generation"), rows)


def cmd_models(args) -> int:
    with _admin_client(args) as admin:
        _print_states(admin.list_models())
    return 0


def cmd_versions(args) -> int:
    with _admin_client(args) as admin:
        versions = admin.list_versions(args.model)
    rows = []
    for v in versions:
        validation = ", ".join(
            f"{k}={val:.4g}" for k, val in sorted(v.validation.metrics.items()) if k in ("mse", "accuracy")
        )
        created = v.create_time.ToJsonString() if v.create_time.seconds else "-"
        rows.append(
            (v.version, _state_name(v.serving_state), str(v.num_samples), validation or "-", created, v.checksum[:12])
        )
    _print_table(("version", "state", "rows", "validation", "created", "sha256"), rows)
    return 0


def _change(args, call) -> int:
    """Run one lifecycle change and print the model's state after it."""
    with _admin_client(args) as admin:
        _print_states([call(admin)])
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


def _weights(pairs: list[str]) -> dict[str, float]:
    weights = {}
    for pair in pairs:
        version, _, weight = pair.partition("=")
        try:
            weights[version] = float(weight)
        except ValueError:
            version = ""
        if not version:
            raise argparse.ArgumentTypeError(f"{pair!r} is not VERSION=WEIGHT")
    return weights


def cmd_split(args) -> int:
    if args.clear == bool(args.weights):
        print("regserve: give VERSION=WEIGHT pairs or --clear, not both nor neither", file=sys.stderr)
        return 2
    try:
        weights = {} if args.clear else _weights(args.weights)
    except argparse.ArgumentTypeError as exc:
        print(f"regserve: {exc}", file=sys.stderr)
        return 2
    return _change(args, lambda admin: admin.set_split(args.model, weights, args.reason))


def cmd_status(args) -> int:
    with _admin_client(args) as admin:
        statuses = admin.status(args.model)
    for index, status in enumerate(statuses):
        if index:
            print()
        state = status.state
        print(f"model {state.model}: serving {state.serving_version or '-'}, generation {state.generation}")
        if state.traffic_split:
            print(f"split {_split_text(state.traffic_split)}")
        rows = [
            (
                v.version,
                _state_name(v.serving_state),
                str(v.requests),
                str(v.errors),
                str(v.rows),
                f"{v.latency_mean_ms:.3f}",
                f"{v.latency_p50_ms:.3f}",
                f"{v.latency_p99_ms:.3f}",
            )
            for v in status.versions
        ]
        _print_table(("version", "state", "requests", "errors", "rows", "mean ms", "p50 ms", "p99 ms"), rows)
        if status.history:
            print("history")
            history = [
                (s.time.ToJsonString(), s.action, s.from_version or "-", s.to_version or "-", s.reason)
                for s in status.history
            ]
            _print_table(("when", "action", "from", "to", "reason"), history)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regserve", description="Train, version and serve NumPy linear models over gRPC."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server")
    add_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    def client_command(name: str, help_text: str, model: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--server", default=DEFAULT_SERVER, help="host:port of the server (env REGSERVE_SERVER)")
        sub.add_argument("--timeout", type=float, default=600.0, help="deadline of the call in seconds")
        sub.add_argument(
            "--token",
            default=os.environ.get("REGSERVE_TOKEN") or None,
            help="bearer token for a server that checks tokens (env REGSERVE_TOKEN)",
        )
        sub.add_argument("--tls-ca", help="PEM file of the CA that signed the server's certificate (turns TLS on)")
        sub.add_argument("--tls-cert", help="PEM certificate of this client, for mutual TLS")
        sub.add_argument("--tls-key", help="PEM private key of this client, for mutual TLS")
        if model:
            sub.add_argument("--model", required=True, help="model name")
        return sub

    gateway = commands.add_parser("gateway", help="serve the REST/JSON gateway in front of a regserve gRPC server")
    gateway.add_argument("--upstream", default=DEFAULT_SERVER, help="host:port of the gRPC server (REGSERVE_SERVER)")
    gateway.add_argument("--host", default="127.0.0.1", help="address to bind")
    gateway.add_argument("--port", type=int, default=8080, help="HTTP port")
    gateway.add_argument("--tls-ca", help="PEM file of the CA that signed the upstream's certificate (turns TLS on)")
    gateway.add_argument("--tls-cert", help="PEM certificate of the gateway, for mutual TLS to the upstream")
    gateway.add_argument("--tls-key", help="PEM private key of the gateway, for mutual TLS to the upstream")
    gateway.add_argument("--grace-period", type=float, default=10.0, help="seconds open HTTP calls get on SIGTERM")
    gateway.add_argument(
        "--channels", type=int, default=1, help="connections to the upstream, used in turn (for --workers servers)"
    )
    gateway.add_argument("--log-level", default="INFO")
    gateway.set_defaults(func=cmd_gateway)

    train = client_command("train", "train a new version of a model from a CSV file")
    train.add_argument("file", help="CSV file with a header line")
    train.add_argument("--target", required=True, help="the column to predict")
    train.add_argument("--kind", choices=("linear", "ridge", "logistic"), default="linear")
    train.add_argument("--solver", choices=("auto", "closed_form", "gd", "sgd", "newton"), default="auto")
    train.add_argument("--alpha", type=float, help="L2 penalty strength")
    train.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--validation-fraction", type=float)
    train.add_argument("--cv", type=int, help="number of cross-validation folds")
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--promote",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve the new version at once (default: yes)",
    )
    train.add_argument(
        "--promotion-gate",
        action="store_true",
        help="promote only if the validation metric is no worse than the serving version's",
    )
    train.add_argument("--chunk-rows", type=int, default=65536, help="rows per streamed chunk")
    train.set_defaults(func=cmd_train)

    predict = client_command("predict", "print one prediction per line")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="CSV file of feature rows with a header line")
    source.add_argument("--features", help="one row as comma-separated numbers")
    predict.add_argument("--version", default="", help="a version to use instead of the serving one")
    predict.add_argument("--chunk-rows", type=int, default=10000)
    predict.set_defaults(func=cmd_predict)

    info = client_command("info", "describe a model version")
    info.add_argument("--version", default="")
    info.add_argument("--json", action="store_true", help="print the ModelVersion as JSON")
    info.set_defaults(func=cmd_info)

    check = client_command(
        "health", "exit 0 when the server reports SERVING (for container health checks)", model=False
    )
    check.add_argument("--service", default="", help="a service name; the whole server when empty")
    check.set_defaults(func=cmd_health, timeout=3.0)

    _add_lifecycle_commands(client_command)
    return parser


def _add_lifecycle_commands(client_command) -> None:
    client_command("models", "list the models with their serving state", model=False).set_defaults(func=cmd_models)
    client_command("versions", "list the versions of a model").set_defaults(func=cmd_versions)

    def change(name: str, help_text: str, func, version: bool = True) -> argparse.ArgumentParser:
        sub = client_command(name, help_text)
        if version:
            sub.add_argument("version", help="the version, such as v2")
        sub.add_argument("--reason", default="", help="why, recorded in the switch history")
        sub.set_defaults(func=func)
        return sub

    change("promote", "serve a version, after checking its checksum and probe", cmd_promote)
    change("rollback", "serve the previous version again", cmd_rollback, version=False)
    change("freeze", "exclude a version from routing and refuse requests naming it", cmd_freeze)
    change("unfreeze", "make a frozen version usable again", cmd_unfreeze)
    change("delete", "delete a version that is neither serving nor in the split", cmd_delete)
    split = change("split", "route traffic between versions by weight", cmd_split, version=False)
    split.add_argument("weights", nargs="*", metavar="VERSION=WEIGHT", help="relative weights, such as v1=90 v2=10")
    split.add_argument("--clear", action="store_true", help="end the split; the serving version answers again")

    status = client_command("status", "traffic, errors, latency and switch history per model and version", model=False)
    status.add_argument("--model", default="", help="one model; every model when omitted")
    status.set_defaults(func=cmd_status)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A CSV error while streaming cancels the call and is reported below; grpc's
    # own log of the cancelled request iterator would only repeat it as a traceback.
    logging.getLogger("grpc._channel").setLevel(logging.CRITICAL)
    from regserve.client import RegserveError

    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (``regserve predict ... | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RegserveError as exc:
        print(f"regserve: {exc.message} [{exc.code.name}{', ' + exc.reason if exc.reason else ''}]", file=sys.stderr)
        for field, description in exc.field_violations:
            print(f"  {field}: {description}", file=sys.stderr)
        return 1
    except Exception as exc:  # the domain's InvalidInput from reading a CSV, OSError, bad settings
        from regserve.server.errors import RegserveError as DomainError

        if isinstance(exc, DomainError | OSError | ValueError):
            print(f"regserve: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
