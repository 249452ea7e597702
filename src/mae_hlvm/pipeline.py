"""The one definition of every pipeline stage, shared by the Snakefile and dvc.yaml.

For each stage this module fixes its command, its outputs, its input files, the params
keys it reads and the source files it runs. The Snakefile builds its rules from these
functions at parse time and ``dvc.yaml`` is generated from them
(``make dvc-yaml``: ``python -m mae_hlvm.pipeline dvc-yaml --out dvc.yaml``), so the two DAGs cannot drift.

How the two tools agree (README, "Snakemake and DVC together"):

* Snakemake sees params through files, not through its own metadata: each stage's
  params live in ``.pipeline/params/<stage>.json`` (canonical JSON of exactly the keys
  the stage reads), rewritten only when their content changes, both when the Snakefile
  is parsed and by the step itself before it runs (:func:`step_hooks`). The files are
  declared inputs, and Snakemake reruns on mtime only (profiles/default), so outputs
  DVC produced are judged exactly like outputs Snakemake produced.
* Snakemake -> DVC: a step run outside DVC leaves a receipt
  (``.pipeline/receipts/<dvc stage>.json``: params digest and hashes of its inputs and
  outputs). The Snakefile's onstart/onsuccess/onerror call :func:`commit_receipts`, which
  runs one ``dvc commit -f`` for the receipts still valid, so dvc.lock records them.
* DVC -> Snakemake: ``dvc repro`` runs the same commands, so the step's own params-file
  write keeps mtimes in order; after ``dvc pull``/``dvc checkout`` run
  ``python -m mae_hlvm.sync`` (``make sync``).

Besides one ``train``/``probe`` job per grid cell, ``baseline`` runs once per seed (the
untrained encoder and raw pixels under the same probes, ``baseline@<seed>``);
``aggregate`` collects both; ``claims`` (verdicts with a seed bootstrap) and ``summary``
(results/summary.md, results/metrics.tex) come last and, with the real track on, also
read its per-cell JSONs (claims) and Table 1 and figures (summary): the params they read
then grow by the real keys (:func:`stage_param_keys`).

The real-image track (docs/real_track.md) adds ``prepare_real``, one ``train_real_<S>``
and ``evaluate_real_<S>`` per sweep S and ``report_real``. DVC's ``matrix:`` is a plain
product of params lists, so each sweep is its own product: A = ratios x seeds at
``real.sweep_a_unit``, B = units x seeds at ``real.sweep_b_ratio``, G (``sweep: grid``) =
ratios x units x seeds; the cell A and B share is trained once per sweep, into its own
folder (the runs are byte-identical). Which stages exist depends on ``real.enabled``,
``real.sweep`` and, for a user's folder or .npz, ``real.path`` (a dep; so is
``real.cue_conflict``, the cue-conflict folder of Table 2, when set): dvc.yaml is
generated for the current params, and :func:`check_dvc_yaml` stops the Snakefile and
every DVC-run step with one line when it is stale.

Nothing here imports torch: the Snakefile imports this module at parse time.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import itertools
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import ledger, paths, runlock
from .config import (
    Params, ParamsError, digest, load_params, real_enabled, real_sweep_cells, real_sweeps, robustness_enabled,
)
from .io import ArtifactError, dumps_json, read_json, write_json, write_text

# The synthetic track, then the review stages (claims, summary), which also read the
# real track's results when it is enabled.
STAGES = ("generate", "predict", "train", "probe", "baseline", "aggregate", "figures", "claims", "summary")
# one job per grid seed: baseline is independent of ratio and patch size; train_seed
# replaces train when train.job is "seed" (every cell of the seed in one process)
SEED_STAGES = ("baseline", "train_seed")
REAL_SWEEP_LETTERS = ("A", "B", "G")
REAL_STAGES = (
    ("prepare_real",)
    + tuple(f"train_real_{s}" for s in REAL_SWEEP_LETTERS)
    + tuple(f"evaluate_real_{s}" for s in REAL_SWEEP_LETTERS)
    + ("report_real",)
)
# The budget-robustness subset (robustness: in params.yaml), retrained longer, then compared
ROBUST_STAGES = ("train_long", "probe_long", "robustness")
CELL_STAGES = (
    ("train", "probe", "train_long", "probe_long")
    + tuple(f"{k}_real_{s}" for k in ("train", "evaluate") for s in REAL_SWEEP_LETTERS)
)

# The CLI step each stage runs (cli.STEPS) and the module holding its code (for code deps).
STAGE_STEP = {
    **{s: s for s in STAGES},
    "prepare_real": "prepare-real",
    **{f"train_real_{s}": "train-real" for s in REAL_SWEEP_LETTERS},
    **{f"evaluate_real_{s}": "evaluate-real" for s in REAL_SWEEP_LETTERS},
    "report_real": "report-real",
    "train_long": "train-long", "probe_long": "probe", "robustness": "robustness",
    "train_seed": "train-seed",
}
STAGE_MODULE = {
    **{s: s for s in STAGES},
    "prepare_real": "realdata",
    **{f"train_real_{s}": "train_real" for s in REAL_SWEEP_LETTERS},
    **{f"evaluate_real_{s}": "evaluate" for s in REAL_SWEEP_LETTERS},
    "report_real": "evaluate",
    "train_long": "train_long", "probe_long": "probe", "robustness": "robustness",
    "train_seed": "train_seed",
}

# realdata.DATA_KEYS (a test checks they agree); spelled out so the Snakefile never imports numpy
REAL_DATA_PARAMS = tuple(
    f"real.{k}"
    for k in ("dataset", "path", "image_size", "channels", "fit", "n_train", "n_test", "split_seed", "cue_conflict")
)
# train_cell records the whole resolved model/train sections, but real.* overrides these:
REAL_TRAIN_PARAMS = (
    tuple(f"model.{k}" for k in ("embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_depth",
                                 "decoder_num_heads", "mlp_ratio", "norm_pix_loss"))
    + tuple(f"train.{k}" for k in ("weight_decay", "warmup_epochs", "betas", "device", "precision", "threads"))
    + ("real.vit_patch", "real.epochs", "real.base_lr", "real.batch_size")
)
REAL_EVALUATE_PARAMS = ("real.probe_epochs", "real.knn_k", "real.eval_seed", "train.threads", "train.device")
REAL_REPORT_PARAMS = (
    "real.sweep", "real.mask_ratios", "real.mask_units", "real.sweep_a_unit", "real.sweep_b_ratio", "real.seeds",
    "real.n_eval_images", "real.tsne_points", "real.eval_seed", "train.threads", "train.device",
    # Table 1's floors: the untrained encoder (built as train-real builds it) under the same probes
    "real.probe_epochs", "real.knn_k", "real.vit_patch",
    *(k for k in REAL_TRAIN_PARAMS if k.startswith("model.")),
)

# The params keys each step reads: a section name takes the whole section, "a.b" one key.
# Editing a key reruns exactly the stages listing it (in both tools).
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "generate": ("data",),
    # the theorem's prediction needs the tree's geometry and widths, and the grid's cells
    "predict": ("data.image_size", "data.latent_dims", "data.texture_separation", "grid.mask_ratios", "grid.patch_sizes"),
    "train": ("model", "train"),
    # the same, for every cell of the seed: which cells those are
    "train_seed": ("model", "train", "grid.mask_ratios", "grid.patch_sizes"),
    # the model config comes from the checkpoint, which is an input file
    "probe": ("probe", "train.threads"),
    # the random-init model is built from the model section (seeded by the job's seed)
    "baseline": ("model", "probe", "train.threads"),
    "aggregate": ("data.depth", "probe.pooling", "grid"),
    # every figure is stamped with the digest of the whole params file
    "figures": ("data", "model", "train", "probe", "grid"),
    # + REAL_CLAIMS_PARAMS when the real track is on (stage_param_keys)
    "claims": ("data.depth",),
    # the summary prints and stamps the params (+ the real section when the track is on)
    "summary": ("data", "model", "train", "probe", "grid"),
    "prepare_real": REAL_DATA_PARAMS,
    **{f"train_real_{s}": REAL_TRAIN_PARAMS for s in REAL_SWEEP_LETTERS},
    **{f"evaluate_real_{s}": REAL_EVALUATE_PARAMS for s in REAL_SWEEP_LETTERS},
    "report_real": REAL_REPORT_PARAMS,
    "train_long": ("model", "train", "robustness.budget_factor"),
    "probe_long": ("probe", "train.threads"),
    # the subset's cells at both budgets, judged with the claims' rules
    "robustness": ("data.depth", "probe.pooling", "robustness"),
}

# What claims and summary read of the real track, only when it is enabled (the section
# may be absent otherwise): where each sweep's cells are, to find their JSONs.
REAL_CLAIMS_PARAMS = ("real.sweep", "real.mask_ratios", "real.mask_units", "real.sweep_a_unit", "real.sweep_b_ratio", "real.seeds")
REAL_READS = {"claims": REAL_CLAIMS_PARAMS, "summary": ("real",)}


def stage_param_keys(stage: str, params: Params) -> tuple[str, ...]:
    """The params keys ``stage`` reads under ``params``: :data:`STAGE_PARAMS` plus real keys when on
    (and the robustness section for the summary, which prints it, when that stage is on)."""
    extra = REAL_READS.get(stage, ()) if real_enabled(params) else ()
    if stage == "summary" and robustness_enabled(params):
        extra += ("robustness",)
    return STAGE_PARAMS[stage] + extra


# Files written by the figures step (each as .png and .pdf); examples.png comes from generate.
FIGURE_NAMES = ("r2_vs_ratio", "root_r2_heatmap", "reconstructions", "loss_curves", "region_r2", "spatial_r2", "theorem_levels")
EXAMPLES_PNG = f"{paths.FIGURES_DIR}/examples.png"
# Written by report_real under paths.REAL_FIGURES_DIR (each as .png and .pdf).
REAL_FIGURE_NAMES = ("fig5_recon_quality", "fig6_cls_attention", "fig7_token_attention", "fig8_tsne")

PACKAGE = "mae_hlvm"
SOURCE_DIR = Path(__file__).resolve().parent
SOURCE_REL = "src/mae_hlvm"
# Modules that validate, name or describe, but never compute a result: editing them
# must not rerun the grid, so they are not code deps.
NOT_CODE_DEPS = frozenset(
    {"__init__", "__main__", "cli", "config", "ledger", "lint", "paths", "pipeline", "plainrun", "progress", "provenance",
     "remote", "replay", "runlock", "sync"}
)

PARAMS_DIR = f"{paths.STATE_DIR}/params"
RECEIPTS_DIR = f"{paths.STATE_DIR}/receipts"
DVC_ITEM = {"mask_ratio": "${item.mask_ratio}", "patch_size": "${item.patch_size}", "seed": "${item.seed}"}
# Snakemake spells the same fields as wildcards: in paths, and in shell commands.
SMK_PATH = {"mask_ratio": "{mask_ratio}", "patch_size": "{patch_size}", "seed": "{seed}"}
SMK_SHELL = {k: f"{{wildcards.{k}}}" for k in SMK_PATH}
MATRIX = {"mask_ratio": "${grid.mask_ratios}", "patch_size": "${grid.patch_sizes}", "seed": "${grid.seeds}"}
ROBUST_MATRIX = {"mask_ratio": "${robustness.mask_ratios}", "patch_size": "${robustness.patch_sizes}",
                 "seed": "${robustness.seeds}"}
# A seed stage (SEED_STAGES) varies the seed only.
SEED_DVC_ITEM = {"seed": "${item.seed}"}
SEED_MATRIX = {"seed": "${grid.seeds}"}
SEED_SMK_PATH = {"seed": "{seed}"}
SEED_SMK_SHELL = {"seed": "{wildcards.seed}"}
# Per real sweep: its matrix, and the cell fields as DVC spells them (the fixed one from params).
REAL_MATRIX = {
    "A": {"mask_ratio": "${real.mask_ratios}", "seed": "${real.seeds}"},
    "B": {"mask_unit": "${real.mask_units}", "seed": "${real.seeds}"},
    "G": {"mask_ratio": "${real.mask_ratios}", "mask_unit": "${real.mask_units}", "seed": "${real.seeds}"},
}
REAL_DVC_ITEM = {
    "A": {"mask_ratio": "${item.mask_ratio}", "patch_size": "${real.sweep_a_unit}", "seed": "${item.seed}"},
    "B": {"mask_ratio": "${real.sweep_b_ratio}", "patch_size": "${item.mask_unit}", "seed": "${item.seed}"},
    "G": {"mask_ratio": "${item.mask_ratio}", "patch_size": "${item.mask_unit}", "seed": "${item.seed}"},
}


@dataclass(frozen=True)
class Out:
    """One output: ``kind`` is its dvc.yaml list (outs, metrics, plots); ``cache`` False = in git."""

    path: str
    kind: str = "outs"
    cache: bool = True


Fields = dict[str, str]  # mask_ratio, patch_size (the masking unit), seed as spelled in paths


# ----------------------------------------------------------------------------- cells


def cell_fields(mask_ratio: float, patch_size: int, seed: int) -> Fields:
    """A cell's values spelled as in paths: ``repr`` of the float, as DVC prints it too."""
    return {"mask_ratio": repr(float(mask_ratio)), "patch_size": str(int(patch_size)), "seed": str(int(seed))}


