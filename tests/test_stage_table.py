"""The stage table (issue 14 item 1): every tool's view comes from one record per stage, so
adding a stage is one record plus one module. The slow test builds a tiny extra stage that
way in a copy of the repository and runs it through the CLI, Snakemake and DVC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import REPO, assert_runner_exists, copy_repo, init_repo, sh

from mae_hlvm.core.config import load_params
from mae_hlvm.core.provenance import digest
from mae_hlvm.workflow import cli, pipeline, stages


def test_records_are_complete_and_consistent():
    names = [s.name for s in stages.TABLE]
    assert len(set(names)) == len(names), "two records with one name"
    by_step: dict[str, stages.Step] = {}
    for record in stages.TABLE:
        # stages that share a step (probe and probe_stable, the real sweeps) share one Step record
        assert by_step.setdefault(record.step.name, record.step) is record.step, record.name
        assert_runner_exists(record.step.runner)
        assert record.track in ("synthetic", "stability", "real", "real_stability"), record.name
        assert record.mem_mb > 0 and (record.threads is None or record.threads >= 1)
    params = load_params(REPO / "params.yaml")
    for stage in pipeline.active_stages(params):
        pipeline.stage_params(params, stage)  # every key a record reads exists in the schema


def test_the_cli_the_snakefile_and_dvc_yaml_are_derived_from_the_table():
    assert {s.step.name for s in stages.TABLE} <= set(cli.STEPS)
    assert set(cli.STEPS) - {s.step.name for s in stages.TABLE} == {"check", "verify", "profile"}
    text = (REPO / "Snakefile").read_text()
    assert text.count("rule:") == 1 and "for _stage in pipeline.active_stages(P):" in text, "one rule, in one loop"
    params = load_params(REPO / "params.yaml")
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == list(pipeline.active_stages(params))
    for stage in dvc:
        record = pipeline.STAGE[stage]
        assert dvc[stage]["cmd"].startswith(f"python -m mae_hlvm {record.step.name} ")
        assert dvc[stage]["params"] == list(pipeline.stage_param_keys(stage, params))
        assert pipeline.module_file(record.module) in dvc[stage]["deps"]
        assert ("matrix" in dvc[stage]) == (record.matrix is not None)


def test_a_step_is_given_the_keys_its_stage_reads(tmp_path, monkeypatch):
    # The digests the steps stamp (the prediction's params_digest, the claims' stamp) cover the
    # keys the table says their stage reads, handed over by the command line (``args.reads``):
    # no step reads the table, which stands above them.
    for profile in ("params.yaml", "profiles/gpu/params.yaml"):
        params = load_params(REPO / profile)
        for step in {s.step.name for s in stages.TABLE}:
            keys = {pipeline.stage_param_keys(s.name, params) for s in stages.TABLE if s.step.name == step}
            # a training step is shared by the grid's run and the stability set's, which also reads
            # stability.budget_factor: those steps stamp no digest of what they read, and get None
            assert cli.stage_reads(step, params) == (keys.pop() if len(keys) == 1 else None), step
        for step in ("predict", "claims", "summary"):  # the steps that stamp a digest of what they read
            assert cli.stage_reads(step, params) is not None, step
        assert cli.stage_reads("check", params) is None
    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    assert cli.main(["predict", "--params", str(REPO / "params.yaml"), "--out", "prediction.json"]) == 0
    assert json.loads(Path("prediction.json").read_text())["params_digest"] == digest(pipeline.stage_params(params, "predict"))


def test_resources_follow_the_record():
    params = load_params(REPO / "params.yaml")
    assert pipeline.smk_resources("train", params) == {"gpu": int(pipeline.train_uses_gpu(params)), "mem_mb": 4000}
    assert pipeline.smk_resources("aggregate", params) == {"mem_mb": 2000}
    assert pipeline.smk_threads("probe", params) == params.train.threads and pipeline.smk_threads("summary", params) == 1
    report = dict(pipeline.smk_report("figures", params))
    assert report["results/figures/r2_vs_ratio.png"] == ("Figures", "report/r2_vs_ratio.rst")
    assert report["results/figures/r2_vs_ratio.pdf"] is None


# ----------------------------------------------------------------------------- a new stage

# What a newcomer adds: this record at the end of stages.py ...
EXTRA_RECORD = '''

# ---- added by tests/test_stage_table.py: a stage that counts the grid's cells
def _cell_count_args(p):
    p.add_argument("--out", required=True)
    p.add_argument("--times", type=int, default=1)


TABLE = TABLE + (
    Stage(
        name="cell_count",
        step=Step("cell-count", "mae_hlvm.review.cell_count", "count the grid's cells", _cell_count_args),
        reads=("grid",),
        args=lambda f: "--out results/cell_count.json",
        inputs=lambda f, params: [],
        outputs=lambda f, params: [Out("results/cell_count.json", cache=False)],
    ),
)
'''
# ... and this module.
EXTRA_MODULE = '''"""How many cells the grid has (a stage added by tests/test_stage_table.py)."""

from mae_hlvm.core.io import write_json


def run(params, args):
    g = params.grid
    write_json(args.out, {"cells": args.times * len(g.mask_ratios) * len(g.mask_units) * len(g.seeds)})
'''


@pytest.mark.slow
def test_a_stage_added_as_one_record_and_one_module_runs_in_both_tools(tmp_path):
    root = copy_repo(tmp_path / "repo")
    table = root / "src/mae_hlvm/workflow/stages.py"
    table.write_text(table.read_text() + EXTRA_RECORD)
    (root / "src/mae_hlvm/review/cell_count.py").write_text(EXTRA_MODULE)
    assert "count the grid's cells" in sh(root, "python", "-m", "mae_hlvm", "--help").stdout
    sh(root, "python", "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out", "dvc.yaml")
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["cell_count"]
    assert spec["cmd"] == "python -m mae_hlvm cell-count --out results/cell_count.json --log logs/cell_count/cell_count.log"
    assert spec["deps"] == ["src/mae_hlvm/core/io.py", "src/mae_hlvm/review/cell_count.py"] and spec["params"] == ["grid"]
    assert spec["outs"] == [{"results/cell_count.json": {"cache": False}}]
    init_repo(root)
    params = load_params(root / "params.yaml")
    want = {"cells": len(params.grid.mask_ratios) * len(params.grid.mask_units) * len(params.grid.seeds)}

    # Snakemake runs it from its rule, and its receipt puts it in dvc.lock: DVC agrees
    sh(root, "snakemake", "--cores", "1", "results/cell_count.json")
    out = root / "results/cell_count.json"
    assert json.loads(out.read_text()) == want
    made = out.read_bytes()
    assert "cell_count" in yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert json.loads(sh(root, "dvc", "status", "--json", "cell_count").stdout or "{}") == {}
    dry = sh(root, "snakemake", "-n", "results/cell_count.json")
    assert "Nothing to be done" in dry.stdout + dry.stderr

    # DVC runs the same command, to the same bytes, once its params change
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["grid"]["seeds"] = list(params.grid.seeds) + [max(params.grid.seeds) + 1]
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert "cell_count" in json.loads(sh(root, "dvc", "status", "--json", "cell_count").stdout)
    sh(root, "dvc", "repro", "--single-item", "cell_count")
    assert json.loads(out.read_text()) == {"cells": want["cells"] // len(params.grid.seeds) * (len(params.grid.seeds) + 1)}
    assert out.read_bytes() != made
    assert Path(root / "logs/cell_count/cell_count.log").exists()
    dry = sh(root, "snakemake", "-n", "results/cell_count.json")
    assert "Nothing to be done" in dry.stdout + dry.stderr, "DVC's run leaves Snakemake nothing to do"

    # an edited record (its command) is stale in both tools, and each rerun agrees with the other
    table.write_text(table.read_text().replace('"--out results/cell_count.json"', '"--out results/cell_count.json --times 2"'))
    sh(root, "python", "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out", "dvc.yaml")
    assert "cell_count" in json.loads(sh(root, "dvc", "status", "--json", "cell_count").stdout)
    dry = sh(root, "snakemake", "-n", "results/cell_count.json")
    assert "cell_count" in dry.stdout and "Nothing to be done" not in dry.stdout + dry.stderr
    sh(root, "snakemake", "--cores", "1", "results/cell_count.json")
    assert json.loads(out.read_text())["cells"] == 2 * want["cells"] // len(params.grid.seeds) * (len(params.grid.seeds) + 1)
    assert json.loads(sh(root, "dvc", "status", "--json", "cell_count").stdout or "{}") == {}
