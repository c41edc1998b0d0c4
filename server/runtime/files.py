"""The process's open-file limit, which the gRPC server's and the gateway's connections share."""

from __future__ import annotations

import logging
import resource

__all__ = ["raise_open_file_limit", "share_of_open_files"]

logger = logging.getLogger(__name__)


def raise_open_file_limit() -> int:
    """Raise the soft limit of open files to the hard limit; return the soft limit now in force (-1: none)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            logger.info("could not raise the open-file limit from %d to %d", soft, wanted)
    return -1 if soft == resource.RLIM_INFINITY else soft


def share_of_open_files(wanted: int, share: int, holder: str) -> int:
    """``wanted`` connections for ``holder``, at most ``1/share`` of the open-file limit (raised first), and 1 or more.

    A cut is logged as a warning: it names a limit the operator set higher.
    """
    soft = raise_open_file_limit()
    if soft < 0 or wanted <= soft // share:
        return wanted
    logger.warning(
        "%s holds at most %d connections, 1/%d of the open-file limit of %d, not %d",
        holder,
        soft // share,
        share,
        soft,
        wanted,
    )
    return max(1, soft // share)
