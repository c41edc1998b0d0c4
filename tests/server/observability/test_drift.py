"""Drift of live rows: the monitor's window and queue, then a real server read over /metrics and GetStatus."""

from __future__ import annotations

import types
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from regserve.client import ModelAdminClient, RegressionClient
from regserve.inference import grpc_service_pb2 as oip_pb2
from regserve.inference import grpc_service_pb2_grpc as oip_pb2_grpc
from regserve.server.config import Settings
from regserve.server.models.drift import BINS, DriftReference
from regserve.server.observability.drift import STEPS, DriftMonitor
from regserve.server.registry.routes import ServedModel
from tests.conftest import start_server

FEATURES = ("age", "income", "tenure", "score")
SCALES = np.array([10.0, 1000.0, 3.0, 0.5])
CENTRES = np.array([40.0, 5000.0, 6.0, 0.0])


def _rows(rng: np.random.Generator, n: int, shift: np.ndarray | None = None) -> np.ndarray:
    X = CENTRES + SCALES * rng.normal(size=(n, len(FEATURES)))
    return X if shift is None else X + shift * SCALES


def _served(reference: DriftReference | None, names=("a", "b")) -> ServedModel:
    metadata = types.SimpleNamespace(feature_names=list(names))
    return ServedModel("m", "v1", None, metadata, {}, (), reference)  # type: ignore[arg-type]


def _uniform_reference(classes=None) -> DriftReference:
    # Two features uniform on [0, 10): deciles at 1 .. 9, mean 5, std 10 / sqrt(12).
    edges = np.tile(np.arange(1.0, BINS), (2, 1))
    return DriftReference(edges, np.full((2, BINS), 0.1), np.full(2, 5.0), np.full(2, 10 / 12**0.5), classes)


# ----------------------------------------------------------------------------- the monitor


def test_drift_is_reported_once_the_window_holds_a_full_step():
    monitor = DriftMonitor(window_rows=1000)
    served = _served(_uniform_reference())
    monitor.observe(served, np.full((99, 2), 5.0), np.zeros(99))
    assert monitor.summary("m", "v1") is None
    monitor.observe(served, np.full((1, 2), 5.0), np.zeros(1))
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.rows == 100


def test_the_window_slides_over_the_most_recent_rows():
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(window_rows=1000, threshold=0.2)
    served = _served(_uniform_reference())
    monitor.observe(served, rng.uniform(0, 10, size=(1000, 2)), np.zeros(1000))
    drift = monitor.summary("m", "v1")
    assert drift is not None
    assert drift.rows == 1000 - 1000 // STEPS  # the newest step has just begun
    assert drift.flagged_features == 0
    assert all(f.psi < 0.1 and abs(f.mean_shift) < 0.2 for f in drift.features)
    # A thousand rows of feature b moved up by 5: the window forgets the old rows.
    moved = rng.uniform(0, 10, size=(1000, 2)) + [0.0, 5.0]
    monitor.observe(served, moved[:500], np.zeros(500))
    monitor.observe(served, moved[500:], np.zeros(500))
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.rows == 900
    a, b = drift.features
    assert (a.name, a.flagged, b.name, b.flagged) == ("a", False, "b", True)
    assert b.mean_shift == pytest.approx(5 / (10 / 12**0.5), rel=0.05)
    assert drift.flagged_features == 1


def test_a_full_queue_drops_blocks_and_counts_them():
    monitor = DriftMonitor(window_rows=10, queue_blocks=2)
    served = _served(_uniform_reference())
    for _ in range(5):
        monitor.observe(served, np.full((1, 2), 5.0), np.zeros(1))
    assert monitor.dropped == 3
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.rows == 2


def test_a_fold_past_its_budget_tallies_a_uniform_sample_and_counts_the_rest():
    rng = np.random.default_rng(5)
    # 1,000 rows a second at a fold every 0.1 s: at most 100 rows of the version per fold.
    monitor = DriftMonitor(window_rows=1000, sample_rows_per_second=1000, interval=0.1)
    served = _served(_uniform_reference())
    blocks = [rng.uniform(0, 10, size=(n, 2)) for n in (1, 250, 49, 300)]
    for block in blocks:
        monitor.observe(served, block, np.zeros(len(block)))
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.rows == 100 and monitor.sampled_out == 500
    # The sample covers the blocks in proportion: a fold of ten times as many rows still tallies 100.
    shifted = [block + [0.0, 5.0] for block in blocks for _ in range(10)]
    for block in shifted:
        monitor.observe(served, block, np.zeros(len(block)))
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.rows == 200 and monitor.sampled_out == 500 + 5900
    b = drift.features[1]
    assert b.mean_shift == pytest.approx((5 / 2) / (10 / 12**0.5), rel=0.25)  # half the window moved by 5


