"""The label every log line of a job carries (``cli.job_label``, issue 13 "every log line of a
job names its cell"): built from the job's own command line, it names the cell (or seed, and
the real track's sweep), so two jobs' interleaved lines stay apart."""

from __future__ import annotations

import shlex

import pytest
from helpers import REPO

from mae_hlvm.core.config import load_params
from mae_hlvm.workflow.cli import build_parser, job_label
from mae_hlvm.workflow.matrices import cell_name
from mae_hlvm.workflow.pipeline import STAGE, command, instances


def label(argv: str) -> str:
    return job_label(build_parser().parse_args(shlex.split(argv)))


@pytest.mark.parametrize(("argv", "expected"), [
    ("train --mask-ratio 0.5 --mask-unit 2 --seed 0 --out-dir models/r0.5_u2_s0", "train r0.5_u2_s0"),
    ("probe --checkpoint models/r0.75_u4_s1/checkpoint.pt --out results/cells/r0.75_u4_s1.json "
     "--recon results/cells/r0.75_u4_s1.recon.npz", "probe models/r0.75_u4_s1"),
    ("train-seed --seed 2", "train-seed s2"),
    ("baseline --seed 1 --out results/baselines/s1.json", "baseline s1"),
    ("train-real --sweep B --mask-ratio 0.75 --mask-unit 8 --seed 0 --out-dir models_real/B/r0.75_u8_s0",
     "train-real B/r0.75_u8_s0"),
    ("train-real-seed --sweep A --seed 0", "train-real-seed A/s0"),
    ("train-real-seed --sweep B --seed 0", "train-real-seed B/s0"),
    ("evaluate-real --sweep A --checkpoint models_real/A/r0.1_u8_s0/checkpoint.pt --out results/real/cells/A/x.json",
     "evaluate-real A/r0.1_u8_s0"),
    ("aggregate", "aggregate"),
])
def test_a_jobs_label_names_its_cell(argv, expected):
    assert label(argv) == expected


def every_job(job: str) -> list[tuple[str, dict | None, str]]:
    """(stage, fields, label) of every job the stage table runs under params.yaml with
    ``train.job`` set to ``job``, each label built from the job's own command."""
    params = load_params(REPO / "params.yaml")
    params = params.model_copy(update={"train": params.train.model_copy(update={"job": job})})
    out = []
    for stage, f in instances(params):
        argv = shlex.split(command(stage, f))
        assert argv[:3] == ["python", "-m", "mae_hlvm"]
        out.append((stage, f, job_label(build_parser().parse_args(argv[3:]))))
    return out


@pytest.mark.parametrize("job", ["cell", "seed"])
def test_every_job_of_the_pipeline_has_its_own_label_naming_its_cell(job):
    jobs = every_job(job)
    stages = {stage for stage, _, _ in jobs}
    assert ("train_seed" in stages) == (job == "seed") and ("train" in stages) == (job == "cell")
    if job == "seed":
        assert any(s.startswith("train_real_seed_") for s in stages), stages
    labels = [lab for _, _, lab in jobs]
    assert len(set(labels)) == len(labels), sorted(lab for lab in labels if labels.count(lab) > 1)
    for stage, f, lab in jobs:
        record = STAGE[stage]
        assert lab.split()[0] == record.step.name
        if f is None:
            continue
        where = lab.split()[1]
        if record.matrix.per_seed:
            assert where.endswith(f"s{f['seed']}"), (stage, lab)
        else:
            assert where.endswith(cell_name(f)), (stage, lab)
        if record.track == "real":
            sweep = stage.rsplit("_", 1)[1]
            assert where.startswith(f"{sweep}/"), (stage, lab)
