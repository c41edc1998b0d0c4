"""What the ``regserve`` commands print: tables of metrics, coefficients, states, versions and status, or JSON.

Every function takes the messages of ``regserve.v1`` (or the client library's
``Prediction``) and writes to stdout; errors go to stderr, as one line with a
``regserve:`` prefix or, with ``--output json``, as one JSON object.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from google.protobuf import json_format

from regserve.client import RegserveError
from regserve.v1 import types_pb2

__all__ = [
    "CoefficientColumn",
    "coefficient_table",
    "inference_columns",
    "error_object",
    "message_object",
    "prediction_objects",
    "print_client_error",
    "print_coefficients",
    "print_error",
    "print_error_json",
    "print_failure",
    "print_json",
    "print_metrics",
    "print_model_info",
    "print_statistics",
    "print_problems",
    "print_states",
    "print_statuses",
    "print_table",
    "print_trained",
    "print_versions",
    "rows_text",
    "source_text",
    "split_text",
    "state_name",
    "stored_from_parameters",
    "version_order",
    "write_predictions",
    "write_predictions_json",
]

CoefficientColumn = tuple[str, "np.ndarray | None"]
"""An optional column of the coefficients table: its header, and its values shaped like the
coefficients plus one column for the intercept, (outputs, features + 1); None or an empty
array leaves the column out, and a NaN prints as ``-``."""

_VERSION_NAME = re.compile(r"v([1-9][0-9]*)")


def print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Print ``rows`` under ``header`` in left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def print_error(error: object) -> None:
    """Print one line ``regserve: <error>`` on stderr."""
    print(f"regserve: {error}", file=sys.stderr)


def print_client_error(exc) -> None:
    """Print a failed call (a ``regserve.client.RegserveError``): message, status code, reason, bad fields."""
    # A status from outside regserve (grpc's own health service, a proxy) may come without a message.
    message = exc.message or "the server gave no reason"
    print_error(f"{message} [{exc.code.name}{', ' + exc.reason if exc.reason else ''}]")
    for field, description in exc.field_violations:
        print(f"  {field}: {description}", file=sys.stderr)


def print_failure(error: object, as_json: bool) -> None:
    """Report what ended a command on stderr: a JSON object when ``as_json``, else a ``regserve:`` line."""
    if as_json:
        print_error_json(error)
    elif isinstance(error, RegserveError):
        print_client_error(error)
    else:
        print_error(error)


def error_object(error: object) -> dict:
    """The JSON object of a failure: a failed call (a ``regserve.client.RegserveError``) or a local error.

    ``code`` is the gRPC status name, null when no call failed (a bad file, flag or
    CSV row); ``reason``, ``metadata`` and ``field_violations`` come from the server's
    ``ErrorInfo`` and ``BadRequest``, or from a local error that carries them;
    ``request_id`` is the call's ``x-request-id`` ("" without a call) and
    ``retry_after_seconds`` the server's ``RetryInfo`` (null without one).
    """
    if isinstance(error, RegserveError):
        code: str | None = error.code.name
        message = error.message
        request_id, retry_after = error.request_id, error.retry_after
    else:
        code, message, request_id, retry_after = None, str(getattr(error, "message", error)), "", None
    violations = getattr(error, "field_violations", None) or getattr(error, "violations", None) or ()
    return {
        "code": code,
        "reason": getattr(error, "reason", "") or "",
        "message": message,
        "metadata": dict(getattr(error, "metadata", None) or {}),
        "request_id": request_id,
        "field_violations": [{"field": field, "description": text} for field, text in violations],
        "retry_after_seconds": retry_after,
    }


def print_error_json(error: object) -> None:
    """Print ``error_object(error)`` on stderr as one line of JSON."""
    print(json.dumps(error_object(error)), file=sys.stderr)


def message_object(message) -> dict:
    """A protobuf message as the commands' JSON: the .proto's field names, every scalar, list and map field
    (zeros and empties too; unset message fields are left out), 64-bit integers as numbers."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def print_json(message) -> None:
    """Print a protobuf message as ``message_object`` JSON, indented, keys sorted."""
    print(json.dumps(message_object(message), indent=2, sort_keys=True))


