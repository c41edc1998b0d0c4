"""Bearer tokens and roles on a real server: who may call what, and what the refusals say."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from regserve.server.edge.auth import TokenTable
from regserve.v1 import model_service_pb2 as mpb
from regserve.v1 import model_service_pb2_grpc as mpb_grpc
from regserve.v1 import regression_service_pb2 as pb
from regserve.v1 import regression_service_pb2_grpc as pb_grpc
from regserve.v1 import types_pb2
from tests.conftest import start_server
from tests.server.edge.helpers import details_of
from tests.server.gateway.helpers import MODES, running_gateway

ADMIN_TOKEN = "admin-secret-0123"
PREDICT_TOKEN = "predict-secret-4567"


@pytest.fixture
def secured_app(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# role:token\nadmin:{ADMIN_TOKEN}\npredict:{PREDICT_TOKEN}\n", encoding="utf-8")
    app = start_server(tmp_path / "models", tokens_file=str(tokens))
    yield app
    app.stop(0)


@pytest.fixture
def secured_target(secured_app):
    return f"127.0.0.1:{secured_app.port}"


@pytest.fixture
def secured(secured_target):
    with grpc.insecure_channel(secured_target) as channel:
        yield channel


def _bearer(token):
    return (("authorization", f"Bearer {token}"),)


def _train_requests(rows=40):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(rows, 3))
    y = X @ np.array([1.0, 2.0, 3.0]) + 0.5
    yield pb.TrainRequest(spec=types_pb2.TrainSpec(model="house", kind=types_pb2.MODEL_KIND_LINEAR))
    features = types_pb2.Matrix(num_columns=3, raw=X.tobytes())
    yield pb.TrainRequest(chunk=types_pb2.TrainChunk(features=features, targets=types_pb2.Vector(raw=y.tobytes())))


def _predict_request():
    return pb.PredictRequest(model="house", inputs=types_pb2.Matrix(num_columns=3, values=[1.0, 2.0, 3.0]))


@pytest.mark.parametrize(
    ("metadata", "code", "reason"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN"),
        (_bearer("not-a-token"), grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_TOKEN"),
        ((("authorization", ADMIN_TOKEN),), grpc.StatusCode.UNAUTHENTICATED, "MALFORMED_TOKEN"),
        (_bearer(PREDICT_TOKEN), grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED"),
        # Two entries, whichever comes first: refused, not resolved to one of them.
        (_bearer("not-a-token") + _bearer(ADMIN_TOKEN), grpc.StatusCode.UNAUTHENTICATED, "MALFORMED_TOKEN"),
        (_bearer(ADMIN_TOKEN) + _bearer("not-a-token"), grpc.StatusCode.UNAUTHENTICATED, "MALFORMED_TOKEN"),
        (_bearer(ADMIN_TOKEN) + _bearer(ADMIN_TOKEN), grpc.StatusCode.UNAUTHENTICATED, "MALFORMED_TOKEN"),
    ],
    ids=[
        "no-token",
        "wrong-token",
        "no-bearer-scheme",
        "predict-role-trains",
        "wrong-then-right",
        "right-then-wrong",
        "twice",
    ],
)
def test_train_is_refused_without_an_admin_token(secured, metadata, code, reason):
    stub = pb_grpc.RegressionServiceStub(secured)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Train(_train_requests(), metadata=metadata, timeout=10)
    assert caught.value.code() == code
    assert details_of(caught.value)[0] == reason


def test_admin_trains_and_changes_the_registry_predict_only_reads(secured):
    stub = pb_grpc.RegressionServiceStub(secured)
    models = mpb_grpc.ModelServiceStub(secured)
    trained = stub.Train(_train_requests(), metadata=_bearer(ADMIN_TOKEN), timeout=30)
    assert trained.model_version.version == "v1"
    stub.Train(_train_requests(), metadata=_bearer(ADMIN_TOKEN), timeout=30)

    answer = stub.Predict(_predict_request(), metadata=_bearer(PREDICT_TOKEN), timeout=10)
    assert answer.version == "v2" and len(answer.predictions.values) == 1
    assert stub.ModelInfo(pb.ModelInfoRequest(model="house"), metadata=_bearer(PREDICT_TOKEN)).model_version.version
    listed = models.ListModels(mpb.ListModelsRequest(), metadata=_bearer(PREDICT_TOKEN), timeout=10)
    assert [m.model for m in listed.models] == ["house"]

    with pytest.raises(grpc.RpcError) as caught:
        models.RollbackModel(mpb.RollbackModelRequest(model="house"), metadata=_bearer(PREDICT_TOKEN), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details_of(caught.value)[0] == "ROLE_NOT_ALLOWED"
    state = models.RollbackModel(mpb.RollbackModelRequest(model="house"), metadata=_bearer(ADMIN_TOKEN), timeout=10)
    assert state.state.serving_version == "v1"

    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(_predict_request(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details_of(caught.value)[0] == "MISSING_TOKEN"


def test_health_and_reflection_stay_open(secured):
    health = health_pb2_grpc.HealthStub(secured)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status in (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )


def test_client_library_sends_the_token(secured_target):
    from regserve.client import PermissionDenied, RegressionClient

    with RegressionClient(secured_target, token=PREDICT_TOKEN, timeout=10) as client:
        with pytest.raises(PermissionDenied) as caught:
            client.train("house", np.eye(3), np.ones(3))
        assert caught.value.reason == "ROLE_NOT_ALLOWED"


def test_token_table_forms_and_mistakes():
    table = TokenTable.parse('{"abc": "admin", "def": "predict"}')
    assert table.authenticate("Bearer def").role == "predict"
    assert TokenTable.parse('[{"role": "admin", "token": "t"}]').authenticate("bearer t").role == "admin"
    assert TokenTable.parse("admin:abc,predict:def").authenticate("Bearer abc").role == "admin"
    with pytest.raises(ValueError, match="unknown role"):
        TokenTable.parse("root:abc")
    with pytest.raises(ValueError, match="role:token"):
        TokenTable.parse("abc")
    assert "abc" not in repr(table.__dict__)
    # One token under two roles: the first would win and the second role never apply.
    with pytest.raises(ValueError, match="a token of role 'admin' is also a token of role 'predict'"):
        TokenTable.parse("predict:same,admin:same")
    assert len(TokenTable.parse("admin:same,admin:same")) == 1
    # The example Secret's values, applied unchanged.
    with pytest.raises(ValueError, match="still reads REPLACE-ME"):
        TokenTable.parse("admin:REPLACE-ME-admin-token,predict:REPLACE-ME-predict-token")


@pytest.mark.parametrize(
    "document",
    ['{"admin": ["a1"], "predict": ["p1"]}', '[["admin", "a1"]]', '[{"role": "admin"}]', '[{"role": 1, "token": "t"}]'],
)
def test_a_json_tokens_document_of_another_shape_is_refused_saying_which_shapes_are_read(document):
    with pytest.raises(ValueError, match=r'a JSON tokens document is \{"TOKEN": "ROLE", ...\}'):
        TokenTable.parse(document)


def test_a_token_under_two_roles_across_the_file_and_the_variable_refuses_to_start(tmp_path):
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("predict:same\npredict:other\n")
    with pytest.raises(ValueError, match="a token of role 'admin' is also a token of role 'predict'"):
        TokenTable.load(str(tokens_file), "admin:same")
    both = TokenTable.load(str(tokens_file), "admin:third")
    assert both is not None and both.authenticate("Bearer same").role == "predict"
    assert both.authenticate("Bearer third").role == "admin"
    # The server itself, started as an operator would, refuses with that message and exits.
    env = {**os.environ, "REGSERVE_TOKENS": "admin:same"}
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--port", "0", "--metrics-port", "0"]
    command += ["--model-dir", str(tmp_path / "models"), "--no-demo-models", "--tokens-file", str(tokens_file)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "is also a token of role 'predict'" in done.stderr


def test_auth_flag_without_tokens_refuses_to_start(tmp_path):
    with pytest.raises(ValueError, match="needs tokens"):
        start_server(tmp_path / "models", auth=True)


def test_tokens_from_the_environment_turn_auth_on(tmp_path, monkeypatch):
    import argparse

    from regserve.server.config import Settings, add_arguments

    monkeypatch.setenv("REGSERVE_TOKENS", "admin:from-env")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = Settings.from_args(parser.parse_args([]))
    assert settings.auth_enabled and "from-env" not in repr(settings)
    assert "--tokens " not in parser.format_help()


def _error_reason(body: dict) -> str:
    return next((d.get("reason", "") for d in body.get("details", ()) if d.get("@type", "").endswith("ErrorInfo")), "")


@pytest.mark.parametrize("mode", MODES)
def test_the_rest_gateway_carries_tokens_and_refusals(secured_app, secured_target, mode):
    """Over gRPC or in process (the gateway inside ``regserve serve``), the edge checks every call."""
    train_body = json.dumps({"spec": {"model": "rest", "kind": "MODEL_KIND_LINEAR"}}) + "\n"
    train_body += (
        json.dumps({"chunk": {"features": {"numColumns": 1, "values": [1, 2, 3]}, "targets": {"values": [2, 4, 6]}}})
        + "\n"
    )
    ndjson = {"content-type": "application/x-ndjson"}
    predictor = {"authorization": f"Bearer {PREDICT_TOKEN}"}
    local = secured_app.local if mode == "in_process" else None
    with running_gateway(secured_target, local) as http:
        cases = [
            ({}, 401, "MISSING_TOKEN"),
            ({"authorization": "Bearer wrong"}, 401, "UNKNOWN_TOKEN"),
            (predictor, 403, "ROLE_NOT_ALLOWED"),
        ]
        for headers, status, reason in cases:
            response = http.post("/v1/models:train", content=train_body, headers={**ndjson, **headers})
            assert response.status_code == status, response.text
            assert _error_reason(response.json()) == reason
        admin = {**ndjson, "authorization": f"Bearer {ADMIN_TOKEN}"}
        response = http.post("/v1/models:train", content=train_body, headers=admin)
        assert response.status_code == 200, response.text
        listed = http.get("/v1/models", headers=predictor)
        assert listed.status_code == 200 and [m["model"] for m in listed.json()["models"]] == ["rest"]
        # The unary routes, which the embedded gateway answers in process.
        predict = {"inputs": {"numColumns": 1, "values": [4]}}
        for headers, status, reason in cases[:2]:
            response = http.post("/v1/models/rest:predict", json=predict, headers=headers)
            assert response.status_code == status and _error_reason(response.json()) == reason
        response = http.post("/v1/models/rest:predict", json=predict, headers=predictor)
        assert response.status_code == 200 and response.json()["predictions"]["values"] == pytest.approx([8.0])
        response = http.post("/v1/models/rest/versions/v1:promote", json={}, headers=predictor)
        assert response.status_code == 403 and _error_reason(response.json()) == "ROLE_NOT_ALLOWED"
