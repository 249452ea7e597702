"""DVC experiments on a tiny pipeline, and Snakemake agreeing afterwards with no manual step.

``dvc exp run --queue -S key=value`` then ``--run-all`` runs the experiment in a temporary
copy of the repository (with that copy's code: mae_hlvm/__main__.py); ``dvc exp apply``
brings its params, dvc.lock and outputs into the workspace with fresh mtimes in no DAG
order. Snakemake's next start sees params it has not run and DVC clean for them, and
re-stamps instead of retraining (mae_hlvm.workflow.sync.adopt_dvc_results).
"""

from __future__ import annotations

import json
import sys

import pytest
from helpers import assert_agree_up_to_date, copy_repo, edit_params, init_repo, sh, tiny_params

pytestmark = pytest.mark.slow


def test_queued_experiment_applied_then_snakemake_agrees(tmp_path):
    root = copy_repo(tmp_path / "repo")
    tiny_params(root)
    edit_params(root, real__enabled=False, stability__enabled=False, train__epochs=2)
    sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out", "dvc.yaml")
    init_repo(root)  # nothing run here: the experiment makes every output in its own copy

    sh(root, "dvc", "exp", "run", "--queue", "-S", "train.epochs=3", "--name", "longer")
    sh(root, "dvc", "exp", "run", "--run-all")
    shown = json.loads(sh(root, "dvc", "exp", "show", "--json").stdout)
    assert "longer" in json.dumps(shown)
    sh(root, "dvc", "exp", "apply", "longer")
    assert "epochs: 3" in (root / "params.yaml").read_text()
    log = (root / "models").glob("*/train_log.csv")
    assert all(len(p.read_text().splitlines()) == 1 + 3 for p in log)  # the experiment's outputs

    # Snakemake's first start adopts what DVC made: nothing to retrain, one line saying so
    dry = sh(root, "snakemake", "-n")
    assert "outputs re-stamped for Snakemake" in dry.stderr + dry.stdout
    assert_agree_up_to_date(root)