def test_sampled_rows_keep_the_training_distribution():
    rng = np.random.default_rng(6)
    monitor = DriftMonitor(window_rows=5000, sample_rows_per_second=20_000, interval=0.1)
    served = _served(_uniform_reference())
    for _ in range(10):  # ten folds of 20,000 rows, 2,000 tallied from each
        for _ in range(20):
            monitor.observe(served, rng.uniform(0, 10, size=(1000, 2)), np.zeros(1000))
        monitor.drain()
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.rows == 5000 - 5000 // STEPS
    assert all(feature.psi < 0.1 and not feature.flagged for feature in drift.features)


def test_a_budget_of_zero_tallies_every_row():
    monitor = DriftMonitor(window_rows=100_000, sample_rows_per_second=0)
    served = _served(_uniform_reference())
    monitor.observe(served, np.full((30_000, 2), 5.0), np.zeros(30_000))
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.rows == 30_000 and monitor.sampled_out == 0


def test_versions_without_a_reference_and_a_monitor_turned_off_tally_nothing():
    monitor = DriftMonitor(window_rows=10)
    monitor.observe(_served(None), np.ones((50, 2)), np.zeros(50))
    assert monitor.summary("m", "v1") is None
    off = DriftMonitor(window_rows=0)
    off.observe(_served(_uniform_reference()), np.ones((50, 2)), np.zeros(50))
    assert off.summary("m", "v1") is None and off.summaries() == []


def test_predicted_classes_are_compared_with_the_training_shares():
    monitor = DriftMonitor(window_rows=100, threshold=0.2)
    served = _served(_uniform_reference(np.array([0.5, 0.5])))
    monitor.observe(served, np.full((50, 2), 5.0), np.r_[np.zeros(25), np.ones(25)])
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.class_psi == pytest.approx(0.0) and not drift.class_flagged
    monitor.observe(served, np.full((50, 2), 5.0), np.ones(50))
    # The window keeps rows 10 to 99: 15 of class 0 and 75 of class 1, shares 1/6 and 5/6 against 1/2 and 1/2,
    # so PSI = (1/3)·ln 3 + (1/3)·ln(5/3) = (1/3)·ln 5.
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.rows == 90
    assert drift.class_psi == pytest.approx(np.log(5) / 3, rel=1e-12) and drift.class_flagged


def test_a_feature_constant_in_training_shifts_by_infinity_once_it_moves():
    reference = DriftReference(
        np.zeros((1, BINS - 1)), np.r_[np.zeros(BINS - 1), 1.0][None], np.zeros(1), np.zeros(1), None
    )
    monitor = DriftMonitor(window_rows=10)
    served = _served(reference, names=("c",))
    monitor.observe(served, np.zeros((10, 1)), np.zeros(10))
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.features[0].mean_shift == 0.0
    monitor.observe(served, np.ones((10, 1)), np.zeros(10))
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.features[0].mean_shift == np.inf


@pytest.mark.parametrize("window, threshold", [(-1, 0.2), (5, 0.2), (100, 0.0), (100, float("nan"))])
def test_settings_refuse_a_window_or_threshold_that_cannot_work(window, threshold):
    with pytest.raises(ValueError, match="--drift-"):
        Settings(model_dir="unused", drift_window=window, drift_threshold=threshold).check()


def test_a_window_never_spans_more_rows_than_asked():
    monitor = DriftMonitor(window_rows=25)  # steps of 2 rows: at most 20
    monitor.observe(_served(_uniform_reference()), np.full((100, 2), 5.0), np.zeros(100))
    drift = monitor.summary("m", "v1")
    assert drift is not None and drift.rows == 18


# ----------------------------------------------------------------------------- a real server


@pytest.fixture
def served(tmp_path):
    app = start_server(tmp_path / "models", metrics_port=0, drift_window=2000)
    yield app
    app.stop(0)


def _drift_samples(app) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{app.metrics_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("regserve_drift")
    }


def _feature_psi(samples, model: str) -> dict[str, float]:
    return {
        dict(labels)["feature"]: value
        for (name, labels), value in samples.items()
        if name == "regserve_drift_psi" and dict(labels)["model"] == model
    }


