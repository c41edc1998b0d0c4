"""``--output json`` against a real server: each command prints the JSON of its call's response message.

Every document is parsed back into the response message with ``json_format.ParseDict``
(which refuses unknown fields), so the shape is the message's; predict prints one
object per row.  Errors are one JSON object on stderr, with the exit statuses of text mode.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2

from regserve.client import ModelAdminClient
from regserve.server.cli import main
from regserve.v1 import model_service_pb2, regression_service_pb2
from tests.conftest import start_server


@pytest.fixture
def csv_file(tmp_path, linear_data):
    X, y = linear_data
    path = tmp_path / "house.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,e,price", comments="", fmt="%.17g")
    return path


@pytest.fixture
def admin(target):
    with ModelAdminClient(target, timeout=60) as admin:
        yield admin


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def document(capsys, message_type, *argv: str):
    """Run ``argv`` with ``--output json``; its stdout parsed as ``message_type``, which it must be exactly."""
    status, out, err = run(capsys, *argv, "--output", "json")
    assert status == 0 and err == "", err
    return json_format.ParseDict(json.loads(out), message_type())


def test_train_info_models_and_versions_print_their_response_messages(target, csv_file, client, admin, capsys):
    trained = document(
        capsys,
        regression_service_pb2.TrainResponse,
        *("train", str(csv_file), "--server", target, "--model", "house", "--target", "price"),
        *("--validation-fraction", "0.2", "--seed", "5", "--chunk-rows", "64"),
    )
    assert trained.promoted and trained.model_version.version == "v1" and trained.model_version.num_samples == 400
    assert list(trained.model_version.feature_names) == ["a", "b", "c", "d", "e"]
    assert trained.model_version.validation.metrics["r2"] > 0.99

    info = document(capsys, regression_service_pb2.ModelInfoResponse, "info", "--server", target, "--model", "house")
    assert info.model_version == client.model_info("house")
    models = document(capsys, model_service_pb2.ListModelsResponse, "models", "--server", target)
    assert list(models.models) == admin.list_models()
    listing = ("versions", "--server", target, "--model", "house")
    versions = document(capsys, model_service_pb2.ListVersionsResponse, *listing)
    assert list(versions.versions) == admin.list_versions("house")


def test_every_field_without_presence_is_printed_under_its_proto_name(target, client, linear_data, capsys):
    client.train("house", *linear_data)
    status, out, _ = run(capsys, "models", "--server", target, "-o", "json")
    state = json.loads(out)["models"][0]
    # Zeros and empty lists are printed too, so a script finds every key; 64-bit counts are numbers.
    assert state["frozen_versions"] == [] and state["traffic_split"] == {} and state["previous_versions"] == []
    assert isinstance(state["generation"], int) and state["serving_version"] == "v1"
    assert "problem" not in state  # an unset message field is left out


def test_lifecycle_commands_print_the_state_after_the_change(target, client, admin, linear_data, capsys):
    X, y = linear_data
    client.train("house", X, y)
    for _ in range(2):
        client.train("house", X, y, promote=False)
    server = ("--server", target, "--model", "house")
    response = model_service_pb2.PromoteVersionResponse
    promoted = document(capsys, response, "promote", *server, "v2", "--reason", "better")
    assert promoted.state.serving_version == "v2"
    split = document(capsys, response, "split", *server, "v2=90", "v3=10")
    assert dict(split.state.traffic_split) == {"v2": 90.0, "v3": 10.0}
    assert document(capsys, response, "split", *server, "--clear").state.traffic_split == {}
    assert list(document(capsys, response, "freeze", *server, "v3").state.frozen_versions) == ["v3"]
    assert list(document(capsys, response, "unfreeze", *server, "v3").state.frozen_versions) == []
    assert document(capsys, response, "rollback", *server).state.serving_version == "v1"
    deleted = document(capsys, response, "delete", *server, "v3")
    assert list(deleted.state.versions) == ["v1", "v2"] and deleted.state == admin.list_models()[0]


def test_predict_prints_one_object_per_row_with_the_values_of_text_mode(target, client, linear_data, tmp_path, capsys):
    X, y = linear_data
    client.train("house", X, y)
    rows = tmp_path / "rows.csv"
    np.savetxt(rows, X[:25], delimiter=",", header="a,b,c,d,e", comments="", fmt="%.17g")
    command = ("predict", "--server", target, "--model", "house", "--csv", str(rows), "--chunk-rows", "10")
    _, text, _ = run(capsys, *command)
    status, out, err = run(capsys, *command, "--output", "json")
    assert status == 0 and err == ""
    objects = [json.loads(line) for line in out.splitlines()]
    assert [o["prediction"] for o in objects] == [float(v) for v in text.splitlines()]
    assert all(o.keys() == {"model", "version", "prediction"} for o in objects)
    assert {(o["model"], o["version"]) for o in objects} == {("house", "v1")}
    assert objects[0]["prediction"] == client.predict("house", X[:1]).values[0]


def test_a_classifier_prediction_carries_its_label_and_class_probabilities(target, client, capsys):
    rng = np.random.default_rng(7)
    X = np.vstack([rng.normal(-2, 1, size=(50, 2)), rng.normal(2, 1, size=(50, 2))])
    client.train("weather", X, np.array(["cold"] * 50 + ["hot"] * 50), kind="logistic")
    status, out, _ = run(capsys, "predict", "--server", target, "--model", "weather", "--features", "3,3", "-o", "json")
    row = json.loads(out)
    expected = client.predict("weather", np.array([[3.0, 3.0]]))
    assert status == 0 and row["label"] == "hot" and row["prediction"] == 1
    assert row["probabilities"] == dict(zip(["cold", "hot"], expected.probabilities[0].tolist(), strict=True))


def test_health_prints_the_health_check_response(target, client, linear_data, capsys):
    client.train("house", *linear_data)
    answer = document(capsys, health_pb2.HealthCheckResponse, "health", "--server", target)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_status_names_the_replica_and_the_generation_each_replica_routes_by(
    model_dir, target, client, linear_data, capsys
):
    """Two servers on one registry: the one that promotes routes by the new generation, the other not yet."""
    X, y = linear_data
    client.train("house", X, y)
    client.train("house", X, y, promote=False)
    # A second replica that reads the registry again only after an hour: it keeps routing by what it read at start.
    lagging = start_server(model_dir, poll_interval=3600.0)
    try:
        lagging_target = f"127.0.0.1:{lagging.port}"
        with ModelAdminClient(lagging_target, timeout=60) as other:
            before = other.status_response("house")
        assert before.models[0].served_generation == before.models[0].state.generation > 0
        assert before.replica  # host:pid
        promoted = main(["promote", "--server", target, "--model", "house", "v2"])
        assert promoted == 0
        capsys.readouterr()
        status = document(capsys, model_service_pb2.GetStatusResponse, "status", "--server", lagging_target)
        (house,) = status.models
        assert status.replica == before.replica
        assert house.served_generation == before.models[0].served_generation < house.state.generation
        assert house.state.serving_version == "v2"

        assert main(["status", "--server", lagging_target, "--model", "house"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[:2] == [f"replica {status.replica}", ""]
        assert lines[2] == (
            f"model house: serving v2, generation {house.state.generation}, "
            f"served generation {house.served_generation} (behind)"
        )
        assert main(["status", "--server", target, "--model", "house"]) == 0
        current = capsys.readouterr().out.splitlines()[2]
        assert current.endswith(f"served generation {house.state.generation}")
    finally:
        lagging.stop(0)


def test_a_failed_call_is_one_json_object_on_stderr_with_the_server_details(target, client, linear_data, capsys):
    client.train("house", *linear_data)
    status, out, err = run(
        capsys, "predict", "--server", target, "--model", "house", "--features", "1,2", "--output", "json"
    )
    assert status == 1 and out == ""
    error = json.loads(err)
    assert error["code"] == "INVALID_ARGUMENT" and error["reason"] == "FEATURE_COUNT_MISMATCH"
    assert error["metadata"] == {"expected": "5", "actual": "2"}
    assert error["field_violations"] == [{"field": "inputs", "description": "expected 5 features, got 2"}]
    assert len(error["request_id"]) == 32 and error["retry_after_seconds"] is None
    assert error["message"] == "The model expects 5 features per row, got 2."

    status, _, err = run(capsys, "info", "--server", target, "--model", "house", "--version", "v9", "-o", "json")
    error = json.loads(err)
    assert status == 1 and (error["code"], error["reason"]) == ("NOT_FOUND", "UNKNOWN_VERSION")
    assert error["metadata"] == {"model": "house", "version": "v9"}


def test_local_errors_are_json_objects_without_a_code(target, tmp_path, capsys):
    train = ("--server", target, "--model", "m", "--target", "y", "-o", "json")
    status, out, err = run(capsys, "train", str(tmp_path / "missing.csv"), *train)
    error = json.loads(err)
    assert status == 1 and out == "" and error["code"] is None and error["request_id"] == ""
    assert "missing.csv" in error["message"]

    broken = tmp_path / "broken.csv"
    broken.write_text("x,y\n1,2\noops,3\n")
    status, _, err = run(capsys, "train", str(broken), *train)
    error = json.loads(err)  # one object: no progress bar on stderr in JSON mode
    assert status == 1 and error["code"] is None and error["reason"] == "MALFORMED_CSV"


def test_usage_errors_are_json_objects_with_exit_status_2(target, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["predict", "--server", target, "--model", "m", "-o", "json"])
    error = json.loads(capsys.readouterr().err)
    assert caught.value.code == 2
    assert error["code"] is None and error["message"].startswith("regserve predict: one of the arguments")

    status, out, err = run(capsys, "split", "--server", target, "--model", "m", "v1=x", "--output=json")
    assert status == 2 and out == "" and json.loads(err)["message"] == "'v1=x' is not VERSION=WEIGHT"


def test_text_mode_stays_the_default(target, client, linear_data, capsys):
    client.train("house", *linear_data)
    status, out, _ = run(capsys, "models", "--server", target)
    assert status == 0 and out.startswith("model  serving")
    status, _, err = run(capsys, "predict", "--server", target, "--model", "house", "--features", "1,2")
    assert status == 1
    assert err.splitlines() == [
        "regserve: The model expects 5 features per row, got 2. [INVALID_ARGUMENT, FEATURE_COUNT_MISMATCH]",
        "  inputs: expected 5 features, got 2",
    ]
