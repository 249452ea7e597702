"""Never serve a stale result (issue 27), the fast half: what `verify` calls damaged, the lock it
takes, all-or-nothing recording in dvc.lock, one line for every interruption, a bad dvc.lock,
missing outputs as targets, a read-only output folder, and the params file's own limits.
The whole-pipeline half is tests/test_never_stale_pipeline.py."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import VENV_BIN, copy_repo, make_read_only, make_writable, one_valid_receipt, recording_dvc

from mae_hlvm.core import io, paths
from mae_hlvm.core.config import ParamsError, load_params
from mae_hlvm.core.io import ArtifactError, read_json, write_json
from mae_hlvm.workflow import cli, glue, ledger, pipeline, plainrun, receipts, runlock, sync, verify

REPO = Path(__file__).resolve().parents[1]
STAGE = "probe@0.5-2-0"  # not a stage of the params below: judged on its own record


def md5(path: str | Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def lock_with(root: Path, stages: dict[str, dict]) -> None:
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}, sort_keys=False))


def entry(outs: dict[str, str], deps: dict[str, str] | None = None, params: dict | None = None) -> dict:
    """A dvc.lock entry: outputs and inputs (path -> md5), params.yaml keys -> values."""
    e: dict = {"cmd": "python -m mae_hlvm probe"}
    if deps:
        e["deps"] = [{"path": p, "hash": "md5", "md5": m} for p, m in deps.items()]
    if params:
        e["params"] = {"params.yaml": params}
    e["outs"] = [{"path": p, "hash": "md5", "md5": m} for p, m in outs.items()]
    return e


@pytest.fixture
def recorded_cell(tmp_path, monkeypatch):
    """A working copy whose dvc.lock records ``cell.json`` as made from ``ckpt.pt`` with
    ``probe.cv_folds: 3``, exactly as the files and params.yaml stand."""
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("probe:\n  cv_folds: 3\n")
    io.write_bytes("ckpt.pt", b"weights of epoch 1")
    write_json("cell.json", {"r2": 0.5})
    lock_with(tmp_path, {STAGE: entry({"cell.json": md5("cell.json")}, {"ckpt.pt": md5("ckpt.pt")}, {"probe.cv_folds": 3})})
    return tmp_path


def verify_out(capsys, *args: str) -> tuple[int, str]:
    rc = cli.main(["verify", *args])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


# ----------------------------------------------------------------------------- what is damaged


def test_an_output_newer_than_its_record_is_never_damaged_nor_restored(recorded_cell, capsys):
    """Issue 27, cases 1-3: dvc.lock lags behind fresh outputs (a run whose recording was cut
    short, a `verify` in the middle of a run): a reason to rerun, never to restore."""
    cache = Path(verify.DVC_CACHE) / md5("cell.json")[:2] / md5("cell.json")[2:]
    cache.parent.mkdir(parents=True)
    cache.write_bytes(Path("cell.json").read_bytes())  # the old run's bytes, there to be restored
    Path("params.yaml").write_text("probe:\n  cv_folds: 4\n")  # params changed, and the stage reran:
    write_json("cell.json", {"r2": 0.7})
    fresh = Path("cell.json").read_bytes()
    assert read_json("cell.json") == {"r2": 0.7}  # a consumer reads it
    rc, out = verify_out(capsys)
    assert rc == 1 and "0 damaged" in out and "1 out of date" in out, out
    assert "cell.json; rerun and record them: `dvc repro`" in out
    assert Path("cell.json").read_bytes() == fresh and not Path(verify.QUARANTINE_DIR).exists()
    # the same when an input changed instead of a param
    Path("params.yaml").write_text("probe:\n  cv_folds: 3\n")
    io.write_bytes("ckpt.pt", b"weights of epoch 40")
    rc, out = verify_out(capsys)
    assert rc == 1 and "0 damaged" in out and Path("cell.json").read_bytes() == fresh, out
    # with inputs and params as recorded, the same bytes are damage: refused, restored from the cache
    io.write_bytes("ckpt.pt", b"weights of epoch 1")
    with pytest.raises(ArtifactError, match=r"cell\.json: its bytes do not match the hash recorded in dvc\.lock"):
        read_json("cell.json")
    rc, out = verify_out(capsys)
    assert rc == 1 and "cell.json: damaged" in out and "restored from DVC's cache" in out, out
    assert read_json("cell.json") == {"r2": 0.5}


def test_a_wrong_hash_in_an_entry_never_costs_a_file_a_consumer_recorded(tmp_path, monkeypatch, capsys):
    """Issue 27, case 4: one wrong md5 in the train entry; the right one stands in the probe
    entry's deps and in DVC's cache. verify deleted the valid checkpoint."""
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("data: {}\n")
    io.write_bytes("data.npz", b"data")
    io.write_bytes("models/c/checkpoint.pt", b"the trained weights")
    write_json("cell.json", {"r2": 0.5})
    right = md5("models/c/checkpoint.pt")
    cache = Path(verify.DVC_CACHE) / right[:2] / right[2:]
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"the trained weights")
    lock_with(tmp_path, {
        "train@0.5-2-0": entry({"models/c/checkpoint.pt": "0" * 32}, {"data.npz": md5("data.npz")}),
        STAGE: entry({"cell.json": md5("cell.json")}, {"models/c/checkpoint.pt": right}),
    })
    os.utime("models/c/checkpoint.pt", ns=(3_000_000_000, 3_000_000_000))
    assert read_json("cell.json") == {"r2": 0.5}
    io.check_recorded("models/c/checkpoint.pt")  # a consumer loads it
    rc, out = verify_out(capsys)
    assert rc == 1 and "0 damaged" in out and "1 out of date" in out and "models/c/checkpoint.pt" in out, out
    assert Path("models/c/checkpoint.pt").read_bytes() == b"the trained weights"
    assert Path("models/c/checkpoint.pt").stat().st_mtime_ns == 3_000_000_000


@pytest.mark.parametrize("text,problem", [
    (b"", "empty"),
    (b"# nothing recorded\n", "empty"),
    (b"schema: '2.0'\nstages:\n  probe:\n    outs: [\n", "not valid YAML at line"),
    (b"- a list\n", "not a DVC lock file"),
    (b"stages:\n  x: {}\n\xff\xfe\n", "not UTF-8"),
], ids=["empty", "comment-only", "invalid-yaml", "a-list", "not-utf8"])
def test_an_unusable_dvc_lock_is_one_line_in_verify_and_in_every_consumer(recorded_cell, capsys, text, problem):
    """Issue 27, cases 7 and 8: verify said "0 recorded artifacts, 0 damaged", exit 0, and the
    steps' own damage checks switched off."""
    Path("dvc.lock").write_bytes(text)
    rc, out = verify_out(capsys)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in out, out
    assert f"error: dvc.lock: {problem}" in lines[0] and "`git checkout dvc.lock`" in lines[0]
    with pytest.raises(ArtifactError, match=rf"^dvc\.lock: {problem}.*git checkout dvc\.lock"):
        read_json("cell.json")


