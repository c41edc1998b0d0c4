"""``regserve import``: a fitted model from a file, stored as a new version with CreateVersion.

Two formats, neither of which can run code when read:

``skops``
    A scikit-learn ``LinearRegression``, ``Ridge`` or ``LogisticRegression`` saved with
    ``skops.io.dump``.  Every type the file names is checked against ``trusted_types()``
    (those three classes, the builtin containers and the NumPy types their fitted
    attributes use) before anything is built, and ``skops.io.load`` is given exactly that
    list; a file naming any other type is refused.  Pickle is never used.
``json``
    A document of coefficients (``JSON_KEYS`` lists its keys)::

        {"kind": "logistic",
         "coefficients": [[...], [...], [...]],   one row per output, one column per feature
         "intercepts": [..., ..., ...],
         "feature_names": [...],                  optional; x0, x1, ... when absent
         "classes": [...],                        logistic only, in the order of the outputs
         "standardization": {"means": [...], "scales": [...]},   optional
         "metrics": {"training": {"mse": ...}, "validation": {...}},   optional
         "source": "...",                         optional: where the coefficients came from
         "data_fingerprint": "..."}               optional: of the data they were fitted on

The version's lineage names the file, its SHA-256 and its format, and for skops files
the scikit-learn release that fitted the model.  The server checks the parameters as it
checks a trained version's.

The feature names are ``--feature-names`` when given, else the file's; when neither names
them and the model's serving version has as many features, its names are taken, so
clients that name features keep working.  Names that differ from the serving version's
are stored as given, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regserve.client import ModelAdminClient, NotFound
from regserve.server.cli.commands import connection
from regserve.server.cli.render import print_json, print_metrics
from regserve.server.json_objects import DuplicateKey, unique_keys
from regserve.v1 import types_pb2

__all__ = ["FORMATS", "JSON_KEYS", "FittedModel", "ImportRefused", "cmd_import", "read_fitted", "trusted_types"]

FORMATS = ("skops", "json")

_ESTIMATORS = {"LinearRegression": "linear", "Ridge": "ridge", "LogisticRegression": "logistic"}
"""The classes of ``sklearn.linear_model`` that ``regserve import`` reads, and the kind each becomes."""
_KINDS = tuple(_ESTIMATORS.values())
"""The JSON document's ``kind``s, as it spells them."""

_DATA_TYPES = (
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "numpy.ndarray",
    "numpy.float64",
    "numpy.float32",
    "numpy.int64",
    "numpy.int32",
    "numpy.str_",
    "numpy.bool_",
)
"""The types the fitted attributes and hyperparameters of those classes are stored as."""

JSON_KEYS = (
    "kind",
    "coefficients",
    "intercepts",
    "feature_names",
    "classes",
    "standardization",
    "metrics",
    "source",
    "data_fingerprint",
)


class ImportRefused(ValueError):
    """The file holds no model ``regserve import`` can read; the message says why, ``reason`` in UPPER_SNAKE."""

    def __init__(self, message: str, reason: str = "IMPORT_REFUSED") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class FittedModel:
    """A fitted linear model as CreateVersion takes it, and where it came from."""

    kind: str
    coefficients: np.ndarray
    intercepts: np.ndarray
    feature_names: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    means: np.ndarray | None = None
    scales: np.ndarray | None = None
    training: dict[str, float] | None = None
    validation: dict[str, float] | None = None
    source: str = ""
    data_fingerprint: str = ""
    spec: dict[str, Any] | None = None
    """The settings of the fit that a TrainSpec can state (the L2 penalty, the intercept), when known."""


def _estimator_classes() -> dict[str, type]:
    try:
        from sklearn import linear_model  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportRefused("reading .skops files needs scikit-learn: pip install 'regserve[import]'") from exc
    return {name: getattr(linear_model, name) for name in _ESTIMATORS}


def trusted_types() -> list[str]:
    """The types a skops file may name: the three estimator classes where this scikit-learn defines them, and data."""
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in _estimator_classes().values()] + list(_DATA_TYPES)


def _named_types(node: Any) -> Iterator[str]:
    """Every ``module.Class`` a skops schema names, at any depth."""
    if isinstance(node, dict):
        if "__module__" in node and "__class__" in node:
            yield f"{node['__module__']}.{node['__class__']}"
        for value in node.values():
            yield from _named_types(value)
    elif isinstance(node, list):
        for value in node:
            yield from _named_types(value)


