"""``regserve report``: gather one version's description, validation sample, predictions and
serving statistics from a server, and write the HTML page of ``regserve.server.report``.

The validation sample is read with GetVersion's ``VERSION_VIEW_VALIDATION_SAMPLE``; the
predictions plotted are the server's own Predict answers on those rows, by version, so
the report shows what is served.  matplotlib (the ``report`` extra) is imported only
when the command runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import grpc
import numpy as np

from regserve.client import (
    ModelAdminClient,
    RegressionClient,
    RegserveError,
    bearer_metadata,
    open_channel,
    tls_credentials,
)

# The typed exceptions' constructor for a failed call, so the one raw call here fails as the client's calls do.
from regserve.client._exceptions import from_rpc_error
from regserve.server.cli.commands import connection
from regserve.server.cli.render import print_failure, state_name, stored_from_parameters
from regserve.v1 import model_service_pb2, model_service_pb2_grpc, types_pb2

__all__ = ["cmd_report"]


def _validation_sample(args, model: str, version: str, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The version's stored validation rows and targets (class indices for a classifier)."""
    credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca or args.tls_cert else None
    metadata = [bearer_metadata(args.token)] if args.token else []
    request = model_service_pb2.GetVersionRequest(
        model=model, version=version, view=model_service_pb2.VERSION_VIEW_VALIDATION_SAMPLE
    )
    with open_channel(args.server, credentials=credentials, options=connection(args)["options"]) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        try:
            sample = stub.GetVersion(request, timeout=args.timeout, metadata=metadata).validation_sample
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
    targets = np.frombuffer(sample.targets.raw, dtype="<f8").astype(np.float64)
    inputs = np.frombuffer(sample.inputs.raw, dtype="<f8").astype(np.float64)
    return inputs.reshape(targets.size, sample.inputs.num_columns or n_features), targets


def _kind(version: types_pb2.ModelVersion) -> str:
    return types_pb2.ModelKind.Name(version.kind).removeprefix("MODEL_KIND_").lower()


def _rows(version: types_pb2.ModelVersion) -> str:
    # Only a version stored from fitted parameters without counts has none: no fit is made on zero rows.
    if not version.num_samples:
        return "not recorded"
    return f"{version.num_samples} ({version.num_train} training, {version.num_validation} validation)"


_SOLVER_FIELDS = {
    types_pb2.SOLVER_GRADIENT_DESCENT: ("learning_rate", "epochs", "tolerance"),
    types_pb2.SOLVER_SGD: ("learning_rate", "epochs", "batch_size", "tolerance"),
    types_pb2.SOLVER_NEWTON: ("tolerance", "max_iterations"),
}
"""The settings each solver uses: the stored spec holds every one, and a closed-form fit uses none of these."""


def _lineage(version: types_pb2.ModelVersion, sample_rows: int) -> list[tuple[str, str]]:
    spec, solver = version.spec, version.solver_report
    facts = [
        ("model", version.model),
        ("version", version.version),
        ("kind", _kind(version)),
        ("serving state", state_name(version.serving_state)),
        ("created", version.create_time.ToJsonString()),
        ("trained by", f"regserve {version.regserve_version}" if version.regserve_version else "-"),
        ("training time", f"{version.training_seconds:.3f} s"),
        ("rows", _rows(version)),
        ("validation sample", f"{sample_rows} rows stored with the version"),
        ("features", f"{len(version.feature_names)}: {', '.join(version.feature_names)}"),
    ]
    if version.classes:
        facts.append(("classes", ", ".join(version.classes)))
    facts += [
        ("standardized", "yes" if version.standardization.enabled else "no"),
        ("solver", types_pb2.Solver.Name(solver.solver).removeprefix("SOLVER_").lower()),
    ]
    for field in ("alpha", "c", "validation_fraction", "cv_folds", "seed", *_SOLVER_FIELDS.get(solver.solver, ())):
        if spec.HasField(field):
            facts.append((field.replace("_", " "), f"{getattr(spec, field):g}"))
    if solver.iterations:
        facts.append(("iterations", f"{solver.iterations} ({'converged' if solver.converged else 'not converged'})"))
    if solver.rank:
        facts.append(("rank, condition number", f"{solver.rank}, {solver.condition_number:.4g}"))
    facts += [
        ("final training loss", f"{solver.final_loss:.6g}"),
        ("training data sha256", version.data_fingerprint),
        ("weights sha256", version.checksum),
    ]
    return facts


