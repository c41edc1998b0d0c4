"""Spool files live in a directory each process claims; the leftovers of dead processes go, live ones stay."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from regserve.server.models.training import Trainer, TrainSpec, process_spool_dir
from regserve.server.models.training.spool_directory import remove_leftovers

ROOT = Path(__file__).resolve().parents[4]

# Claims a subdirectory of argv[1], spools a file into it, says where, then waits for its stdin to close.
_CLAIMANT = """
import sys
from regserve.server.models.training import process_spool_dir
directory = process_spool_dir(sys.argv[1])
(directory / "regserve-spool-left.f64").write_bytes(bytes(4096))
print(directory, flush=True)
sys.stdin.read()
"""


def _claimant(root: Path) -> tuple[subprocess.Popen, Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", _CLAIMANT, str(root)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_a_process_claims_one_locked_private_subdirectory(tmp_path):
    root = tmp_path / "spool"
    directory = process_spool_dir(root)
    assert directory.parent == root and (directory / "owner.lock").is_file()
    assert directory.name.startswith(f"{os.getpid()}-")
    assert process_spool_dir(root) == directory
    assert root.stat().st_mode & 0o777 == 0o700
    with Trainer(TrainSpec(), spool_dir=directory) as trainer:
        trainer.add_chunk(np.ones((3, 1)), np.arange(3.0))
        assert [p.suffix for p in directory.iterdir() if p.name != "owner.lock"] == [".f64"]
        assert remove_leftovers(root) == []  # this process is alive: its files stay
    assert [p.name for p in directory.iterdir()] == ["owner.lock"]


def test_the_files_of_dead_processes_are_removed_and_those_of_live_ones_kept(tmp_path):
    root = tmp_path / "spool"
    live, live_dir = _claimant(root)
    dead, dead_dir = _claimant(root)
    try:
        dead.kill()
        dead.wait(10)
        being_claimed = root / "12345-new"
        being_claimed.mkdir()
        abandoned = root / "12346-old"
        abandoned.mkdir()
        an_hour_ago = time.time() - 3600
        os.utime(abandoned, (an_hour_ago, an_hour_ago))
        assert (dead_dir / "regserve-spool-left.f64").exists()  # what a SIGKILL leaves
        assert set(remove_leftovers(root)) == {abandoned, dead_dir}
        assert not dead_dir.exists() and not abandoned.exists()
        assert (live_dir / "regserve-spool-left.f64").exists() and being_claimed.exists()
    finally:
        live.communicate(timeout=10)  # closes its stdin: it exits and removes its own directory
    assert live.returncode == 0 and not live_dir.exists()


def test_a_new_claim_removes_the_leftovers_at_once(tmp_path):
    root = tmp_path / "spool"
    dead, dead_dir = _claimant(root)
    dead.kill()
    dead.wait(10)
    again, again_dir = _claimant(root)
    try:
        assert not dead_dir.exists() and again_dir.exists()
    finally:
        again.communicate(timeout=10)


def test_a_root_that_is_not_this_users_directory_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    with pytest.raises(PermissionError):
        process_spool_dir(link)
    plain_file = tmp_path / "file"
    plain_file.write_text("")
    with pytest.raises(PermissionError):
        process_spool_dir(plain_file)
