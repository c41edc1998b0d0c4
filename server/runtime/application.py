"""Building and running the gRPC server.

``create_server`` wires the servicers, health and reflection onto a server bound
to ``settings.address`` and returns it unstarted, so tests can bind port 0 and
open a real channel; ``serve`` runs it until SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import secrets
import signal
import socket
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from threadpoolctl import threadpool_limits

from regserve.server.config import Settings
from regserve.server.edge.auth import TokenTable
from regserve.server.edge.edge import Edge, EdgePolicy, EdgeServer
from regserve.server.edge.ratelimit import TokenBuckets
from regserve.server.gateway.local import LocalDispatch
from regserve.server.observability.access_log import ACCESS_LOGGER, configure_access_log
from regserve.server.observability.metrics import Metrics, start_metrics_server
from regserve.server.observability.serving_stats import ServingStats
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.store import ModelStore
from regserve.server.rpc.model_servicer import ModelServicer
from regserve.server.rpc.regression_servicer import RegressionServicer
from regserve.server.rpc.tls import server_credentials
from regserve.v1 import model_service_pb2, model_service_pb2_grpc, regression_service_pb2, regression_service_pb2_grpc

__all__ = ["Application", "create_server", "serve"]

logger = logging.getLogger(__name__)

_SERVICES = (
    regression_service_pb2.DESCRIPTOR.services_by_name["RegressionService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
)
SERVICE_NAMES = tuple(service.full_name for service in _SERVICES)
PREDICT_POOL_METHODS = ("/regserve.v1.RegressionService/Predict", "/regserve.v1.RegressionService/ModelInfo")
"""The methods answered on the ``--predict-threads`` threads."""


@dataclass
class Application:
    """A wired, bound server and the state it serves from."""

    server: grpc.Server
    port: int
    store: ModelStore
    health: health.HealthServicer
    stats: ServingStats
    metrics: Metrics | None = None
    metrics_port: int = -1
    """Port of the /metrics HTTP endpoint once started; -1 when metrics are off."""
    local: LocalDispatch | None = None
    """The servicers' handlers behind the edge, for in-process calls from the embedded gateway."""
    edge: Edge | None = None
    thread_pools: list[futures.ThreadPoolExecutor] = field(default_factory=list)
    """The threads that answer calls: the server's, then Predict's own when ``predict_threads`` is above 0."""
    _metrics_host: str = "127.0.0.1"
    _metrics_server: object = None

    def update_health(self) -> None:
        """SERVING once any model has a serving version, NOT_SERVING before."""
        ready = self.store.has_serving_model()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    def start(self) -> None:
        if self.metrics is not None and self.metrics_port >= 0:
            self._metrics_server, self.metrics_port = start_metrics_server(
                self.metrics, self._metrics_host, self.metrics_port
            )
        self.server.start()
        self.store.start(on_change=self.update_health)

    def stop(self, grace: float | None = None, *, while_draining: Callable[[], None] | None = None) -> None:
        """Turn health NOT_SERVING, refuse new calls, let calls in flight finish within ``grace`` seconds.

        ``while_draining`` runs after new calls are refused and before the wait for
        the calls in flight (``serve`` stops its gateway there).
        """
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(grace)
        if while_draining is not None:
            while_draining()
        stopped.wait()
        for pool in self.thread_pools:
            pool.shutdown(wait=False)
        if self.edge is not None:
            self.edge.close()
        self.store.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None


