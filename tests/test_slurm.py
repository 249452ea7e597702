"""The pipeline through a real SLURM scheduler (issue 13): ``profiles/slurm`` submits every job
with ``sbatch``, and the results are byte for byte a local run's.

Fast checks (always collected) read the profiles: the settings Snakemake resolves from
``profiles/slurm`` plus the test cluster's ``ci/slurm/test-profile``, and that every rule
declaring a ``gpu`` resource in the Snakefile asks the cluster for one.

The cluster checks need the single-node test cluster of ``ci/slurm/start-cluster.sh`` (root;
docs/slurm.md) and are opt-in through ``MAE_HLVM_SLURM``; without it they are not defined, so
a plain ``pytest`` neither runs nor skips them:

* ``MAE_HLVM_SLURM=1``: one training cell (``generate`` + ``train``: a CPU-partition job and
  a GPU-partition job with a GPU request), about 1 minute;
* ``MAE_HLVM_SLURM=full``: that, then the whole tiny DAG (every job of ``tiny_params``),
  about 10 minutes: ``bash ci/slurm/run-test.sh``.

With the variable set and no cluster, they fail with the command that starts one. Without
slurmdbd ``sacct`` does not work, so "went through sbatch" is shown by SLURM's own
records: the jobcomp/filetxt file (one line per finished job, named with the run's ID) and
slurmctld's job table (``squeue --states=all``: partition, CPUs, GPUs, and the plugin's
``rule_<name>`` comment), matched against the jobs Snakemake planned.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import REPO, assert_agree_up_to_date, copy_repo, dvc_stale, env_for, init_repo, sh, tiny_params

MODE = os.environ.get("MAE_HLVM_SLURM", "")
SLURM_PROFILE = "profiles/slurm"
TEST_PROFILE = "ci/slurm/test-profile"
START = "bash ci/slurm/start-cluster.sh"
# compared byte for byte with a local run: every artifact; wall times differ by nature
COMPARED_DIRS = ("data", "models", "models_real", "results")
NOT_COMPARED = {"results/timings.csv"}


def profile(name: str = SLURM_PROFILE) -> dict:
    return yaml.safe_load((REPO / name / "config.yaml").read_text())


# ----------------------------------------------------------------------------- fast


def resolved_args(*argv: str):
    """Snakemake's own parse of a command line in the repository (profiles, workflow profile)."""
    from snakemake.cli import parse_args

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return parse_args(list(argv))[1]
    finally:
        os.chdir(cwd)


def test_test_profile_adds_the_test_cluster_settings_to_profiles_slurm():
    args = resolved_args("--profile", SLURM_PROFILE, "--profile", TEST_PROFILE)
    # the plugin's own options, under the names its --help gives: a typo would not parse
    assert args.executor == "slurm"
    assert args.slurm_status_command == "squeue"
    assert args.slurm_init_seconds_before_status_checks == 2
    assert args.slurm_keep_successful_logs is True and args.slurm_no_account is True
    assert args.jobs == 1
    # everything else is profiles/slurm's (the test profile overrides top-level keys only)
    assert "slurm_partition" in args.default_resources and args.default_resources["cpus_per_task"].value == 2
    assert args.set_resources["train"]["gpu"].value == 1
    assert {t.name for t in args.rerun_triggers} == {"MTIME"}


def test_workflow_profile_caps_gpu_jobs_in_flight_unless_the_command_line_lifts_it():
    # profiles/default is loaded as the workflow profile next to any --profile and wins per
    # key: its `resources: [gpu=1]` keeps one GPU job in flight on a cluster too (docs/slurm.md)
    assert resolved_args("--profile", SLURM_PROFILE).resources["gpu"].value == 1
    assert resolved_args("--profile", SLURM_PROFILE, "--resources", "gpu=8").resources["gpu"].value == 8


