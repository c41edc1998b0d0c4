"""Listening sockets bound before the servers start, so a port conflict stops the start-up at once.

A listener that cannot bind its address ends the start with a ``ListenerError``: one
line that names the listener, its flag, the address and the reason, which
``regserve serve`` prints instead of a traceback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from regserve.server.config import Settings

__all__ = [
    "GATEWAY",
    "GRPC",
    "METRICS",
    "ListenerError",
    "bind_listener",
    "bind_socket",
    "check_distinct",
    "grpc_bind_failure",
    "hold_ports",
]

GRPC = "the gRPC listener (--port)"
GATEWAY = "the REST gateway (--gateway-port)"
METRICS = "the metrics endpoint (--metrics-port)"


class ListenerError(OSError):
    """A listener of the server could not bind its address."""

    def __init__(self, listener: str, host: str, port: int, reason: str) -> None:
        self.listener, self.host, self.port, self.reason = listener, host, port, reason
        super().__init__(f"{listener} cannot bind {_address(host, port)}: {reason}")


def _address(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{host}:{port}"


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


def bind_listener(listener: str, host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """``bind_socket`` for ``listener``; a failure is a ``ListenerError`` that says which listener and why."""
    try:
        return bind_socket(host, port, reuse_port=reuse_port)
    except OSError as exc:
        raise ListenerError(listener, host, port, exc.strerror or str(exc)) from None


def grpc_bind_failure(host: str, port: int, *, reuse_port: bool = False) -> ListenerError:
    """The error for a gRPC port that grpc could not bind, with the reason the kernel gives for it.

    grpc says only that the bind failed; binding the address again here finds out why.
    """
    try:
        bind_socket(host, port, reuse_port=reuse_port).close()
    except OSError as exc:
        return ListenerError(GRPC, host, port, exc.strerror or str(exc))
    return ListenerError(GRPC, host, port, "grpc could not bind it (GRPC_VERBOSITY=debug says why)")


def check_distinct(host: str, listeners: Iterable[tuple[str, int]]) -> None:
    """A ``ListenerError`` when two listeners are given one port (above 0).

    Binding cannot be trusted to catch it: two sockets with SO_REUSEADDR that are not
    yet listening both bind, and only the later listen fails.
    """
    claimed: dict[int, str] = {}
    for listener, port in listeners:
        if port > 0 and port in claimed:
            raise ListenerError(listener, host, port, f"{claimed[port]} is given that port too")
        claimed.setdefault(port, listener)


def hold_ports(settings: Settings) -> tuple[list[socket.socket], socket.socket | None]:
    """Bind the ports of one server process before it does anything else: (held sockets, the gateway's socket).

    The gateway's socket is the one it serves on.  The held ones (gRPC and metrics ports
    above 0; bound, not listening) keep their ports while the models load or train, so a
    port taken by something else stops the start before anything is written; the caller
    closes them right before grpc and the metrics server bind the same ports.
    """
    check_distinct(
        settings.host,
        [(GRPC, settings.port), (GATEWAY, settings.gateway_port), (METRICS, settings.metrics_port)],
    )
    held: list[socket.socket] = []
    try:
        if settings.port > 0:
            held.append(bind_listener(GRPC, settings.host, settings.port, reuse_port=settings.reuse_port))
        if settings.metrics_port > 0:
            held.append(bind_listener(METRICS, settings.host, settings.metrics_port))
        gateway = None
        if settings.gateway_port >= 0:
            gateway = bind_listener(GATEWAY, settings.host, settings.gateway_port, reuse_port=settings.reuse_port)
    except OSError:
        for sock in held:
            sock.close()
        raise
    return held, gateway
