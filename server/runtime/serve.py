"""The serve loop of one server process: ``regserve serve``.

It checks the settings, installs the signal handlers, loads (or trains) the models,
starts the gRPC server and the embedded REST gateway, and waits for SIGTERM or
SIGINT; then health turns NOT_SERVING, new calls are refused and calls in flight get
``--grace-period`` seconds to finish.  With ``--workers`` above 1 it hands over to
``regserve.server.runtime.workers`` instead.
"""

from __future__ import annotations

import logging

from threadpoolctl import threadpool_limits

from regserve.server.config import Settings
from regserve.server.datasets.demo import ensure_demo_models
from regserve.server.observability.access_log import ACCESS_LOGGER, configure_access_log
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.store import ModelStore
from regserve.server.runtime.application import Application, create_server
from regserve.server.runtime.cpus import pin_to_cpu, pinned_cpus
from regserve.server.runtime.signals import exit_with_parent, stop_on_signals
from regserve.server.runtime.sockets import bind_socket
from regserve.server.runtime.workers import serve_workers

__all__ = ["serve"]

logger = logging.getLogger(__name__)


def _embedded_gateway(settings: Settings, app: Application):
    """The REST gateway to serve inside this process, its socket bound; None when ``gateway_port`` is off.

    Unary routes call the servicers in process, through the edge; the
    streaming routes call this server's own port over gRPC, in plaintext.
    """
    if settings.gateway_port < 0:
        return None
    # Imported here: Starlette and uvicorn are not loaded by a server without a gateway.
    from regserve.server.gateway.app import EmbeddedGateway
    from regserve.server.gateway.limits import GatewayLimits

    wildcard = settings.host in {"0.0.0.0", "::", "[::]", ""}
    upstream = f"127.0.0.1:{app.port}" if wildcard else f"{settings.address.rsplit(':', 1)[0]}:{app.port}"
    sock = bind_socket(settings.host, settings.gateway_port, reuse_port=settings.reuse_port)
    return EmbeddedGateway(
        sock,
        upstream,
        app.local,
        log_level=settings.log_level,
        grace_period=settings.grace_period,
        max_message_bytes=settings.max_message_bytes,
        limits=GatewayLimits.from_settings(settings),
    )


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM or SIGINT; returns the process exit code.

    With ``settings.workers`` above 1, run that many server processes on the port instead.
    """
    settings.check()
    if settings.workers > 1:
        return serve_workers(settings)
    if settings.pin_cpus:
        pin_to_cpu(pinned_cpus(settings.pin_cpus)[0])  # before the server starts its threads
    # Handlers go in first, so a SIGTERM is never met by Python's default (death by signal):
    # one that comes while the models load stops the server as soon as it has started.
    stopping = stop_on_signals(f"draining for up to {settings.grace_period:.1f} s")
    if settings.parent_pid:
        exit_with_parent(settings.parent_pid)
    if settings.blas_threads > 0:
        # On a small machine BLAS worker threads compete with the RPC threads for the
        # same cores; one BLAS thread trains faster here and leaves Predict alone.
        threadpool_limits(limits=settings.blas_threads, user_api="blas")
    store = ModelStore(ModelRegistry(settings.model_dir), poll_interval=settings.poll_interval)
    store.load_all()
    if settings.demo_models:
        ensure_demo_models(store, spool_dir=settings.spool_dir)
    if settings.access_log:
        configure_access_log()
    else:
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
    app = create_server(settings, store)
    gateway = _embedded_gateway(settings, app)  # bound before anything starts: a port conflict stops here
    app.start()
    if gateway is not None:
        try:
            gateway.start()
        except RuntimeError:
            app.stop(0)
            raise OSError("the REST gateway did not start; see the log above") from None
    logger.info(
        "regserve listening on %s:%d%s (models: %s; metrics: %s; REST gateway: %s)",
        settings.host,
        app.port,
        " with TLS" + (" and client certificates" if settings.tls_client_ca else "") if settings.tls else "",
        ", ".join(store.model_names()) or "none",
        f"http://{settings.host}:{app.metrics_port}/metrics" if app.metrics_port >= 0 else "off",
        f"http://{settings.host}:{gateway.port}/docs" if gateway is not None else "off",
    )
    code = 0
    while not stopping.wait(1.0):
        if gateway is not None and not gateway.alive():
            logger.error("the REST gateway stopped; stopping")
            code = 1
            break

    app.stop(settings.grace_period, while_draining=gateway.stop if gateway is not None else None)
    logger.info("regserve stopped")
    return code
