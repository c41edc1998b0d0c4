"""Several server processes on one port: ``regserve serve --workers N``.

A sync grpcio server runs its Python code under one GIL, so one process uses about
one core however many threads it has.  ``--workers N`` starts N ordinary server
processes (``regserve serve`` with ``--reuse-port``) that all bind the same port with
SO_REUSEPORT; the kernel spreads incoming connections over them.  Each worker loads
the models itself and follows the registry like any replica (``--poll-interval``), so
a version trained or promoted through one worker is served by the others after
their next poll.

Each worker also runs the REST gateway, on one HTTP port shared the same way.  The
parent process serves nothing.  It trains the demo models once (so workers never
race to create them), holds the ports while the workers start when port 0 asked for
a free one, restarts a worker that dies, passes SIGTERM and SIGINT on and exits with 0
once every worker has drained and stopped.  Each worker drains as a single server does
(``regserve.server.runtime.serve``), all at once: health NOT_SERVING while the shared
ports still take calls, then the listeners close and the calls in flight finish.  A
second signal is passed on too, and stops them at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import fields, replace

from regserve.server.config import Settings
from regserve.server.datasets.demo import ensure_demo_models
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.store import ModelStore
from regserve.server.runtime.cpus import pinned_cpus
from regserve.server.runtime.signals import stop_on_signals
from regserve.server.runtime.sockets import GATEWAY, GRPC, METRICS, bind_listener, check_distinct

__all__ = ["serve_workers"]

logger = logging.getLogger(__name__)

CRASH_LOOP_SECONDS = 10.0
"""A worker that dies sooner than this after its start is not restarted: the server stops instead."""


def _environment(settings: Settings) -> dict[str, str]:
    """The settings as REGSERVE_* variables, the way a worker process reads its defaults."""
    env = dict(os.environ)
    for f in fields(Settings):
        value = getattr(settings, f.name)
        env[f"REGSERVE_{f.name.upper()}"] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env


class _Worker:
    def __init__(self, index: int, settings: Settings) -> None:
        self.index = index
        self.settings = settings
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> None:
        command = [sys.executable, "-m", "regserve.server.cli", "serve"]
        # A group of its own: a terminal's Ctrl-C reaches only the parent, which passes it
        # on once; a worker that got it twice (from both) would skip its drain.
        self.process = subprocess.Popen(command, env=_environment(self.settings), process_group=0)
        self.started = time.monotonic()
        logger.info("worker %d started (pid %d)", self.index, self.process.pid)


def _worker_settings(settings: Settings, index: int, port: int, gateway_port: int) -> Settings:
    metrics = settings.metrics_port + index if settings.metrics_port > 0 else settings.metrics_port
    cpus = pinned_cpus(settings.pin_cpus) if settings.pin_cpus else []
    return replace(
        settings,
        pin_cpus=str(cpus[index % len(cpus)]) if cpus else "",
        port=port,
        workers=1,
        reuse_port=True,
        demo_models=False,
        gateway_port=gateway_port,
        metrics_port=metrics,
        parent_pid=os.getpid(),
    )


def _supervise(workers: list[_Worker], stopping: threading.Event) -> int:
    """Restart workers that die until ``stopping`` is set; 1 when one dies right after its start."""
    while not stopping.wait(0.5):
        for worker in workers:
            if worker.process is None or worker.process.poll() is None:
                continue
            status = worker.process.returncode
            if time.monotonic() - worker.started < CRASH_LOOP_SECONDS:
                logger.error("worker %d exited with code %s right after its start; stopping", worker.index, status)
                return 1
            logger.error("worker %d exited with code %s; starting it again", worker.index, status)
            worker.start()
    return 0


def _stop_workers(workers: list[_Worker], timeout: float, at_once: threading.Event) -> int:
    """SIGTERM every running worker (they drain) and wait for all within ``timeout`` seconds.

    When ``at_once`` is set meanwhile, each worker still running gets a second SIGTERM,
    which stops it at once.  Returns 1 when one did not exit 0.
    """
    started = [(w.index, w.process) for w in workers if w.process is not None]
    for _, process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    hurried = False
    while any(process.poll() is None for _, process in started) and time.monotonic() < deadline:
        if at_once.is_set() and not hurried:
            hurried = True
            for _, process in started:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
        time.sleep(0.1)
    code = 0
    for index, process in started:
        if process.poll() is None:
            logger.warning("worker %d did not stop within its drain and grace period; killing it", index)
            process.kill()
        status = process.wait()
        if status != 0:
            logger.error("worker %d exited with code %s", index, status)
            code = 1
    return code


def _reserve(listener: str, host: str, port: int) -> socket.socket:
    """Hold ``host:port`` for the workers' ``listener``: bound with SO_REUSEPORT, not listening.

    A first bind without SO_REUSEPORT proves the port free: otherwise another server
    that also sets the option could share it, and the kernel would quietly split the
    connections between the two.  Only listening sockets get connections, so the
    parent's never takes any; a port chosen by the kernel (0) is kept this way.
    """
    with bind_listener(listener, host, port) as probe:
        port = probe.getsockname()[1]
    return bind_listener(listener, host, port, reuse_port=True)


def _reserve_ports(settings: Settings) -> tuple[list[socket.socket], list[socket.socket]]:
    """The workers' ports, bound before anything else is done: (gRPC and gateway sockets, metrics sockets).

    The first two are held while the workers run.  The metrics ports (``--metrics-port``
    plus the worker's index) are bound by the workers themselves, so the parent holds
    them only while the demo models train and closes them before the workers start.
    """
    metrics_ports = []
    if settings.metrics_port > 0:
        metrics_ports = [(f"{METRICS} of worker {i}", settings.metrics_port + i) for i in range(settings.workers)]
    check_distinct(settings.host, [(GRPC, settings.port), (GATEWAY, settings.gateway_port), *metrics_ports])
    reserved: list[socket.socket] = []
    metrics: list[socket.socket] = []
    try:
        reserved.append(_reserve(GRPC, settings.host, settings.port))
        if settings.gateway_port >= 0:
            reserved.append(_reserve(GATEWAY, settings.host, settings.gateway_port))
        metrics.extend(bind_listener(listener, settings.host, port) for listener, port in metrics_ports)
    except OSError:
        for sock in [*reserved, *metrics]:
            sock.close()
        raise
    return reserved, metrics


def serve_workers(settings: Settings) -> int:
    """Run ``settings.workers`` server processes on one port until SIGTERM or SIGINT; returns the exit code."""
    settings.check()
    if settings.pin_cpus:
        pinned_cpus(settings.pin_cpus)  # a bad value stops here, before any worker starts
    requests = stop_on_signals(f"passing it to the {settings.workers} workers, which drain")
    # Bound before the model directory is opened: a port conflict stops here and writes nothing.
    reserved, metrics = _reserve_ports(settings)
    try:
        if settings.demo_models:
            store = ModelStore(ModelRegistry(settings.model_dir), poll_interval=settings.poll_interval)
            store.load_all()
            ensure_demo_models(store, spool_dir=settings.spool_dir)
            del store
    except BaseException:
        for sock in reserved:
            sock.close()
        raise
    finally:
        for sock in metrics:
            sock.close()
    port = reserved[0].getsockname()[1]
    gateway_port = reserved[1].getsockname()[1] if settings.gateway_port >= 0 else -1
    workers = [_Worker(i, _worker_settings(settings, i, port, gateway_port)) for i in range(settings.workers)]
    code = 0
    try:
        for worker in workers:
            worker.start()
        logger.info(
            "regserve: %d workers on %s:%d (REST gateway: %s)",
            settings.workers,
            settings.host,
            port,
            f"http://{settings.host}:{gateway_port}/docs in each worker" if gateway_port >= 0 else "off",
        )
        code = _supervise(workers, requests.drain)
    finally:
        # Whatever ended the loop, the workers drain within one shared deadline.
        timeout = settings.drain_seconds + settings.grace_seconds + 10
        code = _stop_workers(workers, timeout, requests.at_once) or code
        for sock in reserved:
            sock.close()
    logger.info("regserve stopped")
    return code
