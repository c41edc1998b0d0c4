"""Where spool files live: a directory regserve owns, one subdirectory per server process.

The root (``--spool-dir``; by default ``regserve-spool-<uid>`` in the system's temporary
directory) may be shared by several worker processes and replicas.  Each process claims
a subdirectory of its own and holds an exclusive ``flock`` on the ``owner.lock`` file in
it for as long as it lives; the kernel drops that lock when the process dies, however it
dies.  When a process claims its subdirectory it removes every other one whose lock it
can take: those of processes that are gone, with the spool files a SIGKILL left behind.
A live process's lock cannot be taken, so its files are never touched.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["default_spool_root", "process_spool_dir", "remove_leftovers"]

logger = logging.getLogger(__name__)

_LOCK_NAME = "owner.lock"
_UNCLAIMED_SECONDS = 600.0
"""A subdirectory without a lock file is one being created, unless it is older than this."""

_claimed: dict[tuple[Path, int], Path] = {}
_claiming = threading.Lock()


def default_spool_root() -> Path:
    """``regserve-spool-<uid>`` in the system's temporary directory."""
    return Path(tempfile.gettempdir()) / f"regserve-spool-{os.getuid()}"


def process_spool_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """This process's spool subdirectory under ``root`` (default: ``default_spool_root()``).

    The first call for a root creates the root if needed, removes the leftovers of
    processes that are gone and claims a subdirectory; later calls return it.

    Raises
    ------
    PermissionError
        When the root is not a directory this user owns.
    """
    base = Path(root) if root else default_spool_root()
    key = (base.absolute(), os.getpid())
    with _claiming:
        if key not in _claimed:
            _make_private_dir(base)
            remove_leftovers(base)
            _claimed[key] = _claim(base)
        return _claimed[key]


def _make_private_dir(root: Path) -> None:
    """Create ``root`` readable by this user only, or check that the one found is this user's directory."""
    try:
        root.mkdir(mode=0o700, parents=True)
        return
    except FileExistsError:
        pass
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"the spool directory {root} is not a directory owned by this user")


def _claim(root: Path) -> Path:
    """Make this process's subdirectory under ``root`` and lock it for the process's life."""
    directory = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    pending = directory / f"{_LOCK_NAME}.new"
    fd = os.open(pending, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode())
    # Renamed once locked: another process never sees this lock file unlocked.
    os.rename(pending, directory / _LOCK_NAME)
    atexit.register(_release, directory, fd, os.getpid())
    logger.info("spool files go to %s", directory)
    return directory


def _release(directory: Path, fd: int, owner: int) -> None:
    if os.getpid() != owner:  # a forked child does not own its parent's directory
        return
    shutil.rmtree(directory, ignore_errors=True)
    os.close(fd)


def remove_leftovers(root: str | os.PathLike[str]) -> list[Path]:
    """Remove the subdirectories of ``root`` whose owner process is gone; returns those removed."""
    removed = []
    for entry in sorted(Path(root).iterdir()):
        if entry.is_dir() and not entry.is_symlink() and _remove_if_abandoned(entry):
            removed.append(entry)
    if removed:
        logger.info("removed the spool files of %d server processes that are gone", len(removed))
    return removed


def _remove_if_abandoned(directory: Path) -> bool:
    try:
        fd = os.open(directory / _LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        # Being claimed right now, or abandoned before its lock was made.
        try:
            if time.time() - directory.stat().st_mtime < _UNCLAIMED_SECONDS:
                return False
        except FileNotFoundError:
            return False  # another process removed it first
        shutil.rmtree(directory, ignore_errors=True)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        shutil.rmtree(directory, ignore_errors=True)
        return True
    except BlockingIOError:
        return False  # its owner is alive
    finally:
        os.close(fd)
