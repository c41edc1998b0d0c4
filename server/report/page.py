"""The report as one self-contained HTML page: inline style, every chart a ``data:image/png`` URI.

The page loads nothing: no script, font, stylesheet or image from anywhere else, so it
can be mailed, archived or opened offline as it is.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from regserve.server.report import plots
from regserve.server.report.data import ReportData, ServingRow

__all__ = ["render_page"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
p.note { color: #555; font-style: italic; }
"""


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.6g}"


def _image(png: bytes, alt: str, chart: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_escape(alt)}" data-chart="{_escape(chart)}">'
        f"<figcaption>{_escape(alt)}</figcaption></figure>"
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_escape(cell)}</th>" for cell in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="number">{_escape(cell)}</td>' if i >= numeric_from else f"<td>{_escape(cell)}</td>"
            for i, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(anchor: str, title: str, parts: Iterable[str]) -> str:
    return f'<section id="{anchor}"><h2>{_escape(title)}</h2>{"".join(parts)}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_escape(text)}</p>'


def _metrics_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    columns = [name for name, values in metrics.items() if values]
    if not columns:
        return _note("No metrics were recorded for this version.")
    names: list[str] = []
    for column in columns:
        names.extend(name for name in metrics[column] if name not in names)
    rows = [[name, *(_number(metrics[c].get(name, math.nan)) for c in columns)] for name in names]
    return _table(["metric", *columns], rows)


def _regression(data: ReportData, predictions: np.ndarray) -> list[str]:
    residuals = data.sample_targets - predictions
    rmse = float(np.sqrt(np.mean(residuals**2)))
    return [
        _table(
            ["sample rows", "residual mean", "residual std", "RMSE of the served predictions"],
            [[str(residuals.size), _number(float(residuals.mean())), _number(float(residuals.std())), _number(rmse)]],
            numeric_from=0,
        ),
        _image(plots.residuals_vs_fitted(predictions, residuals), "Residuals against fitted values", "residuals"),
        _image(plots.residual_histogram(residuals), "Residual histogram", "histogram"),
        _image(plots.qq_chart(residuals), "Normal Q-Q plot of the residuals", "qq"),
    ]


def _classification(data: ReportData, predictions: np.ndarray, probabilities: np.ndarray) -> list[str]:
    true = data.sample_targets.astype(np.intp)
    accuracy = float(np.mean(true == predictions.astype(np.intp)))
    roc, areas = plots.roc_chart(true, probabilities, data.classes)
    parts = [
        _table(
            ["sample rows", "accuracy of the served predictions"],
            [[str(true.size), _number(accuracy)]],
            numeric_from=0,
        ),
        _image(plots.confusion_chart(true, predictions, data.classes), "Confusion matrix", "confusion"),
        _image(plots.calibration_chart(true, probabilities, data.classes), "Calibration curves", "calibration"),
        _image(roc, "ROC curves, one class against the rest", "roc"),
    ]
    if areas:
        parts.append(_table(["class", "ROC AUC"], [[name, _number(area)] for name, area in areas.items()]))
    missing = [str(c) for k, c in enumerate(data.classes) if not (true == k).any()]
    if missing:
        parts.append(_note(f"Classes absent from the sample, without a ROC curve: {', '.join(missing)}."))
    return parts


def _validation(data: ReportData) -> list[str]:
    rows = data.sample_targets.size
    if rows == 0 and data.from_parameters:
        return [
            _note(
                "No validation sample is stored with this version: it was stored from fitted parameters "
                "(an import or train --dask), and versions stored so carry no sample. "
                "Its validation metrics, if any, are those sent with the parameters."
            )
        ]
    if rows == 0:
        return [_note("No validation sample is stored with this version (it held out no rows, or predates samples).")]
    if data.predictions is None:
        return [_note("The server did not predict for the validation sample, so nothing is plotted.")]
    intro = _note(
        f"{rows} validation rows stored with the version at training, predicted now by the server "
        f"(version {data.version}), so the plots show what is served."
    )
    if data.is_classifier:
        if data.probabilities is None:
            return [intro, _note("The server answered no class probabilities.")]
        return [intro, *_classification(data, data.predictions, data.probabilities)]
    return [intro, *_regression(data, data.predictions)]


def _serving(rows: Sequence[ServingRow]) -> list[str]:
    if not any(row.requests for row in rows):
        return [_note("No serving statistics yet: the answering server has served no request of this model.")]
    requests, latency = plots.serving_charts(rows)
    table = _table(
        ["version", "state", "requests", "errors", "rows", "latency mean (ms)", "p50 (ms)", "p99 (ms)"],
        [
            [
                row.version,
                row.state,
                str(row.requests),
                str(row.errors),
                str(row.rows),
                _number(row.latency_mean_ms),
                _number(row.latency_p50_ms),
                _number(row.latency_p99_ms),
            ]
            for row in rows
        ],
        numeric_from=2,
    )
    return [
        _note("As counted by the server that answered, since it started."),
        table,
        _image(requests, "Requests per version", "requests"),
        _image(latency, "Latency per version", "latency"),
    ]


def render_page(data: ReportData) -> str:
    """The report of ``data`` as a complete HTML document."""
    title = f"regserve report: {data.model} {data.version}"
    sections = [
        _section(
            "lineage", "Lineage", [_table(["fact", "value"], [list(pair) for pair in data.lineage], numeric_from=2)]
        ),
        _section("metrics", "Metrics", [_metrics_table(data.metrics)]),
        _section(
            "coefficients",
            "Coefficients",
            [
                _image(
                    plots.coefficient_chart(data.feature_names, data.coefficients, data.classes, data.standardized),
                    "Coefficients",
                    "coefficients",
                )
            ]
            if data.coefficients.size
            else [_note("The version carries no coefficients.")],
        ),
        _section("validation", "Validation sample", _validation(data)),
        _section("serving", "Serving", _serving(data.serving)),
    ]
    if data.notes:
        sections.append(_section("notes", "Notes", [_note(note) for note in data.notes]))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{_escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )
