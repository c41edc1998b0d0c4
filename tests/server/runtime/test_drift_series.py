"""/metrics lists the drift gauges only when the server watches drift (--drift-window above 0)."""

from __future__ import annotations

import urllib.request

from tests.conftest import start_server


def _metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        return response.read().decode()


def test_with_drift_off_metrics_list_no_drift_series(tmp_path):
    app = start_server(tmp_path / "models", metrics_port=0, drift_window=0)
    try:
        text = _metrics_text(app.metrics_port)
    finally:
        app.stop(0)
    assert "# HELP regserve_requests_in_flight " in text  # the endpoint answers, with the other series
    assert "regserve_drift" not in text


def test_with_drift_on_metrics_describe_the_drift_gauges(tmp_path):
    app = start_server(tmp_path / "models", metrics_port=0, drift_window=100)
    try:
        text = _metrics_text(app.metrics_port)
    finally:
        app.stop(0)
    for gauge in ("psi", "mean_shift", "class_psi", "flagged", "window_rows"):
        assert f"# HELP regserve_drift_{gauge} " in text
