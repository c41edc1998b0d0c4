"""``regserve report`` against a real server: one self-contained page whose every image is a PNG that loads.

A regressor and a classifier are trained through the server from the bundled demo
datasets, served a little, and reported on; the pages are parsed, and rendered once in
headless Chromium, which must load every image.
"""

from __future__ import annotations

import base64
import html.parser
import io
import json
import re
import shutil
import subprocess
import sys
from importlib import resources

import grpc
import numpy as np
import pytest
from PIL import Image

from regserve.client import ModelAdminClient, RegressionClient
from regserve.server.cli import main
from regserve.server.report.plots import roc_curve
from regserve.v1 import model_service_pb2 as pb
from regserve.v1 import model_service_pb2_grpc as pb_grpc
from tests.conftest import start_server

CHROMIUM = "/usr/bin/chromium"
SECTIONS = {"lineage", "metrics", "coefficients", "validation", "serving"}
REGRESSION_CHARTS = ["coefficients", "residuals", "histogram", "qq", "requests", "latency"]
CLASSIFIER_CHARTS = ["coefficients", "confusion", "calibration", "roc", "requests", "latency"]


class Page(html.parser.HTMLParser):
    """The images, section ids and outside references of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.sections: list[str] = []
        self.references: list[str] = []
        self.scripts = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        if tag == "img":
            self.images.append(attributes)
        if tag == "section":
            self.sections.append(attributes.get("id", ""))
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.scripts += 1
        for name in ("href", "src", "srcset", "data"):
            if name in attributes and tag != "img":
                self.references.append(attributes[name])


def _png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    data = base64.b64decode(src.removeprefix(prefix), validate=True)
    Image.open(io.BytesIO(data)).verify()  # the whole file: chunks and their CRCs
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _report(target: str, model: str, out, *extra: str) -> str:
    assert main(["report", "--server", target, "--model", model, "--out", str(out), *extra]) == 0
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server with ``diabetes`` (linear, v1 and an unpromoted v2) and ``iris`` (logistic), both predicted."""
    base = tmp_path_factory.mktemp("report")
    app = start_server(base / "models")
    target = f"127.0.0.1:{app.port}"
    data = resources.files("regserve.server.datasets")
    diabetes = [str(data / "diabetes.csv"), "--model", "diabetes", "--target", "progression"]
    iris = [str(data / "iris.csv"), "--model", "iris", "--target", "species", "--kind", "logistic", "--standardize"]
    common = ["--server", target, "--validation-fraction", "0.3", "--seed", "7"]
    try:
        assert main(["train", *diabetes, *common]) == 0
        assert main(["train", *diabetes, "--kind", "ridge", "--alpha", "10", "--no-promote", *common]) == 0
        assert main(["train", *iris, "--cv", "3", *common]) == 0
        with RegressionClient(target, timeout=60) as client:
            for _ in range(3):
                client.predict("iris", np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
                client.predict("diabetes", np.zeros((4, 10)))
        yield app, target, base
    finally:
        app.stop(0)


@pytest.fixture(scope="module")
def pages(served):
    _, target, base = served
    return {
        "diabetes": _report(target, "diabetes", base / "diabetes.html"),
        "iris": _report(target, "iris", base / "iris.html"),
    }


@pytest.mark.parametrize(("model", "charts"), [("diabetes", REGRESSION_CHARTS), ("iris", CLASSIFIER_CHARTS)])
def test_the_page_is_self_contained_and_every_image_is_a_valid_png(pages, model, charts):
    page = Page(pages[model])
    assert SECTIONS <= set(page.sections)
    assert [image["data-chart"] for image in page.images] == charts
    for image in page.images:
        width, height = _png(image["src"]).size
        assert width > 100 and height > 100 and image["alt"]
    assert page.references == [] and page.scripts == 0


def test_the_regressor_page_plots_what_the_server_predicts_on_the_stored_sample(served, pages):
    _, target, _ = served
    request = pb.GetVersionRequest(model="diabetes", version="v1", view=pb.VERSION_VIEW_VALIDATION_SAMPLE)
    with grpc.insecure_channel(target) as channel:
        sample = pb_grpc.ModelServiceStub(channel).GetVersion(request, timeout=60).validation_sample
    y = np.frombuffer(sample.targets.raw, dtype="<f8")
    X = np.frombuffer(sample.inputs.raw, dtype="<f8").reshape(y.size, sample.inputs.num_columns)
    with RegressionClient(target, timeout=60) as client:
        info = client.model_info("diabetes")
        served_predictions = client.predict("diabetes", X, version="v1").values
    rmse = float(np.sqrt(np.mean((y - served_predictions) ** 2)))
    text = pages["diabetes"]
    assert f"{y.size} validation rows stored with the version" in text
    assert y.size == info.num_validation
    assert f'<td class="number">{rmse:.6g}</td>' in text
    assert "regserve report: diabetes v1" in text
    assert info.data_fingerprint in text and info.checksum in text


def test_the_classifier_page_has_a_roc_area_per_class_and_the_cross_validation(pages):
    text = pages["iris"]
    assert re.findall(r"<tr><td>(\w+)</td><td class=\"number\">[0-9.]+</td></tr>", text)[-3:] == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    assert "3-fold CV mean" in text and "accuracy of the served predictions" in text


def test_the_lineage_lists_the_settings_of_the_solver_used_and_no_others(pages):
    def facts(text):
        return dict(re.findall(r"<tr><td>([a-z ,]+)</td><td[^>]*>([^<]*)</td></tr>", text))

    closed_form, newton = facts(pages["diabetes"]), facts(pages["iris"])
    assert closed_form["solver"] == "closed_form" and closed_form["seed"] == "7"
    assert not {"learning rate", "epochs", "batch size", "tolerance", "max iterations"} & set(closed_form)
    assert newton["solver"] == "newton" and (newton["tolerance"], newton["max iterations"]) == ("1e-08", "100")
    assert not {"learning rate", "epochs", "batch size"} & set(newton)


def test_serving_statistics_are_shown_per_version(pages):
    text = pages["diabetes"]
    serving = text[text.index('<section id="serving">') :]
    assert "<td>v1</td><td>serving</td>" in serving and "<td>v2</td><td>available</td>" in serving


def test_a_named_version_is_reported_and_predicted_by_name(served, tmp_path):
    _, target, _ = served
    text = _report(target, "diabetes", tmp_path / "v2.html", "--version", "v2")
    assert "regserve report: diabetes v2" in text and "ridge" in text
    assert "(version v2)" in text
    assert [image["data-chart"] for image in Page(text).images] == REGRESSION_CHARTS


def test_the_json_output_names_the_page_written(served, tmp_path, capsys):
    _, target, _ = served
    out = tmp_path / "iris.html"
    assert main(["report", "--server", target, "--model", "iris", "--out", str(out), "--output", "json"]) == 0
    written = json.loads(capsys.readouterr().out)
    with RegressionClient(target, timeout=60) as client:
        held_out = client.model_info("iris").num_validation
    assert written == {"model": "iris", "version": "v1", "out": str(out), "sample_rows": held_out}
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_an_unknown_model_fails_with_the_servers_reason(served, tmp_path, capsys):
    _, target, _ = served
    assert main(["report", "--server", target, "--model", "nothing", "--out", str(tmp_path / "x.html")]) == 1
    assert "UNKNOWN_MODEL" in capsys.readouterr().err and not (tmp_path / "x.html").exists()


def test_a_model_without_sample_or_traffic_says_so(served, tmp_path):
    _, target, _ = served
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 2))
    with RegressionClient(target, timeout=60) as client:
        client.train("plain", X, X @ [1.0, 2.0], seed=1)
    text = _report(target, "plain", tmp_path / "plain.html")
    assert "No validation sample is stored with this version" in text
    assert "No serving statistics yet" in text
    assert [image["data-chart"] for image in Page(text).images] == ["coefficients"]


