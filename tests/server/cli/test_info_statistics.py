"""regserve info prints the coefficients with statsmodels' inference columns and the model-level statistics."""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
from sklearn.datasets import load_diabetes

from regserve.server.cli import main


def _rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()}


def test_info_fills_the_inference_columns_and_prints_the_statistics(client, target, capsys):
    X, y = load_diabetes(return_X_y=True)
    names = load_diabetes().feature_names
    client.train("diabetes", X, y, feature_names=names)
    ols = sm.OLS(y, sm.add_constant(X)).fit()
    assert main(["info", "--server", target, "--model", "diabetes", "--confidence-level", "0.9"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("feature "))
    assert header.split() == [
        "feature",
        "coefficient",
        "std",
        "err",
        "t",
        "P>|t|",
        "[0.05",
        "0.95]",
        "HC3",
        "std",
        "err",
    ]
    rows = _rows(out)
    bmi = rows["bmi"]  # coefficient, std err, t, p, low, high, HC3
    j = names.index("bmi") + 1
    expected = [ols.params[j], ols.bse[j], ols.tvalues[j], ols.pvalues[j], *ols.conf_int(alpha=0.1)[j]]
    np.testing.assert_allclose([float(v) for v in bmi[:6]], expected, rtol=1e-5)
    assert float(rows["(intercept)"][0]) == float(f"{ols.params[0]:.6g}")
    assert "statistics (nonrobust covariance; HC3 robust std err)" in out
    words = " ".join(out.split())
    assert f"R-squared {ols.rsquared:.6g}" in words
    assert f"condition no. {ols.condition_number:.6g}" in words


def test_info_of_a_standardized_model_prints_the_original_space_table(client, target, capsys):
    X, y = load_diabetes(return_X_y=True)
    client.train("diabetes", X, y, standardize=True)
    ols = sm.OLS(y, sm.add_constant(X)).fit()
    assert main(["info", "--server", target, "--model", "diabetes"]) == 0
    out = capsys.readouterr().out
    assert "coefficients in the original feature space" in out
    original = out.split("coefficients in the original feature space")[1]
    assert float(_rows(original)["x2"][0]) == float(f"{ols.params[3]:.6g}")
    # Both tables list the features in order and the intercept last.
    for table in (out.split("coefficients in the original feature space")[0], original.split("statistics (")[0]):
        assert [name for name in _rows(table) if name.startswith(("x", "("))] == [
            *(f"x{j}" for j in range(10)),
            "(intercept)",
        ]


def test_info_of_a_ridge_model_says_why_it_has_no_statistics(client, target, capsys):
    X, y = load_diabetes(return_X_y=True)
    client.train("ridge", X, y, kind="ridge", alpha=1.0)
    assert main(["info", "--server", target, "--model", "ridge"]) == 0
    out = capsys.readouterr().out
    assert "statistics  not given: ridge regression" in out
    header = next(line for line in out.splitlines() if line.startswith("feature "))
    assert header.split() == ["feature", "coefficient"]
