"""The pipeline wiring: dvc.yaml is generated, Snakemake and DVC run the same DAG and agree.

Fast tests check the definitions; the ``slow`` tests run the whole DAG on a tiny params
override in a temporary git + DVC repository, with both tools, through edit sequences.
"""

from __future__ import annotations

import ast
import dataclasses
import filecmp
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from helpers import (
    GIT,
    REPO,
    TINY_REAL_JOBS,
    TINY_REAL_STABLE_JOBS,
    assert_agree_up_to_date,
    assert_runner_exists,
    commit,
    copy_repo,
    dvc_jobs,
    dvc_stale,
    dvc_would_run,
    edit_params,
    init_repo,
    plan_of_stages,
    sh,
    snakemake_jobs,
    snakemake_plan,
    tiny_params,
    tracked_outputs,
)

from mae_hlvm.core import paths
from mae_hlvm.core.cells import cell_id, real_sweep_cells
from mae_hlvm.core.config import load_params
from mae_hlvm.workflow import glue, pipeline, receipts

# ----------------------------------------------------------------------------- fast


def test_committed_dvc_yaml_is_the_generated_one():
    assert (REPO / "dvc.yaml").read_text() == pipeline.dvc_yaml(load_params(REPO / "params.yaml")), (
        "dvc.yaml is stale: make dvc-yaml"
    )


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/gpu/params.yaml"])
def test_rule_all_names_only_what_no_job_reads(profile):
    # rule all's inputs are printed in full at the end of a run: only the final outputs,
    # from which every other output is reachable through the jobs' inputs
    params = load_params(REPO / profile)
    everything, final = pipeline.all_outputs(params), pipeline.final_outputs(params)
    producer = {o.path: (stage, f) for stage, f in pipeline.instances(params) for o in pipeline.outputs(stage, f, params)}
    reached, todo = set(), list(final)
    while todo:
        path = todo.pop()
        if path in reached:
            continue
        reached.add(path)
        stage, f = producer[path]
        todo += [o.path for o in pipeline.outputs(stage, f, params)]  # a job makes all of its outputs
        todo += [p for p in pipeline.input_files(stage, f, params) if p in producer]
    assert reached == set(everything)
    assert set(final) < set(everything) and len(final) <= len(everything) // 4
    assert "results/summary.md" in final and not any(p.endswith("checkpoint.pt") for p in final)


@pytest.mark.parametrize("r,p,s", [(0.1, 2, 0), (0.25, 4, 1), (0.75, 6, 12), (0.9, 8, 3), (1 / 3, 2, 0)])
def test_cell_names_spell_floats_like_config_and_dvc(r, p, s):
    f = pipeline.cell_fields(r, p, s)
    assert pipeline.cell_name(f) == cell_id(r, p, s)
    assert pipeline.dvc_stage_name("train", f) == f"train@{r!r}-{p}-{s}"