def version_order(version: str) -> int:
    """N for a version named ``"vN"``, so that v10 sorts after v9; 0 for any other name."""
    match = _VERSION_NAME.fullmatch(version)
    return int(match.group(1)) if match else 0


def state_name(value: int) -> str:
    """``SERVING_STATE_IN_SPLIT`` as ``in_split``."""
    return types_pb2.ServingState.Name(value).removeprefix("SERVING_STATE_").lower()


def split_text(split) -> str:
    """A traffic split (mapping of version to weight) as ``v1=90, v2=10``, in version order."""
    return ", ".join(f"{v}={w:g}" for v, w in sorted(split.items(), key=lambda item: version_order(item[0])))


_BOUNDS = ("mean_lower", "mean_upper", "prediction_lower", "prediction_upper")


def _bounds(prediction) -> list[tuple[str, list[float]]]:
    """The interval columns a ``Prediction`` carries (asked with an interval level), by name."""
    return [(name, values.tolist()) for name in _BOUNDS if (values := getattr(prediction, name)) is not None]


def write_predictions(prediction) -> None:
    """Write one prediction per line: a classifier's label, or a regressor's value in full precision; with
    intervals, the interval bounds follow on the line, tab-separated, in the order of ``_BOUNDS``."""
    values = prediction.labels if prediction.labels is not None else prediction.values.tolist()
    cells = [[v if isinstance(v, str) else repr(v)] for v in values]
    for _, bounds in _bounds(prediction):
        for row, bound in zip(cells, bounds, strict=True):
            row.append(repr(bound))
    sys.stdout.write("".join("\t".join(row) + "\n" for row in cells))


def prediction_objects(prediction) -> Iterator[dict]:
    """One JSON object per row of a ``Prediction``: model, version and prediction (the value, or the
    class index), for a classifier its label and its probability per class, and the interval bounds
    it carries (``mean_lower``, ...)."""
    values = prediction.values.tolist()
    bounds = _bounds(prediction)
    if prediction.labels is None:
        for row, value in enumerate(values):
            found = {"model": prediction.model, "version": prediction.version, "prediction": value}
            yield found | {name: column[row] for name, column in bounds}
        return
    classes = prediction.classes or []
    probabilities = prediction.probabilities.tolist() if prediction.probabilities is not None else None
    for row, (value, label) in enumerate(zip(values, prediction.labels, strict=True)):
        yield {
            "model": prediction.model,
            "version": prediction.version,
            "prediction": int(value),
            "label": label,
            "probabilities": dict(zip(classes, probabilities[row], strict=True)) if probabilities else {},
        } | {name: column[row] for name, column in bounds}


def write_predictions_json(prediction) -> None:
    """Write ``prediction_objects`` as JSON Lines, one compact object per row."""
    sys.stdout.write("".join(json.dumps(row) + "\n" for row in prediction_objects(prediction)))


def print_trained(response) -> None:
    """Print the new version of a ``TrainResponse``, whether it serves, and its metrics."""
    version = response.model_version
    state = "serving" if response.promoted else "not promoted"
    print(
        f"{version.model} {version.version}: {version.num_samples} rows, {state}"
        + (f" ({response.promotion_reason})" if response.promotion_reason else "")
    )
    print_warnings(version)
    print_metrics(version)


def print_warnings(version) -> None:
    """Print each of a ``ModelVersion``'s fit warnings on a line of its own."""
    for warning in version.warnings:
        print(f"warning     {warning.reason}: {warning.message}")


