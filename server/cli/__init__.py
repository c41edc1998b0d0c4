"""The ``regserve`` command line: ``main`` parses the arguments and runs one command.

parser.py           the subcommands and their flags
commands.py         the client commands (train, predict, info, health, the model lifecycle)
server_commands.py  serve and gateway
render.py           what the commands print, as text or (``--output json``) JSON
report.py           report: a version's HTML page (``regserve.server.report``, matplotlib loaded only then)
importing.py        import: a fitted scikit-learn model (skops) or JSON coefficients, stored with CreateVersion
dask_training.py    train --dask: the training passes on a Dask cluster, the model stored with CreateVersion
"""

from __future__ import annotations

import logging
import os
import re
import sys

from regserve.client import RegserveError
from regserve.server.cli.parser import build_parser, command_names, wants_json
from regserve.server.cli.render import print_failure
from regserve.server.errors import InvalidInput

__all__ = ["main"]


_NEGATIVE_VALUE = re.compile(r"-\.?\d")
_ROW_OPTIONS = frozenset({"--features"})
"""Options whose value is a row of numbers, which may begin with a minus sign."""


def _attach_negative_rows(argv: list[str]) -> list[str]:
    """``--features -1.5,2`` as ``--features=-1.5,2``: argparse takes a value that begins with '-' for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        item = argv[i]
        if item == "--":
            return out + argv[i:]
        if item in _ROW_OPTIONS and i + 1 < len(argv) and _NEGATIVE_VALUE.match(argv[i + 1]):
            out.append(f"{item}={argv[i + 1]}")
            i += 2
        else:
            out.append(item)
            i += 1
    return out


_VALUED_FLAGS = frozenset(
    {"--server", "--timeout", "--token", "--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name", "-o", "--output"}
)
"""The client commands' connection flags that take a value, which may stand before the command."""


def _command_first(argv: list[str], commands: set[str]) -> list[str]:
    """``--server H:P info ...`` as ``info --server H:P ...``: the flags belong to the subcommand, which
    reads them wherever they stand after it; before it argparse would take ``H:P`` for the command."""
    if not argv or not argv[0].startswith("-") or argv[0] in ("-h", "--help"):
        return argv
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _VALUED_FLAGS else 1  # a flag's value is never the command
    if i < len(argv) and argv[i] in commands:
        return [argv[i], *argv[:i], *argv[i + 1 :]]
    return argv


def main(argv: list[str] | None = None) -> int:
    """Run ``regserve`` with ``argv`` (``sys.argv[1:]`` when None); return the exit status."""
    argv = _attach_negative_rows(sys.argv[1:] if argv is None else argv)
    parser = build_parser(errors_as_json=wants_json(argv))
    argv = _command_first(argv, command_names(parser))
    args = parser.parse_args(argv)
    as_json = getattr(args, "output", "text") == "json"
    # A data file error while streaming cancels the call and is reported below; grpc's
    # own log of the cancelled request iterator would only repeat it as a traceback.
    logging.getLogger("grpc._channel").setLevel(logging.CRITICAL)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (``regserve predict ... | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RegserveError as exc:
        print_failure(exc, as_json)
        return 1
    except (InvalidInput, OSError, ValueError) as exc:  # a malformed data file, a missing file, bad settings
        print_failure(exc, as_json)
        return 1