# the params keys that decide which rules exist (the rest changes jobs, not rules)
RULE_KEYS = (("train", "job"), ("real", "enabled"), ("real", "sweep"), ("stability", "enabled"), ("stability", "real"))


@pytest.mark.parametrize("params_file", ["params.yaml", "profiles/gpu/params.yaml"])
def test_every_rule_declaring_a_gpu_asks_the_cluster_for_one(tmp_path, params_file):
    """Rules with ``resources: gpu=...`` in the Snakefile (0 on a machine without CUDA) must
    get a GPU and the gpu partition from profiles/slurm; a new training rule missing there
    would be sent to the cpu partition without one. Under the GPU profile (``train.job:
    seed``) the per-seed training rules replace the per-cell ones: they are checked too."""
    root = copy_repo(tmp_path)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    chosen = yaml.safe_load((root / params_file).read_text())
    for section, key in RULE_KEYS:  # the profile's rule-deciding keys over params.yaml
        if key in (chosen.get(section) or {}):
            raw[section][key] = chosen[section][key]
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out", "dvc.yaml")
    out = sh(root, "snakemake", "-n", "--forceall").stdout
    declaring = set()
    for block in re.finditer(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S)", out, re.MULTILINE | re.DOTALL):
        res = re.search(r"^\s+resources: (.*)$", block.group(2), re.MULTILINE)
        if res and re.search(r"\bgpu=\d", res.group(1)):
            declaring.add(block.group(1))
    if params_file == "params.yaml":
        assert "train" in declaring and any(r.startswith("train_real_") for r in declaring), declaring
    else:
        assert chosen["train"]["job"] == "seed", "the GPU profile no longer trains by seed: update this test"
        assert "train_seed" in declaring and "train" not in declaring, declaring
        assert any(r.startswith("train_real_seed_") for r in declaring), declaring
    sets = profile()["set-resources"]
    missing = {r for r in declaring if sets.get(r, {}).get("gpu") != 1 or sets[r].get("slurm_partition") != "gpu"}
    assert not missing, f"profiles/slurm gives no GPU (gpu: 1, slurm_partition: gpu) to {sorted(missing)}"


# ----------------------------------------------------------------------------- cluster helpers


def scontrol_config() -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    return {k.strip(): v.strip() for k, _, v in (ln.partition("=") for ln in out.splitlines()) if v}


def cluster_jobcomp() -> Path:
    """The running test cluster's jobcomp file; fails with the command that starts one."""
    if shutil.which("sbatch") is None:
        pytest.fail(f"SLURM is not installed: `{START}` installs and starts the test cluster (root)")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        said = ((ping.stdout + ping.stderr).strip().splitlines() or ["no answer"])[0]
        pytest.fail(f"no slurmctld answers ({said}): start the test cluster with `{START}`")
    conf = scontrol_config()
    if conf.get("JobCompType") != "jobcomp/filetxt":
        pytest.fail(f"JobCompType is {conf.get('JobCompType')!r}, not jobcomp/filetxt: restart with `{START}`")
    return Path(conf["JobCompLoc"])


def jobcomp_records(path: Path, run_id: str) -> dict[str, dict[str, str]]:
    """JobId -> fields of every jobcomp line whose job name is ``run_id``."""
    found = {}
    for line in path.read_text().splitlines():
        rec = dict(re.findall(r"(\w+)=(\S*)", line))
        if rec.get("Name") == run_id:
            found[rec["JobId"]] = rec
    return found


SQUEUE_FIELDS = ("JobID", "Comment", "Partition", "tres-per-job", "NumCPUs", "State")


def scheduler_jobs(run_id: str) -> dict[str, dict[str, str]]:
    """JobId -> slurmctld's record (kept MinJobAge=3600 s after the end) of the run's jobs."""
    fmt = ",".join(f"{f}:300|" for f in SQUEUE_FIELDS)
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--name", run_id, "-O", fmt],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        values = [v.strip() for v in line.split("|")][: len(SQUEUE_FIELDS)]
        if values and values[0]:
            jobs[values[0]] = dict(zip(SQUEUE_FIELDS, values))
    return jobs


