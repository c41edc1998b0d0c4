"""The ``regserve`` argument parser: each subcommand's flags, and the function that runs it."""

from __future__ import annotations

import argparse
import functools
import itertools
import os
from collections.abc import Mapping, Sequence
from typing import NoReturn

from regserve.server.cli import commands
from regserve.server.cli.importing import FORMATS, cmd_import
from regserve.server.cli.render import print_error_json
from regserve.server.cli.report import cmd_report
from regserve.server.cli.server_commands import cmd_gateway, cmd_serve
from regserve.server.config import Settings, add_arguments
from regserve.server.errors import InvalidInput
from regserve.v1 import types_pb2

# The model kinds the contract names, as the client library spells them: MODEL_KIND_RIDGE is "ridge".
_KINDS = tuple(
    name.removeprefix("MODEL_KIND_").lower() for name in types_pb2.ModelKind.keys() if name != "MODEL_KIND_UNSPECIFIED"
)

__all__ = ["DEFAULT_SERVER", "OUTPUTS", "build_parser", "health_defaults", "wants_json"]

DEFAULT_SERVER = os.environ.get("REGSERVE_SERVER", "127.0.0.1:50051")

OUTPUTS = ("text", "json")
"""The choices of ``--output``: tables and lines for people, or JSON for scripts."""


