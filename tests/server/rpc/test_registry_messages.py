"""Unit tests of the converters from the registry's typed values to regserve.v1 messages."""

from __future__ import annotations

import numpy as np

from regserve.server.models.estimator import LinearModel
from regserve.server.observability.serving_stats import VersionSummary
from regserve.server.registry.problems import ModelReport, Problem
from regserve.server.registry.state import ModelState, Switch, VersionMetadata
from regserve.server.rpc import registry_messages
from regserve.v1 import types_pb2


def _state(**changes) -> ModelState:
    state = {"generation": 7, "serving": "v2", "previous": ["v1"], "frozen": ["v3"], "split": {}, "history": []}
    return ModelState.from_json({**state, **changes})


def test_model_state_to_proto_copies_every_field():
    message = registry_messages.model_state_to_proto(
        "house", _state(split={"v1": 90.0, "v2": 10.0}), ["v1", "v2", "v3"]
    )
    assert (message.model, message.serving_version, message.generation) == ("house", "v2", 7)
    assert list(message.previous_versions) == ["v1"] and list(message.frozen_versions) == ["v3"]
    assert dict(message.traffic_split) == {"v1": 90.0, "v2": 10.0}
    assert list(message.versions) == ["v1", "v2", "v3"]
    empty = registry_messages.model_state_to_proto("new", _state(serving=None, previous=[], frozen=[]), [])
    assert empty.serving_version == "" and not empty.traffic_split


def test_switch_to_proto_reads_time_versions_and_reason():
    entry = {"at": "2026-01-02T03:04:05.678Z", "action": "promote", "from": None, "to": "v1", "reason": "first"}
    message = registry_messages.switch_to_proto(Switch.from_json(entry))
    assert message.time.ToJsonString() == "2026-01-02T03:04:05.678Z"
    assert (message.action, message.from_version, message.to_version, message.reason) == ("promote", "", "v1", "first")


def test_split_switch_lists_its_arms_and_a_cleared_split_none():
    entry = {"at": "2026-01-02T03:04:05Z", "action": "split", "from": "v2", "to": None, "reason": "ab"}
    split = Switch.from_json({**entry, "split": {"v1": 90.0, "v2": 10.0}})
    assert registry_messages.switch_to_proto(split).to_version == "v1=90,v2=10"
    assert registry_messages.switch_to_proto(Switch.from_json({**entry, "split": {}})).to_version == ""


def test_a_delete_switch_names_the_deleted_version_as_its_target():
    entry = {"at": "2026-01-02T03:04:05Z", "action": "delete", "from": None, "to": "v3", "reason": "unused"}
    message = registry_messages.switch_to_proto(Switch.from_json(entry))
    assert (message.from_version, message.to_version) == ("", "v3")


def test_model_status_to_proto_pairs_versions_with_their_statistics():
    history = [{"at": "2026-01-02T03:04:05Z", "action": "promote", "from": "v1", "to": "v2", "reason": "better"}]
    summaries = {
        "v1": VersionSummary(0, 0, 0, 0.0, 0.0, 0.0),
        "v2": VersionSummary(
            requests=5, errors=1, rows=40, latency_mean_ms=1.5, latency_p50_ms=1.0, latency_p99_ms=4.0
        ),
    }
    message = registry_messages.model_status_to_proto("house", _state(history=history), ["v1", "v2"], summaries)
    assert message.state.serving_version == "v2"
    v1, v2 = message.versions
    assert (v1.version, v1.serving_state, v1.requests) == ("v1", types_pb2.SERVING_STATE_AVAILABLE, 0)
    assert (v2.version, v2.serving_state) == ("v2", types_pb2.SERVING_STATE_SERVING)
    assert (v2.requests, v2.errors, v2.rows) == (5, 1, 40)
    assert (v2.latency_mean_ms, v2.latency_p50_ms, v2.latency_p99_ms) == (1.5, 1.0, 4.0)
    assert [(s.from_version, s.to_version, s.reason) for s in message.history] == [("v1", "v2", "better")]


