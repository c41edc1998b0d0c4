"""``regserve info`` and ``regserve versions`` on versions stored from fitted parameters, against a real server."""

from __future__ import annotations

import json
import os
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from regserve.client import InvalidArgument, ModelAdminClient
from regserve.server.cli import main
from regserve.server.cli.commands import lineage_source

SEED = 31


@pytest.fixture
def admin(target):
    with ModelAdminClient(target, timeout=30) as admin:
        yield admin


def lines_of(text: str, label: str) -> list[str]:
    return [line[len(label) :].strip() for line in text.splitlines() if line.startswith(label)]


def versions_table(target, model, capsys) -> dict[str, list[str]]:
    assert main(["versions", "--server", target, "--model", model]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["version", "state", "rows"]
    rows_at = lines[0].index("rows")
    validation_at = lines[0].index("validation")
    return {line.split()[0]: line[rows_at:validation_at].strip() for line in lines[1:]}


def test_info_and_versions_say_the_counts_of_an_import_are_not_recorded(target, admin, capsys):
    admin.create_version("m", "linear", [[1.0, 2.0]], [0.5], source="coefficients from m.json")
    admin.create_version("m", "linear", [[1.0, 2.5]], [0.5], validation={"mse": 0.3}, num_train=300, num_validation=100)
    admin.create_version("m", "linear", [[1.0, 3.0]], [0.5], promote=False)

    assert main(["info", "--server", target, "--model", "m", "--version", "v1"]) == 0
    info = capsys.readouterr().out
    assert lines_of(info, "rows ") == ["not recorded"]
    assert lines_of(info, "source ") == ["coefficients from m.json"]
    assert lines_of(info, "data sha256 ") == ["not recorded"]

    assert main(["info", "--server", target, "--model", "m", "--version", "v2"]) == 0
    info = capsys.readouterr().out
    assert lines_of(info, "rows ") == ["400 (300 train, 100 validation)"]
    # Stored from parameters without a lineage: nothing is invented.
    assert lines_of(info, "source ") == ["not recorded"]

    assert versions_table(target, "m", capsys) == {"v1": "not recorded", "v2": "400", "v3": "not recorded"}


def test_info_of_a_trained_version_names_its_rows_and_that_they_were_streamed(target, client, admin, capsys):
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(200, 3))
    y = X @ [1.0, -1.0, 0.5] + rng.normal(scale=0.1, size=200)
    client.train("t", X, y, validation_fraction=0.25, seed=3)
    version = admin.get_version("t", "v1")
    assert main(["info", "--server", target, "--model", "t"]) == 0
    info = capsys.readouterr().out
    assert lines_of(info, "source ") == ["rows streamed to Train"]
    assert lines_of(info, "rows ") == [f"200 ({version.num_train} train, {version.num_validation} validation)"]
    assert version.num_validation > 0
    assert versions_table(target, "t", capsys) == {"v1": "200"}


def test_regserve_train_names_the_file_it_read_as_the_versions_source(target, admin, capsys, tmp_path, monkeypatch):
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(50, 2))
    rows = "\n".join(f"{a},{b},{2 * a - b}" for a, b in X)
    (tmp_path / "rows.csv").write_text(f"a,b,y\n{rows}\n")
    monkeypatch.chdir(tmp_path)
    # A relative path is kept absolute: the lineage outlives the directory the command ran in.
    assert main(["train", "rows.csv", "--server", target, "--model", "f", "--target", "y", "-o", "json"]) == 0
    capsys.readouterr()
    assert admin.get_version("f", "v1").source == f"regserve train of {tmp_path / 'rows.csv'}"
    assert main(["info", "--server", target, "--model", "f"]) == 0
    assert lines_of(capsys.readouterr().out, "source ") == [f"regserve train of {tmp_path / 'rows.csv'}"]


def test_a_train_specs_source_is_stored_as_given_and_bounded(client, admin):
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(40, 2))
    y = X @ [1.0, 2.0]
    client.train("s", X, y, source="notebook 7, cell 3")
    assert admin.get_version("s", "v1").source == "notebook 7, cell 3"
    with pytest.raises(InvalidArgument) as caught:
        client.train("s", X, y, source="x" * 1025)
    assert caught.value.reason == "FIELD_TOO_LONG"
    assert [field for field, _ in caught.value.field_violations] == ["spec.source"]
    assert [version.version for version in admin.list_versions("s")] == ["v1"]


def _rows_csv(path) -> None:
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(30, 2))
    path.write_bytes(("a,b,y\n" + "\n".join(f"{a},{b},{a - b}" for a, b in X) + "\n").encode())


def test_a_file_name_pyarrow_cannot_open_is_refused_and_a_long_path_is_cut(target, admin, capsys, tmp_path):
    latin1 = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.csv"))
    _rows_csv(Path(latin1))
    assert main(["train", latin1, "--server", target, "--model", "l", "--target", "y", "-o", "json"]) == 1
    error = json.loads(capsys.readouterr().err)
    assert error["reason"] == "FILE_NAME_NOT_UTF8" and f"{tmp_path}/caf\\xe9.csv" in error["message"]
    assert "l" not in [state.model for state in admin.list_models()]

    deep = tmp_path.joinpath(*["d" * 200] * 6)  # 1,206 characters beneath tmp_path, within Linux's 4,096
    deep.mkdir(parents=True)
    _rows_csv(deep / "rows.csv")
    assert main(["train", str(deep / "rows.csv"), "--server", target, "--model", "l", "--target", "y"]) == 0
    capsys.readouterr()
    source = admin.get_version("l", "v1").source
    # Cut from its start to fit 1,024 characters, so the file's own name stays.
    assert len(source) == 1024 and source.startswith("regserve train of …")
    assert source.endswith(f"/{'d' * 200}/rows.csv")


def test_the_source_option_replaces_the_path_or_leaves_none(target, admin, capsys, tmp_path):
    _rows_csv(tmp_path / "rows.csv")
    command = ["train", str(tmp_path / "rows.csv"), "--server", target, "--model", "o", "--target", "y"]
    assert main([*command, "--source", "warehouse export of 2026-12-01"]) == 0
    assert main([*command, "--source", ""]) == 0
    capsys.readouterr()
    assert [version.source for version in admin.list_versions("o")] == ["warehouse export of 2026-12-01", ""]


def test_lineage_source_is_printable_fits_and_yields_to_the_option():
    path = os.fsdecode(b"/data/caf\xe9/rows.parquet")  # a URL or a Dask worker's path is never opened here
    assert lineage_source(Namespace(source=None), "of ", path) == "of /data/caf\\xe9/rows.parquet"
    long = "/" + "x" * 2000 + "/rows.parquet"
    cut = lineage_source(Namespace(source=None), "of ", long, " (5 rows)")
    assert len(cut) == 1024 and cut.startswith("of …x") and cut.endswith("x/rows.parquet (5 rows)")
    assert lineage_source(Namespace(source=""), "of ", long) == ""