def create_server(settings: Settings, store: ModelStore | None = None) -> Application:
    """Build the server for ``settings``, bound but not started.

    The store is loaded from ``settings.model_dir`` unless one is given.  Health
    starts NOT_SERVING and turns SERVING once a model is loaded.
    """
    if store is None:
        store = ModelStore(ModelRegistry(settings.model_dir), poll_interval=settings.poll_interval)
        store.load_all()
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
    ]
    if settings.max_concurrent_streams > 0:
        options.append(("grpc.max_concurrent_streams", settings.max_concurrent_streams))
    stats = ServingStats()
    metrics = Metrics(stats)
    # Lets the REST gateway inside this process name the HTTP client of the calls it
    # makes over gRPC (see FORWARDED_PEER); never leaves the process but on loopback.
    forwarding_key = secrets.token_urlsafe(24)
    edge = Edge(metrics, _edge_policy(settings, forwarding_key))
    pools = [futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="regserve-rpc")]
    server = grpc.server(pools[0], options=options, maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None)
    method_pools = {}
    if settings.predict_threads > 0:
        # Predict and ModelInfo answer from the models in memory (a version named for the
        # first time is loaded once).  A few threads of their own answer them faster than
        # the server's many, which take turns at the interpreter lock, and streams holding
        # the server's threads do not hold them up.
        pools.append(futures.ThreadPoolExecutor(settings.predict_threads, thread_name_prefix="regserve-predict"))
        method_pools = dict.fromkeys(PREDICT_POOL_METHODS, pools[1])
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    app = Application(
        server,
        0,
        store,
        health_servicer,
        stats,
        metrics,
        settings.metrics_port,
        edge=edge,
        thread_pools=pools,
        _metrics_host=settings.host,
    )
    guarded = EdgeServer(server, edge, method_pools)
    regression_service_pb2_grpc.add_RegressionServiceServicer_to_server(
        RegressionServicer(store, app.stats, on_change=app.update_health, max_rows=settings.max_predict_rows), guarded
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(store, app.stats), guarded)
    # EdgeServer registers what the generated code registers by name; a method it never
    # saw would be served without the edge, or not at all, and a method named for the
    # Predict threads but never registered would not get them.
    missing = {f"/{service.full_name}/{method.name}" for service in _SERVICES for method in service.methods}
    missing = (missing | method_pools.keys()) - guarded.handlers.keys()
    if missing:
        raise RuntimeError(f"methods not registered behind the edge: {sorted(missing)}")
    app.local = LocalDispatch(
        guarded.handlers, settings.max_message_bytes, settings.max_concurrent_rpcs, forwarding_key=forwarding_key
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if settings.tls:
        credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        app.port = server.add_secure_port(settings.address, credentials)
    else:
        app.port = server.add_insecure_port(settings.address)
    if app.port == 0:
        raise OSError(f"could not bind {settings.address}")
    app.update_health()
    return app


def _edge_policy(settings: Settings, forwarding_key: str) -> EdgePolicy:
    """What the edge enforces, from the settings; says loudly when authentication is off."""
    tokens = TokenTable.load(settings.tokens_file, settings.tokens) if settings.auth_enabled else None
    if settings.auth and tokens is None:
        raise ValueError("--auth needs tokens: pass --tokens-file or set REGSERVE_TOKENS")
    if tokens is None:
        logger.warning("authentication is OFF: any caller may predict, train and change the registry")
    else:
        logger.info("authentication is on with %d tokens", len(tokens))
    if settings.tls_client_ca and not settings.tls:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
    limiter = TokenBuckets(settings.rate_limit, settings.rate_burst) if settings.rate_limit > 0 else None
    return EdgePolicy(
        tokens=tokens,
        limiter=limiter,
        echo_request_id=settings.echo_request_id,
        forwarding_key=forwarding_key,
        log_peer=settings.access_log and settings.access_log_peer,
    )


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0 picks a free port), with SO_REUSEPORT when asked."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that name it,
    # and without it a response written in two parts waits for the peer's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]") or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    except OSError:
        sock.close()
        raise
    return sock


def check_gateway_settings(settings: Settings) -> None:
    """Refuse settings the embedded gateway cannot serve: its streaming routes speak plaintext gRPC."""
    if settings.gateway_port >= 0 and settings.tls:
        raise ValueError(
            "the embedded REST gateway speaks plaintext to the gRPC port; with TLS on, run "
            "`regserve gateway --upstream HOST:PORT --tls-ca ...` as its own process"
        )


def _embedded_gateway(settings: Settings, app: Application):
    """The REST gateway to serve inside this process, its socket bound; None when ``gateway_port`` is off.

    Unary routes call the servicers in process, through the edge; the
    streaming routes call this server's own port over gRPC, in plaintext.
    """
    from regserve.server.gateway.app import EmbeddedGateway

    if settings.gateway_port < 0:
        return None
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
    )


def stop_on_signals(action: str) -> threading.Event:
    """An event that SIGTERM and SIGINT set, each logged as received with ``action`` said next."""
    stopping = threading.Event()

    def _on_signal(signum, frame):
        logger.info("received %s; %s", signal.Signals(signum).name, action)
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return stopping


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM or SIGINT; returns the process exit code.

    With ``settings.workers`` above 1, run that many server processes on the port instead.
    """
    from regserve.server.datasets.demo import ensure_demo_models
    from regserve.server.runtime.workers import exit_with_parent, pin_to_cpu, pinned_cpus, serve_workers

    if settings.workers < 1:
        raise ValueError("--workers must be at least 1")
    if settings.predict_threads < 0:
        raise ValueError("--predict-threads must be 0 (Predict on the --max-workers threads) or more")
    if settings.workers > 1:
        return serve_workers(settings)
    check_gateway_settings(settings)
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
        ensure_demo_models(store)
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
