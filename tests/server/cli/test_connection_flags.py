"""Connection flags every client command shares, and what a call the server refuses without a message prints."""

from __future__ import annotations

import json

import pytest
import trustme

from regserve.server.cli import main
from regserve.server.datasets.demo import train_demo_model
from tests.conftest import start_server


@pytest.fixture(scope="module")
def named_pki(tmp_path_factory):
    """A CA, and a server certificate it signed for the DNS name regserve.example only."""
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("regserve.example")
    paths = {name: str(root / f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    server.private_key_pem.write_to_path(paths["key"])
    return paths


@pytest.fixture
def named_server(tmp_path, named_pki):
    app = start_server(tmp_path / "models", tls_cert=named_pki["cert"], tls_key=named_pki["key"])
    train_demo_model(app.store, "diabetes")
    app.update_health()
    yield f"127.0.0.1:{app.port}"
    app.stop(0)


@pytest.mark.parametrize(
    "command",
    [
        ["models"],
        ["versions", "--model", "diabetes"],
        ["info", "--model", "diabetes"],
        ["predict", "--model", "diabetes", "--features", "0,0,0,0,0,0,0,0,0,0"],
        ["status"],
        ["import", "{coefficients}", "--model", "imported"],
    ],
)
def test_every_client_command_checks_the_certificate_against_the_name_given(
    named_server, named_pki, command, tmp_path, capsys
):
    coefficients = tmp_path / "linear.json"
    coefficients.write_text(json.dumps({"kind": "linear", "coefficients": [[1.0, 2.0]], "intercepts": [0.5]}))
    command = [part.format(coefficients=coefficients) for part in command]
    base = [*command, "--server", named_server, "--tls-ca", named_pki["ca"]]
    # The certificate does not name 127.0.0.1, the address called: the handshake fails.
    assert main(base) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert main([*base, "--tls-server-name", "regserve.example"]) == 0
    assert capsys.readouterr().out


def test_an_unknown_health_service_is_named_in_the_message(target, client, linear_data, capsys):
    client.train("house", *linear_data)
    assert main(["health", "--server", target, "--service", "nope"]) == 1
    err = capsys.readouterr().err
    assert "the server reports no health for service 'nope'" in err and "regserve.v1.RegressionService" in err
    assert "[NOT_FOUND]" in err
    assert main(["health", "--server", target, "--service", "nope", "--output", "json"]) == 1
    error = json.loads(capsys.readouterr().err)
    assert error["code"] == "NOT_FOUND" and "'nope'" in error["message"]
    assert main(["health", "--server", target, "--service", "regserve.v1.RegressionService"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_the_target_among_the_feature_columns_is_named_as_the_target(target, tmp_path, capsys):
    path = tmp_path / "houses.csv"
    path.write_text("bedrooms,bathrooms,sqft,price\n3,2,120,300\n2,1,80,200\n4,2,150,380\n")
    command = ["train", str(path), "--server", target, "--model", "houses", "--target", "price"]
    assert main([*command, "--feature-columns", "sqft,price"]) == 1
    err = capsys.readouterr().err
    assert "'price' is the target, so it cannot also be a feature column" in err