def test_model_version_to_proto_reads_the_typed_metadata_and_the_weights():
    metadata = VersionMetadata.from_json(
        {
            "model": "iris",
            "version": "v4",
            "created_at": "2026-01-02T03:04:05.678Z",
            "sha256": "ab" * 32,
            "kind": "logistic",
            "solver": "newton",
            "spec": {"kind": "logistic", "solver": "newton", "alpha": 0.5, "feature_names": ["a", "b"]},
            "n_samples": 150,
            "n_train": 120,
            "n_validation": 30,
            "feature_names": ["a", "b"],
            "classes": ["no", "yes"],
            "fingerprint": "cd" * 32,
            "feature_stats": [{"name": "a", "mean": 0.5, "std": 1.0, "min": -2.0, "max": 2.0}],
            "validation_metrics": {"accuracy": 0.85, "per_class": [], "confusion_matrix": [[1, 0], [0, 1]]},
            "cv_metrics": {"folds": 3, "mean": {"accuracy": 0.8}, "std": {"accuracy": None}},
            "solver_info": {"rank": None, "iterations": 7, "converged": True},
            "duration_seconds": 0.25,
            "regserve_version": "1.0",
        }
    )
    estimator = LinearModel("logistic", np.array([[1.0, -1.0]]), np.array([0.5]), classes=("no", "yes"))
    message = registry_messages.model_version_to_proto(metadata, estimator, "in_split")
    assert (message.model, message.version, message.kind) == ("iris", "v4", types_pb2.MODEL_KIND_LOGISTIC)
    assert message.serving_state == types_pb2.SERVING_STATE_IN_SPLIT
    assert (message.num_samples, message.num_train, message.num_validation) == (150, 120, 30)
    assert list(message.feature_names) == ["a", "b"] and list(message.classes) == ["no", "yes"]
    assert message.spec.alpha == 0.5 and message.spec.solver == types_pb2.SOLVER_NEWTON
    assert (message.checksum, message.data_fingerprint) == ("ab" * 32, "cd" * 32)
    assert message.feature_statistics[0].mean == 0.5
    assert message.validation.metrics["accuracy"] == 0.85 and message.validation.confusion_matrix.num_columns == 2
    assert message.cross_validation.folds == 3 and dict(message.cross_validation.std) == {}
    assert (message.solver_report.iterations, message.solver_report.converged) == (7, True)
    assert message.training_seconds == 0.25 and message.create_time.ToJsonString() == "2026-01-02T03:04:05.678Z"
    assert message.coefficients.num_columns == 2 and list(message.intercepts) == [0.5]
    bare = registry_messages.model_version_to_proto(VersionMetadata.from_json({"version": "v1"}), None, "")
    assert bare.kind == types_pb2.MODEL_KIND_UNSPECIFIED and bare.serving_state == types_pb2.SERVING_STATE_UNSPECIFIED
    assert not bare.HasField("create_time") and bare.coefficients.num_columns == 0


def _summary() -> VersionSummary:
    return VersionSummary(requests=0, errors=0, rows=0, latency_mean_ms=0.0, latency_p50_ms=0.0, latency_p99_ms=0.0)


def _report(**changes) -> ModelReport:
    usable = VersionMetadata.from_json({"model": "house", "version": "v1", "sha256": "ab" * 32, "n_samples": 9})
    fields = {"model": "house", "state": _state(serving="v1", frozen=[], previous=[]), "versions": (usable,)}
    return ModelReport(**{**fields, **changes})


def test_a_report_without_problems_converts_like_the_state_alone():
    message = registry_messages.report_to_state(_report())
    assert (message.serving_version, list(message.versions)) == ("v1", ["v1"])
    assert not message.HasField("problem") and not message.HasField("serving_problem")


def test_a_reported_problem_reaches_the_state_the_versions_and_the_status():
    checksum = Problem("CHECKSUM_MISMATCH", "Version v1 fails its checksum.")
    damaged = Problem("CORRUPT_METADATA", "Version v2 cannot be used.")
    report = _report(damaged={"v2": damaged}, load_failures={"v1": checksum})
    state = registry_messages.report_to_state(report)
    assert list(state.versions) == ["v1", "v2"]
    assert (state.serving_problem.reason, state.serving_problem.message) == (checksum.reason, checksum.message)
    v1, v2 = registry_messages.report_to_versions(report)
    assert (v1.version, v1.num_samples, v1.problem.reason) == ("v1", 9, "CHECKSUM_MISMATCH")
    assert (v2.model, v2.version, v2.num_samples, v2.problem.reason) == ("house", "v2", 0, "CORRUPT_METADATA")
    assert v2.serving_state == types_pb2.SERVING_STATE_AVAILABLE
    status = registry_messages.report_to_status(report, {"v1": _summary(), "v2": _summary()})
    assert status.state.serving_problem.reason == "CHECKSUM_MISMATCH"
    assert [(v.version, v.problem.reason) for v in status.versions] == [
        ("v1", "CHECKSUM_MISMATCH"),
        ("v2", "CORRUPT_METADATA"),
    ]


def test_an_unreadable_state_is_reported_with_the_versions_only():
    report = _report(state=ModelState(), problem=Problem("CORRUPT_STATE", "The state is unreadable."))
    message = registry_messages.report_to_state(report)
    assert (message.problem.reason, message.serving_version, list(message.versions)) == ("CORRUPT_STATE", "", ["v1"])


def test_a_reason_stored_before_reasons_were_limited_is_shown_cut():
    entry = Switch("2026-01-02T03:04:05.678Z", "promote", None, "v1", "x" * 5000)
    status = registry_messages.model_status_to_proto("house", ModelState(history=(entry,)), [], {})
    assert status.history[0].reason == "x" * 1024 + "... (5000 characters)"
