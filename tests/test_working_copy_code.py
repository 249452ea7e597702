"""A step runs the code of the working copy it runs in, not the editable install's.

DVC runs a queued experiment in a copy of the repository (.dvc/tmp/exps/...) and hashes
that copy's src/ as the stage's code deps; the editable install points at the workspace's
src/. Without the re-exec in ``mae_hlvm/__main__.py`` the copy's stages ran the workspace's
code while dvc.lock recorded the copy's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_copy_of_the_repo_runs_its_own_src(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", copy / "params.yaml")
    cli = copy / "src" / "mae_hlvm" / "workflow" / "cli.py"
    text = cli.read_text()
    assert 'print(f"{args.params}: valid")' in text
    cli.write_text(text.replace('print(f"{args.params}: valid")', 'print(f"{args.params}: valid (the copy)")'))
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("PYTHONPATH", "MAE_HLVM_SOURCE")}
    run = subprocess.run([sys.executable, "-m", "mae_hlvm", "check"], cwd=copy, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "params.yaml: valid (the copy)"
    # the workspace itself runs its own code, with no re-exec
    here = subprocess.run([sys.executable, "-m", "mae_hlvm", "check"], cwd=REPO, capture_output=True, text=True, env=env)
    assert here.stdout.strip() == "params.yaml: valid"
