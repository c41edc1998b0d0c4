"""The CLI's train and info say which penalty was used and warn of separated classes."""

import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

from regserve.client import ModelAdminClient
from regserve.server.cli import main


@pytest.fixture
def wine_csv(tmp_path):
    X, y = load_wine(return_X_y=True)
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=0)
    path = tmp_path / "wine.csv"
    names = [f"f{j}" for j in range(X.shape[1])]
    lines = [",".join([*names, "cultivar"])]
    rows = zip(X_train, y_train, strict=True)
    lines += [",".join([*(repr(float(v)) for v in row), f"class_{label}"]) for row, label in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _train(target, path, *flags) -> int:
    common = ["--server", target, "--model", "wine", "--target", "cultivar", "--kind", "logistic"]
    return main(["train", str(path), *common, *flags])


def test_the_default_is_c_1_and_says_so(target, wine_csv, capsys):
    assert _train(target, wine_csv) == 0
    assert "warning" not in capsys.readouterr().out
    assert main(["info", "--server", target, "--model", "wine"]) == 0
    info = capsys.readouterr().out
    assert "penalty     L2, C = 1: C·Σ log-loss + ½‖W‖², as scikit-learn's LogisticRegression(C=1)" in info
    assert "warning" not in info


def test_alpha_0_on_separated_classes_warns_in_train_and_info(target, wine_csv, capsys):
    assert _train(target, wine_csv, "--alpha", "0") == 0
    out = capsys.readouterr().out
    assert "warning     COMPLETE_SEPARATION: " in out
    assert main(["info", "--server", target, "--model", "wine"]) == 0
    info = capsys.readouterr().out
    assert "penalty     none: the maximum-likelihood fit" in info
    assert "warning     COMPLETE_SEPARATION: " in info


def test_c_flag_sets_scikit_learns_c(target, wine_csv, capsys):
    assert _train(target, wine_csv, "--C", "0.25") == 0
    capsys.readouterr()
    assert main(["info", "--server", target, "--model", "wine", "--output", "json"]) == 0
    assert '"c": 0.25' in capsys.readouterr().out


def test_ridge_penalty_is_named_in_ridges_terms(target, tmp_path, capsys):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 2))
    path = tmp_path / "ridge.csv"
    np.savetxt(path, np.column_stack([X, X @ [1.0, 2.0]]), delimiter=",", header="a,b,y", comments="", fmt="%.17g")
    common = ["--server", target, "--model", "r", "--target", "y"]
    assert main(["train", str(path), *common, "--kind", "ridge", "--alpha", "2"]) == 0
    capsys.readouterr()
    assert main(["info", "--server", target, "--model", "r"]) == 0
    info = capsys.readouterr().out
    assert "penalty     L2, alpha = 2: ‖y - Xw - b‖² + alpha‖w‖², as scikit-learn's Ridge(alpha=2)" in info


def test_ridge_without_an_intercept_is_named_without_one(target, capsys):
    with ModelAdminClient(target, timeout=30) as admin:
        admin.create_version(
            "r0", "ridge", [[1.0, 2.0]], [0.0], spec={"alpha": 3.0, "fit_intercept": False}, feature_names=["a", "b"]
        )
    assert main(["info", "--server", target, "--model", "r0"]) == 0
    info = capsys.readouterr().out
    assert "‖y - Xw‖² + alpha‖w‖², as scikit-learn's Ridge(alpha=3, fit_intercept=False)" in info
