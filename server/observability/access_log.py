"""The JSON access log: one line per finished call, apart from the text log.

``configure_access_log`` gives the ``regserve.access`` logger an ``AccessLogWriter``,
which writes lines from a background thread (a ``BatchWorker``) in pieces that stay
whole on a pipe shared by several worker processes.  The edge asks ``access_writer``
for it, to hand over finished lines without building log records.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

from regserve.server.observability.batching import BatchWorker

__all__ = ["ACCESS_LOGGER", "AccessLogWriter", "access_writer", "configure_access_log"]

ACCESS_LOGGER = "regserve.access"
"""The logger that writes one JSON line per request."""
_ACCESS = logging.getLogger(ACCESS_LOGGER)


class AccessLogWriter(logging.Handler):
    """Writes access-log lines to a stream in batches, from a background thread (a ``BatchWorker``).

    A finished line is queued (``write_line``, or ``emit`` for records that come
    through the logging module) and the worker joins the lines and writes them in
    pieces of at most 4 KiB (atomic on a pipe shared by workers); the edge, which
    batches its lines already, writes them at once with ``write_lines``.
    ``flush`` and ``close`` (called by ``logging.shutdown`` at exit) write what is
    pending; a process killed outright loses at most the last interval's lines.
    A stream that fails (closed pipe, closed file) never fails the call that logs.
    """

    def __init__(self, stream, interval: float = 0.1, max_pending: int = 100_000) -> None:
        super().__init__()
        self.stream = stream
        self._lines = BatchWorker(
            self._write,
            name="regserve-access-log",
            failure="the access log could not be written",
            interval=interval,
            max_pending=max_pending,
        )

    def write_line(self, line: str) -> None:
        """Queue one finished line (without its newline)."""
        self._lines.add(line)

    def write_lines(self, lines: list[str]) -> None:
        """Write finished lines now, after any still queued: for a caller that batches already."""
        self._lines.add_all(lines)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)

    def flush(self) -> None:
        self._lines.flush()

    def _write(self, lines: list[str]) -> None:
        for chunk in _chunks(lines):
            self.stream.write(chunk)
            self.stream.flush()

    def close(self) -> None:
        try:
            self._lines.close()
        finally:
            super().close()


_PIPE_BUF = 4096
"""Writes up to this size to a pipe are atomic: lines of workers sharing a stderr pipe never mix."""


def _chunks(lines: list[str]) -> Iterator[str]:
    """``lines`` joined with newlines into pieces of at most ``_PIPE_BUF`` UTF-8 bytes (a longer line alone)."""
    piece: list[str] = []
    size = 0
    for line in lines:
        length = len(line) + 1 if line.isascii() else len(line.encode("utf-8", "replace")) + 1
        if piece and size + length > _PIPE_BUF:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line + "\n")
        size += length
    if piece:
        yield "".join(piece)


_access_writer: AccessLogWriter | None = None


def access_writer() -> AccessLogWriter | None:
    """The writer installed by ``configure_access_log``, when it is the access logger's only handler.

    The edge then hands it finished lines directly, skipping the
    logging module's record building; any other logging set-up gets records.
    """
    writer = _access_writer
    if writer is None or _ACCESS.handlers != [writer]:
        return None
    return writer


class _JsonLineFormatter(logging.Formatter):
    # The access logger's messages are JSON documents already; write them as they are, one per line.
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def configure_access_log(stream=None, interval: float = 0.1) -> AccessLogWriter:
    """Write the access log as bare JSON lines to ``stream`` (stderr), apart from the text log.

    Lines are written in batches by an ``AccessLogWriter``, at most ``interval``
    seconds after their call ended.
    """
    global _access_writer
    access = logging.getLogger(ACCESS_LOGGER)
    if _access_writer is not None and _access_writer in access.handlers:
        return _access_writer
    handler = AccessLogWriter(stream or sys.stderr, interval)
    handler.setFormatter(_JsonLineFormatter())
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    _access_writer = handler
    return handler