def _check_skops_types(path: Path, trusted: list[str]) -> dict:
    """Refuse a skops file that names any type outside ``trusted``, reading only its JSON schema; return the schema."""
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ImportRefused(f"{path.name} is not a skops file ({exc})") from exc
    untrusted = sorted(set(_named_types(schema)) - set(trusted))
    if untrusted:
        raise ImportRefused(
            f"{path.name} holds types regserve does not trust: {', '.join(untrusted)}. Only scikit-learn's "
            "LinearRegression, Ridge and LogisticRegression, fitted on numbers, are imported; nothing was loaded.",
            reason="UNTRUSTED_TYPES",
        )
    return schema


def _fitted_by(schema: dict) -> str:
    """The scikit-learn release the schema says fitted the model, or "" (scikit-learn drops it on loading)."""
    try:
        node = schema["content"]["content"]["_sklearn_version"]
        release = json.loads(node["content"]) if node.get("is_json") else node["content"]
    except (KeyError, TypeError, ValueError):
        return ""
    return release if isinstance(release, str) else ""


def _load_skops(path: Path) -> tuple[Any, str]:
    """The object in the skops file at ``path`` and the scikit-learn release that fitted it ("" when unknown)."""
    trusted = trusted_types()
    schema = _check_skops_types(path, trusted)
    try:
        import skops.io  # type: ignore[import-untyped]
        from skops.io.exceptions import UntrustedTypesFoundException  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportRefused("reading .skops files needs skops: pip install 'regserve[import]'") from exc
    try:
        return skops.io.load(path, trusted=trusted), _fitted_by(schema)
    except UntrustedTypesFoundException as exc:
        raise ImportRefused(f"{path.name} holds types regserve does not trust: {exc}", "UNTRUSTED_TYPES") from exc


def _from_estimator(model: Any, release: str, lineage: str) -> FittedModel:
    classes = _estimator_classes()
    name = next((n for n, cls in classes.items() if type(model) is cls), None)
    if name is None:
        raise ImportRefused(f"the file holds a {type(model).__name__}, not one of {', '.join(classes)}")
    kind = _ESTIMATORS[name]
    if not hasattr(model, "coef_"):
        raise ImportRefused(f"the {name} in the file was never fitted")
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
    intercepts = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
    fitted = FittedModel(kind, coef, intercepts)
    if kind == "logistic":
        fitted.classes = [str(label) for label in model.classes_]
        # One-vs-rest normalises K sigmoids, not a softmax: served as multinomial it would answer otherwise.
        if len(fitted.classes) > 2 and (
            getattr(model, "multi_class", "auto") == "ovr" or getattr(model, "solver", "") == "liblinear"
        ):
            raise ImportRefused(f"the {name} is one-vs-rest over {len(fitted.classes)} classes; only multinomial ones")
    elif coef.shape[0] != 1 or intercepts.size != 1:
        raise ImportRefused(f"the {name} predicts {coef.shape[0]} targets; regserve serves one")
    _check_width(model, name, coef.shape[1])
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        fitted.feature_names = [str(n) for n in names]
    fitted.source = f"scikit-learn {release or 'of an unknown release'} {name} from {lineage}"
    fitted.spec = _estimator_settings(model, kind)
    return fitted


def _estimator_settings(model: Any, kind: str) -> dict[str, Any] | None:
    """The estimator's penalty and intercept as TrainSpec fields; None when its penalty is not an L2 one regserve names.

    Ridge's ``alpha`` and LogisticRegression's ``C`` are the spec's ``alpha`` and ``c`` (the same problems).
    """
    if getattr(model, "class_weight", None) is not None or getattr(model, "solver", "") == "liblinear":
        return None  # weighted classes, or liblinear's penalised intercept: not the problem the spec names
    settings: dict[str, Any] = {"fit_intercept": bool(getattr(model, "fit_intercept", True))}
    if kind == "linear":
        return {**settings, "alpha": 0.0}
    if kind == "ridge":
        alpha = np.asarray(getattr(model, "alpha", None), dtype=object)
        return {**settings, "alpha": float(alpha)} if alpha.ndim == 0 and _is_number(alpha.item()) else None
    # scikit-learn 1.8 deprecates ``penalty`` for ``l1_ratio`` (0: L2) and states no penalty as C = inf.
    penalty = getattr(model, "penalty", "l2")
    c: Any = getattr(model, "C", None)
    if penalty is None or penalty == "none" or c == math.inf:
        return {**settings, "alpha": 0.0}
    if penalty in ("l2", "deprecated") and not getattr(model, "l1_ratio", None) and _is_number(c):
        return {**settings, "c": float(c)}
    return None