def seed_fields(seed: int) -> Fields:
    """A seed stage's fields: ``{"seed": "0"}``."""
    return {"seed": str(int(seed))}


def cell_name(f: Fields) -> str:
    """``r0.75_p4_s0``; equals :func:`mae_hlvm.config.cell_id` for concrete fields."""
    return f"r{f['mask_ratio']}_p{f['patch_size']}_s{f['seed']}"


def grid_cells(params: Params) -> list[Fields]:
    """Every cell of the grid, in DVC's matrix order (ratio, then patch, then seed)."""
    g = params.grid
    return [cell_fields(r, p, s) for r, p, s in itertools.product(g.mask_ratios, g.patch_sizes, g.seeds)]


def sweep_of(stage: str) -> str | None:
    """The real sweep letter of a real cell stage (``train_real_B`` -> B), else None."""
    return stage[-1] if stage in CELL_STAGES and "_real_" in stage else None


def dvc_stage_name(stage: str, f: Fields | None = None) -> str:
    """DVC's name of one stage instance: its matrix values joined, ``train@0.75-4-0``.

    Real sweeps vary fewer fields: ``train_real_A@0.75-0`` (ratio, seed), ``train_real_B@8-0``
    (unit, seed), ``train_real_G@0.75-8-0``.
    """
    if stage in SEED_STAGES:
        return f"{stage}@{f['seed']}"
    if stage not in CELL_STAGES:
        return stage
    sweep = sweep_of(stage)
    keys = MATRIX if sweep is None else REAL_MATRIX[sweep]
    field = {"mask_ratio": "mask_ratio", "patch_size": "patch_size", "mask_unit": "patch_size", "seed": "seed"}
    return f"{stage}@" + "-".join(f[field[k]] for k in keys)