def test_a_binary_classifier_draws_the_positive_class(served, tmp_path):
    _, target, _ = served
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 3))
    labels = np.where(X @ [1.0, -1.0, 0.5] + rng.normal(scale=0.5, size=400) > 0, "yes", "no")
    with RegressionClient(target, timeout=60) as client:
        client.train("flag", X, labels.tolist(), kind="logistic", validation_fraction=0.25, seed=6)
    text = _report(target, "flag", tmp_path / "flag.html")
    assert [image["data-chart"] for image in Page(text).images] == ["coefficients", "confusion", "calibration", "roc"]
    assert re.search(r"<tr><td>yes</td><td class=\"number\">0\.9[0-9]*</td></tr>", text)
    assert "<tr><td>no</td>" not in text[text.index("ROC AUC") :]


def test_the_server_and_the_other_commands_never_import_matplotlib():
    code = (
        "import sys, regserve.server.cli, regserve.server.runtime.serve, regserve.server.runtime.application\n"
        "sys.exit(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')[:3] or 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_roc_areas_match_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    rng = np.random.default_rng(12)
    positive = rng.random(500) < 0.3
    scores = np.round(rng.random(500) + positive * 0.4, 1)  # rounded: many ties
    fpr, tpr, area = roc_curve(positive, scores)
    assert area == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    sk_fpr, sk_tpr, _ = sk_roc_curve(positive, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium (make chromium)")
def test_every_image_loads_in_headless_chromium(pages, tmp_path):
    # The check runs in a copy of each page: the report itself carries no script.
    check = (
        '<script>window.addEventListener("load", () => document.body.setAttribute("data-widths", '
        "JSON.stringify(Array.from(document.images, (i) => (i.complete ? i.naturalWidth : -1)))));</script>"
    )
    for model, text in pages.items():
        path = tmp_path / f"{model}.html"
        path.write_text(text.replace("</body>", check + "</body>"), encoding="utf-8")
        profile = tmp_path / f"profile-{model}"
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--dump-dom",
                path.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        found = re.search(r'data-widths="([^"]*)"', result.stdout)
        assert found, result.stdout[-2000:]
        widths = json.loads(found.group(1).replace("&quot;", '"'))
        assert len(widths) == len(Page(text).images) == 6
        assert all(width > 0 for width in widths), widths


def test_a_version_stored_from_fitted_parameters_says_why_it_has_no_sample(served, tmp_path):
    _, target, _ = served
    with ModelAdminClient(target, timeout=60) as admin:
        admin.create_version("fitted", "linear", [[1.0, 2.0]], [0.5], source="coefficients from fitted.json")
        admin.create_version(
            "fitted", "linear", [[1.0, 2.5]], [0.5], validation={"mse": 0.2}, num_train=90, num_validation=10
        )
    text = _report(target, "fitted", tmp_path / "v1.html", "--version", "v1")
    assert "it was stored from fitted parameters (an import or train --dask)" in text
    assert "predates samples" not in text
    assert "<tr><td>rows</td><td>not recorded</td></tr>" in text
    text = _report(target, "fitted", tmp_path / "v2.html", "--version", "v2")
    assert "<tr><td>rows</td><td>100 (90 training, 10 validation)</td></tr>" in text
    assert "it was stored from fitted parameters" in text