def penalty_text(version) -> str:
    """The penalty a ``ModelVersion`` was fitted with, in the terms of the estimator that solves the same problem."""
    spec, logistic = version.spec, version.kind == types_pb2.MODEL_KIND_LOGISTIC
    if spec.HasField("c"):
        return f"L2, C = {spec.c:g}: C·Σ log-loss + ½‖W‖², as scikit-learn's LogisticRegression(C={spec.c:g})"
    if not spec.alpha:
        return "none: the maximum-likelihood fit" if logistic else "none: ordinary least squares"
    if logistic:
        c = f" = LogisticRegression(C={1 / (spec.alpha * version.num_train):.6g})" if version.num_train else ""
        return f"L2, alpha = {spec.alpha:g}: mean log-loss + (alpha/2)‖W‖²{c}"
    if spec.HasField("fit_intercept") and not spec.fit_intercept:
        return (
            f"L2, alpha = {spec.alpha:g}: ‖y - Xw‖² + alpha‖w‖², "
            f"as scikit-learn's Ridge(alpha={spec.alpha:g}, fit_intercept=False)"
        )
    return f"L2, alpha = {spec.alpha:g}: ‖y - Xw - b‖² + alpha‖w‖², as scikit-learn's Ridge(alpha={spec.alpha:g})"


def stored_from_parameters(version) -> bool:
    """Whether a ``ModelVersion`` was stored from fitted parameters (CreateVersion), not trained from rows.

    Training records how long it took; CreateVersion, which fits nothing, records no duration.
    """
    return not version.training_seconds


def rows_text(version) -> str:
    """A ``ModelVersion``'s row counts, or "not recorded" for one stored from fitted parameters without them."""
    if not version.num_samples:
        return "not recorded"
    return f"{version.num_samples} ({version.num_train} train, {version.num_validation} validation)"


def source_text(version) -> str:
    """Where a ``ModelVersion`` came from: its lineage's source, else how it was made."""
    if version.source:
        return version.source
    return "not recorded" if stored_from_parameters(version) else "rows streamed to Train"


def print_model_info(version) -> None:
    """Describe a ``ModelVersion``: kind, state, lineage, features, solver, coefficients and metrics."""
    kind = types_pb2.ModelKind.Name(version.kind).removeprefix("MODEL_KIND_").lower()
    print(f"model       {version.model} {version.version} ({kind}, {state_name(version.serving_state)})")
    print(f"created     {version.create_time.ToJsonString()} by regserve {version.regserve_version}")
    print(f"source      {source_text(version)}")
    print(f"features    {', '.join(version.feature_names)}")
    if version.classes:
        print(f"classes     {', '.join(version.classes)}")
    print(f"rows        {rows_text(version)}")
    print(f"data sha256 {version.data_fingerprint or 'not recorded'}")
    print(f"solver      {types_pb2.Solver.Name(version.solver_report.solver).removeprefix('SOLVER_').lower()}")
    if version.spec.HasField("alpha") or version.spec.HasField("c"):  # a fitted import states no penalty
        print(f"penalty     {penalty_text(version)}")
    print_warnings(version)
    if print_coefficients(version, () if version.standardization.enabled else inference_columns(version)):
        print()
    if print_statistics(version):
        print()
    print_metrics(version)


def _matrix(matrix: types_pb2.Matrix) -> np.ndarray:
    """A ``Matrix`` as a 2-D array, whichever of ``values`` and ``raw`` carries it."""
    flat = np.frombuffer(matrix.raw, dtype="<f8") if matrix.raw else np.array(matrix.values, dtype=np.float64)
    return flat.reshape(-1, matrix.num_columns or max(flat.size, 1))


def coefficient_table(
    version, columns: Sequence[CoefficientColumn] = ()
) -> tuple[tuple[str, ...], list[tuple[str, ...]]] | None:
    """The header and rows of a ``ModelVersion``'s coefficients, or None when it carries none.

    One row per feature and one for the intercept, per output: a ``class`` column names
    the class of each row of a multinomial model.  The ``columns`` that have values
    follow the coefficient (see ``CoefficientColumn``).
    """
    coefficients = _matrix(version.coefficients)
    if coefficients.size == 0:
        return None
    outputs, features = coefficients.shape
    intercepts = np.array(version.intercepts, dtype=np.float64)
    table = np.column_stack([coefficients, intercepts if intercepts.size == outputs else np.full(outputs, np.nan)])
    names = list(version.feature_names)
    if len(names) != features:
        names = [f"x{j}" for j in range(features)]
    names.append("(intercept)")
    extra = [(header, np.asarray(values, dtype=np.float64)) for header, values in columns if values is not None]
    extra = [(header, values.reshape(table.shape)) for header, values in extra if values.size]
    classes = list(version.classes) if len(version.classes) == outputs else [f"output {k}" for k in range(outputs)]
    header = (*(("class",) if outputs > 1 else ()), "feature", "coefficient", *(h for h, _ in extra))
    rows = []
    for k in range(outputs):
        for j, name in enumerate(names):
            cells = [_number(table[k, j]), *(_number(values[k, j]) for _, values in extra)]
            rows.append((*((classes[k],) if outputs > 1 else ()), name, *cells))
    return header, rows


