"""Editing code reruns exactly the stages that run it, in both tools (issue 28; a ``slow`` test).

A stage's code deps are the modules its process runs (``pipeline.code_deps``), so an edit
of the visible-unit rounding (core/cells.py) reruns every training job in DVC and in
Snakemake, and an edit of the synthetic generator leaves the whole real-image track up to
date (it runs no synthetic code).
"""

from __future__ import annotations

import sys

import pytest
from helpers import copy_repo, dvc_stale, edit_params, init_repo, sh, snakemake_plan, tiny_params

from mae_hlvm.core.config import load_params
from mae_hlvm.workflow import pipeline

pytestmark = pytest.mark.slow

ROUNDING = "    n_visible = int(n_units * (1 - mask_ratio))\n"


def test_a_code_edit_reruns_the_stages_that_run_it_and_no_other(tmp_path):
    root = copy_repo(tmp_path / "repo")
    tiny_params(root)
    edit_params(root, stability__enabled=False)  # the longest jobs, and nothing this test reads
    sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out", "dvc.yaml")
    init_repo(root)
    params = load_params(root / "params.yaml")
    train = [o.path for s, f in pipeline.instances(params) if s == "train" for o in pipeline.outputs(s, f, params)]
    real = pipeline.real_outputs(params)
    targets = train + real
    stages = ["generate", "train", *(s for s in pipeline.active_stages(params) if s in pipeline.REAL_STAGES)]
    sh(root, "snakemake", "--cores", "2", *targets)  # its receipts are committed to dvc.lock
    assert dvc_stale(root, *stages) == set() and snakemake_plan(root, *targets) == {}

    # the synthetic generator: its own stage reruns, no stage of the real track does
    generate = root / "src/mae_hlvm/synthetic/generate.py"
    generate.write_text(generate.read_text() + "\n# an edit\n")
    assert dvc_stale(root, *stages) == {"generate"}
    assert snakemake_plan(root, *real) == {}
    assert snakemake_plan(root, *train) == {"generate": 1, "train": 2}

    # the visible-unit rounding: every training job of both tracks, in both tools
    cells = root / "src/mae_hlvm/core/cells.py"
    assert cells.read_text().count(ROUNDING) == 1
    cells.write_text(cells.read_text().replace(ROUNDING, "    n_visible = math.floor(n_units * (1 - mask_ratio))\n"))
    trained = {pipeline.dvc_stage_name(s, f) for s, f in pipeline.instances(params) if s.startswith("train")}
    assert {s for s in trained if not s.startswith("train_real")} == {"train@0.25-2-0", "train@0.5-2-0"}
    assert dvc_stale(root, *stages) >= trained and "prepare_real" not in dvc_stale(root, *stages)
    plan = snakemake_plan(root, *targets)
    assert plan["train"] == 2 and plan["train_real_A"] + plan["train_real_B"] == len(trained) - 2, plan
    assert "prepare_real" not in plan