def active_stages(params: Params) -> tuple[str, ...]:
    """The stages the current params run: the synthetic track, the robustness subset if
    enabled, then the real track if enabled."""
    synthetic = STAGES if params.train.job == "cell" else tuple("train_seed" if s == "train" else s for s in STAGES)
    stages = synthetic + (ROBUST_STAGES if robustness_enabled(params) else ())
    if not real_enabled(params):
        return stages
    sweeps = real_sweeps(params.real)
    return (
        stages
        + ("prepare_real",)
        + tuple(f"train_real_{s}" for s in sweeps)
        + tuple(f"evaluate_real_{s}" for s in sweeps)
        + ("report_real",)
    )


def stage_cells(stage: str, params: Params) -> list[Fields | None]:
    """The instances of a stage: every cell of its matrix, or [None] for a single stage."""
    if stage in SEED_STAGES:
        return [seed_fields(s) for s in params.grid.seeds]
    if stage not in CELL_STAGES:
        return [None]
    if stage in ROBUST_STAGES:
        r = params.robustness
        return [cell_fields(*c) for c in itertools.product(r.mask_ratios, r.patch_sizes, r.seeds)]
    sweep = sweep_of(stage)
    if sweep is None:
        return grid_cells(params)
    return [cell_fields(r, u, s) for r, u, s in real_sweep_cells(params.real)[sweep]]


def instances(params: Params) -> list[tuple[str, Fields | None]]:
    """(stage, fields) of every job of the current params, in stage order."""
    return [(stage, f) for stage in active_stages(params) for f in stage_cells(stage, params)]


# ----------------------------------------------------------------------------- stages


def command(stage: str, f: Fields | None = None) -> str:
    """The exact shell command of a stage; ``f`` may hold placeholders (DVC or Snakemake)."""
    base = f"python -m {PACKAGE} {stage}"
    if stage == "generate":
        return f"{base} --out {paths.SYNTHETIC_DATA} --figure {EXAMPLES_PNG} --log {log_path(stage)}"
    if stage == "predict":
        return f"{base} --out {paths.PREDICTION_JSON} --log {log_path(stage)}"
    if stage in ROBUST_STAGES:
        return _robust_command(stage, f)
    if stage == "train":
        cell = cell_name(f)
        return (
            f"{base} --data {paths.SYNTHETIC_DATA} --mask-ratio {f['mask_ratio']} "
            f"--patch-size {f['patch_size']} --seed {f['seed']} --out-dir {paths.model_dir(cell)} "
            f"--log {log_path(stage, f)}"
        )
    if stage == "probe":
        cell = cell_name(f)
        return (
            f"{base} --data {paths.SYNTHETIC_DATA} --checkpoint {paths.checkpoint(cell)} "
            f"--out {paths.probe_json(cell)} --recon {paths.recon_npz(cell)} --log {log_path(stage, f)}"
        )
    if stage == "baseline":
        return (
            f"{base} --data {paths.SYNTHETIC_DATA} --seed {f['seed']} --out {paths.baseline_json(f['seed'])} "
            f"--log {log_path(stage, f)}"
        )
    if stage == "train_seed":
        return (
            f"python -m {PACKAGE} {STAGE_STEP[stage]} --data {paths.SYNTHETIC_DATA} --seed {f['seed']} "
            f"--models-dir {paths.MODELS_DIR} --log {log_path(stage, f)}"
        )
    if stage == "aggregate":
        return (
            f"{base} --out-csv {paths.METRICS_CSV} --out-json {paths.METRICS_JSON} "
            f"--out-baselines {paths.BASELINES_CSV} --log {log_path(stage)}"
        )
    if stage == "figures":
        return (
            f"{base} --metrics {paths.METRICS_CSV} --baselines {paths.BASELINES_CSV} --prediction {paths.PREDICTION_JSON} "
            f"--out-dir {paths.FIGURES_DIR} --loss-curves {paths.LOSS_CURVES_CSV} --log {log_path(stage)}"
        )
    # claims and summary find the real track's files at their default paths (cli.py), so
    # their commands do not change, nor name the track, when it is switched off
    if stage == "claims":
        return (
            f"{base} --metrics {paths.METRICS_CSV} --baselines {paths.BASELINES_CSV} --prediction {paths.PREDICTION_JSON} "
            f"--out-json {paths.CLAIMS_JSON} --out-md {paths.CLAIMS_MD} "
            f"--log {log_path(stage)}"
        )
    if stage == "summary":
        return (
            f"{base} --metrics {paths.METRICS_CSV} --baselines {paths.BASELINES_CSV} --claims-md {paths.CLAIMS_MD} "
            f"--claims-json {paths.CLAIMS_JSON} --figures-dir {paths.FIGURES_DIR} "
            f"--out-md {paths.SUMMARY_MD} --out-tex {paths.METRICS_TEX} --out-headline {paths.HEADLINE_JSON} "
            f"--log {log_path(stage)}"
        )
    return _real_command(stage, f)


