"""Wiring the gRPC server: servicers behind the edge, health, reflection, thread pools, metrics.

``create_server`` builds it bound to ``settings.address`` and returns it unstarted,
so tests can bind port 0 and open a real channel; ``regserve.server.runtime.serve``
runs it until SIGTERM or SIGINT.

Every method runs on the pool its entry in ``regserve.server.rpc.methods`` names.  A
stream holds its thread while it is open, so health, the registry's methods, Predict,
Train and reflection each get threads of their own (``--health-threads`` and the
like), which no number of idle BatchPredict streams or slow uploads can take.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import cast
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from regserve.inference import grpc_service_pb2_grpc as inference_pb2_grpc
from regserve.server.config import Settings
from regserve.server.edge.auth import TokenTable
from regserve.server.edge.edge import Edge, EdgePolicy
from regserve.server.edge.ratelimit import TokenBuckets
from regserve.server.edge.registration import EdgeServer
from regserve.server.gateway.admission import Admission
from regserve.server.gateway.local import LocalDispatch
from regserve.server.inference.grpc_servicer import InferenceServicer
from regserve.server.models.training import TrainingLimits
from regserve.server.observability.drift import DriftCollector, DriftMonitor
from regserve.server.observability.metrics import Metrics, start_metrics_server
from regserve.server.observability.serving_stats import ServingStats
from regserve.server.observability.tracing import Tracing
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.store import ModelStore
from regserve.server.rpc.health import HealthServicer
from regserve.server.rpc.methods import METHODS, SERVICE_NAMES, Pool, check_methods
from regserve.server.rpc.model_servicer import ModelServicer
from regserve.server.rpc.reflection import enable_reflection
from regserve.server.rpc.regression_servicer import RegressionServicer
from regserve.server.rpc.tls import server_credentials
from regserve.server.runtime.files import share_of_open_files
from regserve.server.runtime.sockets import METRICS, ListenerError, grpc_bind_failure
from regserve.v1 import model_service_pb2_grpc, regression_service_pb2_grpc

__all__ = ["Application", "create_server"]

logger = logging.getLogger(__name__)

_THREAD_NAMES = {Pool.SERVER: "regserve-rpc"}
_TRAINS_STOP_SECONDS = 1.0
"""How long a stop at once waits for running Trains to end with their own status before it cancels them."""


@dataclass
class Application:
    """A wired, bound server and the state it serves from."""

    server: grpc.Server
    port: int
    store: ModelStore
    health: HealthServicer
    stats: ServingStats
    metrics: Metrics | None = None
    metrics_port: int = -1
    """Port of the /metrics HTTP endpoint once started; -1 when metrics are off."""
    local: LocalDispatch | None = None
    """The servicers' handlers behind the edge, for in-process calls from the embedded gateway."""
    edge: Edge | None = None
    tracing: Tracing | None = None
    """The server's OpenTelemetry tracer; None when tracing is off."""
    thread_pools: dict[Pool, futures.ThreadPoolExecutor] = field(default_factory=dict)
    drift: DriftMonitor = field(default_factory=lambda: DriftMonitor(0))
    """The drift windows of the versions this server predicts with (off with ``--drift-window 0``)."""
    """The threads that answer calls: the server's (``Pool.SERVER``) and each pool whose size is above 0."""
    shutting_down: threading.Event = field(default_factory=threading.Event)
    """Set as the calls in flight are cancelled at once (``close`` with no grace): Trains still running stop
    at their next step (UNAVAILABLE SHUTTING_DOWN) instead of running on after their call is gone."""
    _metrics_host: str = "127.0.0.1"
    _metrics_server: WSGIServer | None = None

    def update_health(self) -> None:
        """SERVING once any model has a serving version, NOT_SERVING before."""
        ready = self.store.has_serving_model()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    def start(self) -> None:
        if self.metrics is not None and self.metrics_port >= 0:
            try:
                self._metrics_server, self.metrics_port = start_metrics_server(
                    self.metrics, self._metrics_host, self.metrics_port
                )
            except OSError as exc:
                raise ListenerError(METRICS, self._metrics_host, self.metrics_port, exc.strerror or str(exc)) from None
        self.server.start()
        self.store.start(on_change=self.update_health)
        self.drift.start()

    def drain(self) -> None:
        """Turn health NOT_SERVING for the server and every service, Watch streams told; calls are still answered.

        Probes and load balancers see the replica leave while its listener still takes
        their calls; no later change of the registry turns it SERVING again.
        """
        self.health.enter_graceful_shutdown()

    def calls_in_flight(self, method: str | None = None) -> int:
        """Calls (of ``method``, e.g. "Train", when given) the edge has begun and not yet ended, the gateway's
        included; health and reflection are uncounted."""
        if self.metrics is None:
            return 0
        return int(
            sum(
                sample.value
                for family in self.metrics.in_flight.collect()
                for sample in family.samples
                if method is None or sample.labels.get("method") == method
            )
        )

    def close(self, grace: float | None) -> threading.Event:
        """Close the listener: new connections and calls are refused, health Watch streams end.

        Calls in flight, running Trains among them, get ``grace`` seconds, then are
        cancelled (a cancelled Train stores nothing); the event is set once every call
        has ended.  Called again with 0, it cancels them at once.
        """
        if not grace:
            self.shutting_down.set()
            # A running Train ends UNAVAILABLE SHUTTING_DOWN at its next step; cancelled before it could,
            # its caller would read only grpc's "Cancelling all calls".  One waiting for its client is cut off.
            deadline = time.monotonic() + _TRAINS_STOP_SECONDS
            while self.calls_in_flight("Train") and time.monotonic() < deadline:
                time.sleep(0.01)
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(grace)
        self.health.end_watches()
        return stopped

    def release(self) -> None:
        """Free what the server held once its calls have ended: thread pools, the edge, registry polling, /metrics."""
        for pool in self.thread_pools.values():
            pool.shutdown(wait=False)
        if self.edge is not None:
            self.edge.close()
        if self.tracing is not None:
            self.tracing.shutdown()
        self.store.stop()
        self.drift.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    def stop(self, grace: float | None = None) -> None:
        """Close the listener, let calls in flight finish within ``grace`` seconds, then release everything."""
        self.close(grace).wait()
        self.release()