def rule_of(comment: str) -> str:
    """The plugin's sbatch ``--comment``: ``rule_<rule>`` or ``rule_<rule>_wildcards_<values>``."""
    assert comment.startswith("rule_"), comment
    return comment[len("rule_"):].split("_wildcards_")[0]


def planned_jobs(root: Path, targets: list[str]) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job Snakemake will run (``all``, which runs no command, left out)."""
    out = sh(root, "snakemake", "-n", "--", *targets).stdout
    jobs = []
    for block in re.finditer(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S)", out, re.MULTILINE | re.DOTALL):
        if block.group(1) != "all":
            outputs = re.search(r"^\s+output: (.*)$", block.group(2), re.MULTILINE)
            jobs.append((block.group(1), outputs.group(1).split(", ")))
    return jobs


def run_on_slurm(root: Path, targets: list[str], timeout: float) -> tuple[str, str]:
    """``snakemake --profile profiles/slurm --profile ci/slurm/test-profile``: (run ID, output)."""
    cmd = ["snakemake", "--profile", SLURM_PROFILE, "--profile", TEST_PROFILE, *targets]
    proc = subprocess.Popen(
        cmd, cwd=root, env=env_for(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # Snakemake cancels its SLURM jobs on SIGTERM
        out, _ = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} ran past {timeout:.0f} s:\n{out[-4000:]}") from None
    (root / "slurm_run.log").write_text(out)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-4000:]}"
    run_id = re.search(r"SLURM run ID: (\S+)", out)
    assert run_id, f"no SLURM run ID in the output:\n{out[-2000:]}"
    return run_id.group(1), out


def expected_request(rule: str) -> tuple[str, str, str]:
    """(partition, GPUs as squeue's tres-per-job, CPUs) that profiles/slurm gives ``rule``."""
    prof = profile()
    mine = {**prof["default-resources"], **prof.get("set-resources", {}).get(rule, {})}
    gpus = f"gres:gpu:{mine['gpu']}" if mine.get("gpu") else "N/A"
    return mine["slurm_partition"], gpus, str(mine["cpus_per_task"])


def artifacts(root: Path) -> dict[str, bytes]:
    files = {}
    for d in COMPARED_DIRS:
        for p in sorted((root / d).rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel not in NOT_COMPARED:
                files[rel] = p.read_bytes()
    return files


def slurm_matches_local(tmp_path: Path, targets: list[str], timeout: float) -> dict:
    """Run ``targets`` of the tiny pipeline through SLURM and locally; check that every job
    went through sbatch as the profile asks and that the artifacts are identical."""
    jobcomp = cluster_jobcomp()
    # one copy of the working tree, duplicated: both runs start from the same bytes
    on_slurm = copy_repo(tmp_path / "slurm")
    tiny_params(on_slurm)
    local = Path(shutil.copytree(on_slurm, tmp_path / "local", symlinks=True))
    # and the same commit: artifacts record the code's git revision (provenance), which the
    # commit's date would otherwise make differ
    with pytest.MonkeyPatch.context() as mp:
        for var in ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
            mp.setenv(var, "2026-01-01T00:00:00+00:00")
        for root in (on_slurm, local):
            init_repo(root)
    assert sh(on_slurm, "git", "rev-parse", "HEAD").stdout == sh(local, "git", "rev-parse", "HEAD").stdout
    jobs = planned_jobs(on_slurm, targets)
    planned = Counter(rule for rule, _ in jobs)
    outputs = sorted(p for _, outs in jobs for p in outs)
    assert planned and outputs, "nothing planned"

    t0 = time.perf_counter()
    run_id, out = run_on_slurm(on_slurm, targets, timeout)
    slurm_s = time.perf_counter() - t0

    # nothing ran outside SLURM but `all` (no command)
    assert set(re.findall(r"^localrule (\w+):", out, re.MULTILINE)) <= {"all"}
    finished = jobcomp_records(jobcomp, run_id)
    table = scheduler_jobs(run_id)
    n = sum(planned.values())
    assert len(finished) == n, f"jobcomp has {len(finished)} jobs named {run_id}, Snakemake planned {n}: {dict(planned)}"
    assert set(table) == set(finished), "slurmctld's jobs and jobcomp's differ"
    bad = {j: (r["JobState"], r["ExitCode"]) for j, r in finished.items() if (r["JobState"], r["ExitCode"]) != ("COMPLETED", "0:0")}
    assert not bad, f"jobs that did not complete: {bad}"
    assert Counter(rule_of(j["Comment"]) for j in table.values()) == planned
    for job_id, job in table.items():
        rule = rule_of(job["Comment"])
        want = expected_request(rule)
        got = (job["Partition"], job["tres-per-job"], job["NumCPUs"])
        assert got == want, f"job {job_id} ({rule}): partition, GPUs, CPUs {got}, profiles/slurm asks {want}"
        # the plugin's log, named by the SLURM job id, under the rule's folder
        assert list((on_slurm / ".snakemake/slurm_logs").glob(f"rule_{rule}/**/{job_id}.log")), f"no log of job {job_id}"

    t0 = time.perf_counter()
    sh(local, "snakemake", "--cores", "1", *targets)
    local_s = time.perf_counter() - t0

    # every planned output, and every other artifact, is the same bytes in both copies
    got, want = artifacts(on_slurm), artifacts(local)
    assert sorted(got) == sorted(want)
    differ = [p for p in want if got[p] != want[p]]
    differ += [p for p in outputs if p not in want and p not in NOT_COMPARED
               and (on_slurm / p).read_bytes() != (local / p).read_bytes()]
    assert not differ, f"artifacts differ between the SLURM and the local run: {differ}"
    # the run's onstart/onsuccess held and released DVC's lock and recorded every job in
    # dvc.lock (cluster jobs run with --no-hooks): the same records as the local run's
    assert (on_slurm / "dvc.lock").read_bytes() == (local / "dvc.lock").read_bytes()
    summary = {
        "run_id": run_id, "jobs": n, "per_rule": dict(sorted(planned.items())), "outputs": len(outputs),
        "files_compared": len(want),
        "slurm_s": round(slurm_s, 1), "local_s": round(local_s, 1),
        "partitions": dict(Counter(j["Partition"] for j in table.values())),
        "gpu_jobs": sum(j["tres-per-job"] != "N/A" for j in table.values()),
    }
    print(f"\nslurm check {targets or ['all']}: {summary}")
    return {"roots": (on_slurm, local), **summary}


# ----------------------------------------------------------------------------- cluster (opt-in)

CELL = "models/r0.25_u2_s0/checkpoint.pt"

if MODE in ("1", "full"):

    @pytest.mark.slow
    def test_slurm_one_training_cell_matches_a_local_run(tmp_path):
        res = slurm_matches_local(tmp_path, [CELL], timeout=600)
        assert res["per_rule"] == {"generate": 1, "train": 1}
        assert res["partitions"] == {"cpu": 1, "gpu": 1} and res["gpu_jobs"] == 1
        on_slurm = res["roots"][0]
        assert not {"generate", "train@0.25-2-0"} & dvc_stale(on_slurm), "the jobs were not recorded in dvc.lock"


if MODE == "full":

    @pytest.mark.slow
    def test_slurm_whole_pipeline_matches_a_local_run(tmp_path):
        res = slurm_matches_local(tmp_path, [], timeout=3600)
        assert res["jobs"] >= 19 and res["gpu_jobs"] >= 5
        assert_agree_up_to_date(res["roots"][0])
