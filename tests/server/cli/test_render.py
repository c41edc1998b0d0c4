"""What the commands print, from messages built in the test."""

from __future__ import annotations

import grpc
import numpy as np

from regserve.client import NotFound, Prediction, ResourceExhausted
from regserve.server.cli.render import (
    coefficient_table,
    error_object,
    print_client_error,
    print_coefficients,
    print_metrics,
    print_states,
    print_statuses,
    print_table,
    print_versions,
    split_text,
    state_name,
    version_order,
    write_predictions,
    write_predictions_json,
)
from regserve.server.errors import InvalidInput
from regserve.v1 import model_service_pb2, types_pb2


def test_a_table_aligns_columns_two_spaces_apart_without_trailing_blanks(capsys):
    print_table(("name", "n"), [("a", "1"), ("longer", "")])
    assert capsys.readouterr().out.splitlines() == ["name    n", "a       1", "longer"]


def test_versions_sort_by_number_not_by_text():
    assert [version_order(v) for v in ("v1", "v10", "v02", "x")] == [1, 10, 0, 0]
    assert split_text({"v10": 1.0, "v2": 90.0, "v9": 0.5}) == "v2=90, v9=0.5, v10=1"
    assert split_text({}) == ""


def test_states_are_short_lowercase_names():
    assert state_name(types_pb2.SERVING_STATE_IN_SPLIT) == "in_split"


def test_model_states_show_a_dash_for_what_is_empty(capsys):
    state = model_service_pb2.ModelState(model="house", serving_version="v2", versions=["v1", "v2"], generation=3)
    state.traffic_split.update({"v1": 90, "v2": 10})
    print_states([state, model_service_pb2.ModelState(model="empty")])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "model  serving  split         frozen  versions  generation",
        "house  v2       v1=90, v2=10  -       v1, v2    3",
        "empty  -        -             -                 0",
    ]


def test_predictions_print_labels_as_text_and_values_in_full_precision(capsys):
    write_predictions(Prediction(model="m", version="v1", values=np.array([0.1 + 0.2, 2.0])))
    write_predictions(Prediction(model="m", version="v1", values=np.array([1, 0]), labels=["hot", "cold"]))
    assert capsys.readouterr().out == "0.30000000000000004\n2.0\nhot\ncold\n"


def test_a_failed_call_names_its_code_reason_and_fields(capsys):
    error = NotFound(grpc.StatusCode.NOT_FOUND, "no such model", "UNKNOWN_MODEL", field_violations=[("model", "nope")])
    print_client_error(error)
    assert capsys.readouterr().err == "regserve: no such model [NOT_FOUND, UNKNOWN_MODEL]\n  model: nope\n"
    print_client_error(NotFound(grpc.StatusCode.NOT_FOUND, "gone"))
    assert capsys.readouterr().err == "regserve: gone [NOT_FOUND]\n"


def test_metrics_are_listed_per_split_with_cross_validation_spread(capsys):
    version = types_pb2.ModelVersion()
    version.training.metrics.update({"r2": 0.5, "mse": 2.0})
    version.cross_validation.folds = 3
    version.cross_validation.mean["mse"] = 2.5
    version.cross_validation.std["mse"] = 0.25
    print_metrics(version)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:3]] == [["training", "mse"], ["training", "r2"]]
    assert lines[3].split() == ["cv", "(3", "folds)", "mse", "2.5", "±", "0.25"]


def _problem(reason: str, message: str) -> types_pb2.Problem:
    return types_pb2.Problem(reason=reason, message=message)


def test_model_states_with_problems_get_a_problem_column_and_their_messages(capsys):
    good = model_service_pb2.ModelState(model="house", serving_version="v2", versions=["v1", "v2"], generation=3)
    broken = model_service_pb2.ModelState(
        model="broken", versions=["v1"], problem=_problem("CORRUPT_STATE", "The state is unreadable.")
    )
    stale = model_service_pb2.ModelState(
        model="stale",
        serving_version="v1",
        versions=["v1"],
        generation=2,
        serving_problem=_problem("CHECKSUM_MISMATCH", "Version v1 fails its checksum."),
    )
    print_states([good, broken, stale])
    assert capsys.readouterr().out.splitlines() == [
        "model   serving  split  frozen  versions  generation  problem",
        "house   v2       -      -       v1, v2    3           -",
        "broken  -        -      -       v1        0           CORRUPT_STATE",
        "stale   v1       -      -       v1        2           CHECKSUM_MISMATCH",
        "broken: CORRUPT_STATE: The state is unreadable.",
        "stale: CHECKSUM_MISMATCH: Version v1 fails its checksum.",
    ]