def _counted_int(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, not {value}")
    return value


def _positive_int(text: str) -> int:
    return _counted_int(text, 1)


def _non_negative_int(text: str) -> int:
    return _counted_int(text, 0)


def _names(text: str) -> list[str]:
    """A comma-separated list of names, each stripped; refused when empty or with an empty entry
    (``a,,c``, a trailing comma), which would otherwise be dropped unseen."""
    names = [name.strip() for name in text.split(",")]
    if not any(names):
        raise argparse.ArgumentTypeError("names nothing: give comma-separated names, or leave the flag out")
    if "" in names:
        raise argparse.ArgumentTypeError(f"has an empty name at position {names.index('') + 1}: {text!r}")
    return names


def _row(text: str) -> list[float]:
    """One row of comma-separated numbers."""
    row = []
    for position, cell in enumerate(text.split(","), start=1):
        try:
            row.append(float(cell))
        except ValueError:
            raise argparse.ArgumentTypeError(f"value {position}, {cell.strip()!r}, is not a number") from None
    return row


def wants_json(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for ``--output json`` (``-o json``): read before parsing, so usage errors are JSON too."""
    for flag, value in itertools.pairwise([*argv, ""]):
        if flag in ("--output=json", "-ojson") or (flag in ("--output", "-o") and value == "json"):
            return True
    return False


class _JsonErrorParser(argparse.ArgumentParser):
    """An ArgumentParser that reports a usage error as the JSON error object (reason ``USAGE``, exit 2), for
    ``--output json``."""

    def error(self, message: str) -> NoReturn:
        print_error_json(InvalidInput(f"{self.prog}: {message}", reason="USAGE"))
        self.exit(2)


def health_defaults(environ: Mapping[str, str]) -> dict[str, str | None]:
    """Where ``regserve health`` finds the server whose settings are in ``environ`` (a container's HEALTHCHECK).

    The address is REGSERVE_SERVER, else REGSERVE_HOST and REGSERVE_PORT, with a wildcard
    host reached on loopback.  When REGSERVE_TLS_CERT says the port speaks TLS, the check
    trusts exactly that certificate (it calls the server whose certificate it is, so no CA
    is needed), and under mutual TLS (REGSERVE_TLS_CLIENT_CA) presents it as its own with
    REGSERVE_TLS_KEY; REGSERVE_TLS_SERVER_NAME is the name to expect on that certificate
    when it does not name the address called.  Flags given on the command line still win.
    """
    server = environ.get("REGSERVE_SERVER")
    if not server:
        host = environ.get("REGSERVE_HOST", "").strip("[]")
        # A wildcard bind answers on loopback, which a check inside the container can always reach.
        if host in {"", "0.0.0.0", "::"}:
            host = "127.0.0.1"
        server = f"[{host}]:" if ":" in host else f"{host}:"
        server += environ.get("REGSERVE_PORT", "50051")
    cert = environ.get("REGSERVE_TLS_CERT") or None
    mutual = bool(cert and environ.get("REGSERVE_TLS_CLIENT_CA"))
    return {
        "server": server,
        "tls_ca": cert,
        "tls_cert": cert if mutual else None,
        "tls_key": (environ.get("REGSERVE_TLS_KEY") or None) if mutual else None,
        "tls_server_name": environ.get("REGSERVE_TLS_SERVER_NAME") or None,
    }


def command_names(parser: argparse.ArgumentParser) -> set[str]:
    """The subcommands of a parser made by ``build_parser``."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def build_parser(errors_as_json: bool = False) -> argparse.ArgumentParser:
    """The parser of ``regserve``; ``parse_args`` sets ``func``, the command to call with the arguments.

    With ``errors_as_json`` a usage error is printed as the JSON error object (exit status 2 still).
    """
    parser_class = _JsonErrorParser if errors_as_json else argparse.ArgumentParser
    parser = parser_class(prog="regserve", description="Train, version and serve NumPy linear models over gRPC.")
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=parser_class)
    _add_server_commands(subcommands)
    client_command = functools.partial(_add_client_command, subcommands)
    _add_model_commands(client_command)
    _add_lifecycle_commands(client_command)
    imported = client_command("import", "store a fitted scikit-learn model (.skops) or JSON coefficients as a version")
    imported.add_argument("file", help="a .skops file of a LinearRegression, Ridge or LogisticRegression, or a .json")
    imported.add_argument("--format", choices=FORMATS, help="the file's format (default: from its suffix)")
    imported.add_argument(
        "--promote", action=argparse.BooleanOptionalAction, default=None, help="serve it at once (default: yes)"
    )
    imported.add_argument("--promotion-gate", action="store_true", help="promote only if it validates no worse")
    imported.add_argument(
        "--feature-names",
        type=_names,
        help="comma-separated feature names, in column order, in place of the file's (default: the file's; "
        "when it has none, the serving version's if as many)",
    )
    imported.set_defaults(func=cmd_import)
    report = client_command("report", "write a self-contained HTML page of a model version's lineage and plots")
    report.add_argument("--version", default="", help="the version to describe; the serving one when omitted")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.set_defaults(func=cmd_report)
    return parser


def _add_server_commands(subcommands) -> None:
    serve = subcommands.add_parser("serve", help="run the gRPC server")
    add_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    gateway = subcommands.add_parser("gateway", help="serve the REST/JSON gateway in front of a regserve gRPC server")
    gateway.add_argument("--upstream", default=DEFAULT_SERVER, help="host:port of the gRPC server (REGSERVE_SERVER)")
    gateway.add_argument("--host", default="127.0.0.1", help="address to bind")
    gateway.add_argument("--port", type=int, default=8080, help="HTTP port")
    gateway.add_argument("--tls-ca", help="PEM file of the CA that signed the upstream's certificate (turns TLS on)")
    gateway.add_argument("--tls-cert", help="PEM certificate of the gateway, for mutual TLS to the upstream")
    gateway.add_argument("--tls-key", help="PEM private key of the gateway, for mutual TLS to the upstream")
    gateway.add_argument(
        "--grace-seconds",
        type=float,
        default=Settings.grace_seconds,
        help="seconds open HTTP calls get to finish on SIGTERM (default: %(default)s)",
    )
    gateway.add_argument(
        "--channels", type=int, default=1, help="connections to the upstream, used in turn (for --workers servers)"
    )
    _add_gateway_limits(gateway)
    gateway.add_argument("--log-level", default="INFO")
    gateway.set_defaults(func=cmd_gateway)


def _add_gateway_limits(gateway: argparse.ArgumentParser) -> None:
    """The flags of ``regserve gateway`` that bound what clients send; defaults are those of ``regserve serve``."""
    limits = (
        ("--max-message-mb", Settings.max_message_mb, "largest request body, NDJSON line or upstream message, in MiB"),
        ("--header-timeout", Settings.gateway_header_timeout, "seconds a client has to send a request's headers"),
        ("--body-timeout", Settings.gateway_body_timeout, "seconds a body may stall while the gateway waits for it"),
        ("--idle-timeout", Settings.gateway_idle_timeout, "seconds an idle keep-alive connection stays open"),
        ("--max-connections", Settings.gateway_max_connections, "connections held at once; more get 503"),
        (
            "--max-connections-per-peer",
            Settings.gateway_max_connections_per_peer,
            "connections one client host may hold at once (0: no limit); more get 503",
        ),
        ("--max-uploads", Settings.gateway_max_uploads, "NDJSON Train and BatchPredict uploads at once; more get 429"),
    )
    for flag, default, help_text in limits:
        gateway.add_argument(flag, type=type(default), default=default, help=f"{help_text} (default: %(default)s)")


def _add_client_command(subcommands, name: str, help_text: str, model: bool = True) -> argparse.ArgumentParser:
    """A subcommand that calls a server, with the connection flags (and ``--model`` when ``model``)."""
    sub = subcommands.add_parser(name, help=help_text)
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
    sub.add_argument(
        "--tls-server-name",
        help="the name to expect on the server's certificate when it does not name the address called "
        "(health: env REGSERVE_TLS_SERVER_NAME)",
    )
    sub.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default="text",
        help="text for people; json for scripts: the call's response message as JSON, errors as a JSON "
        "object on stderr (default: %(default)s)",
    )
    if model:
        sub.add_argument("--model", required=True, help="model name")
    return sub


def _add_model_commands(client_command) -> None:
    train = client_command("train", "train a new version of a model from a CSV or Parquet file")
    train.add_argument(
        "file", help="a CSV file with a header line, or Parquet: a .parquet file, a directory or a quoted glob"
    )
    train.add_argument("--target", required=True, help="the column to predict")
    train.add_argument("--kind", choices=_KINDS, default="linear")
    train.add_argument("--solver", choices=("auto", "closed_form", "gd", "sgd", "newton"), default="auto")
    train.add_argument(
        "--alpha",
        type=float,
        help="L2 penalty strength (0: unpenalised; ridge: scikit-learn Ridge's alpha; logistic: on the mean log-loss)",
    )
    train.add_argument(
        "--C",
        dest="c",
        type=float,
        help="logistic: scikit-learn's C, the inverse L2 strength; 1 when neither --C nor --alpha is given",
    )
    train.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--epochs", type=_positive_int)
    train.add_argument("--batch-size", type=_positive_int)
    train.add_argument(
        "--validation-fraction",
        type=float,
        help="each row's chance of being held out for validation (by a hash of its index and --seed)",
    )
    train.add_argument("--cv", type=_non_negative_int, help="number of cross-validation folds")
    train.add_argument("--seed", type=_non_negative_int)
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
    train.add_argument("--chunk-rows", type=_positive_int, default=65536, help="rows per streamed chunk")
    train.add_argument(
        "--feature-columns",
        type=_names,
        help="comma-separated feature columns, the only ones read besides the target (default: all the others)",
    )
    train.add_argument(
        "--source",
        help="where the rows came from, stored as the version's source (default: regserve train of the file's "
        "absolute path); '' for none",
    )
    train.add_argument(
        "--dask",
        metavar="SCHEDULER",
        help="train on a Dask cluster (the dask extra): a scheduler's address, or local[:N] for N local workers; "
        "the workers read the files and the model is stored with CreateVersion",
    )
    train.set_defaults(func=commands.cmd_train)

    predict = client_command("predict", "print one prediction per line")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="CSV file of feature rows with a header line")
    source.add_argument("--features", type=_row, help="one row as comma-separated numbers")
    predict.add_argument("--version", default="", help="a version to use instead of the serving one")
    predict.add_argument("--chunk-rows", type=_positive_int, default=10000)
    predict.add_argument(
        "--interval",
        type=float,
        default=0.0,
        metavar="LEVEL",
        help="also print each row's intervals at this level, strictly between 0 and 1 (e.g. 0.95): for linear "
        "regression the mean's and a new observation's, for binary logistic the second class's probability's",
    )
    predict.set_defaults(func=commands.cmd_predict)

    info = client_command("info", "describe a model version")
    info.add_argument("--version", default="", help="a version to describe instead of the serving one")
    info.add_argument(
        "--confidence-level",
        type=float,
        default=0.0,
        help="the level of the coefficients' confidence intervals, strictly between 0 and 1 (default 0.95)",
    )
    info.set_defaults(func=commands.cmd_info)

    check = client_command(
        "health",
        "exit 0 when the server reports SERVING (for container health checks); run beside the server, it "
        "finds it from the server's own REGSERVE_HOST, REGSERVE_PORT and REGSERVE_TLS_* settings",
        model=False,
    )
    check.add_argument("--service", default="", help="a service name; the whole server when empty")
    check.set_defaults(func=commands.cmd_health, timeout=3.0, **health_defaults(os.environ))