def _number(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.6g}"


def print_coefficients(version, columns: Sequence[CoefficientColumn] = ()) -> bool:
    """Print the coefficients table of a ``ModelVersion`` under a title; False when it carries none."""
    table = coefficient_table(version, columns)
    if table is None:
        return False
    notes = []
    if version.kind == types_pb2.MODEL_KIND_LOGISTIC and len(version.classes) == 2:
        notes.append(f"log-odds of {version.classes[1]}")
    if version.standardization.enabled:
        notes.append("on standardized features, z = (x - mean) / scale")
    print("\ncoefficients" + (f" ({'; '.join(notes)})" if notes else ""))
    print_table(*table)
    return True


def _inference_headers(statistics) -> tuple[str, ...]:
    """statsmodels' column headers for a ``ModelStatistics``: std err, t or z, its p-value, the interval, HC3."""
    letter = "t" if statistics.distribution == "t" else "z"
    tail = (1 - statistics.confidence_level) / 2
    robust = (f"{statistics.robust_covariance_type} std err",) if statistics.robust_covariance_type else ()
    return ("std err", letter, f"P>|{letter}|", f"[{tail:g}", f"{1 - tail:g}]", *robust)


def _inference_values(row, statistics) -> tuple[float, ...]:
    robust = (row.robust_std_error,) if statistics.robust_covariance_type else ()
    return (row.std_error, row.statistic, row.p_value, row.ci_low, row.ci_high, *robust)


def inference_columns(version) -> list[CoefficientColumn]:
    """The coefficients table's inference columns from ``version.statistics``; none when it has no statistics.

    The statistics are in the original feature space, so they are columns of the table only
    when the coefficients are too (no standardization).
    """
    statistics = version.statistics
    rows = list(statistics.coefficients)
    features = len(version.feature_names)
    if not rows or len(version.intercepts) != 1 or len(rows) not in (features, features + 1):
        return []
    # The statistics list the intercept first; the table puts it last.
    by_name = {row.name: _inference_values(row, statistics) for row in rows}
    missing = (np.nan,) * len(_inference_headers(statistics))
    names = [*version.feature_names, "(intercept)"]
    values = np.array([by_name.get(name, missing) for name in names], dtype=np.float64)
    return [(header, values[:, j].reshape(1, -1)) for j, header in enumerate(_inference_headers(statistics))]


def print_statistics(version) -> bool:
    """Print a ``ModelVersion``'s statistics as statsmodels' summary does; False when it carries none.

    Under standardization the coefficients table shows standardized weights, so the
    estimates in the original feature space get a table of their own here.
    """
    statistics = version.statistics
    if statistics.note:
        print(f"statistics  not given: {statistics.note}")
        return True
    if not statistics.coefficients:
        return False
    if version.standardization.enabled:
        print("coefficients in the original feature space")
        # The intercept last, as in the coefficients table above (the statistics list it first).
        ordered = sorted(statistics.coefficients, key=lambda row: row.name == "(intercept)")
        rows = [
            (row.name, *(_number(v) for v in (row.estimate, *_inference_values(row, statistics)))) for row in ordered
        ]
        print_table(("feature", "coefficient", *_inference_headers(statistics)), rows)
    robust = f"; {statistics.robust_covariance_type} robust std err" if statistics.robust_covariance_type else ""
    if version.standardization.enabled:
        print()
    print(f"statistics ({statistics.covariance_type} covariance{robust})")
    linear = statistics.distribution == "t"
    numbers = [
        ("no. observations", float(statistics.num_observations)),
        ("df model", statistics.df_model),
        ("df residuals", statistics.df_resid),
    ]
    if linear:
        numbers += [
            ("R-squared", statistics.r_squared),
            ("adj. R-squared", statistics.adjusted_r_squared),
            ("F-statistic", statistics.f_statistic),
            ("prob (F-statistic)", statistics.f_p_value),
            ("residual variance", statistics.residual_variance),
        ]
    else:
        numbers += [
            ("pseudo R-squared", statistics.pseudo_r_squared),
            ("log-likelihood null", statistics.null_log_likelihood),
            ("LLR", statistics.llr),
            ("LLR p-value", statistics.llr_p_value),
        ]
    numbers += [("log-likelihood", statistics.log_likelihood), ("AIC", statistics.aic), ("BIC", statistics.bic)]
    if linear:
        numbers.append(("condition no.", statistics.condition_number))
    print_table(("statistic", "value"), [(name, _number(value)) for name, value in numbers])
    return True


