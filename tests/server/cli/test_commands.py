"""The regserve command line against a real server."""

from __future__ import annotations

import numpy as np
import pytest

from regserve.server.cli import main
from regserve.server.cli.commands import parse_weights


@pytest.fixture
def csv_file(tmp_path, linear_data):
    X, y = linear_data
    path = tmp_path / "house.csv"
    header = "a,b,c,d,e,price"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="", fmt="%.17g")
    return path


def test_train_predict_info(target, csv_file, linear_data, capsys, tmp_path):
    X, y = linear_data
    assert (
        main(
            [
                "train",
                str(csv_file),
                "--server",
                target,
                "--model",
                "house",
                "--target",
                "price",
                "--chunk-rows",
                "64",
                "--validation-fraction",
                "0.2",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "house v1: 400 rows, serving" in out
    assert "validation" in out and "r2" in out

    assert main(["predict", "--server", target, "--model", "house", "--features", ",".join(map(str, X[0]))]) == 0
    single = float(capsys.readouterr().out)

    negative = -np.abs(X[0])  # a row that begins with a minus sign, as scaled features do
    assert main(["predict", "--server", target, "--model", "house", "--features", ",".join(map(str, negative))]) == 0
    assert main(["predict", "--server", target, "--model", "house", "--features=" + ",".join(map(str, negative))]) == 0
    both = capsys.readouterr().out.split()
    assert both[0] == both[1]

    rows = tmp_path / "rows.csv"
    np.savetxt(rows, X[:25], delimiter=",", header="a,b,c,d,e", comments="", fmt="%.17g")
    assert main(["predict", "--server", target, "--model", "house", "--csv", str(rows), "--chunk-rows", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 25
    assert float(lines[0]) == pytest.approx(single, rel=1e-12)

    assert main(["info", "--server", target, "--model", "house"]) == 0
    info = capsys.readouterr().out
    assert "house v1 (linear, serving)" in info
    assert "a, b, c, d, e" in info
    # The coefficients table: a row per feature and one for the intercept, near the relation the data follow.
    table = info.split("\ncoefficients\n")[1].split("\n\n")[0].splitlines()
    # A linear regression's coefficients come with their inference columns (tests/server/cli/test_info_statistics.py).
    assert table[0].split()[:4] == ["feature", "coefficient", "std", "err"]
    rows = {line.split()[0]: float(line.split()[1]) for line in table[1:]}
    assert list(rows) == ["a", "b", "c", "d", "e", "(intercept)"]
    assert list(rows.values()) == pytest.approx([1.5, -2.0, 0.5, 3.0, -0.25, 4.0], abs=0.05)


def test_errors_are_reported_without_a_traceback(target, csv_file, capsys):
    assert main(["train", str(csv_file), "--server", target, "--model", "house", "--target", "nope"]) == 1
    assert "no column 'nope'" in capsys.readouterr().err
    assert main(["predict", "--server", target, "--model", "missing", "--features", "1,2"]) == 1
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and "UNKNOWN_MODEL" in err


def test_classifier_prints_labels(target, tmp_path, capsys):
    rng = np.random.default_rng(4)
    X = np.vstack([rng.normal(-2, 1, size=(50, 2)), rng.normal(2, 1, size=(50, 2))])
    labels = ["cold"] * 50 + ["hot"] * 50
    path = tmp_path / "weather.csv"
    path.write_text(
        "t1,t2,kind\n" + "".join(f"{float(a)!r},{float(b)!r},{k}\n" for (a, b), k in zip(X, labels, strict=True))
    )
    assert (
        main(["train", str(path), "--server", target, "--model", "weather", "--target", "kind", "--kind", "logistic"])
        == 0
    )
    capsys.readouterr()
    assert main(["predict", "--server", target, "--model", "weather", "--features", "3,3"]) == 0
    assert capsys.readouterr().out.strip() == "hot"
    assert main(["info", "--server", target, "--model", "weather"]) == 0
    info = capsys.readouterr().out
    assert "training: per class" in info and "training: confusion matrix" in info
    per_class = info.split("training: per class")[1]
    assert [line.split()[0] for line in per_class.splitlines()[2:4]] == ["cold", "hot"]
    # The confusion matrix counts every training row once.
    matrix = info.split("training: confusion matrix")[1].splitlines()[2:4]
    assert sum(int(n) for line in matrix for n in line.split()[1:]) == 100


def test_a_bad_row_mid_file_stores_nothing(target, tmp_path, capsys, model_dir):
    path = tmp_path / "broken.csv"
    good = "".join(f"{i},{2 * i}\n" for i in range(100))
    path.write_text("x,y\n" + good + "oops,1\n" + good)
    assert (
        main(["train", str(path), "--server", target, "--model", "broken", "--target", "y", "--chunk-rows", "50"]) == 1
    )
    assert "line 102, column 'x': 'oops' is not a number" in capsys.readouterr().err
    from regserve.server.registry.disk import ModelRegistry

    assert "broken" not in ModelRegistry(model_dir).list_models()


def test_a_non_numeric_regression_target_is_reported_plainly(target, tmp_path, capsys, model_dir):
    path = tmp_path / "labels.csv"
    path.write_text("x,y\n1,2\n2,hot\n")
    assert main(["train", str(path), "--server", target, "--model", "typo", "--target", "y"]) == 1
    err = capsys.readouterr().err
    assert "line 3, column 'y': 'hot' is not a number; a regression target must be a number" in err
    assert "np.str_" not in err
    from regserve.server.registry.disk import ModelRegistry

    assert "typo" not in ModelRegistry(model_dir).list_models()


def test_output_cut_short_by_the_reader_ends_quietly(target, linear_data, tmp_path):
    """`regserve predict --csv ... | head -1` must not end with a broken-pipe error."""
    import subprocess
    import sys

    from regserve.client import RegressionClient

    X, y = linear_data
    with RegressionClient(target) as client:
        client.train("house", X, y)
    rows = tmp_path / "rows.csv"
    np.savetxt(rows, np.tile(X, (50, 1)), delimiter=",", header="a,b,c,d,e", comments="", fmt="%.17g")
    command = f"{sys.executable} -m regserve.server.cli predict --server {target} --model house --csv {rows} | head -1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and "Broken pipe" not in result.stderr


def test_weights_are_parsed_from_version_weight_pairs():
    assert parse_weights(["v1=90", "v2=10.5"]) == {"v1": 90.0, "v2": 10.5}
    for bad in ("v1", "=1", "v1=heavy"):
        with pytest.raises(ValueError, match="is not VERSION=WEIGHT"):
            parse_weights(["v1=1", bad])


def test_models_and_status_show_a_model_whose_state_is_corrupt_beside_the_others(
    target, client, linear_data, model_dir, capsys
):
    for name in ("broken", "house"):
        client.train(name, *linear_data)
    (model_dir / "models" / "broken" / "state.json").write_bytes(b"{not json")
    assert main(["models", "--server", target]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "serving", "split", "frozen", "versions", "generation", "problem"]
    assert lines[1].split() == ["broken", "-", "-", "-", "v1", "0", "CORRUPT_STATE"]
    assert lines[2].split()[:2] == ["house", "v1"] and lines[2].split()[-1] == "-"
    assert lines[3].startswith("broken: CORRUPT_STATE: The serving state of model 'broken' is unreadable")
    assert main(["status", "--server", target]) == 0
    out = capsys.readouterr().out
    assert out.startswith("replica ")
    # The stored state is unreadable (generation 0); the replica still routes by the one it read before.
    assert "model broken: serving -, generation 0, served generation 2\nproblem CORRUPT_STATE: " in out
    assert "model house: serving v1, generation 2, served generation 2\n" in out


def test_info_prints_a_multinomial_models_coefficients_per_class(target, client, capsys):
    rng = np.random.default_rng(11)
    centres = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    X = np.vstack([rng.normal(c, 1.0, size=(40, 2)) for c in centres])
    labels = np.repeat(["low", "high", "up"], 40)
    client.train("shapes", X, labels, kind="logistic", feature_names=["u", "v"], alpha=1.0)
    assert main(["info", "--server", target, "--model", "shapes"]) == 0
    table = capsys.readouterr().out.split("\ncoefficients\n")[1].split("\n\n")[0].splitlines()
    assert table[0].split() == ["class", "feature", "coefficient"]
    version = client.model_info("shapes")
    coefficients = np.array(version.coefficients.values).reshape(3, 2)
    expected = [
        (label, name, value)
        for k, label in enumerate(version.classes)
        for name, value in zip(["u", "v", "(intercept)"], [*coefficients[k], version.intercepts[k]], strict=True)
    ]
    printed = [(c, f, float(v)) for c, f, v in (line.split() for line in table[1:])]
    assert [row[:2] for row in printed] == [row[:2] for row in expected]
    assert [row[2] for row in printed] == pytest.approx([row[2] for row in expected], rel=1e-5)


@pytest.mark.parametrize(
    "option",
    [
        ("--chunk-rows", "0"),
        ("--chunk-rows", "-5"),
        ("--cv", "-2"),
        ("--epochs", "-1"),
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--seed", "-1"),
    ],
)
def test_counts_below_their_least_are_refused_by_the_command_line(csv_file, option, capsys):
    # The server is never reached: a count of 0 rows per chunk would never end a chunk.
    with pytest.raises(SystemExit) as exited:
        main(["train", str(csv_file), "--server", "127.0.0.1:1", "--model", "m", "--target", "price", *option])
    assert exited.value.code == 2
    assert f"argument {option[0]}: must be" in capsys.readouterr().err
