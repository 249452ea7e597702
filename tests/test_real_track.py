"""The real-image track wired into params, CLI and both DAGs (issue 4).

Fast tests: the ``real:`` section, the stage definitions and the params each real step
reads, the dvc.yaml staleness guard, and the two tools agreeing on every job for other
sweeps and for the track switched off. The end-to-end runs (both tools, edits, replay)
are the slow tests of tests/test_pipeline.py, which use its tiny real override.
"""

from __future__ import annotations

import ast
import copy
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import GIT, REPO, assert_runner_exists, copy_repo, dvc_jobs, edit_params, sh, snakemake_jobs

from mae_hlvm.core import paths
from mae_hlvm.core.cells import cell_pairs, real_enabled, real_sweep_cells
from mae_hlvm.core.config import ParamsError, load_params, parse_params, parse_real
from mae_hlvm.real import realdata, report, shifts, tables
from mae_hlvm.real.train_real import real_train_params
from mae_hlvm.workflow import cli, glue, pipeline

DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())
DEFAULT.pop("stability", None)  # its set names cells of the shipped grid


def with_real(**changes: object):
    raw = copy.deepcopy(DEFAULT)
    raw["real"].update(changes)
    return parse_params(raw)


# ----------------------------------------------------------------------------- params


def test_default_real_section_is_mnist_at_the_papers_unit_ratios():
    """MNIST padded to 32 x 32, 4 x 4 ViT patches (64 tokens), masking units of 1, 2 and 4
    tokens per side: the paper's 8 / 16 / 32 pixels on an 8-pixel ViT patch (Sweep B)."""
    real = load_params(REPO / "params.yaml").real
    assert real == parse_real(DEFAULT["real"])
    assert (real.dataset, real.fit, real.image_size, real.channels, real.vit_patch) == ("mnist", "pad", 32, 1, 4)
    assert [u // real.vit_patch for u in real.mask_units] == [1, 2, 4] and real.sweep == "AB"
    assert real.cue_conflict == ""


def test_real_errors_keep_their_prefix_and_section_is_optional():
    raw = copy.deepcopy(DEFAULT)
    raw["real"]["base_lr"] = -1.0
    with pytest.raises(ParamsError, match=r"^params.yaml: real.base_lr=-1.0: "):
        parse_params(raw)
    raw["real"] = {**DEFAULT["real"], "sweep_a_unit": 6}
    with pytest.raises(ParamsError, match=r"real.sweep_a_unit=6: a masking unit must be a multiple of vit_patch=4"):
        parse_params(raw)
    del raw["real"]
    params = parse_params(raw)  # params files from before the track: track off
    assert params.real is None and not real_enabled(params)
    assert set(pipeline.active_stages(params)) == set(pipeline.STAGES) - {"train_seed"}


def test_train_overrides_change_only_the_real_recipe():
    params = with_real(vit_patch=2, epochs=3, base_lr=1e-3, batch_size=64)
    over = real_train_params(params)
    assert (over.model.vit_patch, over.train.epochs, over.train.base_lr, over.train.batch_size) == (2, 3, 1e-3, 64)
    assert over.model.embed_dim == params.model.embed_dim and over.train.betas == params.train.betas
    assert params.model.vit_patch == DEFAULT["model"]["vit_patch"], "the original params must be untouched"


@pytest.mark.parametrize("sweep,stages", [("A", ["A"]), ("B", ["B"]), ("AB", ["A", "B"]), ("grid", ["G"])])
def test_sweeps_are_products_and_the_shared_cell_is_trained_per_sweep(sweep, stages):
    real = with_real(sweep=sweep, mask_ratios=[0.25, 0.5, 0.75]).real
    cells = real_sweep_cells(real)
    assert list(cells) == stages
    n_r, n_u, n_s = len(real.mask_ratios), len(real.mask_units), len(real.seeds)
    sizes = {"A": n_r * n_s, "B": n_u * n_s, "G": n_r * n_u * n_s}
    assert {k: len(v) for k, v in cells.items()} == {k: sizes[k] for k in stages}
    # every (ratio, unit) the library's sweep lists is trained, no other
    trained = {(r, u) for v in cells.values() for r, u, _ in v}
    assert trained == set(cell_pairs(real))


def test_pipeline_data_keys_are_realdata_ones():
    assert pipeline.REAL_DATA_PARAMS == tuple(f"real.{k}" for k in realdata.DATA_KEYS)


# ----------------------------------------------------------------------------- the params each step reads


def _reads(tree: ast.AST) -> set[str]:
    """``params.<s>[.<k>]`` and ``real.<k>`` (the track's local alias) read inside ``tree``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        inner = node.value
        if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) and inner.value.id == "params":
            found.add(f"{inner.attr}.{node.attr}")
        elif isinstance(inner, ast.Name) and inner.id == "params":
            found.add(node.attr)
        elif isinstance(inner, ast.Name) and inner.id == "real":
            found.add(f"real.{node.attr}")
    sections = {"data", "model", "train", "probe", "grid", "real"}
    return {k for k in found if k.split(".")[0] in sections}


def _function(module: str, name: str) -> ast.AST:
    tree = ast.parse(pipeline.module_path(module).read_text())
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


# stage -> the functions its runner reads params in
RUNNERS = {
    "prepare_real": [("real.realdata", "run_prepare")],
    "evaluate_real_A": [("real.evaluate", "run_evaluate"), ("real.device", "step_device")],
    "report_real": [("real.report", "run_report"), ("real.device", "step_device")],
}


@pytest.mark.parametrize("stage", sorted(RUNNERS))
def test_real_stage_params_cover_what_its_runner_reads(stage):
    reads = set().union(*(_reads(_function(m, f)) for m, f in RUNNERS[stage]))
    assert reads, "found no params access; the scanner is broken"
    declared = set(pipeline.STAGE_PARAMS[stage])
    # `real = params.real` and `params.real is None` read the section handle, not a value
    uncovered = {k for k in reads - declared - {"real"} if not (k == "train" and any(d.startswith("train.") for d in declared))}
    if stage == "prepare_real":  # prepare_real(real) reads the data keys (realdata.DATA_KEYS)
        uncovered -= {"real.dataset"}
    assert not uncovered, f"{stage} reads {sorted(uncovered)} but STAGE_PARAMS lists {sorted(declared)}"


def test_real_train_params_are_the_trainer_reads_minus_the_overrides():
    reads = _reads(_function("core.train", "train_cell")) | _reads(_function("core.train", "resolve_device"))
    overridden = {"train.epochs", "train.base_lr", "train.batch_size", "model.vit_patch"}
    model_keys = {f"model.{k}" for k in DEFAULT["model"]}
    # train_cell records the whole model and train sections in the checkpoint, but for
    # train.job: it decides how the synthetic grid's cells are grouped into jobs, which
    # changes no cell's bytes (tests/test_device_loop.py), and the real track always
    # trains one cell per job, so editing it must not retrain the real track
    expected = (model_keys | {f"train.{k}" for k in DEFAULT["train"]}) - overridden - {"train.job"}
    expected |= {"real.vit_patch", "real.epochs", "real.base_lr", "real.batch_size"}
    assert {k for k in reads if "." in k} - overridden <= expected
    assert set(pipeline.REAL_TRAIN_PARAMS) == expected


# ----------------------------------------------------------------------------- stages and dvc.yaml


def test_real_stage_names_commands_and_outputs():
    params = load_params(REPO / "params.yaml")
    jobs = [(s, f) for s, f in pipeline.instances(params) if s not in pipeline.STAGES + pipeline.STABLE_STAGES]
    names = [pipeline.dvc_stage_name(s, f) for s, f in jobs]
    assert names[0] == "prepare_real" and names[-1] == "report_real"
    assert "train_real_A@0.75-0" in names and "train_real_B@8-0" in names and "evaluate_real_B@16-1" in names
    assert len(set(names)) == len(names)
    f = pipeline.cell_fields(0.75, 8, 0)
    outs_a = [o.path for o in pipeline.outputs("train_real_A", f)]
    outs_b = [o.path for o in pipeline.outputs("train_real_B", f)]
    assert outs_a == ["models_real/A/r0.75_u8_s0/checkpoint.pt", "models_real/A/r0.75_u8_s0/train_log.csv"]
    assert outs_b[0] == "models_real/B/r0.75_u8_s0/checkpoint.pt"
    # every command parses with the CLI, so the two tools run real steps
    for stage, fields in jobs:
        argv = shlex.split(pipeline.command(stage, fields))[3:]
        args = cli.build_parser().parse_args(argv)
        assert cli.STEPS[args.step] is pipeline.STAGE[stage].step
        assert_runner_exists(cli.STEPS[args.step].runner)
    # review artifacts stay in git; data and checkpoints are cached
    report = pipeline.outputs("report_real")
    # the figures are plots; Table 1 and its JSONs stay out of DVC metrics (results/headline.json)
    assert all(not o.cache for o in report) and {o.kind for o in report} == {"outs", "plots"}
    assert pipeline.outputs("prepare_real")[0].cache and pipeline.outputs("train_real_A", f)[0].cache
    # real checkpoints live outside the folder the synthetic figures stage depends on
    assert not paths.REAL_MODELS_DIR.startswith(paths.MODELS_DIR + "/")


def test_user_data_path_is_a_dep_of_prepare_real(tmp_path):
    params = with_real(dataset="npz", path="data/raw/../raw/mine.npz")
    assert pipeline.input_files("prepare_real", None, params) == ["data/raw/mine.npz"]
    stage = yaml.safe_load(pipeline.dvc_yaml(params))["stages"]["prepare_real"]
    assert "data/raw/mine.npz" in stage["deps"]
    assert pipeline.input_files("prepare_real", None, load_params(REPO / "params.yaml")) == []


def test_dvc_yaml_follows_the_stage_set_and_stale_ones_are_refused(tmp_path, monkeypatch):
    on = with_real()  # the shipped real section, without the stability set (tested in test_pipeline)
    off = with_real(enabled=False)
    text_off = pipeline.dvc_yaml(off)
    assert set(yaml.safe_load(text_off)["stages"]) == set(pipeline.STAGES) - {"train_seed"}
    # values other than the stage set reach DVC through ${...}: no regeneration needed
    assert pipeline.dvc_yaml(with_real(epochs=1, mask_ratios=[0.5, 0.75], seeds=[3])) == pipeline.dvc_yaml(on)
    monkeypatch.chdir(tmp_path)
    pipeline.check_dvc_yaml(off)  # no dvc.yaml: nothing to compare
    Path("dvc.yaml").write_text(pipeline.dvc_yaml(on))
    pipeline.check_dvc_yaml(on)
    with pytest.raises(ParamsError, match=r"^dvc.yaml is stale for params.yaml .*`make dvc-yaml`$"):
        pipeline.check_dvc_yaml(off)
    with pytest.raises(ParamsError, match="stale"):
        pipeline.check_dvc_yaml(with_real(sweep="grid", mask_ratios=[0.5, 0.75]))
    # under DVC, a step refuses to run against a stale dvc.yaml; outside DVC it runs
    monkeypatch.setenv("DVC_STAGE", "train")
    with pytest.raises(ParamsError, match="stale"), glue.step_hooks("train", off, []):
        pass
    monkeypatch.delenv("DVC_STAGE")
    with glue.step_hooks("train", off, []):
        pass


def test_snakemake_refuses_a_stale_dvc_yaml_and_both_tools_drop_the_track(tmp_path):
    root = copy_repo(tmp_path)
    sh(root, *GIT, "init", "-q")
    edit_params(root, real__enabled=False)
    proc = sh(root, "snakemake", "-n", check=False)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "dvc.yaml is stale" in line]
    assert len(errors) == 1 and errors[0].startswith("error: dvc.yaml is stale")
    (root / "dvc.yaml").write_text(sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml").stdout)
    sm, dv = snakemake_jobs(root), dvc_jobs(root)
    assert sm == dv
    assert not any(p.startswith(("models_real", "results/real", "data/real")) for outs in dv for p in outs)


def test_grid_sweep_and_user_folder_same_jobs_in_both_tools(tmp_path):
    root = copy_repo(tmp_path)
    sh(root, *GIT, "init", "-q")
    (root / "images" / "a").mkdir(parents=True)
    edit_params(root, real__sweep="grid", real__mask_ratios=[0.5, 0.75], real__mask_units=[4, 8], real__seeds=[0],
                real__dataset="folder", real__path="images")
    (root / "dvc.yaml").write_text(sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml").stdout)
    sm, dv = snakemake_jobs(root), dvc_jobs(root)
    assert sm == dv
    real = {outs for outs in dv if outs[0].startswith("models_real/G/")}
    assert len(real) == 4
    assert any("--sweep G --mask-ratio 0.75 --mask-unit 8 --seed 0" in cmd for cmd in dv.values())


# ----------------------------------------------------------------------------- the report's sweeps


def test_shared_cell_counts_once_per_sweep_in_table_and_figures():
    rows = [
        {"mask_ratio": 0.5, "mask_unit": 8, "sweep_tag": "A"},
        {"mask_ratio": 0.75, "mask_unit": 8, "sweep_tag": "A"},
        {"mask_ratio": 0.75, "mask_unit": 8, "sweep_tag": "B"},
        {"mask_ratio": 0.75, "mask_unit": 4, "sweep_tag": "B"},
    ]
    df = pd.DataFrame(rows)
    where = {"sweep_a_unit": 8, "sweep_b_ratio": 0.75}
    assert tables.sweep_part(df, "A", **where).index.tolist() == [0, 1]
    assert tables.sweep_part(df, "B", **where).index.tolist() == [2, 3]
    untagged = df.drop(columns="sweep_tag")
    assert tables.sweep_part(untagged, "A", **where).index.tolist() == [0, 1, 2]
    cells = {"A": [(0.5, 8, 0), (0.75, 8, 0), (0.75, 8, 1)], "B": [(0.75, 4, 0), (0.75, 8, 0)]}
    assert report.figure_cells(cells, 0) == [("A", 0.5, 8), ("A", 0.75, 8), ("B", 0.75, 4)]


def test_table1_tagged_results_do_not_double_count_seeds():
    def result(sweep, ratio, unit, seed, acc):
        per_set = {name: acc for name in shifts.TEST_SETS}
        return {"sweep": sweep, "mask_ratio": ratio, "mask_unit": unit, "vit_patch": 4, "seed": seed,
                "linear_cls": per_set, "linear_mean": per_set, "knn_cls": per_set}

    results = [result("A", r, 8, s, 10 * r + s) for r in (0.5, 0.75) for s in (0, 1)]
    results += [result("B", 0.75, u, s, u + s) for u in (4, 8) for s in (0, 1)]
    table = tables.table1_frame(results, sweep_a_unit=8, sweep_b_ratio=0.75)
    assert table.n_seeds.tolist() == [2, 2, 2, 2]
    a75 = table[(table.sweep == "A") & (table.mask_ratio == 0.75)].iloc[0]
    assert np.isclose(a75["ours clean"], 8.0)  # (7.5 + 8.5) / 2: the B rows are not mixed in


def test_train_real_seed_writes_every_cell_of_the_sweep_and_seed_as_train_real_would(tmp_path, monkeypatch):
    """train.job: seed groups a real sweep's cells of one seed in one job; on the CPU each
    checkpoint is byte-identical to the one-cell job's (on a GPU they share it, docs/gpu.md)."""
    monkeypatch.chdir(tmp_path)
    raw = copy.deepcopy(DEFAULT)
    raw.pop("stability", None)
    raw["train"].update(job="seed", device="cpu")
    raw["real"].update(dataset="digits", image_size=8, fit="resize", n_train=64, n_test=40, vit_patch=2,
                       mask_ratios=[0.25, 0.5], mask_units=[2, 4], sweep_a_unit=4, sweep_b_ratio=0.5,
                       seeds=[0, 1], epochs=2, batch_size=32)
    Path("params.yaml").write_text(yaml.safe_dump(raw))
    assert cli.main(["prepare-real", "--out", "real.npz"]) == 0
    assert cli.main(["train-real-seed", "--data", "real.npz", "--sweep", "A", "--seed", "1",
                     "--models-dir", "grouped"]) == 0
    made = sorted(str(p.parent.relative_to("grouped")) for p in Path("grouped").glob("*/*/checkpoint.pt"))
    assert made == ["A/r0.25_u4_s1", "A/r0.5_u4_s1"]
    assert cli.main(["train-real", "--data", "real.npz", "--sweep", "A", "--mask-ratio", "0.5", "--mask-unit", "4",
                     "--seed", "1", "--out-dir", "alone"]) == 0
    for name in ("checkpoint.pt", "train_log.csv"):
        assert Path("alone", name).read_bytes() == Path("grouped/A/r0.5_u4_s1", name).read_bytes()
    # a seed the sweep does not have is one line, before any training
    assert cli.main(["train-real-seed", "--data", "real.npz", "--sweep", "B", "--seed", "7"]) == 2
    # the stage table: per (sweep, seed) under train.job: seed, per cell otherwise
    params = load_params("params.yaml")
    names = {pipeline.dvc_stage_name(s, f) for s, f in pipeline.instances(params)}
    assert {"train_real_seed_A@0", "train_real_seed_A@1", "train_real_seed_B@0", "train_real_seed_B@1"} <= names
    assert not any(n.startswith("train_real_A@") for n in names)
    outs = [o.path for o in pipeline.outputs("train_real_seed_B", pipeline.seed_fields(1), params)]
    assert outs == ["models_real/B/r0.5_u2_s1/checkpoint.pt", "models_real/B/r0.5_u2_s1/train_log.csv",
                    "models_real/B/r0.5_u4_s1/checkpoint.pt", "models_real/B/r0.5_u4_s1/train_log.csv"]
