"""Unit tests of the converters from the registry's typed values to regserve.v1 messages."""

from __future__ import annotations

import numpy as np

from regserve.server.models.estimator import LinearModel
from regserve.server.observability.serving_stats import VersionSummary
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