def print_metrics(version) -> None:
    """Print a ``ModelVersion``'s metrics per split, then a classifier's per-class scores and confusion matrix."""
    rows = []
    for split, evaluation in (("training", version.training), ("validation", version.validation)):
        for name, value in sorted(evaluation.metrics.items()):
            rows.append((split, name, f"{value:.6g}"))
    for name, value in sorted(version.cross_validation.mean.items()):
        rows.append(
            (
                f"cv ({version.cross_validation.folds} folds)",
                name,
                f"{value:.6g} ± {version.cross_validation.std[name]:.2g}",
            )
        )
    if rows:
        print_table(("split", "metric", "value"), rows)
    for split, evaluation in (("training", version.training), ("validation", version.validation)):
        if evaluation.per_class:
            _print_class_scores(split, evaluation)


def _print_class_scores(split: str, evaluation) -> None:
    print(f"\n{split}: per class")
    print_table(
        ("class", "precision", "recall", "f1", "support"),
        [
            (c.label, f"{c.precision:.4g}", f"{c.recall:.4g}", f"{c.f1:.4g}", str(c.support))
            for c in evaluation.per_class
        ],
    )
    matrix = evaluation.confusion_matrix
    if matrix.num_columns:
        labels = [c.label for c in evaluation.per_class]
        counts = [int(v) for v in matrix.values]
        width = matrix.num_columns
        print(f"\n{split}: confusion matrix (rows: true class, columns: predicted)")
        print_table(
            ("", *labels),
            [(labels[i], *(str(n) for n in counts[i * width : (i + 1) * width])) for i in range(len(labels))],
        )


def _problem(message, field: str):
    """The ``Problem`` in ``field`` of ``message``, or None when the field is unset."""
    return getattr(message, field) if message.HasField(field) else None


def _state_problem(state):
    """Why a ``ModelState`` is not served as stored: its own problem first, then its serving version's."""
    return _problem(state, "problem") or _problem(state, "serving_problem")


def print_problems(problems: Sequence[tuple[str, types_pb2.Problem]]) -> None:
    """Print ``name: reason: message`` for each ``(name, Problem)`` pair."""
    for name, problem in problems:
        print(f"{name}: {problem.reason}: {problem.message}")


def print_states(states) -> None:
    """Print one row per ``ModelState``: serving version, split, frozen versions, versions, generation.

    When a model has a problem (an unreadable state, a serving version that is not
    served), a ``problem`` column gives its reason and the messages follow the table.
    """
    rows = [
        (
            s.model,
            s.serving_version or "-",
            split_text(s.traffic_split) or "-",
            ", ".join(s.frozen_versions) or "-",
            ", ".join(s.versions),
            str(s.generation),
        )
        for s in states
    ]
    header = ("model", "serving", "split", "frozen", "versions", "generation")
    problems = [(s.model, p) for s in states if (p := _state_problem(s)) is not None]
    if not problems:
        print_table(header, rows)
        return
    reasons = [(p.reason if (p := _state_problem(s)) is not None else "-") for s in states]
    print_table((*header, "problem"), [(*row, reason) for row, reason in zip(rows, reasons, strict=True)])
    print_problems(problems)


