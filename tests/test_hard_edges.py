"""Hard edges of the working copy: damaged artifacts and resume files, a user's folder under
Snakemake, the two-tool lock, fsync, and `make dvc-yaml` with bad params (issue 12)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import flip_byte_keep_mtime, one_valid_receipt

from mae_hlvm.core import io, paths, train
from mae_hlvm.core.config import load_params
from mae_hlvm.core.io import ArtifactError, read_json, write_json
from mae_hlvm.workflow import cli, glue, ledger, pipeline, receipts, runlock, verify

REPO = Path(__file__).resolve().parents[1]


def fake_lock(root: Path, outs: dict[str, str]) -> None:
    """A dvc.lock recording ``outs`` (path -> md5) as one stage's outputs."""
    stage = {"cmd": "x", "outs": [{"path": p, "hash": "md5", "md5": m, "size": 1} for p, m in outs.items()]}
    (root / "dvc.lock").write_text(json.dumps({"schema": "2.0", "stages": {"probe@0.5-2-0": stage}}))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- fsync


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync:" + ("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    io.write_text(tmp_path / "a.txt", "x")
    assert events == ["fsync:file", "rename", "fsync:dir"]
    assert (tmp_path / "a.txt").read_text() == "x"


# ----------------------------------------------------------------------------- dvc.yaml


def test_dvc_yaml_with_invalid_params_leaves_dvc_yaml_as_it_was(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text((REPO / "params.yaml").read_text().replace("epochs: 4", "epochs: -4", 1))
    out = tmp_path / "dvc.yaml"
    out.write_text("the old one\n")
    assert pipeline.main(["dvc-yaml", "--params", str(bad), "--out", str(out)]) == 2
    assert out.read_text() == "the old one\n"
    assert "train.epochs" in capsys.readouterr().err
    assert pipeline.main(["dvc-yaml", "--params", str(REPO / "params.yaml"), "--out", str(out)]) == 0
    assert out.read_text() == (REPO / "dvc.yaml").read_text()


def test_make_dvc_yaml_writes_through_the_atomic_path():
    rule = (REPO / "Makefile").read_text().split("\ndvc-yaml:")[1].split("\n\n")[0]
    assert "--out dvc.yaml" in rule and "> dvc.yaml" not in rule


# ----------------------------------------------------------------------------- user folder


def _folder_params(tmp_path: Path, folder: Path):
    raw = (REPO / "params.yaml").read_text()
    params = load_params(REPO / "params.yaml")
    real = params.real.model_copy(update={"enabled": True, "dataset": "folder", "path": str(folder)})
    return params.model_copy(update={"real": real}), raw


def test_a_folder_dep_is_hashed_as_a_tree_and_a_receipt_can_be_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "a.png").write_bytes(b"one")
    params, _ = _folder_params(tmp_path, folder)
    first = receipts._sha256(str(folder))
    rec = receipts.job_receipt("prepare_real", params, None)  # was IsADirectoryError under Snakemake
    assert rec["deps"][os.path.normpath(str(folder))] == first
    flip_byte_keep_mtime(folder / "cat" / "a.png", 0)
    assert receipts._sha256(str(folder)) != first


def test_snakemake_sees_an_image_overwritten_inside_the_users_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    img = folder / "cat" / "a.png"
    img.write_bytes(b"one")
    params, _ = _folder_params(tmp_path, folder)
    inputs = pipeline.smk_inputs("prepare_real", params)
    assert paths.folder_listing_file() in inputs and os.path.normpath(str(folder)) not in inputs
    assert glue.write_folder_listing(params) is True
    assert glue.write_folder_listing(params) is False  # unchanged: mtime kept, nothing reruns
    folder_mtime = folder.stat().st_mtime_ns
    time.sleep(0.01)
    img.write_bytes(b"two")  # the folder's own mtime does not change
    assert folder.stat().st_mtime_ns == folder_mtime
    assert glue.write_folder_listing(params) is True


