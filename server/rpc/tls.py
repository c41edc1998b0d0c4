"""Server TLS credentials from PEM files: TLS, or mutual TLS when a client CA is given."""

from __future__ import annotations

from pathlib import Path

import grpc

__all__ = ["server_credentials"]


def server_credentials(cert_file: str, key_file: str, client_ca_file: str = "") -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port``.

    With ``client_ca_file``, every client must present a certificate signed by that CA
    (the handshake fails otherwise); without it, clients stay anonymous at the TLS layer.
    """
    pair = (Path(key_file).read_bytes(), Path(cert_file).read_bytes())
    if client_ca_file:
        return grpc.ssl_server_credentials(
            [pair], root_certificates=Path(client_ca_file).read_bytes(), require_client_auth=True
        )
    return grpc.ssl_server_credentials([pair])
