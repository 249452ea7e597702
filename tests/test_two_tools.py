"""Faults with the real tools on a tiny pipeline (issue 12): Snakemake and DVC started together,
damaged artifacts under each tool, a Snakemake run killed mid-job, and a user's image
folder under Snakemake (hashed for the receipt, judged by its content, not its mtime)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from helpers import (
    assert_agree_up_to_date,
    copy_repo,
    drop_from_dvc_cache,
    dvc_stale,
    edit_params,
    flip_byte_keep_mtime,
    init_repo,
    make_image_folder,
    sh,
    snakemake_plan,
    start,
    tiny_params,
    tracked_outputs,
    wait_for,
)

pytestmark = pytest.mark.slow


def synthetic_only(tmp_path: Path) -> Path:
    root = copy_repo(tmp_path / "repo")
    tiny_params(root)
    # the stability set adds the longest jobs and nothing these tests look at (CI time)
    edit_params(root, real__enabled=False, stability__enabled=False, train__epochs=3)
    sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out", "dvc.yaml")
    init_repo(root)
    return root


def test_the_two_tools_refuse_each_other_and_damage_is_rebuilt_exactly(tmp_path):
    root = synthetic_only(tmp_path)
    lock = root / ".dvc/tmp/lock"

    # Snakemake first: it holds DVC's lock, so `dvc repro` refuses before touching anything
    smk = start(root, "snakemake", "--cores", "2")
    wait_for(lambda: lock.exists() and "snakemake" in lock.read_text(), "Snakemake to take DVC's lock")
    dvc = sh(root, "dvc", "repro", check=False)
    assert dvc.returncode != 0 and "Unable to acquire lock" in dvc.stderr
    out, _ = smk.communicate(timeout=600)
    assert smk.returncode == 0, out[-3000:]
    assert "recorded" in out and "dvc commit failed" not in out
    assert_agree_up_to_date(root)

    # DVC first: Snakemake stops in onstart with one line naming it, and builds nothing
    before = {p: (root / p).stat().st_mtime_ns for p in tracked_outputs(root)}
    dvc = start(root, "dvc", "repro", "-f")
    wait_for(lambda: (root / "logs/generate/generate.log").stat().st_mtime_ns > before["data/synthetic.npz"],
             "dvc repro to run its first stage")
    smk = sh(root, "snakemake", "--cores", "1", "--forceall", check=False)
    errors = [ln for ln in (smk.stdout + smk.stderr).splitlines() if ln.startswith("error:")]
    assert smk.returncode != 0 and len(errors) == 1, smk.stdout + smk.stderr
    assert f"(pid {dvc.pid}) is running in this working copy" in errors[0] and "`dvc repro -f`" in errors[0]
    out, _ = dvc.communicate(timeout=600)
    assert dvc.returncode == 0, out[-3000:]
    assert_agree_up_to_date(root)

    # a cached output (a model's training log) damaged in place comes back from DVC's cache
    train_log = root / "models/r0.25_u2_s0/train_log.csv"
    flip_byte_keep_mtime(train_log, 10)
    plan = snakemake_plan(root)
    assert plan == {}, sh(root, "snakemake", "-n").stdout[-3000:]  # neither tool notices
    assert dvc_stale(root) == set()
    ver = sh(root, sys.executable, "-m", "mae_hlvm", "verify", check=False)
    assert ver.returncode == 1 and "train_log.csv: damaged" in ver.stdout and "restored from DVC's cache" in ver.stdout
    assert_agree_up_to_date(root)

    # not in DVC's cache (an output made elsewhere and never pushed): the consumer refuses,
    # verify moves it aside, each tool rebuilds exactly that file
    drop_from_dvc_cache(root, "results/cells/r0.5_u2_s0.json", "results/cells/r0.25_u2_s0.json")
    cell_json = root / "results/cells/r0.5_u2_s0.json"
    flip_byte_keep_mtime(cell_json, cell_json.read_text().index("0.") + 3)
    agg = sh(root, sys.executable, "-m", "mae_hlvm", "aggregate", check=False)
    assert agg.returncode == 2 and "r0.5_u2_s0.json: its bytes do not match the hash recorded in dvc.lock" in agg.stderr
    ver = sh(root, sys.executable, "-m", "mae_hlvm", "verify", check=False)
    assert ver.returncode == 1 and "results/cells/r0.5_u2_s0.json: damaged" in ver.stdout and "; moved to .pipeline/quarantine/" in ver.stdout
    assert not cell_json.exists()
    # Snakemake rebuilds exactly that job; afterwards both tools agree nothing is left to do
    run = sh(root, "snakemake", "--cores", "1", "results/cells/r0.5_u2_s0.json")
    assert "1 of 1 steps (100%) done" in run.stdout + run.stderr
    assert_agree_up_to_date(root)

    # the same under DVC: `dvc repro` reruns exactly that stage
    cell_json = root / "results/cells/r0.25_u2_s0.json"
    flip_byte_keep_mtime(cell_json, cell_json.read_text().index("0.") + 3)
    assert sh(root, sys.executable, "-m", "mae_hlvm", "verify", check=False).returncode == 1
    run = sh(root, "dvc", "repro")
    ran = [ln for ln in run.stdout.splitlines() if "stage '" in ln and "didn't change" not in ln]
    assert ran == ["Running stage 'probe@0.25-2-0':"], run.stdout
    assert_agree_up_to_date(root)
    assert sh(root, sys.executable, "-m", "mae_hlvm", "verify").returncode == 0


def test_a_killed_snakemake_run_resumes_to_the_same_bytes(tmp_path):
    root = synthetic_only(tmp_path)
    edit_params(root, data__n_train=2000, train__epochs=6)
    sh(root, "snakemake", "--cores", "2")  # the reference (each job's bytes do not depend on --cores)
    reference = {p: (root / p).read_bytes() for p in tracked_outputs(root)}
    resume_dir = root / ".pipeline/resume"

    smk = start(root, "snakemake", "--cores", "1", "--forceall")
    wait_for(lambda: resume_dir.is_dir() and any(resume_dir.glob("*.pt")), "a training job to finish an epoch")
    os.killpg(smk.pid, signal.SIGKILL)  # Snakemake and its job, mid-epoch, no cleanup
    smk.wait()
    assert "snakemake" in (root / ".dvc/tmp/lock").read_text()  # the stale text remains, but
    # the flock died with the process: DVC works again at once
    assert sh(root, "dvc", "status", "-q", check=False).returncode in (0, 1)
    # Snakemake's own directory lock is a file a kill leaves behind; it says so and how to go on
    again = sh(root, "snakemake", "--cores", "1", check=False)
    assert again.returncode != 0 and "--unlock" in again.stdout + again.stderr
    sh(root, "snakemake", "--unlock")
    sh(root, "snakemake", "--cores", "2")
    assert {p: (root / p).read_bytes() for p in tracked_outputs(root)} == reference
    assert not any(resume_dir.glob("*.pt"))
    assert_agree_up_to_date(root)


def test_a_users_image_folder_under_snakemake(tmp_path):
    root = copy_repo(tmp_path / "repo")
    tiny_params(root)
    images = tmp_path / "images"
    make_image_folder(images, classes=("cat", "dog"), per_class=30)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["real"].update(dataset="folder", path=str(images), channels=3, n_train=40, n_test=20)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out", "dvc.yaml")
    init_repo(root)

    # prepare_real under Snakemake: the receipt hashes the folder, dvc.lock records the run
    run = sh(root, "snakemake", "--cores", "1", "data/real.npz")
    assert "recorded 1 Snakemake job(s) in dvc.lock" in run.stderr
    assert "prepare_real" not in dvc_stale(root)

    # an image overwritten inside the folder: the folder's mtime stays, both tools rerun it
    img = images / "cat" / "cat_0.JPEG"
    folder_mtime = (images / "cat").stat().st_mtime_ns
    img.write_bytes((images / "cat" / "cat_1.JPEG").read_bytes())
    assert (images / "cat").stat().st_mtime_ns == folder_mtime
    assert "prepare_real" in dvc_stale(root)
    assert snakemake_plan(root).get("prepare_real") == 1
    sh(root, "snakemake", "--cores", "1", "data/real.npz")
    assert "prepare_real" not in dvc_stale(root)
    plan = snakemake_plan(root)
    assert "prepare_real" not in plan