def _robust_command(stage: str, f: Fields | None) -> str:
    base = f"python -m {PACKAGE} {STAGE_STEP[stage]}"
    if stage == "robustness":
        return (
            f"{base} --metrics {paths.METRICS_CSV} --cells-dir {paths.LONG_CELLS_DIR} "
            f"--out-json {paths.ROBUSTNESS_JSON} --out-md {paths.ROBUSTNESS_MD} --log {log_path(stage)}"
        )
    cell = cell_name(f)
    if stage == "train_long":
        return (
            f"{base} --data {paths.SYNTHETIC_DATA} --mask-ratio {f['mask_ratio']} --patch-size {f['patch_size']} "
            f"--seed {f['seed']} --out-dir {paths.LONG_MODELS_DIR}/{cell} --log {log_path(stage, f)}"
        )
    return (
        f"{base} --data {paths.SYNTHETIC_DATA} --checkpoint {paths.LONG_MODELS_DIR}/{cell}/checkpoint.pt "
        f"--out {paths.LONG_CELLS_DIR}/{cell}.json --recon {paths.LONG_CELLS_DIR}/{cell}.recon.npz "
        f"--log {log_path(stage, f)}"
    )


def _real_command(stage: str, f: Fields | None) -> str:
    if stage not in STAGE_STEP:
        raise KeyError(stage)
    base = f"python -m {PACKAGE} {STAGE_STEP[stage]}"
    sweep = sweep_of(stage)
    if stage == "prepare_real":
        return f"{base} --out {paths.REAL_DATA} --log {log_path(stage)}"
    if stage == "report_real":
        return (
            f"{base} --data {paths.REAL_DATA} --cells-dir {paths.REAL_CELLS_DIR} --models-dir {paths.REAL_MODELS_DIR} "
            f"--out-dir {paths.REAL_RESULTS_DIR} --log {log_path(stage)}"
        )
    cell = cell_name(f)
    if stage.startswith("train_real_"):
        return (
            f"{base} --data {paths.REAL_DATA} --sweep {sweep} --mask-ratio {f['mask_ratio']} "
            f"--mask-unit {f['patch_size']} --seed {f['seed']} --out-dir {paths.real_model_dir(sweep, cell)} "
            f"--log {log_path(stage, f)}"
        )
    return (
        f"{base} --data {paths.REAL_DATA} --sweep {sweep} --checkpoint {paths.real_checkpoint(sweep, cell)} "
        f"--out {paths.real_cell_json(sweep, cell)} --log {log_path(stage, f)}"
    )


def log_path(stage: str, f: Fields | None = None) -> str:
    if stage in SEED_STAGES:
        return paths.log(stage, f"s{f['seed']}")
    return paths.log(stage, cell_name(f) if stage in CELL_STAGES else stage)


def seed_cells(f: Fields, params: Params) -> list[Fields]:
    """The grid cells of seed ``f["seed"]`` (which may be a placeholder), in the grid's order."""
    g = params.grid
    return [{"mask_ratio": repr(float(r)), "patch_size": str(int(u)), "seed": f["seed"]}
            for r, u in itertools.product(g.mask_ratios, g.patch_sizes)]


def outputs(stage: str, f: Fields | None = None, params: Params | None = None) -> list[Out]:
    """Every file a stage writes (the same list in both tools); ``train_seed``'s needs ``params``."""
    if stage == "train_seed":
        if params is None:
            raise ValueError("outputs('train_seed') needs the params: its cells are the grid's")
        return [o for c in seed_cells(f, params) for o in outputs("train", c)]
    if stage == "generate":
        return [Out(paths.SYNTHETIC_DATA), Out(EXAMPLES_PNG, "plots", cache=False)]
    if stage == "predict":
        return [Out(paths.PREDICTION_JSON, cache=False)]
    if stage == "train":
        cell = cell_name(f)
        return [Out(paths.checkpoint(cell)), Out(paths.train_log(cell))]
    if stage == "probe":
        cell = cell_name(f)
        # per-cell metrics live in git (`git diff`, replay-check); DVC's metrics are the headline
        return [Out(paths.probe_json(cell), cache=False), Out(paths.recon_npz(cell), cache=False)]
    if stage == "baseline":
        return [Out(paths.baseline_json(f["seed"]), cache=False)]
    if stage == "aggregate":
        return [
            Out(paths.METRICS_CSV, cache=False),  # drawn by dvc.yaml's top-level plots (DVC_PLOTS)
            Out(paths.METRICS_JSON, cache=False),
            Out(paths.BASELINES_CSV, cache=False),
        ]
    if stage == "claims":
        return [Out(paths.CLAIMS_JSON, cache=False), Out(paths.CLAIMS_MD, cache=False)]
    if stage == "summary":
        # the one DVC metrics file: per-cell numbers stay in git, out of `dvc metrics show`
        return [Out(paths.SUMMARY_MD, cache=False), Out(paths.METRICS_TEX, cache=False),
                Out(paths.HEADLINE_JSON, "metrics", cache=False)]
    if stage == "figures":
        outs = [Out(paths.LOSS_CURVES_CSV, cache=False)]
        for name in FIGURE_NAMES:
            outs.append(Out(f"{paths.FIGURES_DIR}/{name}.png", "plots", cache=False))
            outs.append(Out(f"{paths.FIGURES_DIR}/{name}.pdf", cache=False))
        return outs
    if stage in ROBUST_STAGES:
        return _robust_outputs(stage, f)
    return _real_outputs(stage, f)


def _robust_outputs(stage: str, f: Fields | None) -> list[Out]:
    if stage == "robustness":
        return [Out(paths.ROBUSTNESS_JSON, cache=False), Out(paths.ROBUSTNESS_MD, cache=False)]
    cell = cell_name(f)
    if stage == "train_long":
        return [Out(f"{paths.LONG_MODELS_DIR}/{cell}/checkpoint.pt"), Out(f"{paths.LONG_MODELS_DIR}/{cell}/train_log.csv")]
    return [Out(f"{paths.LONG_CELLS_DIR}/{cell}.json", cache=False), Out(f"{paths.LONG_CELLS_DIR}/{cell}.recon.npz", cache=False)]


