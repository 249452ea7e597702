"""The paper-scale params profile (profiles/paper/params.yaml, issue 4 item 4).

It must validate, carry the paper's recipe and sweeps, and plan the right jobs in both
tools on an ImageNet-style folder: a copy of the repository takes the profile as its
params.yaml with ``real.path`` pointed at a tiny folder, regenerates dvc.yaml and runs
``snakemake -n`` (nothing is trained).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from helpers import GIT, REPO, copy_repo, dvc_jobs, make_image_folder, sh, snakemake_jobs, snakemake_plan

from mae_hlvm.core.cells import real_enabled, real_sweep_cells
from mae_hlvm.core.config import load_params
from mae_hlvm.core.profiles import load_profile
from mae_hlvm.workflow import pipeline

PROFILE = REPO / "profiles" / "paper" / "params.yaml"
PAPER_RATIOS = [0.1, 0.25, 0.5, 0.75, 0.9]  # Sweep A
PAPER_UNITS = [8, 16, 32]  # Sweep B, on ViT patch 8


def test_profile_validates_with_the_papers_recipe_and_sweeps():
    p = load_params(PROFILE)
    assert real_enabled(p)
    real, model, train = p.real, p.model, p.train
    assert (real.dataset, real.image_size, real.channels, real.fit) == ("folder", 224, 3, "resize")
    assert real.path and Path(real.path).is_absolute()
    # ViT-B with MAE's decoder and normalised-pixel loss
    assert (model.embed_dim, model.depth, model.num_heads, model.mlp_ratio) == (768, 12, 12, 4.0)
    assert (model.decoder_embed_dim, model.decoder_depth, model.decoder_num_heads) == (512, 8, 16)
    assert model.norm_pix_loss is True
    # the MAE recipe; real: holds the epochs, base lr and (global) batch of this track
    assert (real.epochs, real.base_lr, real.batch_size, real.probe_epochs) == (800, 1.5e-4, 4096, 90)
    assert (train.betas, train.weight_decay, train.warmup_epochs) == ([0.9, 0.95], 0.05, 40)
    assert (train.device, train.precision) == ("cuda", "bf16")
    # warmup is shared with the synthetic track: it must leave that track a decay phase too
    assert train.warmup_epochs < train.epochs
    # Sweep A (ratios at 16-pixel units) and Sweep B (units at 0.75), both on ViT patch 8
    assert real.vit_patch == 8
    cells = real_sweep_cells(real)
    assert sorted(cells) == ["A", "B"]
    assert [(r, u) for r, u, _ in cells["A"]] == [(r, 16) for r in PAPER_RATIOS]
    assert [(r, u) for r, u, _ in cells["B"]] == [(0.75, u) for u in PAPER_UNITS]
    assert real.n_train + real.n_test == 1_281_167  # the ImageNet-1K train folder, split once


def test_profile_cli_check_passes():
    proc = sh(REPO, sys.executable, "-m", "mae_hlvm", "check", "--params", str(PROFILE))
    assert "valid" in proc.stdout + proc.stderr


def expected_cell_jobs(raw: dict) -> dict[str, int]:
    """Jobs of the per-cell and real-track rules, counted from the yaml alone (not from
    mae_hlvm.workflow.pipeline): one train/probe per grid cell, one train/evaluate per sweep cell."""
    grid, real = raw["grid"], raw["real"]
    n_grid = len(grid["mask_ratios"]) * len(grid["mask_units"]) * len(grid["seeds"])
    n_a = len(real["mask_ratios"]) * len(real["seeds"])
    n_b = len(real["mask_units"]) * len(real["seeds"])
    return {
        "generate": 1, "train": n_grid, "probe": n_grid,
        "prepare_real": 1, "train_real_A": n_a, "train_real_B": n_b,
        "evaluate_real_A": n_a, "evaluate_real_B": n_b, "report_real": 1,
    }


def test_profile_plans_every_job_in_both_tools_on_an_imagenet_folder(tmp_path):
    root = copy_repo(tmp_path / "repo")
    sh(root, *GIT, "init", "-q")
    images = tmp_path / "imagenet" / "train"
    make_image_folder(images)
    raw = load_profile(PROFILE)  # what `python -m mae_hlvm profile paper` writes
    raw["real"]["path"] = str(images)  # stands in for the user's edit of the placeholder
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (root / "dvc.yaml").write_text(sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml").stdout)

    plan = snakemake_plan(root)
    expected = expected_cell_jobs(raw)
    assert {rule: plan.get(rule, 0) for rule in expected} == expected
    assert plan["train_real_A"] + plan["train_real_B"] == 8  # 5 ratios + 3 units, one seed
    assert "train_real_G" not in plan
    # every job of the current stage table, none twice (summary stages included)
    assert sum(plan.values()) == len(pipeline.instances(load_params(root / "params.yaml")))

    sm = snakemake_jobs(root)
    assert sm == dvc_jobs(root)  # the two tools plan the same jobs with the same commands
    prepare = [cmd for outs, cmd in sm.items() if outs == ("data/real.npz",)]
    assert prepare == [pipeline.command("prepare_real")]
    train_a = sorted(cmd for cmd in sm.values() if "train-real" in cmd and "--sweep A" in cmd)
    assert len(train_a) == 5 + 5 and all("--mask-unit 16 " in cmd for cmd in train_a)  # seed 0, and its stability run
    train_b = sorted(cmd for cmd in sm.values() if "train-real" in cmd and "--sweep B" in cmd)
    assert len(train_b) == 3 + 3 and all("--mask-ratio 0.75 " in cmd for cmd in train_b)
    assert sum("--stability" in cmd for cmd in train_a + train_b) == 8
    # the user's folder is a dep of prepare_real in DVC, so its hash pins every real result
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    assert str(images) in dvc_yaml["stages"]["prepare_real"]["deps"]