def _check_width(model: Any, name: str, width: int) -> None:
    """Refuse an estimator whose recorded feature count or names disagree with its ``coef_``'s ``width`` columns.

    scikit-learn's own ``predict`` refuses such a model: its attributes were changed after fitting,
    so which features its columns weigh is unknown.
    """
    n_features = getattr(model, "n_features_in_", None)
    if n_features is not None and n_features != width:
        raise ImportRefused(
            f"the {name}'s coef_ has {width} columns but its n_features_in_ is {n_features}; "
            "scikit-learn itself would not predict with it"
        )
    names = getattr(model, "feature_names_in_", None)
    if names is not None and len(names) != width:
        raise ImportRefused(
            f"the {name}'s coef_ has {width} columns but its feature_names_in_ names {len(names)} features; "
            "scikit-learn itself would not predict with it"
        )


def _is_number(value: Any) -> bool:
    # JSON's true and false read as Python bools, which are ints: a number only by accident.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _entries(value: Any, dimensions: int) -> Iterator[Any]:
    """The entries of ``value`` nested at most ``dimensions`` lists deep (a scalar is its own entry)."""
    if isinstance(value, list) and dimensions > 0:
        for item in value:
            yield from _entries(item, dimensions - 1)
    else:
        yield value


def _numbers(value: Any, key: str, dimensions: int) -> np.ndarray:
    shape = "list of lists" if dimensions == 2 else "list"
    for entry in _entries(value, dimensions):
        if isinstance(entry, list):
            raise ImportRefused(f"{key} must be a {shape} of numbers")
        if not _is_number(entry):
            # NumPy would read "1" and true as 1.0, and null as NaN: refuse them here, by name.
            raise ImportRefused(f"{key} must hold numbers, not strings, true, false or null: got {json.dumps(entry)}")
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:  # ragged lists; integers past a float's range
        raise ImportRefused(f"{key} must hold numbers ({exc})") from exc
    if array.ndim > dimensions:
        raise ImportRefused(f"{key} must be a {shape} of numbers")
    return array


