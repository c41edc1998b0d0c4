"""The ``regserve`` command line: serve, train, predict, info."""

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


def _client(args):
    from regserve.client import RegressionClient

    return RegressionClient(args.server, timeout=args.timeout)


def cmd_serve(args) -> int:
    from regserve.server.app import serve

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

    from regserve.server.csvsource import read_csv_chunks

    path = Path(args.file)
    raw = path.open("rb")
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text, _client(args) as client:
        names, chunks = read_csv_chunks(text, args.target, args.chunk_rows)
        bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"train {args.model}", file=sys.stderr)

        def pairs():
            for chunk in chunks:
                target = chunk.target if args.kind == "logistic" else chunk.target.astype(np.float64)
                yield chunk.features, target
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


def cmd_predict(args) -> int:
    with _client(args) as client:
        if args.features is not None:
            X = np.array([[float(v) for v in args.features.split(",")]])
            predictions = [client.predict(args.model, X, version=args.version)]
        else:
            from regserve.server.csvsource import read_csv_chunks

            with open(args.csv, newline="", encoding="utf-8") as stream:
                _, chunks = read_csv_chunks(stream, None, args.chunk_rows)
                predictions = list(
                    client.iter_batch_predict(args.model, (c.features for c in chunks), version=args.version)
                )
    out = sys.stdout
    for prediction in predictions:
        values = prediction.labels if prediction.labels is not None else prediction.values.tolist()
        out.write("".join(f"{v}\n" if isinstance(v, str) else f"{v!r}\n" for v in values))
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
    if not rows:
        return
    widths = [max(len(r[i]) for r in [("split", "metric", "value"), *rows]) for i in range(3)]
    for row in [("split", "metric", "value"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


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
        if model:
            sub.add_argument("--model", required=True, help="model name")
        return sub

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A CSV error while streaming cancels the call and is reported below; grpc's
    # own log of the cancelled request iterator would only repeat it as a traceback.
    logging.getLogger("grpc._channel").setLevel(logging.CRITICAL)
    from regserve.client import RegserveError

    try:
        return args.func(args)
    except RegserveError as exc:
        print(f"regserve: {exc.message} [{exc.code.name}{', ' + exc.reason if exc.reason else ''}]", file=sys.stderr)
        for field, description in exc.field_violations:
            print(f"  {field}: {description}", file=sys.stderr)
        return 1
    except Exception as exc:  # the domain's InvalidInput from reading a CSV, OSError, ...
        from regserve.server.errors import RegserveError as DomainError

        if isinstance(exc, DomainError | OSError):
            print(f"regserve: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
