"""Running the jobs without Snakemake or DVC (mae_hlvm.workflow.plainrun), then handing them to both tools."""

from __future__ import annotations

import sys

import pytest
from helpers import REPO, assert_agree_up_to_date, copy_repo, edit_params, init_repo, sh, tiny_params

from mae_hlvm.core.config import ParamsError, load_params
from mae_hlvm.workflow import pipeline, plainrun


def test_plan_covers_the_stage_table_and_orders_by_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no outputs here: every job is planned
    params = load_params(REPO / "params.yaml")
    jobs = plainrun.plan(params)
    assert len(jobs) == len(pipeline.instances(params))
    deps = plainrun.dependencies(jobs)
    probe = next(j for j in jobs if j.name == "probe@0.5-2-0")
    assert deps[probe.name] == {"generate", "train@0.5-2-0", "oracles@0.5-2"}
    assert all(j.argv[0] == sys.executable for j in jobs)
    with pytest.raises(ParamsError, match="probe@.* needs .*add its stage to --stages"):
        plainrun.dependencies(plainrun.plan(params, ["probe"]))
    with pytest.raises(ParamsError, match="nosuchstage"):
        plainrun.plan(params, ["nosuchstage"])


@pytest.mark.parametrize("params_file", ["params.yaml", "profiles/gpu/params.yaml"])
def test_a_device_run_brings_back_every_output_but_the_data(params_file):
    """ci/gpu/device-run.sh packs plainrun --pack-list: it once named a folder renamed away
    (models_long), and the stability set's checkpoints would have stayed on the device."""
    params = load_params(REPO / params_file)
    packed = plainrun.pack_list(params)
    outs = [o.path for stage, f in pipeline.instances(params) for o in pipeline.outputs(stage, f, params)]
    left = [o for o in outs if not any(o == p or o.startswith(p + "/") for p in packed)]
    assert left and all(o.startswith("data/") for o in left)  # regenerated where the run is adopted
    assert {"models_stable", "models_real_stable", ".pipeline/receipts", "logs"} <= set(packed)
    assert "$($PY -m mae_hlvm.workflow.plainrun --pack-list)" in (REPO / "ci/gpu/device-run.sh").read_text()


@pytest.mark.slow
def test_plainrun_then_receipts_make_both_tools_agree(tmp_path):
    root = copy_repo(tmp_path / "repo")
    tiny_params(root)
    edit_params(root, real__enabled=False, stability__enabled=False, train__epochs=2, train__job="seed")
    sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out", "dvc.yaml")
    init_repo(root)
    dry = sh(root, sys.executable, "-m", "mae_hlvm.workflow.plainrun", "-n").stdout
    assert "train_seed@0: " in dry and "train@" not in dry
    out = sh(root, sys.executable, "-m", "mae_hlvm.workflow.plainrun", "--cores", "2")
    assert "plainrun: 1/" in out.stderr and "ETA" in out.stderr
    # a second call finds nothing to run
    assert "0 jobs to run" in sh(root, sys.executable, "-m", "mae_hlvm.workflow.plainrun").stderr
    sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "commit-receipts")
    assert_agree_up_to_date(root)
    # adoption's re-stamp (ci/gpu/adopt.sh) touches every stage DVC finds current, upstream first
    code = "from mae_hlvm.workflow import sync; from mae_hlvm.core.config import load_params; print(len(sync.restamp_current(load_params('params.yaml'))))"
    n = int(sh(root, sys.executable, "-c", code).stdout)
    assert n == len(pipeline.instances(load_params(root / "params.yaml")))
    assert_agree_up_to_date(root)


def test_overall_progress_line_per_finished_job(tmp_path, monkeypatch):
    from mae_hlvm.workflow import progress

    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    total = len(pipeline.instances(params))
    assert progress.start(params, ["snakemake", "--cores", "2"]) == total  # nothing made yet: every job
    bench = tmp_path / pipeline.benchmark_path("generate", None)
    line = progress.job_done("generate")
    assert line.startswith(f"run: 1 of {total} jobs done, ETA ") and not bench.exists()
    assert progress.job_done("not-a-planned-job") is None
    assert progress.job_done("predict").startswith(f"run: 2 of {total} jobs done")
    # a run naming targets, forcing reruns or dry: Snakemake's DAG is not the plan, so no line
    for argv in (["snakemake", "--cores", "2", "results/metrics.csv"], ["snakemake", "-F", "--cores", "1"],
                 ["snakemake", "-n"]):
        assert progress.start(params, argv) == 0 and progress.job_done("generate") is None
    assert progress.start(params, ["snakemake", "--cores", "2", "all", "--resources", "gpu=1"]) == total
    progress.stop()
    assert progress.job_done("generate") is None


def _job(name: str, gpu: bool) -> plainrun.Job:
    return plainrun.Job(name, ("true",), (f"{name}.out",), (), gpu)


def test_gpu_jobs_start_first_and_keep_their_slot_free():
    jobs = {j.name: j for j in [_job("probe1", False), _job("probe2", False), _job("probe3", False),
                                 _job("train0", True), _job("train1", True)]}
    deps = {n: set() for n in jobs}
    deps["train1"] = {"probe1"}  # a GPU job that waits on a CPU job

    def start(pending, done, running, cores=3, gpu_jobs=1):
        return plainrun.next_jobs(pending, deps, done, [jobs[n] for n in running], jobs, cores, gpu_jobs)

    # the ready GPU job first (it is last in plan order), CPU jobs in the slots left
    assert start(["probe1", "probe2", "probe3", "train0", "train1"], set(), []) == ["train0", "probe1", "probe2"]
    # nothing running on the GPU yet and train1 still to come: its slot is kept free
    assert start(["probe1", "probe2", "probe3", "train1"], set(), []) == ["probe1", "probe2"]
    # probe1 done, train1 ready: it takes the kept slot ahead of probe3
    assert start(["probe3", "train1"], {"probe1"}, ["probe2"]) == ["train1", "probe3"]
    # the GPU busy: train1 waits for it without taking a slot; probe3 runs
    assert start(["probe3", "train1"], {"probe1"}, ["train0", "probe2"]) == ["probe3"]
    # with two GPU slots, two GPU jobs at once
    assert start(["train0", "train1"], {"probe1"}, [], cores=3, gpu_jobs=2) == ["train0", "train1"]
    # with no GPU job left, CPU jobs take every slot
    assert start(["probe2", "probe3"], {"probe1"}, [], cores=2) == ["probe2", "probe3"]
    # one slot in all: never kept empty for a GPU job that waits on a CPU job
    assert start(["probe1", "train1"], set(), [], cores=1) == ["probe1"]
