"""Never serve a stale result (issue 27), the whole-pipeline half: the reproductions that need the
real tools, in one working copy on the tiniest params. Each step ended, before the fix, with old
bytes that every tool called up to date, or with a traceback. The fast half is
tests/test_never_stale.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    assert_agree_up_to_date,
    copy_repo,
    drop_from_dvc_cache,
    edit_params,
    env_for,
    flip_byte_keep_mtime,
    init_repo,
    make_read_only,
    make_writable,
    sh,
    snakemake_plan,
    start,
    tiny_params,
    tracked_outputs,
    wait_for,
)

from mae_hlvm.workflow import receipts
from mae_hlvm.workflow.verify import QUARANTINE_DIR

pytestmark = pytest.mark.slow

DAMAGED, DELETED = "results/cells/r0.5_u2_s0.json", "results/cells/r0.25_u2_s0.json"

# A recording program ($MAE_HLVM_DVC_COMMIT) that runs the real one under a write limit (bytes),
# what `ulimit -f` does to the final commit while the run's own process writes freely, and keeps
# dvc.lock as DVC left it (before the run puts it back) in {seen}.
LIMITED_DVC = """#!{python}
import resource, shutil, subprocess, sys
limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
code = subprocess.call([{python!r}, "-m", "mae_hlvm.workflow.dvc_commit", *sys.argv[1:]], preexec_fn=limit)
shutil.copyfile("dvc.lock", {seen!r})
sys.exit(code)
"""


def verify(root: Path):
    return sh(root, sys.executable, "-m", "mae_hlvm", "verify", check=False)


def test_no_tool_serves_old_bytes_and_both_rebuild_what_is_missing(tmp_path):
    root = copy_repo(tmp_path / "repo")
    tiny_params(root)
    edit_params(root, real__enabled=False, stability__enabled=False)
    sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml", "--out", "dvc.yaml")
    init_repo(root)
    sh(root, "snakemake", "--cores", "2")
    reference = {p: (root / p).read_bytes() for p in tracked_outputs(root)}
    assert_agree_up_to_date(root)

    # cases 5 and 6: a cell deleted, another damaged with no copy in DVC's cache. `verify` moves
    # the damaged one aside (nothing deleted), exits 1 and names the command; plain
    # `snakemake --cores 2` (`make run`) rebuilds both and what depends on them
    drop_from_dvc_cache(root, DAMAGED)
    flip_byte_keep_mtime(root / DAMAGED, (root / DAMAGED).read_text().index("0.") + 3)
    damaged_bytes = (root / DAMAGED).read_bytes()
    (root / DELETED).unlink()
    ver = verify(root)
    assert ver.returncode == 1 and f"{DAMAGED}: damaged" in ver.stdout, ver.stdout + ver.stderr
    assert "; moved to .pipeline/quarantine/" in ver.stdout and "(nothing is deleted)" in ver.stdout
    assert " 2 missing" in ver.stdout and "rebuild them and what depends on them: `make run` (or `dvc repro`)" in ver.stdout
    quarantined = list((root / QUARANTINE_DIR).rglob("*.json"))
    assert [q.read_bytes() for q in quarantined] == [damaged_bytes] and not (root / DAMAGED).exists()
    plan = snakemake_plan(root)
    assert plan.get("probe") == 2 and plan.get("aggregate") == 1 and plan.get("summary") == 1, plan

    # case 1: `verify` while the run goes refuses in one line, naming it
    smk = start(root, "snakemake", "--cores", "2")
    run_lock = root / ".pipeline/run.lock"
    wait_for(lambda: run_lock.exists() and run_lock.read_text().split()[:1] == [str(smk.pid)], "the run to take its lock")
    ver = verify(root)
    errors = [ln for ln in (ver.stdout + ver.stderr).splitlines() if ln.strip()]
    assert ver.returncode == 2 and len(errors) == 1, ver.stdout + ver.stderr
    assert f"verify refused: `snakemake --cores 2` (pid {smk.pid}) is running in this working copy" in errors[0]
    out, _ = smk.communicate(timeout=600)
    assert smk.returncode == 0, out[-3000:]
    assert {p: (root / p).read_bytes() for p in tracked_outputs(root)} == reference
    assert_agree_up_to_date(root)
    assert verify(root).returncode == 0

    # cases 3 and 9: a write limit cuts the final `dvc commit` short. dvc.lock stays as it was,
    # the receipt is kept, `verify` restores nothing over the fresh output (it did: old bytes
    # from DVC's cache), and the next run records it although it has nothing to run
    summary_py = root / "src/mae_hlvm/review/summary.py"
    assert '"# mae-hlvm results summary"' in summary_py.read_text(), "this test edits the summary's title"
    summary_py.write_text(summary_py.read_text().replace('"# mae-hlvm results summary"', '"# mae-hlvm results summary, v2"'))
    lock = root / "dvc.lock"
    # as large as the shipped dvc.lock (the was 185 KB), so that the limit below stops
    # DVC's rewrite of it and none of DVC's smaller writes
    lock.write_text("".join(f"# line {i:05d}: dvc.lock as large as the default grid's\n" for i in range(3000)) + lock.read_text())
    lock_before, lock_mtime = lock.read_bytes(), lock.stat().st_mtime_ns
    limited, limit, seen = tmp_path / "limited", len(lock_before) - 2000, tmp_path / "dvc.lock.as-dvc-left-it"
    limited.mkdir()
    (limited / "dvc").write_text(LIMITED_DVC.format(python=sys.executable, limit=limit, seen=str(seen)))
    (limited / "dvc").chmod(0o755)
    env = env_for(root)
    env[receipts.COMMIT_PROGRAM_ENV] = str(limited / "dvc")
    run = subprocess.run(["snakemake", "--cores", "2"], cwd=root, env=env, capture_output=True, text=True)
    text = run.stdout + run.stderr
    assert run.returncode == 0 and "Traceback" not in text, text[-3000:]
    assert "dvc commit failed (ERROR: unexpected error - [Errno 27] File too large); dvc.lock is as it was before it" in text
    assert len(seen.read_bytes()) == limit  # DVC rewrote dvc.lock and was cut mid-way,
    assert lock.read_bytes() == lock_before and lock.stat().st_mtime_ns == lock_mtime  # and it is back as it was
    summary = (root / "results/summary.md").read_bytes()
    assert b"results summary, v2" in summary
    ver = verify(root)
    pending = [ln for ln in ver.stdout.splitlines() if "made by Snakemake, not yet in dvc.lock: " in ln]
    assert ver.returncode == 1 and " 0 damaged" in ver.stdout and "results/summary.md" in pending[0], ver.stdout
    assert (root / "results/summary.md").read_bytes() == summary and len(list((root / QUARANTINE_DIR).iterdir())) == 1
    again = sh(root, "snakemake", "--cores", "2")
    assert "Nothing to be done" in again.stdout + again.stderr
    assert "recorded 1 Snakemake job(s) in dvc.lock" in again.stderr
    assert_agree_up_to_date(root)
    assert verify(root).returncode == 0 and (root / "results/summary.md").read_bytes() == summary

    # a read-only output folder: one line before any job, where Snakemake stopped with a traceback
    # (PermissionError) as it removed the old output of a job it was about to rerun
    edit_params(root, probe__cv_folds=3)  # every probe reruns
    cell = (root / DELETED).read_bytes()
    log = root / "logs/probe/r0.25_u2_s0.log"
    log_mtime = log.stat().st_mtime_ns
    make_read_only(root / "results/cells")
    try:
        run = sh(root, "snakemake", "--cores", "2", check=False)
    finally:
        make_writable(root / "results/cells")
    text = run.stdout + run.stderr
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert run.returncode != 0 and "Traceback" not in text and len(errors) == 1, text[-3000:]
    assert errors[0].startswith("error: results/cells: this process cannot write in it") and "no job was started" in errors[0]
    assert log.stat().st_mtime_ns == log_mtime and (root / DELETED).read_bytes() == cell
