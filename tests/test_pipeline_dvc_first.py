"""The pipeline run by DVC first, then Snakemake, with both tools' locks (a ``slow`` test).

The mirror of ``test_pipeline.py``'s Snakemake-first sequence, in a file of its own so
that the two whole-DAG sequences can run on different pytest-xdist workers
(``--dist loadfile``, the Makefile's test command).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from helpers import (
    assert_agree_up_to_date,
    copy_repo,
    dvc_stale,
    dvc_would_run,
    edit_params,
    env_for,
    init_repo,
    plan_of_stages,
    sh,
    snakemake_plan,
    tiny_params,
    tracked_outputs,
)


@pytest.mark.slow
def test_dvc_then_snakemake_sequences_and_locks(tmp_path):
    root = copy_repo(tmp_path / "repo")
    tiny_params(root)
    # the real track switched off (it runs in the test above): dvc.yaml regenerated without it
    edit_params(root, real__enabled=False)
    (root / "dvc.yaml").write_text(sh(root, sys.executable, "-m", "mae_hlvm.workflow.pipeline", "dvc-yaml").stdout)
    assert "real" not in (root / "dvc.yaml").read_text().split("stages:")[1]
    init_repo(root)

    # DVC runs everything; Snakemake's mtime view agrees without any sync
    sh(root, "dvc", "repro")
    assert_agree_up_to_date(root)

    # a probe-only edit, run by Snakemake; a second Snakemake run is refused meanwhile
    edit_params(root, probe__cv_folds=3)
    want = {"probe@0.25-2-0", "probe@0.5-2-0", "baseline@0", "aggregate", "figures", "claims", "summary",
            "probe_stable@0.25-2", "probe_stable@0.5-2"}
    # aggregate and claims read probe.pooling only
    assert dvc_stale(root) == want - {"aggregate", "claims"}
    assert dvc_would_run(root) == want
    assert snakemake_plan(root) == plan_of_stages(want)
    first = subprocess.Popen(
        ["snakemake", "--cores", "2"], cwd=root, env=env_for(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not any((root / ".snakemake" / "locks").glob("*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        second = sh(root, "snakemake", "--cores", "1", check=False)
        assert second.returncode != 0
        assert "lock" in (second.stdout + second.stderr).lower()
    finally:
        assert first.wait(timeout=300) == 0
    assert_agree_up_to_date(root)

    # DVC's own lock refuses a second dvc repro
    edit_params(root, probe__cv_folds=2, probe__ridge_alphas=[0.1, 1.0])
    first = subprocess.Popen(
        ["dvc", "repro"], cwd=root, env=env_for(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        log = root / "logs" / "probe" / "r0.25_u2_s0.log"
        before = log.stat().st_mtime_ns
        while log.stat().st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.1)
        second = sh(root, "dvc", "repro", check=False)
        assert second.returncode != 0
        assert "lock" in (second.stdout + second.stderr).lower()
    finally:
        assert first.wait(timeout=300) == 0
    assert_agree_up_to_date(root)

    # determinism end to end: forcing every stage to rerun reproduces every output byte
    # for byte, so dvc.lock (which records their hashes) does not change
    lock = (root / "dvc.lock").read_text()
    outputs = {p: (root / p).read_bytes() for p in tracked_outputs(root)}
    sh(root, "dvc", "repro", "-f")
    assert (root / "dvc.lock").read_text() == lock
    assert {p: (root / p).read_bytes() for p in tracked_outputs(root)} == outputs
    assert_agree_up_to_date(root)