def _metrics(version: types_pb2.ModelVersion) -> dict[str, dict[str, float]]:
    metrics = {
        "training": dict(version.training.metrics),
        "validation": dict(version.validation.metrics),
    }
    folds = version.cross_validation.folds
    if folds:
        metrics[f"{folds}-fold CV mean"] = dict(version.cross_validation.mean)
        metrics[f"{folds}-fold CV std"] = dict(version.cross_validation.std)
    return metrics


def _matrix(matrix: types_pb2.Matrix) -> np.ndarray:
    flat = np.frombuffer(matrix.raw, dtype="<f8") if matrix.raw else np.array(matrix.values, dtype=np.float64)
    return flat.reshape(-1, matrix.num_columns or max(flat.size, 1)).astype(np.float64)


def _serving_rows(admin: ModelAdminClient, model: str):
    from regserve.server.report import ServingRow

    rows = []
    for status in admin.status(model):
        for entry in status.versions:
            rows.append(
                ServingRow(
                    version=entry.version,
                    state=state_name(entry.serving_state),
                    requests=entry.requests,
                    errors=entry.errors,
                    rows=entry.rows,
                    latency_mean_ms=entry.latency_mean_ms,
                    latency_p50_ms=entry.latency_p50_ms,
                    latency_p99_ms=entry.latency_p99_ms,
                )
            )
    return rows


def cmd_report(args) -> int:
    """Write the report of ``args.model`` (``args.version``, else the serving version) to ``args.out``."""
    try:
        from regserve.server.report import ReportData, render_page
    except ImportError as exc:
        print_failure(f"regserve report needs matplotlib: install regserve[report] ({exc})", args.output == "json")
        return 1
    notes: list[str] = []
    # Read before the report's own Predict, so the statistics are the traffic the model had.
    with ModelAdminClient(args.server, **connection(args)) as admin:
        serving = _serving_rows(admin, args.model)
    with RegressionClient(args.server, **connection(args)) as client:
        version = client.model_info(args.model, args.version)
        inputs, targets = _validation_sample(args, args.model, version.version, len(version.feature_names))
        predictions = probabilities = None
        if targets.size:
            try:
                prediction = client.predict(args.model, inputs, version=version.version)
                predictions, probabilities = prediction.values, prediction.probabilities
            except RegserveError as exc:
                notes.append(f"Predict on the validation sample failed: {exc.message} ({exc.reason or exc.code.name}).")
    data = ReportData(
        model=version.model,
        version=version.version,
        kind=_kind(version),
        feature_names=list(version.feature_names),
        classes=list(version.classes),
        coefficients=_matrix(version.coefficients),
        intercepts=np.array(version.intercepts, dtype=np.float64),
        standardized=version.standardization.enabled,
        lineage=_lineage(version, int(targets.size)),
        metrics={
            column: {name: value for name, value in values.items() if math.isfinite(value)}
            for column, values in _metrics(version).items()
        },
        sample_inputs=inputs,
        sample_targets=targets,
        predictions=predictions,
        probabilities=probabilities,
        serving=serving,
        notes=notes,
        from_parameters=stored_from_parameters(version),
    )
    Path(args.out).write_text(render_page(data), encoding="utf-8")
    if args.output == "json":
        written = {"model": data.model, "version": data.version, "out": str(args.out), "sample_rows": int(targets.size)}
        print(json.dumps(written, indent=2, sort_keys=True))
    else:
        print(f"wrote {args.out}: model {data.model} version {data.version}")
    return 0