def _params_reads(module: Path) -> set[str]:
    """Params keys a module reads: ``params.<section>[.<key>]`` and section_dict(params, [...])."""
    tree = ast.parse(module.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value
            if isinstance(inner.value, ast.Name) and inner.value.id == "params":
                found.add(f"{inner.attr}.{node.attr}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "params":
            found.add(node.attr)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "section_dict":
            found.update(ast.literal_eval(node.args[1]))
    sections = {"data", "model", "train", "probe", "grid"}
    return {k for k in found if k.split(".")[0] in sections}


@pytest.mark.parametrize("stage", pipeline.STAGES)
def test_stage_params_cover_what_the_step_module_reads(stage):
    declared = pipeline.STAGE_PARAMS[stage]
    module = pipeline.module_path(pipeline.STAGE[stage].module)
    reads = _params_reads(module)
    assert reads, f"found no params access in {module.name}; the scanner is broken"
    uncovered = {k for k in reads if k not in declared and k.split(".")[0] not in declared}
    # a bare section read (``params.grid``) only counts when the step passes it on whole
    uncovered = {k for k in uncovered if "." in k or not any(d.startswith(k + ".") for d in declared)}
    assert not uncovered, f"{stage} reads {sorted(uncovered)} but STAGE_PARAMS lists {declared}"


def test_every_synthetic_and_review_command_parses_and_runs_its_module():
    from mae_hlvm.workflow import cli

    params = load_params(REPO / "params.yaml")
    jobs = [(s, f) for s, f in pipeline.instances(params) if s in pipeline.STAGES]
    assert {s for s, _ in jobs} == set(pipeline.STAGES) - {"train_seed"}  # train.job: cell
    for stage, f in jobs:
        args = cli.build_parser().parse_args(shlex.split(pipeline.command(stage, f))[3:])
        assert cli.STEPS[args.step] is pipeline.STAGE[stage].step
        assert_runner_exists(cli.STEPS[args.step].runner)
    names = [pipeline.dvc_stage_name(s, f) for s, f in jobs if s == "baseline"]
    assert names == [f"baseline@{s}" for s in params.grid.seeds]
    assert pipeline.log_path("baseline", pipeline.seed_fields(3)) == "logs/baseline/s3.log"


def test_review_stages_read_the_real_keys_only_when_the_track_is_on():
    on = load_params(REPO / "params.yaml")
    off = on.model_copy(update={"real": on.real.model_copy(update={"enabled": False}),
                                "stability": on.stability.model_copy(update={"enabled": False})})
    assert pipeline.stage_param_keys("claims", off) == ("data.depth", "probe.pooling")
    assert set(pipeline.stage_param_keys("claims", on)) == {"data.depth", "probe.pooling", *pipeline.REAL_SWEEP_PARAMS, "stability"}
    assert "real" in pipeline.stage_param_keys("summary", on) and "real" not in pipeline.stage_param_keys("summary", off)
    assert "real.seeds" in pipeline.stage_params(on, "claims")
    real_files = [p for p in pipeline.input_files("claims", None, on) if p.startswith("results/real/cells/")]
    assert len(real_files) == len(pipeline.stage_cells("evaluate_real_A", on)) + len(pipeline.stage_cells("evaluate_real_B", on))
    stable_files = [p for p in pipeline.input_files("claims", None, on) if "cells_stable/" in p]
    assert len(stable_files) == sum(len(pipeline.stage_cells(s, on)) for s in
                                    ("probe_stable", "evaluate_real_stable_A", "evaluate_real_stable_B"))
    assert pipeline.input_files("claims", None, off) == ["results/metrics.csv", "results/baselines.csv", "data/prediction.json"]
    assert "results/real/table1.md" in pipeline.input_files("summary", None, on)
    assert not any(p.startswith("results/real") for p in pipeline.input_files("summary", None, off))
    # the baseline is seeded per job and does not read the grid: grid edits leave it alone
    assert "grid" not in {k.split(".")[0] for k in pipeline.stage_param_keys("baseline", on)}


def test_code_deps_follow_imports_and_skip_the_schema():
    deps = pipeline.code_deps("probe")
    assert "src/mae_hlvm/synthetic/probe.py" in deps and "src/mae_hlvm/core/model.py" in deps
    assert not {"src/mae_hlvm/core/config.py", "src/mae_hlvm/workflow/cli.py", "src/mae_hlvm/review/figures.py"} & set(deps)
    assert "src/mae_hlvm/review/figures.py" not in pipeline.code_deps("train")


def test_subpackages_hold_no_code_in_their_init_and_no_module_imports_relatively():
    """The scanner skips __init__.py and reads absolute imports only: code in a subpackage's
    __init__ or a relative import would escape the code deps (so edits would rerun nothing)."""
    import ast

    src = REPO / "src" / "mae_hlvm"
    inits = sorted(src.glob("*/__init__.py"))
    assert {p.parent.name for p in inits} == {"core", "synthetic", "real", "review", "workflow"}
    for init in inits:
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), init
    for module in src.rglob("*.py"):
        relative = [n.lineno for n in ast.walk(ast.parse(module.read_text())) if isinstance(n, ast.ImportFrom) and n.level]
        assert not relative, f"{module}: relative import at line(s) {relative}"


def test_code_deps_reach_modules_imported_by_name_from_a_subpackage():
    # `from mae_hlvm.core import io, paths` names modules; `from mae_hlvm.core.io import x` a module's name
    assert pipeline._imports_of("synthetic.train_seed") >= {"core.io", "core.paths", "core.train", "core.config"}
    assert "src/mae_hlvm/core/train.py" in pipeline.code_deps("train_seed")
    assert not [d for d in pipeline.code_deps("train_seed") if d.startswith("src/mae_hlvm/workflow/")]


def test_params_file_rewritten_only_when_its_content_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    assert glue.write_params_file(params, "train") is True
    path = Path(paths.params_file("train"))
    os.utime(path, ns=(1, 1))
    assert glue.write_params_file(params, "train") is False
    assert path.stat().st_mtime_ns == 1
    changed = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 99})})
    assert glue.write_params_file(changed, "train") is True
    assert json.loads(path.read_text())["params"]["train"]["epochs"] == 99
    # the grid is not read by train: a grid edit leaves train's file alone
    regrid = changed.model_copy(update={"grid": params.grid.model_copy(update={"seeds": [7]})})
    assert glue.write_params_file(regrid, "train") is False
    # an edited stage record (its command) rewrites the file too: DVC reruns on a changed cmd, so must Snakemake
    record = pipeline.STAGE["train"]
    monkeypatch.setitem(pipeline.STAGE, "train", dataclasses.replace(record, args=lambda f: record.args(f) + " --extra"))
    assert glue.write_params_file(regrid, "train") is True
    assert json.loads(path.read_text())["rule"]["command"].endswith("--extra --log logs/train/r{wildcards.mask_ratio}"
                                                                     "_u{wildcards.mask_unit}_s{wildcards.seed}.log")


