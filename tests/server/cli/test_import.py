"""``regserve import`` against a real server: scikit-learn models from skops files and JSON documents."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest
import sklearn
import skops.io
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from regserve.client import ModelAdminClient
from regserve.server.cli import main
from regserve.server.cli.importing import ImportRefused, read_fitted, trusted_types
from regserve.v1 import types_pb2

SEED = 11


@pytest.fixture
def admin(target):
    with ModelAdminClient(target, timeout=30) as admin:
        yield admin


def import_file(target, path, model, *extra) -> int:
    return main(["import", str(path), "--server", target, "--model", model, *extra])


def dump(model, path):
    skops.io.dump(model, path)
    return path


def assert_predicts_as(client, name, estimator, X, version=""):
    answer = client.predict(name, X, version=version)
    if hasattr(estimator, "predict_proba"):
        assert answer.labels == [str(label) for label in estimator.predict(X)]
        np.testing.assert_allclose(answer.probabilities, estimator.predict_proba(X), rtol=1e-12, atol=0)
    else:
        np.testing.assert_allclose(answer.values, estimator.predict(X), rtol=1e-12, atol=0)


def seeded_regression(rows=300, features=6):
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(rows, features)) * rng.uniform(0.1, 10, size=features)
    return X, X @ rng.normal(size=features) + 3.0 + rng.normal(scale=0.1, size=rows)


def test_linear_and_ridge_from_skops_predict_as_scikit_learn(target, client, tmp_path, capsys):
    X, y = load_diabetes(return_X_y=True)
    linear = LinearRegression().fit(X, y)
    assert import_file(target, dump(linear, tmp_path / "diabetes.skops"), "diabetes") == 0
    out = capsys.readouterr().out
    assert "diabetes v1: serving" in out and "LinearRegression from diabetes.skops (skops, sha256 " in out
    assert_predicts_as(client, "diabetes", linear, X)

    Xs, ys = seeded_regression()
    ridge = Ridge(alpha=3.0).fit(Xs, ys)
    assert import_file(target, dump(ridge, tmp_path / "ridge.skops"), "synthetic", "--no-promote") == 0
    assert "synthetic v1: not promoted (promotion was not requested)" in capsys.readouterr().out
    assert_predicts_as(client, "synthetic", ridge, Xs, version="v1")
    # The penalty is the version's, as for a ridge trained here.
    spec = client.model_info("synthetic", "v1").spec
    assert (spec.alpha, spec.fit_intercept) == (3.0, True)
    assert client.model_info("diabetes").spec.alpha == 0.0


def test_logistic_from_skops_multinomial_and_binary_predict_as_scikit_learn(target, client, tmp_path):
    X, y = load_iris(return_X_y=True)
    species = np.array(["setosa", "versicolor", "virginica"])[y]
    multinomial = LogisticRegression(max_iter=2000).fit(X, species)
    assert import_file(target, dump(multinomial, tmp_path / "iris.skops"), "iris") == 0
    assert_predicts_as(client, "iris", multinomial, X)

    binary = LogisticRegression(C=0.5, max_iter=2000).fit(X, y == 2)
    assert import_file(target, dump(binary, tmp_path / "virginica.skops"), "virginica") == 0
    assert_predicts_as(client, "virginica", binary, X)
    spec = client.model_info("virginica").spec
    assert spec.c == 0.5 and not spec.HasField("alpha")
    # Weighted classes solve another problem than the spec's c names: no penalty is claimed.
    weighted = LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000).fit(X, y == 2)
    assert import_file(target, dump(weighted, tmp_path / "weighted.skops"), "weighted") == 0
    spec = client.model_info("weighted").spec
    assert not spec.HasField("c") and not spec.HasField("alpha")


def test_the_version_records_where_it_came_from(target, tmp_path, capsys):
    X, y = seeded_regression()
    path = dump(LinearRegression().fit(X, y), tmp_path / "model.skops")
    assert import_file(target, path, "m", "--output", "json") == 0
    version = json.loads(capsys.readouterr().out)["model_version"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (
        version["source"]
        == f"scikit-learn {sklearn.__version__} LinearRegression from model.skops (skops, sha256 {digest})"
    )
    with ModelAdminClient(target, timeout=30) as admin:
        assert admin.get_version("m", "v1").source == version["source"]


def test_a_json_document_with_standardization_predicts_as_the_pipeline(target, client, tmp_path):
    X, y = load_iris(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    scaler, logistic = pipeline[0], pipeline[1]
    document = {
        "kind": "logistic",
        "coefficients": logistic.coef_.tolist(),
        "intercepts": logistic.intercept_.tolist(),
        "feature_names": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "classes": [str(c) for c in logistic.classes_],
        "standardization": {"means": scaler.mean_.tolist(), "scales": scaler.scale_.tolist()},
        "metrics": {"training": {"accuracy": float(pipeline.score(X, y))}},
        "source": "a notebook",
    }
    path = tmp_path / "iris.json"
    path.write_text(json.dumps(document))
    assert import_file(target, path, "iris") == 0
    assert_predicts_as(client, "iris", pipeline, X)
    with ModelAdminClient(target, timeout=30) as admin:
        version = admin.get_version("iris", "v1")
    assert version.source.startswith("coefficients from iris.json (json, sha256 ") and version.source.endswith(
        ": a notebook"
    )
    assert version.training.metrics["accuracy"] == document["metrics"]["training"]["accuracy"]


def test_a_linear_json_document_predicts_as_scikit_learn(target, client, tmp_path):
    X, y = seeded_regression()
    linear = LinearRegression().fit(X, y)
    path = tmp_path / "coefficients.txt"
    path.write_text(
        json.dumps({"kind": "linear", "coefficients": [linear.coef_.tolist()], "intercepts": linear.intercept_})
    )
    assert import_file(target, path, "m", "--format", "json") == 0
    assert_predicts_as(client, "m", linear, X)


def test_parameters_the_server_refuses_are_reported_with_their_fields(target, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text('{"kind": "logistic", "coefficients": [[1, NaN]], "intercepts": [0], "classes": ["a", "b", "c"]}')
    assert import_file(target, path, "m", "--output", "json") == 1
    error = json.loads(capsys.readouterr().err)
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "INVALID_PARAMETERS")
    assert {v["field"] for v in error["field_violations"]} == {"coefficients", "intercepts"}
    with ModelAdminClient(target, timeout=30) as admin:
        assert admin.list_models() == []


def test_a_skops_file_with_an_untrusted_type_is_refused_before_loading(target, tmp_path, capsys):
    X, y = seeded_regression()
    pipeline = make_pipeline(StandardScaler(), LinearRegression()).fit(X, y)
    path = dump(pipeline, tmp_path / "pipeline.skops")
    assert import_file(target, path, "m") == 1
    err = capsys.readouterr().err
    assert "pipeline.skops holds types regserve does not trust: sklearn.pipeline.Pipeline" in err
    assert "sklearn.preprocessing._data.StandardScaler" in err and "nothing was loaded" in err
    with ModelAdminClient(target, timeout=30) as admin:
        assert admin.list_models() == []


def test_a_forged_skops_file_naming_a_function_is_refused_without_running_it(tmp_path):
    X, y = seeded_regression()
    path = dump(LinearRegression().fit(X, y), tmp_path / "model.skops")
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members["schema.json"])
    schema["content"]["content"]["fit_intercept"].update({"__module__": "os", "__class__": "system"})
    members["schema.json"] = json.dumps(schema).encode()
    forged = tmp_path / "forged.skops"
    with zipfile.ZipFile(forged, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ImportRefused, match="does not trust: os.system") as info:
        read_fitted(forged)
    assert info.value.reason == "UNTRUSTED_TYPES"


def test_the_trusted_list_is_exactly_the_three_classes_and_data_types():
    classes = [name for name in trusted_types() if name.startswith("sklearn.")]
    assert sorted(name.rsplit(".", 1)[1] for name in classes) == ["LinearRegression", "LogisticRegression", "Ridge"]
    assert all(name.split(".")[0] in ("builtins", "numpy") for name in trusted_types() if name not in classes)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"kind": "linear", "coefficients": [[1.0]]}, "no 'intercepts'"),
        ({"kind": "linear", "coefficients": [[1.0]], "intercepts": [0], "coefs": 1}, "unknown key(s) coefs"),
        ({"kind": "linear", "coefficients": [["a"]], "intercepts": [0]}, "coefficients must hold numbers"),
        ({"kind": 3, "coefficients": [[1.0]], "intercepts": [0]}, "kind must be a string"),
    ],
)
def test_malformed_json_documents_are_refused_with_a_clear_message(tmp_path, document, message):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ImportRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_fitted(path)


def test_a_one_vs_rest_classifier_is_refused(tmp_path):
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=2000).fit(X, y)
    model.solver = "liblinear"  # as a one-vs-rest model saved by an older scikit-learn reads back
    with pytest.raises(ImportRefused, match="one-vs-rest"):
        read_fitted(dump(model, tmp_path / "ovr.skops"))


def named_regression(columns=("age", "bmi", "bp")):
    X, y = seeded_regression(features=len(columns))
    return X, y, list(columns)


def test_a_file_without_names_takes_those_of_the_serving_version_and_says_so(target, admin, client, tmp_path, capsys):
    X, y, names = named_regression()
    admin.create_version("m", "linear", [[1.0, 2.0, 3.0]], [0.0], feature_names=names)
    unnamed = LinearRegression().fit(X, y)  # fitted on an array: no feature_names_in_
    assert not hasattr(unnamed, "feature_names_in_")
    assert import_file(target, dump(unnamed, tmp_path / "m.skops"), "m") == 0
    out = capsys.readouterr().out
    assert "features    age, bmi, bp: none given, so those of the serving version v1" in out
    version = admin.get_version("m", "v2")
    assert list(version.feature_names) == names and version.serving_state == types_pb2.SERVING_STATE_SERVING
    # Clients that name the features go on being answered, now by the imported model.
    answer = client.predict_named("m", [dict(zip(names, row, strict=True)) for row in X[:5]])
    np.testing.assert_allclose(answer.values, unnamed.predict(X[:5]), rtol=1e-12, atol=0)


def test_feature_names_flag_names_the_features_and_must_match_their_count(target, admin, client, tmp_path, capsys):
    X, y, names = named_regression()
    path = dump(LinearRegression().fit(X, y), tmp_path / "m.skops")
    assert import_file(target, path, "m", "--feature-names", "age, bmi ,bp") == 0
    assert list(admin.get_version("m", "v1").feature_names) == names
    assert import_file(target, path, "m", "--feature-names", "age,bmi") == 1
    assert "--feature-names gives 2 names; the model has 3 features" in capsys.readouterr().err
    assert [v.version for v in admin.list_versions("m")] == ["v1"]


def test_names_unlike_the_serving_versions_are_stored_with_a_warning(target, admin, tmp_path, capsys):
    X, y, names = named_regression()
    admin.create_version("m", "linear", [[1.0, 2.0, 3.0]], [0.0], feature_names=names)
    linear = LinearRegression().fit(X, y)
    document = {"kind": "linear", "coefficients": [linear.coef_.tolist()], "intercepts": [float(linear.intercept_)]}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**document, "feature_names": ["age", "bmi", "glucose"]}))
    assert import_file(target, path, "m") == 0
    out = capsys.readouterr().out
    assert "m v2: serving" in out
    assert "warning     the features (age, bmi, glucose) are not those of the serving version v1 (age, bmi, bp)" in out
    assert list(admin.get_version("m", "v2").feature_names) == ["age", "bmi", "glucose"]

    # The flag replaces the file's names, and says so; with JSON output the notes go to stderr.
    assert import_file(target, path, "m", "--feature-names", "age,bmi,bp", "--output", "json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model_version"]["feature_names"] == names
    assert "note        --feature-names replaces the file's names (age, bmi, glucose)" in captured.err
    assert "warning" in captured.err  # v2 (glucose) serves now, and these differ from it


def test_a_file_without_names_and_another_feature_count_is_stored_as_x0_with_a_warning(target, admin, tmp_path, capsys):
    admin.create_version("m", "linear", [[1.0, 2.0]], [0.0], feature_names=["age", "bmi"])
    X, y, _ = named_regression()
    assert import_file(target, dump(LinearRegression().fit(X, y), tmp_path / "m.skops"), "m", "--no-promote") == 0
    out = capsys.readouterr().out
    assert "warning     the features (x0, x1, x2) are not those of the serving version v1 (age, bmi)" in out
    assert list(admin.get_version("m", "v2").feature_names) == ["x0", "x1", "x2"]


def test_a_new_model_without_names_is_named_x0_and_warned_of_nothing(target, admin, tmp_path, capsys):
    X, y, _ = named_regression()
    assert import_file(target, dump(LinearRegression().fit(X, y), tmp_path / "m.skops"), "m") == 0
    out = capsys.readouterr().out
    assert "warning" not in out and "features " not in out
    assert list(admin.get_version("m", "v1").feature_names) == ["x0", "x1", "x2"]


def refused_import(target, path, capsys) -> dict:
    """Import ``path`` with ``--output json``; the error object it prints, once checked that nothing was stored."""
    assert import_file(target, path, "m", "--output", "json") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    with ModelAdminClient(target, timeout=30) as admin:
        assert admin.list_models() == []
    return json.loads(captured.err)


@pytest.mark.parametrize("kind", ["MODEL_KIND_LINEAR", "LINEAR", "poisson"])
def test_a_kind_the_document_does_not_use_is_refused_with_the_kinds_it_does(target, tmp_path, capsys, kind):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"kind": kind, "coefficients": [[1, 2]], "intercepts": [0]}))
    error = refused_import(target, path, capsys)
    assert (error["code"], error["reason"]) == (None, "IMPORT_REFUSED")
    assert error["message"] == f'kind must be linear, ridge or logistic, not "{kind}"'


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"kind": "linear", "coefficients": [["1", True]], "intercepts": 0},
            'coefficients must hold numbers, not strings, true, false or null: got "1"',
        ),
        (
            {"kind": "linear", "coefficients": [[1.5, False]], "intercepts": [0]},
            "coefficients must hold numbers, not strings, true, false or null: got false",
        ),
        (
            {"kind": "linear", "coefficients": [[1.5, 2.0]], "intercepts": True},
            "intercepts must hold numbers, not strings, true, false or null: got true",
        ),
        (
            {"kind": "linear", "coefficients": [[1.5, 2.0]], "intercepts": [None]},
            "intercepts must hold numbers, not strings, true, false or null: got null",
        ),
        (
            {
                "kind": "linear",
                "coefficients": [[1.5, 2.0]],
                "intercepts": [0],
                "standardization": {"means": [0, "0"], "scales": [1, 1]},
            },
            'standardization.means must hold numbers, not strings, true, false or null: got "0"',
        ),
        (
            {"kind": "linear", "coefficients": [[1.5, 2.0]], "intercepts": [10**400]},
            "intercepts must hold numbers (int too large to convert to float)",
        ),
    ],
    ids=["string-and-true", "false", "true-intercept", "null-intercept", "string-mean", "huge-integer"],
)
def test_values_that_are_not_numbers_are_refused_by_field(target, tmp_path, capsys, document, message):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(document))
    error = refused_import(target, path, capsys)
    assert (error["code"], error["reason"], error["message"]) == (None, "IMPORT_REFUSED", message)


def test_impossible_metrics_in_a_document_are_refused_by_the_server(target, tmp_path, capsys):
    metrics = {"training": {"r2": 7, "mse": 0.5}, "validation": {"mse": -5, "coverage": -1}}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"kind": "linear", "coefficients": [[1, 2]], "intercepts": [0], "metrics": metrics}))
    error = refused_import(target, path, capsys)
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "INVALID_PARAMETERS")
    assert {(v["field"], v["description"]) for v in error["field_violations"]} == {
        ("training.metrics[r2]", "must be <= 1"),
        ("validation.metrics[mse]", "must be >= 0"),
    }


def test_an_estimator_whose_coefficients_disagree_with_its_feature_count_is_refused(target, tmp_path, capsys):
    X, y = seeded_regression(features=4)
    shortened = LinearRegression().fit(X, y)
    shortened.coef_ = shortened.coef_[:3]  # n_features_in_ still says 4; scikit-learn's predict refuses it
    error = refused_import(target, dump(shortened, tmp_path / "short.skops"), capsys)
    assert (error["code"], error["reason"]) == (None, "IMPORT_REFUSED")
    assert error["message"].startswith("the LinearRegression's coef_ has 3 columns but its n_features_in_ is 4")

    renamed = LinearRegression().fit(X[:, :3], y)
    renamed.feature_names_in_ = np.array(["age", "bmi", "bp", "s1"], dtype=object)
    error = refused_import(target, dump(renamed, tmp_path / "renamed.skops"), capsys)
    assert error["reason"] == "IMPORT_REFUSED"
    assert error["message"].startswith("the LinearRegression's coef_ has 3 columns but its feature_names_in_ names 4")


def test_a_missing_file_a_directory_and_a_pickle_are_refused_with_a_reason(target, tmp_path, capsys):
    for path, fragment in (
        (tmp_path / "absent.skops", "cannot read"),
        (tmp_path, "cannot read"),
        (tmp_path / "model.pkl", "pickle"),
    ):
        if path.suffix == ".pkl":
            path.write_bytes(b"\x80\x04N.")  # pickle's None: never loaded
        error = refused_import(target, path, capsys) if path != tmp_path else None
        if error is None:  # a directory, read as skops by flag
            assert import_file(target, path, "m", "--format", "skops", "--output", "json") == 1
            error = json.loads(capsys.readouterr().err)
        assert error["reason"] in ("IMPORT_REFUSED", "PICKLE_REFUSED") and fragment in error["message"], error


def test_a_json_document_with_a_byte_order_mark_reads_and_a_key_given_twice_is_refused(
    target, client, tmp_path, capsys
):
    X, y = seeded_regression()
    linear = LinearRegression().fit(X, y)
    path = tmp_path / "m.json"
    document = json.dumps(
        {"kind": "linear", "coefficients": [linear.coef_.tolist()], "intercepts": [linear.intercept_]}
    )
    path.write_bytes(b"\xef\xbb\xbf" + document.encode())
    assert import_file(target, path, "m") == 0
    assert_predicts_as(client, "m", linear, X)
    capsys.readouterr()
    path.write_text('{"kind": "linear", "kind": "ridge", "coefficients": [[1.0]], "intercepts": [0]}')
    with pytest.raises(ImportRefused, match="'kind' is given twice"):
        read_fitted(path)