def test_a_shifted_feature_and_only_it_is_flagged_in_metrics_and_status(served):
    rng = np.random.default_rng(2026)
    X = _rows(rng, 20_000)
    y = X @ np.array([0.5, 0.001, -2.0, 4.0]) + rng.normal(size=len(X))
    target = f"127.0.0.1:{served.port}"
    with RegressionClient(target, timeout=60) as client, ModelAdminClient(target, timeout=60) as admin:
        client.train("churn", X, y, feature_names=list(FEATURES))
        for block in np.split(_rows(rng, 1_900), 19):  # Predict calls of 100 rows
            client.predict("churn", block)
        for row in _rows(rng, 100):  # and one-row calls
            client.predict("churn", row[None])

        samples = _drift_samples(served)
        psi = _feature_psi(samples, "churn")
        assert set(psi) == set(FEATURES)
        assert max(psi.values()) < 0.1
        assert samples[("regserve_drift_flagged", frozenset({"model": "churn", "version": "v1"}.items()))] == 0
        (status,) = admin.status("churn")
        drift = status.versions[0].drift
        assert 1_800 <= drift.window_rows <= 2_000
        assert [f.feature for f in drift.features] == list(FEATURES)
        assert all(f.psi < 0.1 and not f.flagged for f in drift.features)
        assert drift.flagged_features == 0 and not drift.HasField("class_psi")
        assert drift.threshold == pytest.approx(0.2)

        shift = np.array([0.0, 0.0, 1.0, 0.0])  # tenure up by one training standard deviation
        list(client.iter_batch_predict("churn", np.split(_rows(rng, 2_000, shift), 4)))

        samples = _drift_samples(served)
        psi = _feature_psi(samples, "churn")
        assert psi["tenure"] > 0.2
        assert max(v for k, v in psi.items() if k != "tenure") < 0.1
        assert samples[("regserve_drift_flagged", frozenset({"model": "churn", "version": "v1"}.items()))] == 1
        (status,) = admin.status("churn")
        drift = status.versions[0].drift
        flagged = {f.feature: f for f in drift.features if f.flagged}
        assert set(flagged) == {"tenure"} and drift.flagged_features == 1
        assert flagged["tenure"].mean_shift == pytest.approx(1.0, abs=0.15)
        assert all(abs(f.mean_shift) < 0.15 for f in drift.features if f.feature != "tenure")


def test_a_classifier_reports_the_psi_of_its_predicted_classes(served):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(6_000, 2))
    labels = np.where(X[:, 0] + 0.5 * rng.normal(size=len(X)) > 0, "buy", "skip")
    target = f"127.0.0.1:{served.port}"
    with RegressionClient(target, timeout=60) as client, ModelAdminClient(target, timeout=60) as admin:
        client.train("offer", X, labels, kind="logistic")
        client.predict("offer", rng.normal(size=(2_000, 2)))
        drift = admin.status("offer")[0].versions[0].drift
        assert drift.HasField("class_psi") and drift.class_psi < 0.1 and not drift.class_flagged
        client.predict("offer", rng.normal(size=(2_000, 2)) + [1.5, 0.0])
        drift = admin.status("offer")[0].versions[0].drift
        assert drift.class_flagged and drift.class_psi > 0.2
        assert [f.feature for f in drift.features if f.flagged] == ["x0"]
    samples = _drift_samples(served)
    assert samples[("regserve_drift_class_psi", frozenset({"model": "offer", "version": "v1"}.items()))] > 0.2


def test_a_version_without_training_bins_reports_no_drift(served):
    target = f"127.0.0.1:{served.port}"
    with RegressionClient(target, timeout=60) as client, ModelAdminClient(target, timeout=60) as admin:
        admin.create_version("fixed", "linear", [[1.0, 2.0]], [0.5], feature_names=["a", "b"])
        client.predict("fixed", np.ones((1_000, 2)))
        (status,) = admin.status("fixed")
    assert status.versions[0].rows == 1_000
    assert not status.versions[0].HasField("drift")


def test_model_infer_rows_count_towards_drift_on_both_of_its_paths(served):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(5_000, 2))
    target = f"127.0.0.1:{served.port}"
    rows = rng.normal(size=(150, 2))
    tensor = oip_pb2.ModelInferRequest.InferInputTensor(name="inputs", datatype="FP64", shape=list(rows.shape))
    direct = oip_pb2.ModelInferRequest(model_name="oip", inputs=[tensor], raw_input_contents=[rows.tobytes()])
    typed = oip_pb2.ModelInferRequest(model_name="oip", inputs=[tensor], raw_input_contents=[rows.tobytes()])
    typed.outputs.add(name="predictions")  # an output named: the general tensor path
    with RegressionClient(target, timeout=60) as client, ModelAdminClient(target, timeout=60) as admin:
        client.train("oip", X, X.sum(axis=1))
        with grpc.insecure_channel(target) as channel:
            stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
            stub.ModelInfer(direct, timeout=30)
            stub.ModelInfer(typed, timeout=30)
        drift = admin.status("oip")[0].versions[0].drift
    assert drift.window_rows == 300


def test_a_deleted_version_leaves_the_drift_metrics(served):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(3_000, 2))
    target = f"127.0.0.1:{served.port}"
    labels = {"model": "gone", "version": "v1"}
    with RegressionClient(target, timeout=60) as client, ModelAdminClient(target, timeout=60) as admin:
        client.train("gone", X, X.sum(axis=1))
        client.predict("gone", rng.normal(size=(500, 2)))
        assert _drift_samples(served)[("regserve_drift_window_rows", frozenset(labels.items()))] == 500
        client.train("gone", X, X.sum(axis=1))
        admin.delete_version("gone", "v1")
    assert ("regserve_drift_window_rows", frozenset(labels.items())) not in _drift_samples(served)