def test_receipt_written_for_canonical_command_only_and_invalidated_by_edits(tmp_path, monkeypatch):
    shutil.copytree(REPO / "src", tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    params = load_params(REPO / "params.yaml")
    f = pipeline.grid_cells(params)[0]
    for p in pipeline.input_files("train", f) + [o.path for o in pipeline.outputs("train", f)]:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_bytes(p.encode())
    argv = shlex.split(pipeline.command("train", f))[3:]
    with glue.step_hooks("train", params, argv + ["--params", "other.yaml"]):
        pass
    assert not Path(paths.RECEIPTS_DIR).exists(), "a non-canonical command must leave no receipt"
    monkeypatch.setenv("DVC_STAGE", "train@x")
    with glue.step_hooks("train", params, argv):
        pass
    assert not Path(paths.RECEIPTS_DIR).exists(), "DVC records its own runs"
    monkeypatch.delenv("DVC_STAGE")
    with glue.step_hooks("train", params, argv):
        pass
    name = pipeline.dvc_stage_name("train", f)
    assert Path(paths.receipt(name)).exists()
    assert receipts._valid_receipts(params)[0] == [name]
    edited = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 99})})
    assert receipts._valid_receipts(edited)[0] == [], "a params edit must invalidate the receipt"
    Path(pipeline.outputs("train", f)[0].path).write_bytes(b"changed")
    assert receipts._valid_receipts(params)[0] == [], "a changed output must invalidate the receipt"


def test_commit_targets_name_whole_foreach_groups_once():
    params = load_params(REPO / "params.yaml")
    names = [pipeline.dvc_stage_name(s, f) for s, f in pipeline.instances(params)]
    train = [n for n in names if n.startswith("train@")]
    probe = [n for n in names if n.startswith("probe@")]
    picked = ["generate", *train, *probe[:2], "baseline@0"]
    targets = receipts.commit_targets(picked, params)
    # one dvc.lock rewrite for the whole train group; incomplete groups stay per cell
    assert targets == ["generate", "train", *probe[:2], "baseline@0"]
    assert receipts.commit_targets([], params) == []


