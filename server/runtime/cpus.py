"""Pinning a server process to one CPU (``--pin-cpus``)."""

from __future__ import annotations

import os

__all__ = ["pin_to_cpu", "pinned_cpus"]


def pinned_cpus(spec: str) -> list[int]:
    """The CPUs of a ``--pin-cpus`` value, in order; raises ValueError for one this process may not use."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed:
        raise ValueError("--pin-cpus needs Linux (os.sched_setaffinity)")
    if spec.strip() == "auto":
        return allowed
    try:
        cpus = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--pin-cpus takes 'auto' or CPU numbers separated by commas, not {spec!r}") from None
    outside = [cpu for cpu in cpus if cpu not in allowed]
    if not cpus or outside:
        raise ValueError(f"--pin-cpus {spec!r}: this process may run on CPUs {allowed} only")
    return cpus


def pin_to_cpu(cpu: int) -> None:
    """Run every thread of this process, and every thread it starts later, on ``cpu``.

    The interpreter lock lets one thread run Python at a time, so a server process
    gains little from a second core and loses much to handing the lock between
    threads on different cores (each handover wakes a thread on the other core).
    """
    while True:  # again until no thread is left over: one may start another meanwhile
        moved = 0
        for task in os.listdir("/proc/self/task"):
            try:
                if os.sched_getaffinity(int(task)) != {cpu}:
                    os.sched_setaffinity(int(task), {cpu})
                    moved += 1
            except ProcessLookupError:  # the thread ended meanwhile
                pass
        if not moved:
            return
