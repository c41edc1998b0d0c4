"""The channel every regserve client opens: balancing and retries, TLS, deadlines, metadata, request ids."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc

from regserve.client._calls import Call
from regserve.client._exceptions import from_rpc_error
from regserve.client._service_config import service_config_json

__all__ = [
    "REQUEST_ID",
    "BaseConnection",
    "Connection",
    "bearer_metadata",
    "channel_options",
    "open_channel",
    "tls_credentials",
]

ChannelT = TypeVar("ChannelT")
R = TypeVar("R")

REQUEST_ID = "x-request-id"
"""Metadata key of the request id the server logs and echoes back."""


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


def channel_options(
    options: Sequence[tuple[str, Any]] = (),
    service_config: Mapping[str, Any] | str | None = None,
    max_message_mb: int = 64,
) -> list[tuple[str, Any]]:
    """The gRPC channel options of a regserve client: its defaults, then ``options`` over them.

    The defaults set the message size limits from ``max_message_mb``, turn gRPC's
    retries on (``grpc.enable_retries``) and make ``service_config`` (the default one
    when ``None``, see ``default_service_config``) the channel's only service config
    (``grpc.service_config_disable_resolution``: one published in DNS is ignored).
    The service config is given through ``service_config``, never as an option.
    """
    merged: dict[str, Any] = {
        "grpc.max_receive_message_length": max_message_mb * 1024 * 1024,
        "grpc.max_send_message_length": max_message_mb * 1024 * 1024,
        "grpc.enable_retries": 1,
        "grpc.service_config_disable_resolution": 1,
    }
    for key, value in options:
        if key == "grpc.service_config":
            raise ValueError("give the service config as service_config, not as a channel option")
        merged[key] = value
    merged["grpc.service_config"] = service_config_json(service_config)
    return list(merged.items())


def open_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    service_config: Mapping[str, Any] | str | None = None,
    max_message_mb: int = 64,
) -> grpc.Channel:
    """A channel to ``target`` with the options of ``channel_options``; plaintext without ``credentials``.

    ``target`` is any gRPC target: ``host:port``, ``dns:///host:port`` (every address
    the name resolves to, such as the pods of a headless Service) or
    ``ipv4:127.0.0.1:50051,127.0.0.1:50052``.
    """
    merged = channel_options(options, service_config, max_message_mb)
    if credentials is None:
        return grpc.insecure_channel(target, options=merged)
    return grpc.secure_channel(target, credentials, options=merged)


class BaseConnection(Generic[ChannelT]):
    """One channel to regserve, shared by the calls of a client.

    The blocking ``Connection`` and the asyncio ``regserve.client.aio.AsyncConnection``
    differ only in the channel they open and how they wait for a call.

    Parameters
    ----------
    target : str
        A gRPC target: ``host:port``, ``dns:///host:port`` (every address the name
        resolves to, e.g. a Kubernetes headless Service) or ``ipv4:addr:port,addr:port``.
    timeout : float
        Deadline of each call, retries included, in seconds; ``None`` waits forever.
    credentials : grpc.ChannelCredentials, optional
        TLS credentials; plaintext when omitted (and no ``tls_*`` file is given).
    metadata : sequence of (key, value), optional
        Sent with every call.  An ``x-request-id`` entry here is sent with every call;
        without one, each call is sent with a fresh id (32 hex digits).
    max_message_mb : int
        Largest message sent or received, in MiB.
    tls_ca, tls_cert, tls_key : str, optional
        PEM files, used when ``credentials`` is not given: the CA that signed the
        server's certificate, and this client's certificate and key for mutual TLS.
    token : str, optional
        Sent as ``authorization: Bearer <token>``.
    options : sequence of (key, value), optional
        gRPC channel options, applied over the client's own (see ``channel_options``).
    service_config : dict or JSON str, optional
        A gRPC service config that replaces the default one (``round_robin`` over every
        address of the target; Predict, BatchPredict, ModelInfo, the registry's reads
        and health checks retried on UNAVAILABLE and CANCELLED, up to 4 attempts).  ``{}`` gives
        gRPC's own behaviour: ``pick_first`` and no retries.

    Failed calls raise the typed exceptions of ``regserve.client``, whose
    ``request_id`` is the ``x-request-id`` the call was sent with (every attempt of a
    retried call carries the same one).
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
        options: Sequence[tuple[str, Any]] = (),
        service_config: Mapping[str, Any] | str | None = None,
    ) -> None:
        if credentials is None and (tls_ca or tls_cert or tls_key):
            credentials = tls_credentials(tls_ca, tls_cert, tls_key)
        if token:
            metadata = (*metadata, bearer_metadata(token))
        self._channel = self._open_channel(
            target,
            credentials=credentials,
            options=options,
            service_config=service_config,
            max_message_mb=max_message_mb,
        )
        self.timeout = timeout
        self.metadata = tuple(metadata)

    def _open_channel(self, target: str, **channel: Any) -> ChannelT:
        """The channel to ``target``, opened with ``open_channel``'s keyword arguments."""
        raise NotImplementedError

    def _call_metadata(self) -> tuple[tuple[tuple[str, str], ...], str]:
        """The metadata of one call and the request id in it: the caller's, or a fresh one.

        When the application traces with OpenTelemetry and a span is current, the call also
        carries its W3C ``traceparent`` (the application's propagators), so the server's span is its child.
        """
        metadata = self.metadata
        if "opentelemetry.trace" in sys.modules:  # no span can be current before the application imports it
            metadata = (*metadata, *_trace_context())
        for key, value in metadata:
            if key == REQUEST_ID:
                return metadata, value
        request_id = uuid.uuid4().hex
        return (*metadata, (REQUEST_ID, request_id)), request_id


def _trace_context() -> tuple[tuple[str, str], ...]:
    """The current span's propagation entries (``traceparent``, ...); none without a current span."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


class Connection(BaseConnection[grpc.Channel]):
    """A blocking channel to regserve and a context manager; its parameters are those of ``BaseConnection``."""

    def _open_channel(self, target: str, **channel: Any) -> grpc.Channel:
        return open_channel(target, **channel)

    def _unary(self, rpc: grpc.UnaryUnaryMultiCallable, request):
        """Call a unary method with the deadline and metadata; a failure raises the typed exception."""
        metadata, request_id = self._call_metadata()
        try:
            return rpc(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, request_id) from exc

    def _send(self, stub, call: Call[R]) -> R:
        """Send ``call`` through the method of ``stub`` it names; return what it makes of the response."""
        return call.result(self._unary(getattr(stub, call.method), call.request))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
