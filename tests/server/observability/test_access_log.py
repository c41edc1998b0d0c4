"""The access-log writer: every line written whole, in pieces a shared pipe keeps apart, and never a failed call."""

from __future__ import annotations

import threading

import numpy as np

from regserve.server.observability.access_log import AccessLogWriter


class _RecordingStream:
    """A text stream that keeps each write, to check the writer's pieces."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_the_access_log_writer_loses_no_line_and_writes_whole_lines_of_at_most_4_kib():
    stream = _RecordingStream()
    writer = AccessLogWriter(stream, interval=0.01)
    rng = np.random.default_rng(3)
    lengths = rng.integers(10, 300, size=4 * 2000)

    def produce(part: int) -> None:
        for i in range(2000):
            index = part * 2000 + i
            writer.write_line(f"{index:05d}" + "é" * int(lengths[index]))

    threads = [threading.Thread(target=produce, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    writer.write_line("after close")  # written at once, not queued for a thread that is gone
    assert all(len(piece.encode()) <= 4096 and piece.endswith("\n") for piece in stream.writes[:-1])
    lines = "".join(stream.writes).splitlines()
    assert lines[-1] == "after close"
    assert sorted(int(line[:5]) for line in lines[:-1]) == list(range(8000))


class _BrokenStream:
    def write(self, text: str) -> int:
        raise BrokenPipeError("the reader went away")

    def flush(self) -> None:
        raise BrokenPipeError("the reader went away")


def test_a_broken_access_log_stream_never_fails_the_call_that_logs(caplog):
    writer = AccessLogWriter(_BrokenStream(), interval=0.01, max_pending=2)
    writer.write_line("one")
    writer.write_line("two")  # reaches max_pending: written by this caller, and the write fails
    writer.close()
    writer.write_line("three")  # closed: written at once, and fails again, quietly
    failures = [r for r in caplog.records if "could not be written" in r.getMessage()]
    assert len(failures) == 1
