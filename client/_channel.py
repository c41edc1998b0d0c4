"""The channel every regserve client opens: plaintext or TLS, deadlines, metadata, typed errors."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import grpc

from regserve.client._exceptions import from_rpc_error

__all__ = ["Connection", "bearer_metadata", "tls_credentials", "translating_errors"]


def tls_credentials(ca: str | None = None, cert: str | None = None, key: str | None = None) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files.

    ``ca`` is the CA bundle that signed the server's certificate (the system roots when
    omitted); ``cert`` and ``key`` are this client's certificate and key, for mutual TLS.
    """
    if (cert is None) != (key is None):
        raise ValueError("give both cert and key for a client certificate, or neither")

    def read(path):
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert))


def bearer_metadata(token: str) -> tuple[str, str]:
    """The ``authorization`` metadata entry that presents ``token`` to the server."""
    return ("authorization", f"Bearer {token}")


def translating_errors(method):
    """Re-raise grpc.RpcError as the client's typed exceptions (the one mapping point)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    return wrapper


class Connection:
    """One channel to a regserve server, shared by the calls of a client; a context manager.

    Parameters
    ----------
    target : str
        ``host:port`` of the server.
    timeout : float
        Deadline of each call, in seconds; ``None`` waits forever.
    credentials : grpc.ChannelCredentials, optional
        TLS credentials; plaintext when omitted (and no ``tls_*`` file is given).
    metadata : sequence of (key, value), optional
        Sent with every call.
    max_message_mb : int
        Largest message sent or received, in MiB.
    tls_ca, tls_cert, tls_key : str, optional
        PEM files, used when ``credentials`` is not given: the CA that signed the
        server's certificate, and this client's certificate and key for mutual TLS.
    token : str, optional
        Sent as ``authorization: Bearer <token>``.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        max_message_mb: int = 64,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
    ) -> None:
        if credentials is None and (tls_ca or tls_cert or tls_key):
            credentials = tls_credentials(tls_ca, tls_cert, tls_key)
        if token:
            metadata = (*metadata, bearer_metadata(token))
        options = [
            ("grpc.max_receive_message_length", max_message_mb * 1024 * 1024),
            ("grpc.max_send_message_length", max_message_mb * 1024 * 1024),
        ]
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self.timeout = timeout
        self.metadata = tuple(metadata)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