# ----------------------------------------------------------------------------- resume file


@pytest.fixture
def tiny_cell(tiny_workdir):
    return tiny_workdir(
        600, 500,
        data=dict(image_size=8, depth=1, latent_dims=[4, 4], noise_scales=[1.0, 1.0]),
        model=dict(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2),
        train=dict(epochs=3, batch_size=50, base_lr=1e-3, threads=1, device="cpu"),
        grid=dict(mask_units=[2], mask_ratios=[0.5]),
    )


def _train(out_dir: str, capture: list[str] | None = None) -> None:
    params = load_params("params.yaml")
    train.train_cell(params, "data.npz", 0.5, 2, 0, out_dir)


def _resume_after_epoch_1(out_dir: str) -> Path:
    """Train, keeping the resume file written after epoch 1 as if the job had been killed."""
    keep = {}
    real = train.save_resume

    def save(path, state):
        real(path, state)
        if state["epoch"] == 0:
            keep["blob"] = Path(path).read_bytes()

    train.save_resume = save
    try:
        _train(out_dir)
    finally:
        train.save_resume = real
    path = train.resume_state_path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(keep["blob"])
    return path


def test_resume_file_carries_a_hash_and_a_damaged_one_restarts_from_epoch_1(tiny_cell, caplog):
    _train("full")
    resume = _resume_after_epoch_1("killed")
    state = train.load_resume(resume)
    assert state is not None and state["epoch"] == 0
    assert resume.read_bytes().startswith(train.RESUME_MAGIC)
    flip_byte_keep_mtime(resume, len(resume.read_bytes()) // 2)
    assert train.load_resume(resume) is None
    caplog.set_level("INFO")
    _train("killed")
    assert "damaged (its hash does not match); starting from epoch 1" in caplog.text
    assert Path("killed/checkpoint.pt").read_bytes() == Path("full/checkpoint.pt").read_bytes()


def test_resume_file_of_other_code_is_not_used(tiny_cell, caplog, monkeypatch):
    _train("full")
    _resume_after_epoch_1("edited")
    monkeypatch.setattr(train, "code_digest", lambda: "another code")
    caplog.set_level("INFO")
    _train("edited")
    assert "made with other params, data or code; starting from epoch 1" in caplog.text
    assert Path("edited/checkpoint.pt").read_bytes() == Path("full/checkpoint.pt").read_bytes()


# ----------------------------------------------------------------------------- ledger


@pytest.fixture
def ledger_checked(monkeypatch):
    """Every read checked against the ledger, as the command line installs it before a step runs."""
    monkeypatch.setattr(io, "_recorded_check", ledger.check)


def test_consumers_refuse_an_artifact_that_differs_from_dvc_lock(tmp_path, monkeypatch, ledger_checked):
    monkeypatch.chdir(tmp_path)
    write_json("results/cells/a.json", {"r2": 0.712})
    np.savez("plain.npz", x=np.arange(3))
    io.save_npz("data/d.npz", x=np.arange(5))
    fake_lock(tmp_path, {"results/cells/a.json": md5(Path("results/cells/a.json")), "data/d.npz": md5(Path("data/d.npz"))})
    assert read_json("results/cells/a.json") == {"r2": 0.712}
    assert io.load_npz("data/d.npz")["x"].tolist() == [0, 1, 2, 3, 4]
    text = Path("results/cells/a.json").read_text().replace("0.712", "0.752")
    st = Path("results/cells/a.json").stat()
    Path("results/cells/a.json").write_text(text)  # a flipped digit is still valid JSON
    os.utime("results/cells/a.json", ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ArtifactError, match=r"a\.json: its bytes do not match the hash recorded in dvc\.lock \(probe@0\.5-2-0\).*mae_hlvm verify"):
        read_json("results/cells/a.json")
    # files the ledger does not list, and folders without dvc.lock, are not checked
    assert io.load_npz("plain.npz")["x"].tolist() == [0, 1, 2]
    (tmp_path / "dvc.lock").unlink()
    assert read_json("results/cells/a.json") == {"r2": 0.752}


def test_a_step_run_by_the_command_line_checks_what_it_reads(tmp_path, monkeypatch, capsys):
    # core.io knows no ledger: the command line installs the workflow's check before any step,
    # and the step's reads go through it (what the check refuses: test_never_stale.py)
    monkeypatch.setattr(io, "_recorded_check", None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    io.write_text(paths.METRICS_CSV, "mask_ratio,mask_unit,seed\n0.5,2,0\n")
    io.check_recorded(paths.METRICS_CSV)  # no check installed: nothing refused
    checked: list[str] = []

    def refuse(path):
        checked.append(str(path))
        raise ArtifactError(f"{path}: its bytes do not match the hash recorded in dvc.lock (test)")

    monkeypatch.setattr(ledger, "check", refuse)
    assert cli.main(["figures"]) == 2
    assert checked == [paths.METRICS_CSV]
    assert "metrics.csv: its bytes do not match the hash recorded in dvc.lock" in capsys.readouterr().err


def test_a_pending_receipt_is_a_record_even_when_dvc_lock_is_newer(tmp_path, monkeypatch, ledger_checked):
    monkeypatch.chdir(tmp_path)
    write_json("out.json", {"v": 2})
    fake_lock(tmp_path, {"out.json": "0" * 32})  # an old run's hash
    receipt = Path(paths.receipt("probe@0.5-2-0"))
    sha = hashlib.sha256(Path("out.json").read_bytes()).hexdigest()
    write_json(receipt, {"stage": "probe@0.5-2-0", "outs": {"out.json": sha}})
    assert read_json("out.json") == {"v": 2}  # Snakemake made it after the last dvc commit
    old = time.time() - 100
    os.utime(receipt, (old, old))  # dvc.lock rewritten since (another stage's commit): still its record
    assert read_json("out.json") == {"v": 2}
    flip_byte_keep_mtime(Path("out.json"), 6)  # now it matches neither, and its stage's record is current
    with pytest.raises(ArtifactError, match=r"out\.json: its bytes do not match the hash recorded in \.pipeline/receipts"):
        read_json("out.json")


def test_verify_moves_damaged_artifacts_aside_and_a_byte_identical_rebuild_keeps_its_mtime(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_json("good.json", {"v": 1})
    write_json("bad.json", {"v": 2})
    fake_lock(tmp_path, {"good.json": md5(Path("good.json")), "bad.json": md5(Path("bad.json"))})
    original = Path("bad.json").read_bytes()
    os.utime("bad.json", ns=(1_000_000_000, 1_000_000_000))
    flip_byte_keep_mtime(Path("bad.json"), 7)
    damaged = Path("bad.json").read_bytes()
    rc = cli.main(["verify", "--keep"])
    out = capsys.readouterr().out
    assert rc == 1 and "bad.json: damaged" in out and Path("bad.json").exists()
    rc = cli.main(["verify"])
    out = capsys.readouterr().out
    moved = re.search(r"^bad\.json: damaged \(its bytes match no record, and its stage's inputs and params are as recorded "
                      r"in dvc\.lock \(probe@0\.5-2-0\)\); moved to (\S+)$", out, re.MULTILINE)
    assert rc == 1 and moved, out
    # nothing is deleted: the damaged bytes wait in the quarantine, named in one line
    assert Path(moved.group(1)).read_bytes() == damaged and moved.group(1).startswith(verify.QUARANTINE_DIR + "/")
    assert f"1 damaged file(s) moved to {Path(moved.group(1)).parent}/ (nothing is deleted)" in out
    assert "missing: bad.json; rebuild them and what depends on them: `make run` (or `dvc repro`)" in out
    assert "good.json" not in out
    assert not Path("bad.json").exists() and Path("good.json").exists()
    Path("bad.json").write_bytes(original)  # the step rebuilt it, byte for byte
    assert verify.restore_mtimes(["bad.json"]) == ["bad.json"]
    assert Path("bad.json").stat().st_mtime_ns == 1_000_000_000
    assert not Path(verify.REMOVED_FILE).exists()
    assert cli.main(["verify"]) == 0
    assert "0 damaged, 0 missing" in capsys.readouterr().out


def test_verify_restores_a_cached_output_from_dvcs_cache_with_its_mtime(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_json("models/c/log.json", {"loss": [1, 2]})
    digest = md5(Path("models/c/log.json"))
    cache = Path(verify.DVC_CACHE) / digest[:2] / digest[2:]
    cache.parent.mkdir(parents=True)
    cache.write_bytes(Path("models/c/log.json").read_bytes())
    fake_lock(tmp_path, {"models/c/log.json": digest})
    os.utime("models/c/log.json", ns=(2_000_000_000, 2_000_000_000))
    flip_byte_keep_mtime(Path("models/c/log.json"), 5)
    assert cli.main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "models/c/log.json: damaged (its bytes match no record, and its stage's inputs and params are as recorded in " \
           "dvc.lock (probe@0.5-2-0)); restored from DVC's cache" in out
    assert "rebuild" not in out and "moved" not in out
    assert md5(Path("models/c/log.json")) == digest and Path("models/c/log.json").stat().st_mtime_ns == 2_000_000_000
    cache.write_bytes(b"a damaged cache is not used")
    flip_byte_keep_mtime(Path("models/c/log.json"), 5)
    assert cli.main(["verify"]) == 1
    assert "; moved to .pipeline/quarantine/" in capsys.readouterr().out and not Path("models/c/log.json").exists()


def test_verify_outside_a_working_copy_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: dvc.lock: missing here" in err[0]


def test_the_committed_working_copy_has_nothing_damaged_and_misses_only_what_git_does_not_hold():
    proc = subprocess.run([sys.executable, "-m", "mae_hlvm", "verify", "--keep"], cwd=REPO, capture_output=True, text=True)
    assert " 0 damaged" in proc.stdout and " 0 out of date, 0 not in dvc.lock" in proc.stdout, proc.stdout + proc.stderr
    params = load_params(REPO / "params.yaml")
    absent = [p for p in pipeline.all_outputs(params) if not (REPO / p).exists()]
    if absent:  # a clone holds what git tracks; the data and models come from `make pull` or a run
        ignored = subprocess.run(["git", "check-ignore", *absent], cwd=REPO, capture_output=True, text=True).stdout.split()
        assert sorted(ignored) == sorted(absent)
        assert proc.returncode == 1 and f" {len(absent)} missing" in proc.stdout and "`make run`" in proc.stdout
    else:
        assert proc.returncode == 0, proc.stdout


# ----------------------------------------------------------------------------- two-tool lock


HOLD = (
    "import sys, time, zc.lockfile\n"
    "lock = zc.lockfile.LockFile('.dvc/tmp/lock')\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


def test_snakemake_refuses_while_dvc_holds_its_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path(".dvc/tmp").mkdir(parents=True)
    dvc = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert dvc.stdout.readline().strip() == "held"
        with pytest.raises(runlock.BusyError, match=rf"\(pid {dvc.pid}\) is running in this working copy.*kill {dvc.pid}"):
            runlock.claim()
    finally:
        dvc.kill()
        dvc.wait()
    assert runlock.claim() is True  # the holder died: its flock went with it
    runlock.release()


def test_snakemake_refuses_while_a_dvc_stage_command_runs(tmp_path, monkeypatch):
    """DVC lets go of its lock while a stage's command runs; its rwlock still names it."""
    monkeypatch.chdir(tmp_path)
    Path(".dvc/tmp").mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Path(runlock.DVC_RWLOCK).write_text(json.dumps(
            {"read": {}, "write": {"models/x": {"pid": sleeper.pid, "cmd": "dvc repro"}}}
        ))
        with pytest.raises(runlock.BusyError, match=rf"\(pid {sleeper.pid}\) is running"):
            runlock.claim()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert runlock.claim() is True  # a dead pid in the rwlock is stale
    runlock.release()


def test_dvc_cannot_take_its_lock_while_snakemake_holds_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path(".dvc/tmp").mkdir(parents=True)
    assert runlock.claim() is True
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "import zc.lockfile; zc.lockfile.LockFile('.dvc/tmp/lock')"],
            capture_output=True, text=True,
        )
        assert proc.returncode != 0 and "LockError" in proc.stderr
        assert Path(runlock.DVC_LOCK).read_text().split() == [str(os.getpid()), "snakemake"]
    finally:
        runlock.release()
    assert runlock.claim() is True
    runlock.release()


def test_outside_a_dvc_repository_there_is_nothing_to_claim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runlock.claim() is False


def test_the_snakefile_claims_on_start_and_releases_before_its_own_dvc_commit():
    text = (REPO / "Snakefile").read_text()
    assert "glue.start_run()" in text.split("onstart:")[1].split("\n\n")[0]
    for hook in ("onsuccess:", "onerror:"):
        assert "glue.finish_run()" in text.split(hook)[1].split("\n\n\n")[0]
    src = (REPO / "src/mae_hlvm/workflow/glue.py").read_text()
    finish = src.split("def finish_run")[1].split("\ndef ")[0]
    assert finish.index("runlock.release()") < finish.index("commit_receipts()")


def test_commit_failure_names_dvcs_error(tmp_path, monkeypatch, capsys):
    name = one_valid_receipt(tmp_path, monkeypatch, "#!/bin/sh\necho 'ERROR: Unable to acquire lock. Most likely another "
                                                    "DVC process is running' >&2\nexit 1\n")
    assert receipts.commit_receipts() == []
    err = capsys.readouterr().err
    assert "dvc commit failed (ERROR: Unable to acquire lock" in err and "receipts kept" in err
    assert Path(paths.receipt(name)).exists()


# ----------------------------------------------------------------------------- RAM


def test_a_step_refuses_a_dataset_larger_than_this_machines_ram_before_allocating(tiny_workdir, monkeypatch, capsys):
    tiny_workdir(64, 32)
    monkeypatch.setattr(cli, "physical_ram", lambda: 1000)  # bytes: any dataset is too big
    assert cli.main(["generate", "--out", "x.npz"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "generate: the synthetic dataset needs" in err[0] and "lower data.n_train" in err[0]
    assert not Path("x.npz").exists()
    monkeypatch.setattr(cli, "physical_ram", lambda: 2**40)
    params = load_params("params.yaml")
    cli.check_ram("generate", params)  # fits
    assert cli.main(["check"]) == 0  # check does not depend on this machine


def test_a_dvc_run_step_writes_the_benchmark_file_snakemake_judges_as_an_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    monkeypatch.setenv("DVC_STAGE", "predict")
    monkeypatch.setattr(pipeline, "check_dvc_yaml", lambda p: None)
    argv = shlex.split(pipeline.command("predict"))[3:]
    with glue.step_hooks("predict", params, argv):
        for o in pipeline.outputs("predict"):
            io.write_text(o.path, "{}")
    bench = Path(pipeline.benchmark_path("predict", None))
    head, row = bench.read_text().splitlines()
    assert head.split("\t") == list(glue.BENCHMARK_COLUMNS) and row.split("\t")[1].count(":") == 2
    assert bench.stat().st_mtime_ns >= Path("data/prediction.json").stat().st_mtime_ns
    assert pipeline.smk_benchmark("predict") == str(bench)
