"""The checks of ``state.json`` and ``metadata.json`` values: what the code can use passes, nothing else."""

from __future__ import annotations

import json

import pytest

from regserve.server.registry.file_checks import check_metadata_json, check_state_json
from tests.server.registry.test_state import OLD_STATE, STORED_METADATA

SHA = "ab" * 32


def test_what_the_registry_writes_passes():
    check_state_json(json.loads(OLD_STATE))
    check_state_json({})
    check_metadata_json(STORED_METADATA)
    check_metadata_json({"sha256": SHA, "cv_metrics": None, "feature_stats": [{"name": "a", "mean": float("nan")}]})


@pytest.mark.parametrize(
    "state",
    [
        {"generation": -1},
        {"generation": True},
        {"previous": "v1"},
        {"frozen": [1]},
        {"split": {"v1": -1.0}},
        {"split": {"v1": float("inf")}},
        {"history": [{"at": "2026-01-02"}]},
        {"history": [{"reason": 5}]},
        {"history": [{"split": {"v1": "x"}}]},
        {"last_version": "4"},
    ],
)
def test_a_state_value_of_the_wrong_type_or_range_is_refused(state):
    with pytest.raises(ValueError, match=next(iter(state))):
        check_state_json(state)


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"sha256": "AB" * 32},
        {"sha256": SHA, "created_at": "2026-01-02 03:04"},
        {"sha256": SHA, "feature_names": "a,b"},
        {"sha256": SHA, "n_train": 2.5},
        {"sha256": SHA, "feature_stats": [{"name": "a", "mean": "0"}]},
        {"sha256": SHA, "training_metrics": {"per_class": [{"label": "a"}]}},
        {"sha256": SHA, "validation_metrics": {"confusion_matrix": [[1, 2], [3]]}},
        {"sha256": SHA, "cv_metrics": {"folds": 3}},
        {"sha256": SHA, "solver_info": {"rank": -1}},
        {"sha256": SHA, "spec": {"epochs": 2**32}},
        {"sha256": SHA, "spec": {"fit_intercept": 1}},
    ],
)
def test_a_metadata_value_of_the_wrong_type_or_range_is_refused(metadata):
    with pytest.raises(ValueError):
        check_metadata_json(metadata)
