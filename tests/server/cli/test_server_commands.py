"""serve and gateway report configuration and domain errors in one line, with exit status 1."""

from __future__ import annotations

import pytest

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


def test_the_gateway_takes_its_grace_as_serve_does(tmp_path):
    """`regserve gateway --grace-seconds` is the flag of `regserve serve`; the old spelling is refused."""
    import pytest

    from regserve.server.cli.parser import build_parser
    from regserve.server.config import Settings

    parser = build_parser()
    assert parser.parse_args(["gateway"]).grace_seconds == Settings.grace_seconds
    assert parser.parse_args(["gateway", "--grace-seconds", "2.5"]).grace_seconds == 2.5
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["gateway", "--grace-period", "2.5"])
    assert info.value.code == 2


def test_the_gateway_command_stops_on_sigterm_within_its_grace(tmp_path):
    """A `regserve gateway --grace-seconds 1` process holding an open HTTP call stops on SIGTERM."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "regserve.server.cli", "gateway", "--upstream", "127.0.0.1:1"]
    command += ["--port", str(port), "--grace-seconds", "1", "--body-timeout", "3600"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                held = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        with held:
            # A body that never comes: the call stays open until the grace ends it.
            held.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.5)  # lets the gateway read the head, so the call is in flight
            process.send_signal(signal.SIGTERM)
            # uvicorn raises the signal it caught again once it has shut down, so the status names it.
            assert process.wait(60) == -signal.SIGTERM
            held.settimeout(60)
            # uvicorn cancels a call still open when the grace ends and answers it 500.
            assert held.recv(1024).startswith(b"HTTP/1.1 500 ")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_an_unreadable_environment_value_is_refused_by_serve_alone_and_a_flag_overrides_it(
    monkeypatch, tmp_path, capsys
):
    from regserve.server.cli.parser import build_parser

    # Kubernetes gives a pod of a Service named regserve REGSERVE_PORT=tcp://ADDRESS:PORT unless
    # enableServiceLinks is false.
    monkeypatch.setenv("REGSERVE_PORT", "tcp://10.0.0.1:50051")
    monkeypatch.setenv("REGSERVE_AUTH", "enabled")
    assert main(["serve", "--no-demo-models", "--model-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "regserve: REGSERVE_PORT='tcp://10.0.0.1:50051' is not an integer; fix or unset it, or give the flag\n"
    )
    assert main(["serve", "--port", "0", "--no-demo-models", "--model-dir", str(tmp_path)]) == 1
    assert "REGSERVE_AUTH='enabled' is not a boolean" in capsys.readouterr().err
    parsed = build_parser().parse_args(["serve", "--port", "0", "--auth"])
    assert (parsed.port, parsed.auth) == (0, True)
    assert build_parser().parse_args(["models"]).command == "models"


def test_limits_that_cannot_serve_are_refused_by_their_flag(tmp_path):
    from regserve.server.config import Settings

    for setting, message in [
        ({"poll_interval": 0.0}, "--poll-interval must be a finite number of seconds above 0"),
        ({"max_message_mb": 0}, "--max-message-mb must be at least 1"),
        ({"rate_limit": -1.0}, "--rate-limit must be 0 (no limit) or a finite number of calls a second"),
        ({"rate_burst": 0}, "--rate-burst must be at least 1"),
        ({"max_predict_rows": 0}, "--max-predict-rows must be at least 1"),
    ]:
        with pytest.raises(ValueError) as refused:
            Settings(model_dir=str(tmp_path), **setting).check()
        assert str(refused.value) == message


def test_a_model_dir_that_cannot_be_a_registry_is_named(tmp_path, capsys):
    afile = tmp_path / "models.txt"
    afile.write_text("not a directory")
    assert main(["serve", "--port", "0", "--no-demo-models", "--model-dir", str(afile)]) == 1
    assert capsys.readouterr().err == f"regserve: --model-dir {afile}: a file, not a directory\n"
    below = afile / "registry"
    assert main(["serve", "--port", "0", "--no-demo-models", "--model-dir", str(below)]) == 1
    assert f"the registry directory {below} cannot be made" in capsys.readouterr().err