def test_a_commit_killed_outright_is_put_back_before_verify_judges(recorded_cell, capsys):
    before = Path("dvc.lock").read_bytes()
    Path(ledger.JOURNAL).parent.mkdir(parents=True, exist_ok=True)
    Path(ledger.JOURNAL).write_bytes(before)
    Path("dvc.lock").write_text("schema: '2.0'\nstages:\n  probe@0.5-2-0:\n    cmd: python -m mae_hlvm pro")  # torn
    assert read_json("cell.json") == {"r2": 0.5}  # judged against dvc.lock as it was before the commit
    st = Path("cell.json").stat()
    Path("cell.json").write_text('{"r2": 0.9}\n')
    os.utime("cell.json", ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ArtifactError, match=r"cell\.json: its bytes do not match the hash recorded in dvc\.lock"):
        read_json("cell.json")
    write_json("cell.json", {"r2": 0.5})
    rc, out = verify_out(capsys)
    assert rc == 0, out
    assert Path("dvc.lock").read_bytes() == before and not ledger.journal_left()


# ----------------------------------------------------------------------------- the lock


HOLD = (
    "import sys, time\n"
    "from mae_hlvm.workflow import runlock\n"
    "runlock.claim()\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


def test_verify_refuses_in_one_line_while_a_run_or_dvc_is_busy(recorded_cell, capsys):
    """Issue 27, case 1: `verify` while `snakemake --cores 2` ran restored the previous run's bytes."""
    Path(".dvc/tmp").mkdir(parents=True)
    run = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)  # a Snakemake run's onstart
    try:
        assert run.stdout.readline().strip() == "held"
        before = Path("cell.json").read_bytes()
        Path("cell.json").write_bytes(b"being rewritten by the run")
        rc, out = verify_out(capsys)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1, out
        assert "error: verify refused: `" in lines[0] and "python -c import sys, time" in lines[0] and f"(pid {run.pid}) is running in this working copy" in lines[0]
        assert Path("cell.json").read_bytes() == b"being rewritten by the run"
    finally:
        run.kill()
        run.wait()
    Path("cell.json").write_bytes(before)
    dvc = subprocess.Popen([sys.executable, "-c", "import time, zc.lockfile\nlock = zc.lockfile.LockFile('.dvc/tmp/lock')\n"
                            "print('held', flush=True)\ntime.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert dvc.stdout.readline().strip() == "held"
        rc, out = verify_out(capsys)
        assert rc == 2 and f"(pid {dvc.pid}) is running in this working copy" in out, out
    finally:
        dvc.kill()
        dvc.wait()
    rc, out = verify_out(capsys)
    assert rc == 0, out


def test_a_run_refuses_while_verify_holds_the_lock(recorded_cell):
    code = ("import time\nfrom mae_hlvm.workflow import runlock\n"
            "with runlock.exclusive('verify'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.BusyError, match=rf"\(pid {holder.pid}\) is running in this working copy"):
            runlock.claim()
    finally:
        holder.kill()
        holder.wait()
    assert runlock.claim() is False  # no DVC here; the run lock is free again
    runlock.release_run()


def test_plainrun_refuses_beside_another_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text((REPO / "params.yaml").read_text())
    holder = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert plainrun.main(["--stages", "predict"]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"(pid {holder.pid}) is running in this working copy" in err[0]
    assert not Path("data/prediction.json").exists()


def test_an_empty_rwlock_a_killed_dvc_left_is_removed_when_the_lock_is_taken(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path(".dvc/tmp").mkdir(parents=True)
    Path(runlock.DVC_RWLOCK).write_text("")
    assert runlock.claim() is True
    runlock.release()
    runlock.release_run()
    assert not Path(runlock.DVC_RWLOCK).exists()
    assert "removed .dvc/tmp/rwlock, left empty by a DVC process killed while writing it" in capsys.readouterr().err


# ----------------------------------------------------------------------------- recording in dvc.lock


def _env(tmp_path: Path) -> dict[str, str]:
    """The stand-in dvc first on PATH, then the venv (a plain env_for would put the real dvc first)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src")
    env["PATH"] = os.pathsep.join([str(tmp_path / "bin"), VENV_BIN, env.get("PATH", "")])
    env.pop("DVC_STAGE", None)
    return env


TEARING_DVC = (
    f"#!{sys.executable}\n"
    "import time\n"
    "open('dvc.lock', 'w').write(\"schema: '2.0'\\nstages:\\n  predict:\\n    cmd: x\\n    outs:\\n    - path: data/pre\")\n"
    "open('dvc.started', 'w').close()\n"
    "time.sleep(60)\n"
)


def _interrupt(tmp_path: Path, cmd: list[str]) -> tuple[int, str]:
    """Run ``cmd`` with the tearing dvc, Ctrl-C (SIGINT to the process group) once dvc.lock is torn."""
    # Ctrl-C must reach it even where this test runs with SIGINT ignored (a job started with `&` by a
    # shell without job control; ignored signals survive exec, a handler is reset to the default)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, old)
    deadline = time.monotonic() + 60
    while not (tmp_path / "dvc.started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


@pytest.mark.parametrize("where", ["commit-receipts", "onsuccess"])
def test_ctrl_c_while_recording_leaves_dvc_lock_as_it_was_and_the_next_call_records(tmp_path, monkeypatch, capsys, where):
    """Issue 27, case 2: SIGINT in the final "recording N Snakemake job(s) in dvc.lock" step left
    dvc.lock partly rewritten, and verify then restored old outputs over fresh ones; also no
    traceback from Snakemake's onsuccess (glue.finish_run)."""
    name = one_valid_receipt(tmp_path, monkeypatch, TEARING_DVC)
    Path("dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    os.utime("dvc.lock", ns=(4_000_000_000, 4_000_000_000))
    before = Path("dvc.lock").read_bytes()
    cmd = ([sys.executable, "-m", "mae_hlvm.workflow.pipeline", "commit-receipts"] if where == "commit-receipts" else
           [sys.executable, "-c", "from mae_hlvm.workflow import glue\nglue.finish_run()"])
    rc, out = _interrupt(tmp_path, cmd)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert rc == 130 and "Traceback" not in out and len(lines) == 2, out
    assert lines[1] == ("mae_hlvm.workflow.glue: interrupted while recording 1 job(s) in dvc.lock: dvc.lock is as it was "
                        "before it; receipts kept in .pipeline/receipts, recorded by the next run (or `python -m "
                        "mae_hlvm.workflow.pipeline commit-receipts`)")
    assert Path("dvc.lock").read_bytes() == before and Path("dvc.lock").stat().st_mtime_ns == 4_000_000_000
    assert Path(paths.receipt(name)).exists() and not ledger.journal_left()
    (tmp_path / "bin" / "dvc").write_text(recording_dvc())
    assert receipts.commit_receipts() == [name]
    assert not Path(paths.receipt(name)).exists() and name in ledger.parse_lock(Path("dvc.lock").read_text())


@pytest.mark.parametrize("script,problem", [
    # a full disk: DVC's rewrite cut short, an error
    ("open('dvc.lock', 'w').write(\"schema: '2.0'\\nstages:\\n  pre\")\n"
     "print('ERROR: unexpected error - [Errno 28] No space left on device', file=sys.stderr)\nsys.exit(255)\n",
     "ERROR: unexpected error - [Errno 28] No space left on device"),
    # a write limit where DVC still exits 0: dvc.lock cut mid-entry but valid YAML
    ("open('dvc.lock', 'w').write(\"schema: '2.0'\\nstages:\\n  predict:\\n    cmd: x\\n\")\n",
     "dvc.lock does not record data/prediction.json of predict after it"),
], ids=["disk-full", "exit-0-but-cut"])
def test_a_failed_commit_puts_dvc_lock_back_and_keeps_the_receipts(tmp_path, monkeypatch, capsys, script, problem):
    """Issue 27, cases 3 and 9."""
    name = one_valid_receipt(tmp_path, monkeypatch, f"#!{sys.executable}\nimport sys\n{script}")
    Path("dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    os.utime("dvc.lock", ns=(4_000_000_000, 4_000_000_000))
    before = Path("dvc.lock").read_bytes()
    assert receipts.commit_receipts() == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[1] == (
        f"mae_hlvm.workflow.glue: dvc commit failed ({problem}); dvc.lock is as it was before it; receipts kept in "
        ".pipeline/receipts, recorded by the next run (or `python -m mae_hlvm.workflow.pipeline commit-receipts`)")
    assert Path("dvc.lock").read_bytes() == before and Path("dvc.lock").stat().st_mtime_ns == 4_000_000_000
    assert Path(paths.receipt(name)).exists() and not ledger.journal_left()


def test_no_copy_of_dvc_lock_no_commit(tmp_path, monkeypatch, capsys):
    """A write limit below dvc.lock's size: the copy aside fails, so DVC never starts."""
    name = one_valid_receipt(tmp_path, monkeypatch, f"#!/bin/sh\ntouch {tmp_path}/dvc.ran\n")
    Path("dvc.lock").write_text("schema: '2.0'\nstages: {}\n" + "# padding\n" * 200)
    before = Path("dvc.lock").read_bytes()
    code = ("import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
            "from mae_hlvm.workflow import receipts\nreceipts.commit_receipts()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot copy dvc.lock aside before recording (File too large): nothing recorded" in proc.stderr
    assert not (tmp_path / "dvc.ran").exists() and Path("dvc.lock").read_bytes() == before
    assert Path(paths.receipt(name)).exists() and not ledger.journal_left()


@pytest.mark.parametrize("argv,runs", [
    (["snakemake", "--cores", "2"], True), (["snakemake"], True), (["snakemake", "--cores", "1", "results/x.json"], True),
    (["snakemake", "-n"], False), (["snakemake", "-np"], False), (["snakemake", "--dry-run", "--quiet", "rules"], False),
    (["snakemake", "--report", "r.html"], False), (["snakemake", "--touch", "--cores", "1"], False),
    (["snakemake", "--unlock"], False), (["snakemake", "--mode", "subprocess"], False), (["snakemake", "--lint"], False),
])
def test_only_a_run_records_left_receipts_at_parse_time(argv, runs):
    assert glue._runs_jobs(argv) is runs


def test_receipts_left_by_a_failed_commit_are_recorded_even_with_nothing_to_run(tmp_path, monkeypatch, capsys):
    """Issue 27, case 9: "receipts kept ..., recorded by the next run", but a next run with
    nothing to do never calls onstart. The Snakefile records them when it is parsed."""
    name = one_valid_receipt(tmp_path, monkeypatch, recording_dvc())
    glue.record_left_receipts(["snakemake", "-n"])
    assert Path(paths.receipt(name)).exists()
    glue.record_left_receipts(["snakemake", "--cores", "2"])
    assert not Path(paths.receipt(name)).exists() and name in ledger.parse_lock(Path("dvc.lock").read_text())
    assert "recorded 1 Snakemake job(s) in dvc.lock" in capsys.readouterr().err
    snakefile = (REPO / "Snakefile").read_text()
    assert snakefile.index("glue.record_left_receipts(sys.argv)") < snakefile.index("\nonstart:")


def test_ctrl_c_while_re_stamping_outputs_is_one_line(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "Snakefile").write_text("import time\nopen('dvc.started', 'w').close()\ntime.sleep(60)\n")
    (tmp_path / "bin").mkdir()
    code = ("from mae_hlvm.workflow import sync\n"
            "sync.dvc_stale_stages = lambda: []  # DVC: every stage up to date\n"
            "sync.adopt_dvc_results(['train'])\n")
    rc, out = _interrupt(tmp_path, [sys.executable, "-c", code])
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert rc == 1 and "Traceback" not in out and len(errors) == 1, out
    assert errors[0] == f"error: {sync.INTERRUPTED}"


# ----------------------------------------------------------------------------- before any job


def test_every_missing_output_is_a_target_of_rule_all(tmp_path, monkeypatch):
    """Issue 27, cases 5 and 6: a deleted cell JSON left "Nothing to be done"."""
    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    everything, final = pipeline.all_outputs(params), pipeline.final_outputs(params)
    assert pipeline.targets(params) == final + [p for p in everything if p not in set(final)]
    for p in everything:
        io.write_bytes(p, b"x")
    assert pipeline.targets(params) == final
    Path("results/cells/r0.25_u2_s0.json").unlink()
    assert pipeline.targets(params) == [*final, "results/cells/r0.25_u2_s0.json"]
    assert "pipeline.targets(P)" in (REPO / "Snakefile").read_text().split("rule all:")[1].split("\n\n")[0]


def test_a_read_only_output_folder_is_one_line_before_any_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    Path("results/cells").mkdir(parents=True)
    assert glue.unwritable_folder(params) is None
    make_read_only(tmp_path / "results/cells")
    try:
        problem = glue.unwritable_folder(params)
    finally:
        make_writable(tmp_path / "results/cells")
    assert problem is not None and problem.startswith("results/cells: this process cannot write in it (")
    assert problem.endswith("make it writable (`chmod -R u+w results/cells`) and run again; no job was started")
    assert not list((tmp_path / "results/cells").iterdir())


# ----------------------------------------------------------------------------- the params file's limits


def write_params(root: Path, **sections: dict) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in sections.items():
        raw[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    text = proc.stdout + proc.stderr
    errors = [ln for ln in text.splitlines() if "error: " in ln]
    assert proc.returncode != 0 and "Traceback" not in text and len(errors) == 1, text[-3000:]
    return errors[0]


def test_a_10000_value_list_is_refused_quickly_by_check_the_snakefile_and_make_dvc_yaml(tmp_path):
    """Issue 27: a 10,000-value mask_ratios passed `check`, then Snakemake sat at "Building DAG" for over 400 s."""
    root = copy_repo(tmp_path / "repo")
    write_params(root, grid={"mask_ratios": [round(0.05 + i * 0.9 / 10_000, 8) for i in range(10_000)]})
    env = dict(os.environ, PYTHONPATH=str(root / "src"), PATH=VENV_BIN + os.pathsep + os.environ["PATH"])
    dvc_yaml = (root / "dvc.yaml").read_bytes()
    for cmd in (["python", "-m", "mae_hlvm", "check"], ["python", "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out",
                                                        "dvc.yaml"], ["snakemake", "-n"]):
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
        took = time.perf_counter() - started
        line = one_error_line(proc)
        assert "params.yaml: grid.mask_ratios (line " in line and "10,000 values, over the 100 a list may hold" in line
        assert len(line) < 300 and took < 20, (cmd, took)
    assert (root / "dvc.yaml").read_bytes() == dvc_yaml


def test_a_huge_params_file_and_an_alias_bomb_are_refused_before_any_tool_parses_them(tmp_path, monkeypatch):
    """Issue 27: a 10 MB params.yaml and a YAML alias bomb hung `dvc status` for over 120 s."""
    monkeypatch.chdir(tmp_path)
    base = (REPO / "params.yaml").read_text()
    Path("params.yaml").write_text(base + "#" + "x" * 10_000_000 + "\n")
    started = time.perf_counter()
    with pytest.raises(ParamsError, match=r"^params\.yaml: 10,0\d\d,\d{3} bytes, over the 256 KiB a params file may hold"):
        load_params("params.yaml")
    bomb = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'x'] * 9)}]\n" for i in range(9))
    Path("params.yaml").write_text(bomb + base)
    with pytest.raises(ParamsError, match=r"^params\.yaml: l1\[0\]: a YAML alias \(\*name\) repeats the value set at line 1"):
        load_params("params.yaml")
    assert time.perf_counter() - started < 10


def test_long_values_are_cut_in_messages_and_a_grid_has_a_size_limit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ratios = [round(0.0500001 + i * 0.009, 7) for i in range(100)]
    write_params(tmp_path, grid={"mask_ratios": ratios, "mask_units": [2]}, stability={"mask_ratios": [0.42]})
    with pytest.raises(ParamsError) as err:
        load_params("params.yaml")
    text = str(err.value)
    assert text.startswith("params.yaml: stability.mask_ratios[0]=0.42: the stability set must be cells of the grid; "
                           "grid.mask_ratios")
    assert len(text) < 400 and " ... " in text and "characters)" in text, text
    write_params(tmp_path, grid={"mask_ratios": ratios, "seeds": list(range(10))})
    with pytest.raises(ParamsError, match=r"^params\.yaml: grid: 2,000 cells \(100 grid\.mask_ratios x 2 grid\.mask_units x "
                                          r"10 grid\.seeds\), over the 1,000 a grid may hold"):
        load_params("params.yaml")
    from mae_hlvm.core import limits

    assert limits.cut_long_values("short: message") == "short: message"


def test_stability_ratios_outside_the_grid_are_fine_while_the_set_is_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, stability={"enabled": False, "mask_ratios": [0.33]})
    assert load_params("params.yaml").stability.enabled is False
    write_params(tmp_path, stability={"enabled": True, "mask_ratios": [0.33]})
    with pytest.raises(ParamsError, match=r"stability\.mask_ratios\[0\]=0\.33: the stability set must be cells of the grid"):
        load_params("params.yaml")


def test_the_docs_state_the_guarantee():
    doc = " ".join((REPO / "docs/reproducibility.md").read_text().split())
    assert "no tool ever reports up to date while an output differs from what today's params and code produce" in doc
