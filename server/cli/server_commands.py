"""The commands of ``regserve`` that run a server: ``serve`` (gRPC) and ``gateway`` (REST/JSON).

The server's modules are imported when one of these commands runs, so that the
client commands do not load them.
"""

from __future__ import annotations

import functools
import logging

from regserve.server.cli.render import print_error
from regserve.server.config import Settings

__all__ = ["cmd_gateway", "cmd_serve"]


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _reporting_domain_errors(command):
    """Print a domain error that ends ``command`` (a model directory the registry refuses, say) as one line."""

    @functools.wraps(command)
    def run(args) -> int:
        from regserve.server.errors import RegserveError

        try:
            return command(args)
        except RegserveError as exc:
            print_error(exc)
            return 1

    return run


@_reporting_domain_errors
def cmd_serve(args) -> int:
    from regserve.server.runtime.serve import serve

    settings = Settings.from_args(args)
    _configure_logging(settings.log_level)
    return serve(settings)


@_reporting_domain_errors
def cmd_gateway(args) -> int:
    from regserve.client import tls_credentials
    from regserve.server.config import MIB
    from regserve.server.gateway.app import GatewayLimits, run_gateway

    _configure_logging(args.log_level)
    credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca or args.tls_cert else None
    limits = GatewayLimits(  # ValueError for a bound that is not positive, reported by ``main``
        max_body_bytes=args.max_message_mb * MIB,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        max_connections_per_peer=args.max_connections_per_peer,
        max_uploads=args.max_uploads,
    )
    run_gateway(
        args.host,
        args.port,
        args.upstream,
        credentials=credentials,
        log_level=args.log_level,
        grace_seconds=args.grace_seconds,
        channels=args.channels,
        limits=limits,
    )
    return 0
