"""TLS and mutual TLS on the gRPC port, with certificates made by trustme at test time."""

from __future__ import annotations

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from regserve.client import RegressionClient, tls_credentials
from tests.conftest import start_server


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, as PEM files."""
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@regserve.test")
    paths = {name: root / f"{name}.pem" for name in ("ca", "server_cert", "server_key", "client_cert", "client_key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.private_key_pem.write_to_path(paths["server_key"])
    server.cert_chain_pems[0].write_to_path(paths["server_cert"])
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(paths["server_cert"], append=True)
    client.private_key_pem.write_to_path(paths["client_key"])
    client.cert_chain_pems[0].write_to_path(paths["client_cert"])
    return {name: str(path) for name, path in paths.items()}


def _health(channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


@pytest.fixture
def tls_app(tmp_path, pki):
    app = start_server(tmp_path / "models", tls_cert=pki["server_cert"], tls_key=pki["server_key"])
    yield app
    app.stop(0)


@pytest.fixture
def mtls_app(tmp_path, pki):
    app = start_server(
        tmp_path / "models", tls_cert=pki["server_cert"], tls_key=pki["server_key"], tls_client_ca=pki["ca"]
    )
    yield app
    app.stop(0)


def test_tls_round_trip_and_plaintext_is_refused(tls_app, pki):
    target = f"127.0.0.1:{tls_app.port}"
    with grpc.secure_channel(target, tls_credentials(pki["ca"])) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
    with RegressionClient(target, tls_ca=pki["ca"], timeout=5) as client:
        assert client.health() == "NOT_SERVING"
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
        _health(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate(mtls_app, pki):
    target = f"127.0.0.1:{mtls_app.port}"
    with RegressionClient(
        target, tls_ca=pki["ca"], tls_cert=pki["client_cert"], tls_key=pki["client_key"], timeout=5
    ) as client:
        assert client.health() == "NOT_SERVING"
    with grpc.secure_channel(target, tls_credentials(pki["ca"])) as channel, pytest.raises(grpc.RpcError) as caught:
        _health(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
        _health(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_ca_without_a_server_certificate_is_a_configuration_error(tmp_path, pki):
    with pytest.raises(ValueError, match="tls-client-ca"):
        start_server(tmp_path / "models", tls_client_ca=pki["ca"])


def test_cli_speaks_mutual_tls(mtls_app, pki, capsys):
    from regserve.server.cli import main

    target = f"127.0.0.1:{mtls_app.port}"
    files = ["--tls-ca", pki["ca"], "--tls-cert", pki["client_cert"], "--tls-key", pki["client_key"]]
    assert main(["health", "--server", target, *files]) == 1  # answered: NOT_SERVING, no model yet
    assert capsys.readouterr().out.strip() == "NOT_SERVING"
    assert main(["health", "--server", target, "--tls-ca", pki["ca"], "--timeout", "2"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_tls_files_that_cannot_serve_are_refused_by_their_flag(tmp_path, pki, capsys):
    from regserve.server.cli import main

    serve = ["serve", "--port", "0", "--no-demo-models", "--model-dir", str(tmp_path)]
    cases = [
        (["--tls-cert", pki["server_cert"]], "--tls-cert and --tls-key go together: give both"),
        (["--tls-cert", pki["server_cert"], "--tls-key", pki["client_key"]], "are not a PEM certificate and its"),
        (["--tls-cert", pki["server_key"], "--tls-key", pki["server_key"]], "are not a PEM certificate and its"),
        (["--tls-cert", pki["server_cert"], "--tls-key", str(tmp_path / "absent.pem")], "No such file"),
        (
            ["--tls-cert", pki["server_cert"], "--tls-key", pki["server_key"], "--tls-client-ca", pki["server_key"]],
            f"--tls-client-ca {pki['server_key']} is not a PEM CA certificate",
        ),
    ]
    # An encrypted key: OpenSSL would ask for its pass phrase on the terminal, and grpc cannot use it.
    from cryptography.hazmat.primitives import serialization

    with open(pki["server_key"], "rb") as plain:
        key = serialization.load_pem_private_key(plain.read(), None)
    encrypted = tmp_path / "encrypted.pem"
    encryption = serialization.BestAvailableEncryption(b"pass phrase")
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    cases.append((["--tls-cert", pki["server_cert"], "--tls-key", str(encrypted)], "is encrypted; grpc needs a key"))
    for flags, message in cases:
        assert main([*serve, *flags]) == 1
        assert message in capsys.readouterr().err, flags