def _real_outputs(stage: str, f: Fields | None) -> list[Out]:
    sweep = sweep_of(stage)
    if stage == "prepare_real":
        return [Out(paths.REAL_DATA)]
    if stage == "report_real":
        tables = [
            Out(f"{paths.REAL_TABLE_STEM}.csv", cache=False),
            Out(f"{paths.REAL_TABLE_STEM}.md", cache=False),
            Out(f"{paths.REAL_TABLE_STEM}.tex", cache=False),
            Out(paths.REAL_RANK_JSON, cache=False),
            Out(paths.REAL_FIGURES_JSON, cache=False),
        ]
        figures = []
        for name in REAL_FIGURE_NAMES:
            figures.append(Out(f"{paths.REAL_FIGURES_DIR}/{name}.png", "plots", cache=False))
            figures.append(Out(f"{paths.REAL_FIGURES_DIR}/{name}.pdf", cache=False))
        return tables + figures
    if stage.startswith("train_real_"):
        cell = cell_name(f)
        return [Out(paths.real_checkpoint(sweep, cell)), Out(paths.real_train_log(sweep, cell))]
    if stage.startswith("evaluate_real_"):
        return [Out(paths.real_cell_json(sweep, cell_name(f)), cache=False)]
    raise KeyError(stage)


def user_data_inputs(params: Params | None) -> dict[str, str]:
    """The user's own real data, deps of ``prepare_real``: {``real.`` key: normalised path}.

    ``path`` for a folder or .npz (none for mnist/digits), ``cue_conflict`` when set.
    """
    real = None if params is None else params.real
    if real is None:
        return {}
    keys = (["path"] if real.dataset in ("folder", "npz") else []) + (["cue_conflict"] if real.cue_conflict else [])
    return {key: os.path.normpath(getattr(real, key)) for key in keys}


def user_data_deps(params: Params | None) -> list[str]:
    """The paths of :func:`user_data_inputs`, in its order."""
    return list(user_data_inputs(params).values())


def input_files(stage: str, f: Fields | None = None, params: Params | None = None) -> list[str]:
    """The artifact files a stage reads (not code, not params); ``params`` for stages reading every cell."""
    cells = grid_cells(params) if params is not None else []
    if stage == "prepare_real":
        return user_data_deps(params)
    if stage.startswith(("train_real_",)):
        return [paths.REAL_DATA]
    if stage.startswith("evaluate_real_"):
        return [paths.REAL_DATA, paths.real_checkpoint(sweep_of(stage), cell_name(f))]
    if stage == "report_real":
        # The report also loads the first seed's checkpoints, but each cell JSON records the
        # weights hash it evaluated and the report refuses any other weights: the JSONs pin
        # the checkpoints. (A dir dep on models_real would also see the .gitignore files DVC
        # writes beside cached outputs, and go stale after every `dvc commit`.)
        return [paths.REAL_DATA] + real_cell_jsons(params)
    if stage in ("generate", "predict"):
        return []
    if stage == "train_long":
        return [paths.SYNTHETIC_DATA]
    if stage == "probe_long":
        return [paths.SYNTHETIC_DATA, f"{paths.LONG_MODELS_DIR}/{cell_name(f)}/checkpoint.pt"]
    if stage == "robustness":
        long_cells = stage_cells("probe_long", params) if params is not None else []
        return [paths.METRICS_CSV] + [f"{paths.LONG_CELLS_DIR}/{cell_name(c)}.json" for c in long_cells]
    if stage in ("train", "train_seed", "baseline"):
        return [paths.SYNTHETIC_DATA]
    if stage == "probe":
        return [paths.SYNTHETIC_DATA, paths.checkpoint(cell_name(f))]
    if stage == "aggregate":
        seeds = params.grid.seeds if params is not None else []
        return [paths.probe_json(cell_name(c)) for c in cells] + [paths.baseline_json(s) for s in seeds]
    if stage == "figures":
        return (
            [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON]
            + [paths.recon_npz(cell_name(c)) for c in cells]
            + [paths.train_log(cell_name(c)) for c in cells]
        )
    if stage == "claims":
        return [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON] + real_cell_jsons(params)
    if stage == "summary":
        return (
            [paths.METRICS_CSV, paths.BASELINES_CSV, paths.CLAIMS_JSON, paths.CLAIMS_MD]
            + [f"{paths.FIGURES_DIR}/{name}.png" for name in FIGURE_NAMES]
            + ([paths.ROBUSTNESS_MD] if params is not None and robustness_enabled(params) else [])
            + _real_summary_inputs(params)
        )
    raise KeyError(stage)


def real_cell_jsons(params: Params | None) -> list[str]:
    """Every current real cell's JSON (evaluate_real outputs), per sweep; [] when the track is off."""
    if params is None or not real_enabled(params):
        return []
    jobs = [(sweep_of(s), c) for s in active_stages(params) if s.startswith("train_real_") for c in stage_cells(s, params)]
    return [paths.real_cell_json(sweep, cell_name(c)) for sweep, c in jobs]


def _real_summary_inputs(params: Params | None) -> list[str]:
    """The real track's Table 1 (Markdown) and figures, which the summary shows when the track is on."""
    if params is None or not real_enabled(params):
        return []
    return [f"{paths.REAL_TABLE_STEM}.md"] + [f"{paths.REAL_FIGURES_DIR}/{name}.png" for name in REAL_FIGURE_NAMES]


def dvc_item(stage: str) -> Fields | None:
    """A cell stage's fields as DVC interpolates them; None for a single stage."""
    if stage in SEED_STAGES:
        return SEED_DVC_ITEM
    if stage not in CELL_STAGES:
        return None
    sweep = sweep_of(stage)
    return DVC_ITEM if sweep is None else REAL_DVC_ITEM[sweep]


def dvc_input_deps(stage: str, params: Params) -> list[str]:
    """Artifact deps in dvc.yaml. A stage reading every cell depends on the folder:
    DVC links a folder dep to the stage outputs inside it (matrix deps cannot be listed)."""
    if stage == "aggregate":
        return [paths.CELLS_DIR, paths.BASELINES_DIR]
    if stage == "figures":
        return [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON, paths.CELLS_DIR, paths.MODELS_DIR]
    if stage == "claims":
        return [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON] + (
            [paths.REAL_CELLS_DIR] if real_enabled(params) else []
        )
    if stage == "report_real":
        return [paths.REAL_DATA, paths.REAL_CELLS_DIR]
    if stage == "robustness":
        return [paths.METRICS_CSV, paths.LONG_CELLS_DIR]
    return input_files(stage, dvc_item(stage), params)