def test_damaged_versions_show_their_problem_in_listings_and_status(capsys):
    damaged = _problem("CORRUPT_METADATA", "Version v2 cannot be used.")
    print_versions(
        [
            types_pb2.ModelVersion(version="v1", serving_state=types_pb2.SERVING_STATE_SERVING, checksum="ab" * 32),
            types_pb2.ModelVersion(version="v2", serving_state=types_pb2.SERVING_STATE_AVAILABLE, problem=damaged),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "problem"
    assert lines[1].split()[-1] == "-" and lines[2].split()[-1] == "CORRUPT_METADATA"
    assert lines[3] == "v2: CORRUPT_METADATA: Version v2 cannot be used."
    state = model_service_pb2.ModelState(
        model="m", serving_version="v2", serving_problem=damaged, versions=["v1", "v2"], generation=4
    )
    status = model_service_pb2.ModelStatus(
        state=state,
        served_generation=4,
        versions=[
            model_service_pb2.VersionStatus(version="v1"),
            model_service_pb2.VersionStatus(version="v2", problem=damaged),
        ],
    )
    print_statuses([status])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "model m: serving v2, generation 4, served generation 4",
        "not served v2: CORRUPT_METADATA: Version v2 cannot be used.",
    ]
    assert lines[2].split()[-1] == "problem" and lines[4].split()[-1] == "CORRUPT_METADATA"
    assert lines[5] == "v2: CORRUPT_METADATA: Version v2 cannot be used."


def test_status_shows_drift_with_its_flagged_features(capsys):
    drifted = model_service_pb2.VersionDrift(
        window_rows=1800,
        threshold=0.2,
        features=[
            model_service_pb2.FeatureDrift(feature="age", psi=0.01, mean_shift=0.02),
            model_service_pb2.FeatureDrift(feature="tenure", psi=0.53, mean_shift=1.04, flagged=True),
        ],
        flagged_features=1,
        class_psi=0.31,
        class_flagged=True,
    )
    steady = model_service_pb2.VersionDrift(
        window_rows=900, threshold=0.2, features=[model_service_pb2.FeatureDrift(feature="age", psi=0.004)]
    )
    status = model_service_pb2.ModelStatus(
        state=model_service_pb2.ModelState(model="m", serving_version="v2", generation=2),
        served_generation=2,
        versions=[
            model_service_pb2.VersionStatus(version="v1", drift=steady),
            model_service_pb2.VersionStatus(version="v2", drift=drifted),
            model_service_pb2.VersionStatus(version="v3"),
        ],
    )
    print_statuses([status])
    lines = capsys.readouterr().out.splitlines()
    drift = lines[lines.index(next(line for line in lines if line.startswith("drift of v1"))) :]
    assert drift == [
        "drift of v1 over its last 900 rows (PSI threshold 0.2): no feature flagged (largest PSI 0.0040, age)",
        "drift of v2 over its last 1800 rows (PSI threshold 0.2): 1 of 2 features flagged; "
        "predicted classes PSI 0.3100 FLAGGED",
        "feature  psi     mean shift (sd)",
        "tenure   0.5300  +1.040",
    ]


def _version(kind, coefficients, intercepts, features=("a", "b"), classes=()) -> types_pb2.ModelVersion:
    matrix = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    return types_pb2.ModelVersion(
        kind=kind,
        feature_names=list(features),
        classes=list(classes),
        coefficients=types_pb2.Matrix(num_columns=matrix.shape[1], values=matrix.ravel().tolist()),
        intercepts=intercepts,
    )


def test_the_coefficients_table_has_a_row_per_feature_and_the_intercept(capsys):
    version = _version(types_pb2.MODEL_KIND_LINEAR, [1.5, -0.25], [4.0])
    version.standardization.enabled = True
    assert print_coefficients(version)
    assert capsys.readouterr().out.splitlines() == [
        "",
        "coefficients (on standardized features, z = (x - mean) / scale)",
        "feature      coefficient",
        "a            1.5",
        "b            -0.25",
        "(intercept)  4",
    ]


def test_a_multinomial_model_has_a_class_column_and_a_binary_one_names_its_positive_class(capsys):
    multinomial = _version(
        types_pb2.MODEL_KIND_LOGISTIC, [[1, 2], [3, 4], [5, 6]], [0.1, 0.2, 0.3], classes=("x", "y", "z")
    )
    header, rows = coefficient_table(multinomial)
    assert header == ("class", "feature", "coefficient")
    assert rows[:3] == [("x", "a", "1"), ("x", "b", "2"), ("x", "(intercept)", "0.1")]
    assert rows[-1] == ("z", "(intercept)", "0.3") and len(rows) == 9
    binary = _version(types_pb2.MODEL_KIND_LOGISTIC, [0.5, 2.0], [-1.0], classes=("cold", "hot"))
    print_coefficients(binary)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "coefficients (log-odds of hot)" and lines[2].split() == ["feature", "coefficient"]


def test_optional_columns_appear_only_when_they_have_values():
    version = _version(types_pb2.MODEL_KIND_LINEAR, [1.5, -0.25], [4.0])
    errors = np.array([[0.1, 0.02, np.nan]])
    header, rows = coefficient_table(version, [("std err", errors), ("t", None), ("p", np.empty(0))])
    assert header == ("feature", "coefficient", "std err")
    assert rows == [("a", "1.5", "0.1"), ("b", "-0.25", "0.02"), ("(intercept)", "4", "-")]


def test_a_version_without_coefficients_prints_no_table(capsys):
    assert coefficient_table(types_pb2.ModelVersion(feature_names=["a"])) is None
    assert not print_coefficients(types_pb2.ModelVersion())
    assert capsys.readouterr().out == ""


def test_unnamed_features_are_numbered_and_raw_matrices_are_read():
    matrix = types_pb2.Matrix(num_columns=2, raw=np.array([2.0, 3.0]).tobytes())
    version = types_pb2.ModelVersion(coefficients=matrix, intercepts=[1.0])
    assert [row[0] for row in coefficient_table(version)[1]] == ["x0", "x1", "(intercept)"]


def test_statuses_name_the_replica_and_a_generation_not_yet_served(capsys):
    state = model_service_pb2.ModelState(model="m", serving_version="v3", generation=7)
    print_statuses([model_service_pb2.ModelStatus(state=state, served_generation=6)], "host:42")
    assert capsys.readouterr().out.splitlines()[:3] == [
        "replica host:42",
        "",
        "model m: serving v3, generation 7, served generation 6 (behind)",
    ]


def test_json_errors_name_code_reason_message_metadata_and_request_id():
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    error = ResourceExhausted(code, "slow down", "RATE_LIMITED", {"limit": "5"}, retry_after=0.5, request_id="r1")
    assert error_object(error) == {
        "code": "RESOURCE_EXHAUSTED",
        "reason": "RATE_LIMITED",
        "message": "slow down",
        "metadata": {"limit": "5"},
        "request_id": "r1",
        "field_violations": [],
        "retry_after_seconds": 0.5,
    }
    local = InvalidInput("bad line 3", reason="MALFORMED_CSV", violations=[("csv", "line 3")], metadata={"line": 3})
    assert error_object(local) == {
        "code": None,
        "reason": "MALFORMED_CSV",
        "message": "bad line 3",
        "metadata": {"line": "3"},
        "request_id": "",
        "field_violations": [{"field": "csv", "description": "line 3"}],
        "retry_after_seconds": None,
    }
    assert error_object(FileNotFoundError(2, "No such file or directory", "x.csv"))["message"].endswith("'x.csv'")


def test_json_predictions_are_one_object_per_row(capsys):
    write_predictions_json(Prediction(model="m", version="v1", values=np.array([0.1 + 0.2])))
    probabilities = np.array([[0.25, 0.75]])
    write_predictions_json(
        Prediction("m", "v2", np.array([1.0]), ["hot"], probabilities=probabilities, classes=["cold", "hot"])
    )
    assert capsys.readouterr().out.splitlines() == [
        '{"model": "m", "version": "v1", "prediction": 0.30000000000000004}',
        '{"model": "m", "version": "v2", "prediction": 1, "label": "hot", '
        '"probabilities": {"cold": 0.25, "hot": 0.75}}',
    ]
