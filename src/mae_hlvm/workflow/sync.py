"""Make Snakemake agree with DVC after ``dvc pull``, ``dvc checkout`` or a run-cache restore.

Those DVC commands write outputs in no particular order and without running the steps,
so file mtimes no longer follow the DAG and Snakemake (which reruns on mtime) would
rerun fresh outputs. When ``dvc status`` says every stage is up to date, the outputs
match params.yaml and the code exactly, so it is safe to re-stamp them in DAG order
with ``snakemake --touch``. When DVC sees stale stages nothing is touched: run
``dvc repro`` (or ``snakemake``) instead.

Usage: ``python -m mae_hlvm.workflow.sync`` (``make sync``); exit 0 when in agreement, 1 when not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from mae_hlvm.core.config import ParamsError, load_params
from mae_hlvm.workflow import glue, receipts


def dvc_stale_stages() -> list[str]:
    """Names of the DVC stages ``dvc status`` reports as changed (empty: all up to date)."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc status failed: {proc.stderr.strip().splitlines()[-1:]}")
    return sorted(json.loads(proc.stdout or "{}"))


SYNCING = "MAE_HLVM_SYNCING"  # set for the inner Snakemake of a touch: it must not sync again
INTERRUPTED = ("interrupted while re-stamping outputs for Snakemake (nothing was rebuilt, recorded or deleted): "
               "run again, or `make sync`, to finish it")


def touch_in_dag_order(cores: int = 1) -> None:
    """Re-stamp every output Snakemake would rerun, upstream first; RuntimeError (one line) when it fails.

    The inner Snakemake runs in its own session with its output captured: on Ctrl-C this
    process alone is interrupted, stops it (SIGINT, so it unlocks its folder) and says so in
    one line, where both used to print a traceback (issue 27).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--touch", "--cores", str(cores), "--quiet", "all"],
        env=dict(os.environ, **{SYNCING: "1"}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    out, _ = receipts.communicate(proc, grace_s=30)
    if proc.returncode != 0:
        last = [ln for ln in out.splitlines() if ln.strip()][-1:] or [f"exit {proc.returncode}"]
        raise RuntimeError(f"re-stamping outputs for Snakemake (`snakemake --touch`) failed: {last[0].strip()}")


def adopt_dvc_results(changed: list[str]) -> bool:
    """At Snakemake's start, when params changed since its last view: are DVC's outputs current?

    ``changed``: the stages whose params files the Snakefile just rewrote. When DVC made the
    outputs for these params elsewhere (``dvc exp run --queue`` + ``exp apply``, ``git
    checkout`` + ``dvc checkout``, ``dvc pull``), every output is fresh by ``dvc status``
    but older than the rewritten params file, so Snakemake would retrain all of it. Then
    this re-stamps them in DAG order (what ``make sync`` does) with one line, and returns
    True. Nothing happens without ``changed``, without DVC, while DVC runs here (its status
    fails) or when DVC sees stale stages (Snakemake then reruns them, as it should).
    """
    if not changed or os.environ.get(SYNCING) or not os.path.isdir(".dvc"):
        return False
    started = time.perf_counter()
    try:
        try:
            stale = dvc_stale_stages()
        except (RuntimeError, ValueError, OSError):
            return False
        if stale:
            return False
        touch_in_dag_order()
    except KeyboardInterrupt:
        raise SystemExit(f"error: {INTERRUPTED}") from None
    except RuntimeError as err:
        raise SystemExit(f"error: {err}") from None
    print(
        f"mae_hlvm.workflow.sync: params changed since Snakemake's last run and dvc.lock already holds their results "
        f"(dvc exp apply, checkout or pull): outputs re-stamped for Snakemake ({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    return True


def restamp_current(params) -> list[str]:  # noqa: ANN001
    """Re-stamp, upstream first, the outputs of every stage ``dvc status`` finds up to date.

    For adopting jobs run elsewhere (ci/gpu/adopt.sh) while other stages are still to run:
    ``snakemake --touch`` would also mark those as done. Returns the stages re-stamped.
    """
    from mae_hlvm.workflow.plainrun import topological

    stale = set(dvc_stale_stages())
    now, done = time.time(), []
    for rank, (name, _, _, outs, _) in enumerate(topological(params)):
        if name in stale or not all(os.path.exists(o) for o in outs):
            continue
        for o in outs:
            os.utime(o, (now + rank * 1e-3, now + rank * 1e-3))
        done.append(name)
    return done


def main(argv: list[str] | None = None) -> int:
    try:
        glue.write_params_files(load_params("params.yaml"))
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stale = dvc_stale_stages()
    if stale:
        print(
            f"mae_hlvm.workflow.sync: DVC sees {len(stale)} stale stage(s) ({', '.join(stale[:5])}"
            f"{', ...' if len(stale) > 5 else ''}); nothing touched: run `dvc repro` first",
            file=sys.stderr,
        )
        return 1
    try:
        touch_in_dag_order()
    except KeyboardInterrupt:
        print(f"error: {INTERRUPTED}", file=sys.stderr)
        return 130
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("mae_hlvm.workflow.sync: DVC is clean; Snakemake now sees the same outputs as up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