def _imports_of(module: str) -> set[str]:
    """Sibling modules of the package that ``module`` imports (static, no import run)."""
    tree = ast.parse((SOURCE_DIR / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:
                found.update(a.name for a in node.names)
            elif node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.split(".")[0] == PACKAGE:
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
    return {m for m in found if (SOURCE_DIR / f"{m}.py").exists()}


def code_deps(stage: str) -> list[str]:
    """Source files a stage runs: its module and every sibling it imports, transitively.

    A step module that does not exist yet is still listed, so the missing file is the error.
    """
    seen: set[str] = set()
    todo = [STAGE_MODULE.get(stage, stage)]
    while todo:
        mod = todo.pop()
        if mod in seen or mod in NOT_CODE_DEPS:
            continue
        seen.add(mod)
        if (SOURCE_DIR / f"{mod}.py").exists():
            todo.extend(_imports_of(mod))
    return [f"{SOURCE_REL}/{m}.py" for m in sorted(seen)]


def smk_path_fields(stage: str) -> Fields | None:
    """A rule's wildcards as spelled in paths; None for a single stage."""
    if stage in SEED_STAGES:
        return SEED_SMK_PATH
    return SMK_PATH if stage in CELL_STAGES else None


def smk_outputs(stage: str, params: Params | None = None) -> list[str]:
    """A rule's output patterns (wildcards for matrix stages)."""
    return [o.path for o in outputs(stage, smk_path_fields(stage), params)]


def smk_inputs(stage: str, params: Params) -> list[str]:
    """A rule's inputs: artifacts, then the stage's code and params file (mtime triggers).

    A user's image folder is replaced by its listing file (:func:`write_folder_listing`):
    Snakemake would judge a folder by the folder's own mtime, which an overwritten image
    inside does not change.
    """
    listing = {p: folder_listing_file(k) for k, p in user_data_inputs(params).items()}
    files = [listing.get(p, p) if os.path.isdir(p) else p for p in input_files(stage, smk_path_fields(stage), params)]
    return files + code_deps(stage) + [params_file(stage)]


def smk_shell(stage: str) -> str:
    """The rule's shell: :func:`command` with wildcards, so it resolves to DVC's cmd."""
    if stage in SEED_STAGES:
        return command(stage, SEED_SMK_SHELL)
    return command(stage, SMK_SHELL if stage in CELL_STAGES else None)


def smk_command(stage: str):  # noqa: ANN201 - a Snakemake params function
    """A rule's ``params`` function giving the job's resolved :func:`command`.

    For rules defined in a loop: Snakemake evaluates a ``shell:`` expression when the job
    runs, so a loop variable in it would name the last stage of the loop.
    """

    def resolved(wildcards: Any) -> str:
        keys = smk_path_fields(stage)
        return command(stage, None if keys is None else {k: str(wildcards[k]) for k in keys})

    return resolved


def smk_log(stage: str) -> str:
    return log_path(stage, smk_path_fields(stage))


BENCHMARK_COLUMNS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time")


def benchmark_path(stage: str, f: Fields | None) -> str:
    """The job's benchmark file (:func:`smk_benchmark` with its cell filled in)."""
    return log_path(stage, f).replace("logs/", "benchmarks/", 1).removesuffix(".log") + ".tsv"


def write_benchmark(stage: str, f: Fields | None, seconds: float) -> None:
    """A benchmark file in Snakemake's columns for a job DVC ran (wall time; the rest NA)."""
    hms = f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    row = [f"{seconds:.4f}", hms] + ["NA"] * (len(BENCHMARK_COLUMNS) - 2)
    write_text(benchmark_path(stage, f), "\t".join(BENCHMARK_COLUMNS) + "\n" + "\t".join(row) + "\n")


def smk_benchmark(stage: str) -> str:
    """A rule's ``benchmark:`` file (wall time, memory, I/O per job, by Snakemake):
    ``benchmarks/<stage>/<cell>.tsv`` beside ``logs/`` (run-dependent, never an artifact)."""
    return benchmark_path(stage, smk_path_fields(stage))


def figure_stem(path: str) -> str:
    """``results/figures/r2_vs_ratio.png`` -> ``r2_vs_ratio`` (its report caption's name)."""
    return Path(path).stem


def all_outputs(params: Params) -> list[str]:
    """Every output of the current params' jobs: the target of ``rule all``."""
    return [o.path for stage, f in instances(params) for o in outputs(stage, f, params)]


def final_outputs(params: Params) -> list[str]:
    """The outputs no job reads (summary, figures, report...): ``rule all``'s inputs.

    Every other output is upstream of one of them, so Snakemake builds the same jobs as
    for :func:`all_outputs`, but prints about 30 paths at the end instead of every file.
    """
    read = {p for stage, f in instances(params) for p in input_files(stage, f, params)}
    return [p for p in all_outputs(params) if p not in read]


def real_outputs(params: Params) -> list[str]:
    """Every output of the real track (``snakemake <these>`` runs it alone); [] when off."""
    return [o.path for stage, f in instances(params) if stage in REAL_STAGES for o in outputs(stage, f, params)]


# ----------------------------------------------------------------------------- params


def stage_params(params: Params, stage: str) -> dict[str, Any]:
    """Exactly the params a stage reads, keyed as in :func:`stage_param_keys`."""
    out: dict[str, Any] = {}
    for key in stage_param_keys(stage, params):
        section, _, leaf = key.partition(".")
        value = getattr(params, section).model_dump(mode="json")
        out[key] = value[leaf] if leaf else value
    return out


def params_file(stage: str) -> str:
    return f"{PARAMS_DIR}/{stage}.json"


def write_params_file(params: Params, stage: str) -> bool:
    """Write the stage's params file if its content changed; True when written.

    Unchanged content keeps the old mtime, so outputs made with these params stay newer.
    """
    path = Path(params_file(stage))
    text = dumps_json(stage_params(params, stage))
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    write_text(path, text)
    return True


def write_params_files(params: Params) -> list[str]:
    """The active stages' params files (Snakefile parse time); returns the stages rewritten.

    Also the listing of a user's image folder (:func:`write_folder_listing`).
    """
    write_folder_listing(params)
    return [s for s in active_stages(params) if write_params_file(params, s)]


def folder_listing_file(key: str = "path") -> str:
    """The listing file standing in for the folder at ``real.<key>`` (``path`` or ``cue_conflict``)."""
    return f"{paths.STATE_DIR}/inputs/real_{key}.json"


def write_folder_listing(params: Params) -> bool:
    """Snakemake's stand-in for each of a user's image folders: every file's path, size and mtime.

    Each is rewritten only when one of them changes, so an image overwritten inside the
    folder reruns prepare_real (DVC sees the same through the folder's hash). True when
    one was written.
    """
    inputs = user_data_inputs(params) if real_enabled(params) else {}
    written = [_write_listing(folder_listing_file(key), folder) for key, folder in inputs.items() if os.path.isdir(folder)]
    return any(written)


def _write_listing(path: str, folder: str) -> bool:
    """Write ``folder``'s listing to ``path`` unless it already holds it; True when written."""
    text = dumps_json({"folder": folder, "files": folder_listing(folder)})
    with contextlib.suppress(OSError):
        if Path(path).read_text() == text:
            return False
    write_text(Path(path), text)
    return True


# ----------------------------------------------------------------------------- dvc.yaml


def _dvc_outs(outs: list[Out]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for o in outs:
        groups.setdefault(o.kind, []).append(o.path if o.cache else {o.path: {"cache": False}})
    return groups


def dvc_stage(stage: str, params: Params) -> dict[str, Any]:
    f = dvc_item(stage)
    spec: dict[str, Any] = {}
    if stage in SEED_STAGES:
        spec["matrix"] = dict(SEED_MATRIX)
    elif stage in ROBUST_STAGES and stage in CELL_STAGES:
        spec["matrix"] = dict(ROBUST_MATRIX)
    elif stage in CELL_STAGES:
        sweep = sweep_of(stage)
        spec["matrix"] = dict(MATRIX if sweep is None else REAL_MATRIX[sweep])
    spec["cmd"] = command(stage, f)
    spec["deps"] = code_deps(stage) + dvc_input_deps(stage, params)
    spec["params"] = list(stage_param_keys(stage, params))
    spec.update(_dvc_outs(outputs(stage, f, params)))
    return spec


# `dvc plots show/diff`: explicit x and y, drawn by our templates in .dvc/plots/ (one line
# per masking unit, one per cell); the figures stage's PNGs are plots too (outputs).
DVC_PLOTS = [
    {"root_r2_vs_ratio": {
        "template": "by_unit", "x": "mask_ratio", "y": {paths.METRICS_CSV: "r2_level0"},
        "title": "root R^2 against masking ratio (mean over seeds), per masking unit",
        "x_label": "masking ratio", "y_label": "root R^2 (linear probe)",
    }},
    {"learning_curves": {
        "template": "by_cell", "x": "epoch", "y": {paths.LOSS_CURVES_CSV: "loss"},
        "title": "training loss (hidden pixels) per epoch, every cell",
        "x_label": "epoch", "y_label": "loss",
    }},
]

DVC_YAML_HEADER = "# Generated by `make dvc-yaml` (python -m mae_hlvm.pipeline dvc-yaml --out dvc.yaml); do not edit.\n"


def dvc_yaml(params: Params) -> str:
    """The text of dvc.yaml for ``params`` (committed; tests/test_pipeline.py checks it is current).

    Only ``real.enabled``, ``real.sweep`` and a user's data paths change it: every other
    value reaches DVC through ``${...}`` interpolation of params.yaml.
    """
    header = DVC_YAML_HEADER
    if real_enabled(params):
        header += f"# real-image track on: sweep {params.real.sweep}\n"
    else:
        header += "# real-image track off (real.enabled)\n"
    body = {"stages": {s: dvc_stage(s, params) for s in active_stages(params)}, "plots": DVC_PLOTS}
    return header + yaml.safe_dump(body, sort_keys=False, width=1000)


def check_dvc_yaml(params: Params, path: str | Path = "dvc.yaml") -> None:
    """Raise one ParamsError line when ``path`` is not the dvc.yaml of ``params``; no file: fine."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return
    if text != dvc_yaml(params):
        raise ParamsError(
            f"{path} is stale for params.yaml (real.enabled, real.sweep, the real data or cue-conflict path or robustness.enabled "
            "changed, "
            "or the pipeline code did): regenerate it with `make dvc-yaml`"
        )


# ----------------------------------------------------------------------------- receipts


def _sha256(path: str, memo: dict[tuple[str, int, int], str] | None = None) -> str | None:
    """SHA-256 of a file, or of a folder's tree (every file's relative path and bytes); None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if os.path.isdir(path):  # a user's image folder, the dep of prepare_real
        h = hashlib.sha256()
        for rel, _, _ in folder_listing(path):
            h.update(rel.encode() + b"\0" + (_sha256(os.path.join(path, rel), memo) or "").encode() + b"\0")
        return h.hexdigest()
    key = (path, st.st_mtime_ns, st.st_size)
    if memo is not None and key in memo:
        return memo[key]
    digest_ = ledger.file_digest(path, "sha256")
    if memo is not None:
        memo[key] = digest_
    return digest_


def folder_listing(path: str) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file under ``path``, sorted (a link: its target's)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:  # a dangling link: prepare_real names it
                st = os.lstat(full)
            out.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return sorted(out)


def _instance(stage: str, params: Params, f: Fields | None) -> dict[str, Any]:
    """What a valid receipt must match: params digest, input and output file hashes."""
    return {
        "params": digest(stage_params(params, stage)),
        "deps": sorted(code_deps(stage) + input_files(stage, f, params)),
        "outs": sorted(o.path for o in outputs(stage, f, params)),
    }


def _receipt(stage: str, params: Params, f: Fields | None, memo: dict | None = None) -> dict[str, Any]:
    inst = _instance(stage, params, f)
    return {
        "stage": dvc_stage_name(stage, f),
        "params": inst["params"],
        "deps": {p: _sha256(p, memo) for p in inst["deps"]},
        "outs": {p: _sha256(p, memo) for p in inst["outs"]},
    }


def receipt_path(name: str) -> str:
    return f"{RECEIPTS_DIR}/{name}.json"


def _canonical_job(step: str, params: Params, argv: Sequence[str]) -> tuple[str, Fields | None] | None:
    """The (stage, cell) of the current params whose command is exactly ``argv``, else None."""
    for stage, f in instances(params):
        if STAGE_STEP[stage] == step and list(argv) == shlex.split(command(stage, f))[3:]:
            return stage, f
    return None


@contextlib.contextmanager
def step_hooks(step: str, params: Params, argv: Sequence[str]) -> Iterator[None]:
    """Wrap one CLI step (cli.py): params file before it runs, a receipt after it succeeds.

    ``argv``: the step's arguments after ``python -m mae_hlvm``. Only the canonical
    stage command gets a receipt, and none under DVC (DVC records its own runs). Under
    DVC a stale dvc.yaml (the stage set no longer that of params.yaml) stops the step.
    """
    stages = [s for s in active_stages(params) if STAGE_STEP[s] == step]
    if stages and os.environ.get("DVC_STAGE"):
        check_dvc_yaml(params)
    for stage in stages:
        write_params_file(params, stage)
    if "prepare_real" in stages:
        write_folder_listing(params)  # before the step, so that its output is newer
    started = time.perf_counter()
    yield
    job = _canonical_job(step, params, argv) if stages else None
    if job is None:
        return
    # an output `verify` removed and this job gave back byte for byte keeps its old mtime
    ledger.restore_mtimes([o.path for o in outputs(job[0], job[1], params)])
    if os.environ.get("DVC_STAGE"):
        # Snakemake judges a rule's benchmark: file like an output: one older than the
        # outputs DVC just rewrote would make it rerun the job, so DVC runs write it too
        write_benchmark(job[0], job[1], time.perf_counter() - started)
        return
    rec = _receipt(job[0], params, job[1])
    write_json(receipt_path(rec["stage"]), rec)
    from . import progress

    progress.job_done(rec["stage"])


def _valid_receipts(params: Params) -> tuple[list[str], list[Path]]:
    """(stage names whose receipts still match the tree, receipt files to delete)."""
    current = {dvc_stage_name(stage, f): (stage, f) for stage, f in instances(params)}
    valid, done = [], []
    memo: dict = {}
    for path in sorted(Path(RECEIPTS_DIR).glob("*.json")):
        done.append(path)
        try:
            rec = read_json(path)
        except ArtifactError:
            continue
        name = rec.get("stage")
        if name not in current:
            continue
        stage, f = current[name]
        now = _receipt(stage, params, f, memo)
        if now == rec and None not in now["outs"].values():
            valid.append(name)
    return valid, done


def commit_receipts(params_path: str = "params.yaml", quiet: bool = False) -> list[str]:
    """Record in dvc.lock every stage Snakemake finished whose receipt is still valid.

    One ``dvc commit -f`` for all of them; output mtimes are restored afterwards because
    DVC relinks committed files (a fresh mtime would make downstream outputs look stale to
    Snakemake). Receipts are removed once committed or found stale; on a DVC failure
    (e.g. its lock is held) they are kept for the next call. Returns the committed stages.
    """
    if not Path(".dvc").is_dir() or not Path(RECEIPTS_DIR).is_dir():
        return []
    params = load_params(params_path)
    valid, done = _valid_receipts(params)
    if valid:
        started = time.perf_counter()
        outs = [o.path for name in valid for o in _outs_of(name, params)]
        mtimes = {p: os.stat(p).st_mtime_ns for p in outs}
        targets = commit_targets(valid, params)
        proc = subprocess.run(["dvc", "commit", "-f", *targets], capture_output=True, text=True)
        for p, ns in mtimes.items():
            with contextlib.suppress(OSError):
                os.utime(p, ns=(ns, ns))
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith("ERROR")]
            msg = lines[0] if lines else f"exit {proc.returncode}"
            print(
                f"mae_hlvm.pipeline: dvc commit failed ({msg}); receipts kept in {RECEIPTS_DIR}, "
                "recorded by the next run (or `python -m mae_hlvm.pipeline commit-receipts`)",
                file=sys.stderr,
            )
            return []
    for path in done:
        path.unlink(missing_ok=True)
    if valid and not quiet:
        took = time.perf_counter() - started
        print(f"mae_hlvm.pipeline: recorded {len(valid)} Snakemake job(s) in dvc.lock ({took:.1f} s)", file=sys.stderr)
    return valid


def start_run() -> None:
    """The Snakefile's ``onstart``: stop with one line while DVC runs in this working copy;
    otherwise record the receipts an interrupted run left and hold DVC's lock (runlock)."""
    try:
        if runlock.claim():
            runlock.release()  # our own `dvc commit` needs the lock
            commit_receipts()
            runlock.claim()
    except runlock.BusyError as err:
        raise SystemExit(f"error: {err}") from None
    from . import progress  # one overall progress line per finished job (mae_hlvm.progress)

    with contextlib.suppress(ParamsError, OSError):
        n = progress.start(load_params("params.yaml"), sys.argv)
        if n:
            print(f"run: {n} jobs planned; each finished job prints jobs done and an ETA", file=sys.stderr)


def finish_run() -> None:
    """The Snakefile's ``onsuccess``/``onerror``: give DVC's lock back, record the finished jobs."""
    from . import progress

    progress.stop()
    runlock.release()
    commit_receipts()


def commit_targets(names: Sequence[str], params: Params) -> list[str]:
    """``dvc commit`` targets for stage instances ``names``: a whole foreach group by its name.

    DVC rewrites dvc.lock once per target, so naming cells one by one costs time
    quadratic in the grid (the default grid's 67 stages: 28 s, against 7 s by group); a
    group name commits all its cells with one write. Groups with any cell missing from
    ``names`` stay per cell.
    """
    members: dict[str, list[str]] = {}
    for stage, f in instances(params):
        members.setdefault(stage, []).append(dvc_stage_name(stage, f))
    wanted, targets = set(names), []
    for stage, group in members.items():
        done = [n for n in group if n in wanted]
        targets += [stage] if len(done) == len(group) else done  # a plain stage is its own group
    return targets


def _outs_of(name: str, params: Params) -> list[Out]:
    for stage, f in instances(params):
        if dvc_stage_name(stage, f) == name:
            return outputs(stage, f, params)
    return []


# ----------------------------------------------------------------------------- resources


def train_uses_gpu(params: Params) -> bool:
    """Whether training will claim a GPU; ``auto`` checks for a driver without importing torch."""
    device = params.train.device
    if device == "cuda":
        return True
    return device == "auto" and (Path("/proc/driver/nvidia/version").exists() or bool(_which("nvidia-smi")))


def _which(cmd: str) -> str | None:
    import shutil

    return shutil.which(cmd)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mae_hlvm.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument(
        "action", choices=["dvc-yaml", "check-dvc-yaml", "write-params", "commit-receipts", "stage-params", "real-targets"]
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="dvc-yaml: write this file (atomically) instead of stdout")
    args = parser.parse_args(argv)
    try:
        if args.action == "dvc-yaml":
            text = dvc_yaml(load_params(args.params))  # invalid params: stop before touching --out
            if args.out:
                write_text(args.out, text)
            else:
                sys.stdout.write(text)
        elif args.action == "check-dvc-yaml":
            check_dvc_yaml(load_params(args.params))
        elif args.action == "real-targets":
            # `snakemake $(python -m mae_hlvm.pipeline real-targets)` runs the real track alone
            sys.stdout.write(" ".join(real_outputs(load_params(args.params))) + "\n")
        elif args.action == "write-params":
            write_params_files(load_params(args.params))
        elif args.action == "commit-receipts":
            commit_receipts(args.params)
        else:
            p = load_params(args.params)
            sys.stdout.write(dumps_json({s: stage_params(p, s) for s in active_stages(p)}))
    except (ParamsError, ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
