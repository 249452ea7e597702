"""The recording program (mae_hlvm.workflow.dvc_commit): what ``dvc commit -f`` records for the
same targets, byte for byte, in one rewrite of dvc.lock, and nothing it was not given."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import GIT, VENV_BIN, sh

from mae_hlvm.workflow.dvc_commit import matches

DVC_YAML = {
    "stages": {
        "make": {"foreach": ["a", "b"], "do": {"cmd": "echo ${item} > out/${item}.txt", "deps": ["in.txt"],
                                               "outs": ["out/${item}.txt"]}},
        "join": {"cmd": "cat out/a.txt out/b.txt > joined.txt", "deps": ["out/a.txt", "out/b.txt"],
                 "outs": ["joined.txt"]},
        "other": {"cmd": "echo other > other.txt", "deps": ["in.txt"], "outs": ["other.txt"]},
    }
}


def _repo(root: Path) -> Path:
    root.mkdir()
    sh(root, *GIT, "init", "-q")
    sh(root, str(Path(VENV_BIN) / "dvc"), "init", "-q")
    sh(root, str(Path(VENV_BIN) / "dvc"), "config", "core.analytics", "false")
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (root / "in.txt").write_text("in\n")
    (root / "out").mkdir()
    for item in ("a", "b"):
        (root / "out" / f"{item}.txt").write_text(f"{item}\n")
    (root / "joined.txt").write_text("a\nb\n")
    (root / "other.txt").write_text("other\n")
    return root


def _record(root: Path, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=root, capture_output=True, text=True)


def test_one_rewrite_records_what_dvc_commit_records_and_nothing_else(tmp_path):
    theirs, ours = _repo(tmp_path / "theirs"), _repo(tmp_path / "ours")
    targets = ["make", "join"]  # a foreach group by its name, and a plain stage
    run = _record(theirs, str(Path(VENV_BIN) / "dvc"), "commit", "-f", *targets)
    assert run.returncode == 0, run.stderr
    run = _record(ours, sys.executable, "-m", "mae_hlvm.workflow.dvc_commit", *targets)
    assert run.returncode == 0, run.stderr
    assert (ours / "dvc.lock").read_bytes() == (theirs / "dvc.lock").read_bytes()
    lock = yaml.safe_load((ours / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"make@a", "make@b", "join"}  # `other` was not named: not recorded
    # the outputs are in DVC's cache, so a later `dvc checkout` can restore them
    assert (ours / ".dvc/cache/files/md5").is_dir() and any((ours / ".dvc/cache/files/md5").rglob("*"))

    # one instance of a group, alone
    shutil.rmtree(ours / ".dvc/cache")
    (ours / "dvc.lock").unlink()
    run = _record(ours, sys.executable, "-m", "mae_hlvm.workflow.dvc_commit", "make@b")
    assert run.returncode == 0 and set(yaml.safe_load((ours / "dvc.lock").read_text())["stages"]) == {"make@b"}


def test_an_unknown_stage_is_one_dvc_style_error_and_writes_nothing(tmp_path):
    root = _repo(tmp_path / "repo")
    run = _record(root, sys.executable, "-m", "mae_hlvm.workflow.dvc_commit", "join", "nosuch")
    assert run.returncode == 1 and run.stderr.strip() == "ERROR: no stage named 'nosuch' in dvc.yaml"
    assert not (root / "dvc.lock").exists()
    run = _record(root, sys.executable, "-m", "mae_hlvm.workflow.dvc_commit")
    assert run.returncode == 1 and run.stderr.startswith("ERROR: name at least one stage")


@pytest.mark.parametrize("name,target,hit", [
    ("train@0.25-2-0", "train", True), ("train@0.25-2-0", "train@0.25-2-0", True), ("train", "train", True),
    ("train_stable@0.25-2-0", "train", False), ("train@0.25-2-0", "train@0.5-2-0", False), ("train", "train@x", False),
])
def test_a_target_is_a_stage_a_group_or_one_instance(name, target, hit):
    assert matches(name, target) is hit
