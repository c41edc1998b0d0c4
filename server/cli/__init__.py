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
from regserve.server.cli.parser import build_parser, wants_json
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


def main(argv: list[str] | None = None) -> int:
    """Run ``regserve`` with ``argv`` (``sys.argv[1:]`` when None); return the exit status."""
    argv = _attach_negative_rows(sys.argv[1:] if argv is None else argv)
    args = build_parser(errors_as_json=wants_json(argv)).parse_args(argv)
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