def test_drift_default_grid_same_outputs_and_commands():
    sm, dv = snakemake_jobs(REPO), dvc_jobs(REPO)
    params = load_params(REPO / "params.yaml")
    real = params.real
    assert real.enabled and real.sweep == "AB", "the default params run both real sweeps"
    # prepare + report, and train + evaluate per cell of each sweep (the shared cell twice)
    n_real = 2 + 2 * len(real.seeds) * (len(real.mask_ratios) + len(real.mask_units))
    # generate, predict, aggregate, figures, claims, summary; train + probe per cell; one baseline per seed;
    # one oracle table per (ratio, unit)
    n_synthetic = (6 + 2 * len(pipeline.grid_cells(params)) + len(params.grid.seeds)
                   + len(params.grid.mask_ratios) * len(params.grid.mask_units))
    # the stability set: train_stable + probe_stable per synthetic cell, train + evaluate per real sweep's cell
    st = params.stability
    assert st.enabled and st.real
    n_stable = 2 * len(st.mask_ratios) * len(st.mask_units) + 2 * (len(real.mask_ratios) + len(real.mask_units))
    assert len(dv) == n_synthetic + n_stable + n_real
    assert sm == dv
    review = {outs: cmd for outs, cmd in dv.items() if " claims " in cmd or " summary " in cmd}
    assert set(review) == {
        ("results/claims.json", "results/claims.md", "results/stability.csv"),
        ("results/headline.json", "results/metrics.tex", "results/summary.md"),
    }
    assert ("models_stable/r0.5_u2_s0/checkpoint.pt", "models_stable/r0.5_u2_s0/train_log.csv") in dv
    assert ("models_real_stable/B/r0.75_u16_s0/checkpoint.pt", "models_real_stable/B/r0.75_u16_s0/train_log.csv") in dv
    assert "--stability" in dv[("models_real_stable/B/r0.75_u16_s0/checkpoint.pt", "models_real_stable/B/r0.75_u16_s0/train_log.csv")]


def test_drift_edited_grid_same_outputs_and_commands(tmp_path):
    root = copy_repo(tmp_path)
    sh(root, *GIT, "init", "-q")
    edit_params(root, grid__mask_ratios=[0.3, 0.6], grid__mask_units=[4], grid__seeds=[5, 6],
                stability__mask_ratios=[0.6], stability__mask_units=[4], stability__seed=6, stability__real=False)
    (root / "dvc.yaml").write_text(pipeline.dvc_yaml(load_params(root / "params.yaml")))  # stability.real decides stages
    sm, dv = snakemake_jobs(root), dvc_jobs(root)
    assert ("models/r0.3_u4_s5/checkpoint.pt", "models/r0.3_u4_s5/train_log.csv") in dv
    assert ("models_stable/r0.6_u4_s6/checkpoint.pt", "models_stable/r0.6_u4_s6/train_log.csv") in dv
    assert ("results/baselines/s6.json",) in dv and "--seed 6 --out results/baselines/s6.json" in dv[("results/baselines/s6.json",)]
    assert not any(o.startswith("models_real_stable/") for outs in dv for o in outs), "stability.real off"
    # generate, predict, aggregate, figures, claims, summary; train + probe per cell; a baseline per seed;
    # train_stable + probe_stable; and the real track's jobs
    n_real = len(pipeline.instances(load_params(root / "params.yaml"))) - 6 - 2 * 4 - 2 - 2
    assert len(dv) == 6 + 2 * 4 + 2 + 2 + n_real
    assert sm == dv