def print_versions(versions) -> None:
    """Print one row per ``ModelVersion``: state, rows, validation mse or accuracy, creation time, checksum.

    A damaged version gets a ``problem`` column with its reason; the messages follow the table.
    """
    rows = []
    for v in versions:
        validation = ", ".join(
            f"{k}={val:.4g}" for k, val in sorted(v.validation.metrics.items()) if k in ("mse", "accuracy")
        )
        created = v.create_time.ToJsonString() if v.create_time.seconds else "-"
        samples = str(v.num_samples) if v.num_samples else "not recorded"
        rows.append((v.version, state_name(v.serving_state), samples, validation or "-", created, v.checksum[:12]))
    _print_with_problems(("version", "state", "rows", "validation", "created", "sha256"), rows, versions)


def _print_with_problems(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], versions) -> None:
    """Print the table of ``versions``, with a ``problem`` column and the messages when one has a problem."""
    problems = [(v.version, p) for v in versions if (p := _problem(v, "problem")) is not None]
    if not problems:
        print_table(header, rows)
        return
    reasons = [v.problem.reason if v.HasField("problem") else "-" for v in versions]
    print_table((*header, "problem"), [(*row, reason) for row, reason in zip(rows, reasons, strict=True)])
    print_problems(problems)


def _print_drift(version: str, drift) -> None:
    """Print a ``VersionDrift``: one line, then the flagged features (all of them can be many; JSON has them)."""
    classes = ""
    if drift.HasField("class_psi"):
        classes = f"; predicted classes PSI {drift.class_psi:.4f}{' FLAGGED' if drift.class_flagged else ''}"
    if drift.flagged_features:
        summary = f"{drift.flagged_features} of {len(drift.features)} features flagged"
    else:
        top = max(drift.features, key=lambda f: f.psi, default=None)
        summary = "no feature flagged" + (f" (largest PSI {top.psi:.4f}, {top.feature})" if top else "")
    window = f"its last {drift.window_rows} rows (PSI threshold {drift.threshold:g})"
    print(f"drift of {version} over {window}: {summary}{classes}")
    flagged = [(f.feature, f"{f.psi:.4f}", f"{f.mean_shift:+.3f}") for f in drift.features if f.flagged]
    if flagged:
        print_table(("feature", "psi", "mean shift (sd)"), flagged)


def print_statuses(statuses, replica: str = "") -> None:
    """Print the ``replica`` that answered, then each ``ModelStatus``: its state, the generation the replica
    routes by, per-version traffic and latency, and its switch history."""
    if replica:
        print(f"replica {replica}\n")
    for index, status in enumerate(statuses):
        if index:
            print()
        state = status.state
        # A replica polls the registry, so it may route by an older generation of the state for a while.
        behind = " (behind)" if status.served_generation < state.generation else ""
        print(
            f"model {state.model}: serving {state.serving_version or '-'}, generation {state.generation}, "
            f"served generation {status.served_generation}{behind}"
        )
        if state.HasField("problem"):
            print(f"problem {state.problem.reason}: {state.problem.message}")
        if state.HasField("serving_problem"):
            problem = state.serving_problem
            print(f"not served {state.serving_version}: {problem.reason}: {problem.message}")
        if state.traffic_split:
            print(f"split {split_text(state.traffic_split)}")
        rows = [
            (
                v.version,
                state_name(v.serving_state),
                str(v.requests),
                str(v.errors),
                str(v.rows),
                f"{v.latency_mean_ms:.3f}",
                f"{v.latency_p50_ms:.3f}",
                f"{v.latency_p99_ms:.3f}",
            )
            for v in status.versions
        ]
        header = ("version", "state", "requests", "errors", "rows", "mean ms", "p50 ms", "p99 ms")
        _print_with_problems(header, rows, status.versions)
        for v in status.versions:
            if v.HasField("drift"):
                _print_drift(v.version, v.drift)
        if status.history:
            print("history")
            history = [
                (s.time.ToJsonString(), s.action, s.from_version or "-", s.to_version or "-", s.reason)
                for s in status.history
            ]
            print_table(("when", "action", "from", "to", "reason"), history)