HANDSHAKE_TIMEOUT_MS = 10_000


def connection_cap(wanted: int) -> int:
    """The connections the gRPC port may hold: ``wanted``, at most a quarter of the open-file limit.

    Past the cap grpc closes a new connection at once; past the open-file limit every
    accept, file and socket of the process would fail (the registry's, the gateway's, the
    metrics'), so the cap leaves them three quarters.
    """
    return share_of_open_files(wanted, 4, "the gRPC port")


def create_server(settings: Settings, store: ModelStore | None = None, tracing: Tracing | None = None) -> Application:
    """Build the server for ``settings``, bound but not started.

    The store is loaded from ``settings.model_dir`` unless one is given; so is the tracing
    (``settings.otlp_endpoint`` and the OTEL_* variables).  Health
    starts NOT_SERVING and turns SERVING once a model is loaded.
    """
    settings.check()
    check_methods()
    if store is None:
        store = ModelStore(ModelRegistry(settings.model_dir), poll_interval=settings.poll_interval)
        store.load_all()
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        # Connections that never speak, or take more than a slow TLS handshake's time, are closed:
        # grpc's default of 120 s lets a client hold descriptors while sending nothing.
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_allowed_incoming_connections", connection_cap(settings.max_connections)),
    ]
    if settings.max_concurrent_streams > 0:
        options.append(("grpc.max_concurrent_streams", settings.max_concurrent_streams))
        # grpc's overload protection counts a stream until the server has freed it, after the client saw it
        # end, and refuses the client's next ones (REFUSED_STREAM, UNAVAILABLE) though it respects the limit:
        # off, the limit is HTTP/2's, and a client's calls past it wait their turn on the connection.
        options.append(("grpc.http.overload_protection", 0))
    if settings.max_connection_age > 0:
        # No grace option: grpc's default grace is unbounded, so a long Train stream on an aged connection is never cut.
        options.append(("grpc.max_connection_age_ms", round(settings.max_connection_age * 1000)))
    stats = ServingStats()
    metrics = Metrics(stats)
    drift = DriftMonitor(settings.drift_window, settings.drift_threshold)
    if settings.drift_window > 0:
        # Off, the gauges would only list their HELP and TYPE lines, with no samples.
        metrics.registry.register(DriftCollector(drift))
    store.listen(drift.forget_deleted)
    store.listen(metrics.record_event)
    # Lets the REST gateway inside this process name the HTTP client of the calls it
    # makes over gRPC (see FORWARDED_PEER); never leaves the process but on loopback.
    forwarding_key = secrets.token_urlsafe(24)
    policy = _edge_policy(settings, forwarding_key)
    if tracing is None:
        tracing = Tracing.from_settings(settings.otlp_endpoint)
    edge = Edge(metrics, policy, tracing)
    pools = _thread_pools(settings)
    server = grpc.server(
        pools[Pool.SERVER], options=options, maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None
    )
    health_servicer = HealthServicer()
    app = Application(
        server,
        0,
        store,
        health_servicer,
        stats,
        metrics,
        settings.metrics_port,
        edge=edge,
        tracing=tracing,
        thread_pools=pools,
        drift=drift,
        _metrics_host=settings.host,
    )
    guarded = EdgeServer(server, edge, pools)
    regression_service_pb2_grpc.add_RegressionServiceServicer_to_server(
        RegressionServicer(
            store,
            app.stats,
            on_change=app.update_health,
            max_rows=settings.max_predict_rows,
            on_trained=metrics.record_training,
            training_limits=TrainingLimits(settings.max_train_memory_mb, settings.max_train_gflop),
            spool_dir=settings.spool_dir,
            shutting_down=app.shutting_down,
            drift=drift,
        ),
        guarded,
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(store, app.stats, on_change=app.update_health, drift=drift), guarded
    )
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(
            store,
            app.stats,
            functools.partial(_serving, health_servicer),
            max_rows=settings.max_predict_rows,
            on_change=app.update_health,
            drift=drift,
        ),
        guarded,
    )
    # EdgeServer registers what the generated code registers by name; a method of the
    # table it never saw would be served without the edge, or not at all.
    missing = METHODS.keys() - guarded.handlers.keys()
    if missing:
        raise RuntimeError(f"methods not registered behind the edge: {sorted(missing)}")
    app.local = LocalDispatch(
        guarded.handlers,
        settings.max_message_bytes,
        settings.max_concurrent_rpcs,
        forwarding_key=forwarding_key,
        admission=_admission(policy, edge),
    )
    # Health and reflection pass only the edge's thin part (regserve.server.edge.open_methods);
    # EdgeServer has the two methods of a server that registration calls.
    open_registration = cast(grpc.Server, guarded)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, open_registration)
    enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME), open_registration)
    credentials = None
    if settings.tls:
        credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    try:
        if credentials is not None:
            app.port = server.add_secure_port(settings.address, credentials)
        else:
            app.port = server.add_insecure_port(settings.address)
    except RuntimeError:  # grpc's "Failed to bind to address", which gives no reason
        app.port = 0
    if app.port == 0:
        app.release()
        raise grpc_bind_failure(settings.host, settings.port, reuse_port=settings.reuse_port)
    app.update_health()
    return app


def _thread_pools(settings: Settings) -> dict[Pool, futures.ThreadPoolExecutor]:
    """The server's pool, and one per pool of the method table whose size is above 0."""
    sizes = {
        Pool.SERVER: settings.max_workers,
        # Predict and ModelInfo answer from the models in memory: a few threads of their own
        # answer them faster than the server's many, which take turns at the interpreter lock.
        Pool.PREDICT: settings.predict_threads,
        Pool.ADMIN: settings.admin_threads,
        Pool.TRAIN: settings.train_threads,
        Pool.HEALTH: settings.health_threads,
        Pool.REFLECTION: settings.reflection_threads,
    }
    return {
        pool: futures.ThreadPoolExecutor(size, thread_name_prefix=_THREAD_NAMES.get(pool, f"regserve-{pool}"))
        for pool, size in sizes.items()
        if size > 0 or pool is Pool.SERVER
    }


def _serving(health_servicer: HealthServicer) -> bool:
    """Whether the server's health is SERVING: ServerReady answers as the gRPC health probe does, drain included."""
    return health_servicer._server_status.get("") == health_pb2.HealthCheckResponse.SERVING


def _admission(policy: EdgePolicy, edge: Edge) -> Admission | None:
    """The edge's refusals for the gateway to make before it reads a body; None when the edge refuses nothing."""
    if not policy.checks_calls:
        return None
    limited = policy.limiter is not None
    return Admission(
        edge,
        policy.tokens,
        edge.rate_limit_wait if limited else None,
        edge.unauthenticated_wait if limited else None,
    )


def _edge_policy(settings: Settings, forwarding_key: str) -> EdgePolicy:
    """What the edge enforces, from the settings; says loudly when authentication is off."""
    tokens = TokenTable.load(settings.tokens_file, settings.tokens) if settings.auth_enabled else None
    if settings.auth and tokens is None:
        raise ValueError("--auth needs tokens: pass --tokens-file or set REGSERVE_TOKENS")
    if tokens is None:
        logger.warning("authentication is OFF: any caller may predict, train and change the registry")
    else:
        logger.info("authentication is on with %d tokens", len(tokens))
    limiter = TokenBuckets(settings.rate_limit, settings.rate_burst) if settings.rate_limit > 0 else None
    return EdgePolicy(
        tokens=tokens,
        limiter=limiter,
        echo_request_id=settings.echo_request_id,
        forwarding_key=forwarding_key,
        streams_per_peer=settings.max_streams_per_peer,
        stream_idle_timeout=settings.stream_idle_timeout,
        log_peer=settings.access_log and settings.access_log_peer,
    )