def _texts(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImportRefused(f"{key} must be a list of strings")
    return list(value)


def _metrics(value: Any, key: str) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(_is_number(v) for v in value.values()):
        raise ImportRefused(f"{key} must map metric names to numbers")
    return {str(k): float(v) for k, v in value.items()}


def _from_document(document: Any, lineage: str) -> FittedModel:
    if not isinstance(document, dict):
        raise ImportRefused("the JSON document must be an object")
    unknown = sorted(set(document) - set(JSON_KEYS))
    if unknown:
        raise ImportRefused(f"unknown key(s) {', '.join(unknown)}; the document takes {', '.join(JSON_KEYS)}")
    for key in ("kind", "coefficients", "intercepts"):
        if key not in document:
            raise ImportRefused(f"the document has no {key!r}")
    kinds = f"{', '.join(_KINDS[:-1])} or {_KINDS[-1]}"
    if not isinstance(document["kind"], str):
        raise ImportRefused(f"kind must be a string: {kinds}")
    if document["kind"] not in _KINDS:
        # Checked here: the server would name its enum's values, which this document does not use.
        raise ImportRefused(f"kind must be {kinds}, not {json.dumps(document['kind'])}")
    coef = np.atleast_2d(_numbers(document["coefficients"], "coefficients", 2))
    fitted = FittedModel(document["kind"], coef, np.atleast_1d(_numbers(document["intercepts"], "intercepts", 1)))
    fitted.feature_names = _texts(document.get("feature_names", []), "feature_names")
    fitted.classes = _texts(document.get("classes", []), "classes")
    scaler = document.get("standardization")
    if scaler is not None:
        if not isinstance(scaler, dict) or set(scaler) != {"means", "scales"}:
            raise ImportRefused("standardization must be an object of means and scales")
        fitted.means = _numbers(scaler["means"], "standardization.means", 1)
        fitted.scales = _numbers(scaler["scales"], "standardization.scales", 1)
    metrics = document.get("metrics") or {}
    if not isinstance(metrics, dict) or not set(metrics) <= {"training", "validation"}:
        raise ImportRefused("metrics must be an object of training and validation metrics")
    fitted.training = _metrics(metrics.get("training"), "metrics.training")
    fitted.validation = _metrics(metrics.get("validation"), "metrics.validation")
    for key in ("source", "data_fingerprint"):
        if not isinstance(document.get(key, ""), str):
            raise ImportRefused(f"{key} must be a string")
    fitted.data_fingerprint = document.get("data_fingerprint", "")
    described = document.get("source", "")
    fitted.source = f"coefficients from {lineage}" + (f": {described}" if described else "")
    return fitted


def format_of(path: Path, given: str | None) -> str:
    """The format to read ``path`` in: ``given``, else the one its suffix names."""
    if given:
        return given
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ImportRefused(f"cannot tell the format of {path.name} from its name: give --format skops or json")
    return suffix


def read_fitted(path: str | Path, file_format: str | None = None) -> FittedModel:
    """The fitted model in the file at ``path``, in ``file_format`` (skops or json; from the suffix when None)."""
    path = Path(path)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ImportRefused(
            f"{path.name} is a pickle, which regserve never loads: unpickling runs whatever code the file "
            "names. Save the model with skops instead (skops.io.dump(model, 'model.skops')).",
            reason="PICKLE_REFUSED",
        )
    file_format = format_of(path, file_format)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ImportRefused(f"cannot read {path}: {exc.strerror or exc}") from None
    lineage = f"{path.name} ({file_format}, sha256 {hashlib.sha256(content).hexdigest()})"
    if file_format == "skops":
        return _from_estimator(*_load_skops(path), lineage)
    try:
        # utf-8-sig: editors on Windows start UTF-8 files with a byte-order mark.
        document = json.loads(content.decode("utf-8-sig"), object_pairs_hook=unique_keys)
    except DuplicateKey as exc:
        raise ImportRefused(f"{path.name}: {exc}; give each key once") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ImportRefused(f"{path.name} is not a JSON document ({exc})") from exc
    return _from_document(document, lineage)


_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def _serving_version(admin: ModelAdminClient, model: str) -> types_pb2.ModelVersion | None:
    """The serving version of ``model`` as listed, or None for a new model or one with no serving version."""
    try:
        versions = admin.list_versions(model)
    except NotFound:
        return None
    return next((v for v in versions if v.serving_state == types_pb2.SERVING_STATE_SERVING), None)


def _given_names(fitted: FittedModel, names: list[str] | None) -> list[str]:
    """Put ``--feature-names`` (None when not given) in place of the file's; the notes to print about it."""
    if names is None:
        return []
    columns = fitted.coefficients.shape[1]
    if len(names) != columns:
        raise ImportRefused(f"--feature-names gives {len(names)} names; the model has {columns} features")
    replaced = fitted.feature_names
    fitted.feature_names = list(names)
    if replaced and replaced != fitted.feature_names:
        return [f"note        --feature-names replaces the file's names ({', '.join(replaced)})"]
    return []


def _settle_names(fitted: FittedModel, serving: types_pb2.ModelVersion | None) -> list[str]:
    """Name ``fitted``'s features after ``serving`` when nothing names them and the counts agree; the notes to print."""
    if serving is None or not serving.feature_names:
        return []
    theirs, columns = list(serving.feature_names), fitted.coefficients.shape[1]
    if not fitted.feature_names and len(theirs) == columns:
        fitted.feature_names = theirs
        return [f"features    {', '.join(theirs)}: none given, so those of the serving version {serving.version}"]
    ours = fitted.feature_names or [f"x{j}" for j in range(columns)]
    if ours == theirs:
        return []
    return [
        f"warning     the features ({', '.join(ours)}) are not those of the serving version {serving.version} "
        f"({', '.join(theirs)}): clients that name features must name these once this version serves"
    ]


def cmd_import(args) -> int:
    fitted = read_fitted(args.file, args.format)
    notes = _given_names(fitted, args.feature_names)
    options = {} if args.promote is None else {"promote": args.promote}
    with ModelAdminClient(args.server, **connection(args)) as admin:
        notes += _settle_names(fitted, _serving_version(admin, args.model))
        response = admin.create_version(
            args.model,
            fitted.kind,
            fitted.coefficients,
            fitted.intercepts,
            feature_names=fitted.feature_names,
            classes=fitted.classes,
            means=fitted.means,
            scales=fitted.scales,
            training=fitted.training,
            validation=fitted.validation,
            source=fitted.source,
            data_fingerprint=fitted.data_fingerprint,
            spec=fitted.spec,
            promotion_gate=args.promotion_gate,
            **options,
        )
    if args.output == "json":
        # stdout holds only the JSON answer, for scripts to parse.
        for note in notes:
            print(note, file=sys.stderr)
        print_json(response)
        return 0
    version = response.model_version
    state = "serving" if response.promoted else "not promoted"
    reason = f" ({response.promotion_reason})" if response.promotion_reason else ""
    print(f"{version.model} {version.version}: {state}{reason}")
    print(f"source      {version.source}")
    for note in notes:
        print(note)
    print_metrics(version)
    return 0