def test_drift_train_job_per_seed_same_outputs_and_commands(tmp_path):
    # train.job: seed replaces the train stage by one job per seed with every cell of it
    root = copy_repo(tmp_path)
    sh(root, *GIT, "init", "-q")
    edit_params(root, train__job="seed")
    (root / "dvc.yaml").write_text(pipeline.dvc_yaml(load_params(root / "params.yaml")))
    sm, dv = snakemake_jobs(root), dvc_jobs(root)
    assert sm == dv
    params = load_params(root / "params.yaml")
    per_seed = {outs: cmd for outs, cmd in dv.items() if " train-seed " in cmd and "--stability" not in cmd}
    assert len(per_seed) == len(params.grid.seeds)
    # the stability set likewise: one job with every stability cell, and one per real sweep
    stable = {outs: cmd for outs, cmd in dv.items() if "--stability" in cmd and " train-" in cmd}
    assert {cmd.split()[3] for cmd in stable.values()} == {"train-seed", "train-real-seed"} and len(stable) == 3
    stable_seed = next(outs for outs, cmd in stable.items() if " train-seed " in cmd)
    assert len(stable_seed) == 2 * len(params.stability.mask_ratios) * len(params.stability.mask_units)
    cells = len(params.grid.mask_ratios) * len(params.grid.mask_units)
    for outs, cmd in per_seed.items():
        seed = cmd.split("--seed ")[1].split()[0]
        assert len(outs) == 2 * cells and all(f"_s{seed}/" in o for o in outs)
    assert not any(" mae_hlvm train " in cmd for cmd in dv.values())
    # the real track likewise: one job per sweep and seed, with every cell of both
    real_cells = real_sweep_cells(params.real)
    per_real_seed = {outs: cmd for outs, cmd in dv.items() if " train-real-seed " in cmd and "--stability" not in cmd}
    assert len(per_real_seed) == len(real_cells) * len(params.real.seeds)
    for outs, cmd in per_real_seed.items():
        sweep, seed = cmd.split("--sweep ")[1].split()[0], cmd.split("--seed ")[1].split()[0]
        want = [c for c in real_cells[sweep] if str(c[2]) == seed]
        assert len(outs) == 2 * len(want) and all(o.startswith(f"models_real/{sweep}/") and f"_s{seed}/" in o for o in outs)
    assert not any(" mae_hlvm train-real " in cmd for cmd in dv.values())
    n_real = sum(len(c) for c in real_cells.values())
    n_stable = len(params.stability.mask_ratios) * len(params.stability.mask_units) + len(params.real.mask_ratios) + len(
        params.real.mask_units)  # the stability set's per-cell train jobs, replaced by 3 seed jobs
    assert len(dv) == (len(pipeline.instances(load_params(REPO / "params.yaml"))) - len(pipeline.grid_cells(params))
                       + len(params.grid.seeds) - n_real + len(per_real_seed) - n_stable + 3)


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_snakemake_then_dvc_sequences_and_replay(tmp_path):
    root = copy_repo(tmp_path / "repo")
    remote = tmp_path / "remote"
    tiny_params(root)
    init_repo(root, remote)

    # Snakemake runs everything; DVC then sees it all as up to date
    run = sh(root, "snakemake", "--cores", "2")
    assert_agree_up_to_date(root)
    # one overall line per finished job (mae_hlvm.workflow.progress), the last with every job done
    n = len(pipeline.instances(load_params(root / "params.yaml")))
    assert f"run: {n} jobs planned" in run.stderr and f"run: {n} of {n} jobs done, ETA 0m00s" in run.stderr
    # the review stages saw both tracks and the baselines
    claims = json.loads((root / "results/claims.json").read_text())["claims"]
    assert {"C0_u2", "C1_u2", "C4_sweepA"} <= set(claims)
    summary = (root / "results/summary.md").read_text()
    assert "## Real-image track: Table 1" in summary and "](real/figures/fig8_tsne.png)" in summary
    assert "| random_init |" in summary and "| pixels |" in summary
    assert "## The stability set" in summary and "| synthetic |  | 0.25 | 2 | 0 |" in summary
    stability = (root / "results/stability.csv").read_text().splitlines()
    assert stability[0].startswith("track,sweep,mask_ratio,mask_unit,seed") and len(stability) == 1 + 2 + 3
    assert all(c["budget_factor"] == 2 for c in claims.values() if c.get("effect_1x") is not None)

    # adding a ratio: only the new cell's train/probe and its (ratio, unit) oracle table, the
    # theorem's prediction (it covers the grid's cells), plus aggregate and figures, in both tools
    edit_params(root, grid__mask_ratios=[0.25, 0.5, 0.75])
    want = {"predict", "train@0.75-2-0", "probe@0.75-2-0", "oracles@0.75-2", "aggregate", "figures", "claims",
            "summary"}
    assert dvc_stale(root) == want - {"claims"}  # it reads no grid key; its inputs change downstream
    assert dvc_would_run(root) == want
    assert snakemake_plan(root) == plan_of_stages(want)
    sh(root, "dvc", "repro")
    assert_agree_up_to_date(root)

    # a value every cell reads (of both tracks): every cell reruns in both tools, the data do not
    edit_params(root, train__weight_decay=0.04)
    cells = ["0.25-2-0", "0.5-2-0", "0.75-2-0"]
    real = TINY_REAL_JOBS | {j.replace("train_", "evaluate_") for j in TINY_REAL_JOBS} | {"report_real"}
    stable_cells = ["0.25-2", "0.5-2"]  # the stability set too, both tracks
    real_stable = TINY_REAL_STABLE_JOBS | {j.replace("train_", "evaluate_") for j in TINY_REAL_STABLE_JOBS}
    stable = {f"{s}_stable@{c}" for s in ("train", "probe") for c in stable_cells} | real_stable
    want = ({f"{s}@{c}" for s in ("train", "probe") for c in cells} | {"aggregate", "figures", "claims", "summary"}
            | real | stable)
    # params read directly (the summary prints every section)
    assert dvc_stale(root) == (
        {f"train@{c}" for c in cells} | {f"train_stable@{c}" for c in stable_cells} | {"figures", "summary"}
        | TINY_REAL_JOBS | TINY_REAL_STABLE_JOBS
    )
    assert dvc_would_run(root) == want
    assert snakemake_plan(root) == plan_of_stages(want)
    sh(root, "snakemake", "--cores", "2")
    assert_agree_up_to_date(root)

    # a key only the real report reads (and the summary prints): those two stages, in both tools
    edit_params(root, real__tsne_points=10)
    assert dvc_stale(root) == dvc_would_run(root) == {"report_real", "summary"}
    assert snakemake_plan(root) == {"report_real": 1, "summary": 1}
    sh(root, "snakemake", "--cores", "2")
    assert_agree_up_to_date(root)
    # the cell both real sweeps train: two processes, one set of bytes
    assert filecmp.cmp(root / "models_real/A/r0.5_u4_s0/checkpoint.pt", root / "models_real/B/r0.5_u4_s0/checkpoint.pt", shallow=False)

    # full replay: push, fresh clone, pull restores every artifact byte for byte
    commit(root, "results")
    sh(root, "dvc", "push", "-q")
    clone = tmp_path / "clone"
    sh(tmp_path, *GIT, "clone", "-q", str(root), str(clone))
    sh(clone, "dvc", "pull", "-q")
    for rel in tracked_outputs(root):
        assert filecmp.cmp(root / rel, clone / rel, shallow=False), f"{rel} differs after dvc pull"
    assert dvc_stale(clone) == set()
    sh(clone, sys.executable, "-m", "mae_hlvm.workflow.sync")
    assert_agree_up_to_date(clone)
    assert any(rel.startswith("results/real/") for rel in tracked_outputs(root)), "the real track must be replayed too"
