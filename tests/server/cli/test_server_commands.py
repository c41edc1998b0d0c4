"""serve and gateway report configuration and domain errors in one line, with exit status 1."""

from __future__ import annotations

from regserve.server.cli import main
from regserve.server.errors import FailedPrecondition


def test_a_domain_error_that_ends_serve_is_one_line_on_stderr(monkeypatch, tmp_path, capsys):
    def refuse(settings):
        raise FailedPrecondition(f"the registry in {settings.model_dir} cannot be read", reason="BAD_REGISTRY")

    monkeypatch.setattr("regserve.server.runtime.serve.serve", refuse)
    assert main(["serve", "--no-demo-models", "--model-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"regserve: the registry in {tmp_path} cannot be read\n"


def test_a_gateway_with_half_a_client_certificate_is_refused(capsys):
    assert main(["gateway", "--upstream", "127.0.0.1:1", "--port", "0", "--tls-cert", "cert.pem"]) == 1
    assert capsys.readouterr().err == "regserve: give both cert and key for a client certificate, or neither\n"
