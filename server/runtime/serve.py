"""The serve loop of one server process: ``regserve serve``.

It checks the settings, installs the signal handlers, binds its ports (a port that
cannot be bound ends the start before the model directory is touched), loads (or
trains) the models, starts the gRPC server and the embedded REST gateway, and waits
for SIGTERM or SIGINT.  Then it drains as Kubernetes expects: health turns NOT_SERVING at once
while both ports keep accepting and answering calls for ``--drain-seconds``; then
the listeners close, calls in flight get ``--grace-seconds`` to finish, and the
process exits 0.  A second signal cancels what is left and exits 1.  With
``--workers`` above 1 it hands over to ``regserve.server.runtime.workers`` instead.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from threadpoolctl import threadpool_limits

from regserve.server.config import Settings
from regserve.server.datasets.demo import ensure_demo_models
from regserve.server.observability.access_log import ACCESS_LOGGER, configure_access_log
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.store import ModelStore
from regserve.server.runtime.application import Application, create_server
from regserve.server.runtime.cpus import pin_to_cpu, pinned_cpus
from regserve.server.runtime.signals import StopRequests, exit_with_parent, stop_on_signals
from regserve.server.runtime.sockets import ListenerError, hold_ports
from regserve.server.runtime.workers import serve_workers

if TYPE_CHECKING:
    from regserve.server.gateway.app import EmbeddedGateway

__all__ = ["serve"]

logger = logging.getLogger(__name__)


def _embedded_gateway(settings: Settings, app: Application, sock: socket.socket) -> EmbeddedGateway:
    """The REST gateway to serve inside this process on ``sock``, a bound socket.

    Unary routes call the servicers in process, through the edge; the
    streaming routes call this server's own port over gRPC, in plaintext.
    """
    # Imported here: Starlette and uvicorn are not loaded by a server without a gateway.
    from regserve.server.gateway.app import EmbeddedGateway
    from regserve.server.gateway.limits import GatewayLimits

    wildcard = settings.host in {"0.0.0.0", "::", "[::]", ""}
    upstream = f"127.0.0.1:{app.port}" if wildcard else f"{settings.address.rsplit(':', 1)[0]}:{app.port}"
    return EmbeddedGateway(
        sock,
        upstream,
        app.local,
        log_level=settings.log_level,
        grace_seconds=settings.grace_seconds,
        max_message_bytes=settings.max_message_bytes,
        limits=GatewayLimits.from_settings(settings),
        tracing=app.tracing,
    )


def _wait_until_closed(sock: socket.socket, stopping: threading.Thread) -> None:
    """Return once ``sock`` is closed, or its gateway has stopped, or after 5 s.

    uvicorn closes the very socket it was given as it stops accepting, on its next
    tick; the timeline's "listener closed" must not come before that.
    """
    deadline = time.monotonic() + 5.0
    while sock.fileno() >= 0 and stopping.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)


def _shut_down(
    app: Application,
    gateway: EmbeddedGateway | None,
    gateway_sock: socket.socket | None,
    settings: Settings,
    requests: StopRequests,
) -> bool:
    """Drain (after a signal), close both listeners, let the calls in flight finish; False when cut short.

    Each phase is logged with its time, so an operator can build the timeline.
    """
    if requests.drain.is_set():
        app.drain()
        logger.info("draining: health NOT_SERVING, still accepting for %.1f s", settings.drain_seconds)
        requests.at_once.wait(settings.drain_seconds)
    grace = 0.0 if requests.at_once.is_set() else settings.grace_seconds
    stopped = app.close(grace)
    stopping = None
    if gateway is not None and gateway_sock is not None:
        # On a thread of its own: the gateway's stop waits for its open HTTP calls, and
        # a second signal must not wait with it.
        stopping = threading.Thread(target=gateway.stop, name="regserve-gateway-stop", daemon=True)
        stopping.start()
        _wait_until_closed(gateway_sock, stopping)
    logger.info("listener closed; finishing %d calls within %.1f s", app.calls_in_flight(), grace)
    while not stopped.is_set() or (stopping is not None and stopping.is_alive()):
        if requests.at_once.wait(0.1):
            app.close(0)
            return False
    return not requests.at_once.is_set()


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM or SIGINT, then drain; returns the process exit code.

    0 once drained and stopped; 1 when a second signal cut the drain short or the
    REST gateway stopped by itself.  With ``settings.workers`` above 1, run that many
    server processes on the port instead.
    """
    settings.check()
    if settings.workers > 1:
        return serve_workers(settings)
    if settings.pin_cpus:
        pin_to_cpu(pinned_cpus(settings.pin_cpus)[0])  # before the server starts its threads
    # Handlers go in first, so a SIGTERM is never met by Python's default (death by signal):
    # one that comes while the models load starts the drain as soon as the server has started.
    requests = stop_on_signals("starting the drain")
    if settings.parent_pid:
        exit_with_parent(settings.parent_pid)
    if settings.blas_threads > 0:
        # On a small machine BLAS worker threads compete with the RPC threads for the
        # same cores; one BLAS thread trains faster here and leaves Predict alone.
        threadpool_limits(limits=settings.blas_threads, user_api="blas")
    # Bound before the model directory is opened: a port conflict stops here and writes nothing.
    held, gateway_sock = hold_ports(settings)
    try:
        store = ModelStore(ModelRegistry(settings.model_dir), poll_interval=settings.poll_interval)
        store.load_all()
        if settings.demo_models:
            ensure_demo_models(store, spool_dir=settings.spool_dir)
    except BaseException:
        for sock in [*held, *([gateway_sock] if gateway_sock is not None else [])]:
            sock.close()
        raise
    for sock in held:
        sock.close()
    if settings.access_log:
        configure_access_log()
    else:
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
    app = create_server(settings, store)
    gateway = _embedded_gateway(settings, app, gateway_sock) if gateway_sock is not None else None
    try:
        app.start()
    except ListenerError:
        app.release()
        if gateway_sock is not None:
            gateway_sock.close()
        raise
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
    while not requests.drain.wait(1.0):
        if gateway is not None and not gateway.alive():
            logger.error("the REST gateway stopped; stopping")
            code = 1
            break
    if _shut_down(app, gateway, gateway_sock, settings, requests):
        app.release()
        logger.info("regserve stopped")
        return code
    app.release()
    logger.info("regserve stopped; the calls still in flight were cancelled")
    return 1