def _add_lifecycle_commands(client_command) -> None:
    client_command("models", "list the models with their serving state", model=False).set_defaults(
        func=commands.cmd_models
    )
    client_command("versions", "list the versions of a model").set_defaults(func=commands.cmd_versions)

    def change(name: str, help_text: str, func, version: bool = True) -> argparse.ArgumentParser:
        sub = client_command(name, help_text)
        if version:
            sub.add_argument("version", help="the version, such as v2")
        sub.add_argument("--reason", default="", help="why, recorded in the switch history")
        sub.set_defaults(func=func)
        return sub

    change("promote", "serve a version, after checking its checksum and probe", commands.cmd_promote)
    change("rollback", "serve the previous version again", commands.cmd_rollback, version=False)
    change("freeze", "exclude a version from routing and refuse requests naming it", commands.cmd_freeze)
    change("unfreeze", "make a frozen version usable again", commands.cmd_unfreeze)
    change("delete", "delete a version that is neither serving nor in the split", commands.cmd_delete)
    split = change("split", "route traffic between versions by weight", commands.cmd_split, version=False)
    split.add_argument("weights", nargs="*", metavar="VERSION=WEIGHT", help="relative weights, such as v1=90 v2=10")
    split.add_argument("--clear", action="store_true", help="end the split; the serving version answers again")

    status = client_command("status", "traffic, errors, latency and switch history per model and version", model=False)
    status.add_argument("--model", default="", help="one model; every model when omitted")
    status.set_defaults(func=commands.cmd_status)
