"""The process's open-file limit, which the gRPC server's and the gateway's connections share."""

from __future__ import annotations

import logging
import resource

__all__ = ["raise_open_file_limit"]

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
