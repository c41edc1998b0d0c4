"""``regserve health`` beside a server finds it from the server's own environment, as a container's HEALTHCHECK does.

Real servers on 127.0.0.1 port 0, plaintext, TLS and mutual TLS with certificates
made by trustme; the check is run in-process through ``main`` and once as its own
process, the way the Dockerfile's HEALTHCHECK runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import trustme

from regserve.server.cli import main
from regserve.server.cli.parser import build_parser, health_defaults
from regserve.server.datasets.demo import train_demo_model
from tests.conftest import start_server

_SERVER_ENV = (
    "REGSERVE_SERVER",
    "REGSERVE_HOST",
    "REGSERVE_PORT",
    "REGSERVE_TLS_CERT",
    "REGSERVE_TLS_KEY",
    "REGSERVE_TLS_CLIENT_CA",
    "REGSERVE_TLS_SERVER_NAME",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Each test sets the server's variables it means; none leaks in from the shell running the tests."""
    for name in _SERVER_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA; a server certificate for 127.0.0.1 and localhost, and one for a DNS name only, that it signed."""
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    paths = {name: root / f"{name}.pem" for name in ("ca", "cert", "key", "named_cert", "named_key")}
    ca.cert_pem.write_to_path(paths["ca"])
    for prefix, names in (("", ("127.0.0.1", "localhost")), ("named_", ("regserve.example",))):
        server = ca.issue_cert(*names)
        server.private_key_pem.write_to_path(paths[f"{prefix}key"])
        server.cert_chain_pems[0].write_to_path(paths[f"{prefix}cert"])
    return {name: str(path) for name, path in paths.items()}


def _serving(tmp_path, **settings):
    """A started server that serves one model, so its health is SERVING."""
    app = start_server(tmp_path / "models", **settings)
    train_demo_model(app.store, "diabetes")
    app.update_health()
    return app


def test_the_address_follows_the_servers_host_and_port():
    assert health_defaults({})["server"] == "127.0.0.1:50051"
    assert health_defaults({"REGSERVE_PORT": "6000"})["server"] == "127.0.0.1:6000"
    for wildcard in ("0.0.0.0", "::", "[::]"):
        assert health_defaults({"REGSERVE_HOST": wildcard, "REGSERVE_PORT": "6000"})["server"] == "127.0.0.1:6000"
    assert health_defaults({"REGSERVE_HOST": "::1", "REGSERVE_PORT": "6000"})["server"] == "[::1]:6000"
    assert health_defaults({"REGSERVE_HOST": "127.0.0.2"})["server"] == "127.0.0.2:50051"
    assert health_defaults({"REGSERVE_SERVER": "h:1", "REGSERVE_PORT": "6000"})["server"] == "h:1"


def test_tls_follows_the_servers_certificate_and_client_ca():
    plain = health_defaults({})
    assert (plain["tls_ca"], plain["tls_cert"], plain["tls_key"]) == (None, None, None)
    tls = health_defaults({"REGSERVE_TLS_CERT": "c.pem", "REGSERVE_TLS_KEY": "k.pem"})
    assert (tls["tls_ca"], tls["tls_cert"], tls["tls_key"]) == ("c.pem", None, None)
    mutual = health_defaults({"REGSERVE_TLS_CERT": "c.pem", "REGSERVE_TLS_KEY": "k.pem", "REGSERVE_TLS_CLIENT_CA": "a"})
    assert (mutual["tls_ca"], mutual["tls_cert"], mutual["tls_key"]) == ("c.pem", "c.pem", "k.pem")
    assert plain["tls_server_name"] is None
    assert health_defaults({"REGSERVE_TLS_SERVER_NAME": "regserve.example"})["tls_server_name"] == "regserve.example"


def test_flags_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("REGSERVE_PORT", "6000")
    monkeypatch.setenv("REGSERVE_TLS_CERT", "c.pem")
    args = build_parser().parse_args(["health", "--server", "h:1", "--tls-ca", "ca.pem"])
    assert (args.server, args.tls_ca) == ("h:1", "ca.pem")
    assert build_parser().parse_args(["health"]).server == "127.0.0.1:6000"
    # Only health reads the server's settings; the other commands keep REGSERVE_SERVER's default.
    assert build_parser().parse_args(["models"]).tls_ca is None


def test_plaintext_server_on_the_port_from_the_environment(tmp_path, monkeypatch, capsys):
    app = _serving(tmp_path)
    try:
        monkeypatch.setenv("REGSERVE_HOST", "0.0.0.0")
        monkeypatch.setenv("REGSERVE_PORT", str(app.port))
        assert main(["health"]) == 0
        assert capsys.readouterr().out.strip() == "SERVING"
    finally:
        app.stop(0)


def test_a_server_without_a_model_is_not_serving(tmp_path, monkeypatch, capsys):
    app = start_server(tmp_path / "models")
    try:
        monkeypatch.setenv("REGSERVE_PORT", str(app.port))
        assert main(["health"]) == 1
        assert capsys.readouterr().out.strip() == "NOT_SERVING"
    finally:
        app.stop(0)


def test_tls_server_is_checked_over_tls_from_its_own_settings(tmp_path, monkeypatch, pki, capsys):
    app = _serving(tmp_path, tls_cert=pki["cert"], tls_key=pki["key"])
    try:
        monkeypatch.setenv("REGSERVE_PORT", str(app.port))
        monkeypatch.setenv("REGSERVE_TLS_CERT", pki["cert"])
        monkeypatch.setenv("REGSERVE_TLS_KEY", pki["key"])
        assert main(["health"]) == 0
        assert capsys.readouterr().out.strip() == "SERVING"
        # Without the TLS settings the check speaks plaintext, which a TLS port refuses.
        monkeypatch.delenv("REGSERVE_TLS_CERT")
        assert main(["health"]) == 1
        assert "UNAVAILABLE" in capsys.readouterr().err
    finally:
        app.stop(0)


def test_a_certificate_for_another_name_is_checked_against_the_name_given(tmp_path, monkeypatch, pki, capsys):
    app = _serving(tmp_path, tls_cert=pki["named_cert"], tls_key=pki["named_key"])
    try:
        monkeypatch.setenv("REGSERVE_PORT", str(app.port))
        monkeypatch.setenv("REGSERVE_TLS_CERT", pki["named_cert"])
        monkeypatch.setenv("REGSERVE_TLS_KEY", pki["named_key"])
        # The certificate does not name 127.0.0.1, the address called: the handshake fails.
        assert main(["health"]) == 1
        assert "UNAVAILABLE" in capsys.readouterr().err
        monkeypatch.setenv("REGSERVE_TLS_SERVER_NAME", "regserve.example")
        assert main(["health"]) == 0
        assert capsys.readouterr().out.strip() == "SERVING"
        assert main(["health", "--tls-server-name", "other.example"]) == 1
        capsys.readouterr()
    finally:
        app.stop(0)


def test_mutual_tls_server_accepts_its_own_certificate_signed_by_the_client_ca(tmp_path, monkeypatch, pki, capsys):
    app = _serving(tmp_path, tls_cert=pki["cert"], tls_key=pki["key"], tls_client_ca=pki["ca"])
    try:
        monkeypatch.setenv("REGSERVE_PORT", str(app.port))
        monkeypatch.setenv("REGSERVE_TLS_CERT", pki["cert"])
        monkeypatch.setenv("REGSERVE_TLS_KEY", pki["key"])
        monkeypatch.setenv("REGSERVE_TLS_CLIENT_CA", pki["ca"])
        assert main(["health"]) == 0
        assert capsys.readouterr().out.strip() == "SERVING"
    finally:
        app.stop(0)


def test_the_healthcheck_command_as_its_own_process(tmp_path, pki):
    """``regserve health`` with no flags, in the server's environment: what the Dockerfile's HEALTHCHECK runs."""
    app = _serving(tmp_path, tls_cert=pki["cert"], tls_key=pki["key"])
    try:
        env = {name: value for name, value in os.environ.items() if name not in _SERVER_ENV}
        env.update(
            REGSERVE_HOST="0.0.0.0",
            REGSERVE_PORT=str(app.port),
            REGSERVE_TLS_CERT=pki["cert"],
            REGSERVE_TLS_KEY=pki["key"],
        )
        done = subprocess.run(
            [sys.executable, "-m", "regserve.server.cli", "health"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (done.returncode, done.stdout.strip()) == (0, "SERVING"), done.stderr
    finally:
        app.stop(0)
