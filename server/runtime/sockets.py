"""Listening sockets bound before the servers start, so a port conflict stops the start-up at once."""

from __future__ import annotations

import socket

__all__ = ["bind_socket"]


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
