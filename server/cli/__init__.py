"""The ``regserve`` command line."""

from regserve.server.cli.commands import main

__all__ = ["main"]
