"""/metrics lists the drift gauges only when the server watches drift (--drift-window above 0)."""

from __future__ import annotations

import urllib.request

from tests.conftest import start_server


def _metrics_text(model_dir, drift_window: int) -> str:
    """The /metrics page of a server started with ``--drift-window drift_window``."""
    app = start_server(model_dir, metrics_port=0, drift_window=drift_window)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{app.metrics_port}/metrics", timeout=30) as response:
            return response.read().decode()
    finally:
        app.stop(0)


def test_with_drift_off_metrics_list_no_drift_series(tmp_path):
    text = _metrics_text(tmp_path / "models", drift_window=0)
    assert "# HELP regserve_requests_in_flight " in text  # the endpoint answers, with the other series
    assert "regserve_drift" not in text


def test_with_drift_on_metrics_describe_the_drift_gauges(tmp_path):
    text = _metrics_text(tmp_path / "models", drift_window=100)
    for gauge in ("psi", "mean_shift", "class_psi", "flagged", "window_rows"):
        assert f"# HELP regserve_drift_{gauge} " in text
