"""How Snakemake and DVC agree on what is up to date (README, "Snakemake and DVC together").

1. Params: each stage's params live in ``.pipeline/params/<stage>.json`` (exactly the keys it
   reads, and its command and input list), rewritten only when their content changes, at
   Snakefile parse time and by the step itself (:func:`step_hooks`). They are Snakemake
   inputs, and Snakemake reruns on mtime only, so an edit reruns exactly the stages DVC reruns.
2. Snakemake -> DVC: a step Snakemake ran leaves a receipt (params digest, sha256 of its
   inputs and outputs); the Snakefile (at parse time, :func:`record_left_receipts`) and its
   onstart/onsuccess/onerror call :func:`mae_hlvm.workflow.receipts.commit_receipts`: one
   ``dvc commit -f`` for the receipts still valid, with output mtimes restored after, all or
   nothing (:mod:`mae_hlvm.workflow.receipts`).
3. DVC -> Snakemake: ``dvc repro`` runs the same commands (same params-file writes, and a
   benchmark file per job); after ``dvc pull``/``checkout`` run ``python -m mae_hlvm.workflow.sync``.
4. A user's image folder is judged by a listing file (path, size, mtime of each file).

Nothing here computes a result, so editing it reruns nothing (workflow/ is never a code dep: pipeline.code_deps).
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from mae_hlvm.core import paths
from mae_hlvm.core.cells import real_enabled
from mae_hlvm.core.config import Params, ParamsError, load_params
from mae_hlvm.core.io import ArtifactError, dumps_json, write_json, write_text
from mae_hlvm.workflow import ledger, runlock, verify
from mae_hlvm.workflow.pipeline import (
    STAGE,
    Fields,
    active_stages,
    all_outputs,
    benchmark_path,
    check_dvc_yaml,
    command,
    instances,
    log_path,
    outputs,
    smk_inputs,
    smk_shell,
    stage_params,
)
from mae_hlvm.workflow.receipts import PENDING, commit_receipts, folder_listing, job_receipt, say
from mae_hlvm.workflow.tracks import user_data_inputs

# ----------------------------------------------------------------------------- params files


def params_file_text(params: Params, stage: str) -> str:
    """What Snakemake sees of a stage besides file times: the params it reads, and its rule
    (command and input files, as dvc.yaml has them). DVC reruns a stage whose cmd or deps
    changed; with these in the file, Snakemake does too when a stage record is edited."""
    rule = {"command": smk_shell(stage), "inputs": [p for p in smk_inputs(stage, params) if p != paths.params_file(stage)]}
    return dumps_json({"params": stage_params(params, stage), "rule": rule})


def write_params_file(params: Params, stage: str) -> bool:
    """Write the stage's params file if its content changed; True when written.

    Unchanged content keeps the old mtime, so outputs made with these params stay newer.
    """
    path = Path(paths.params_file(stage))
    text = params_file_text(params, stage)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    write_text(path, text)
    return True


def write_params_files(params: Params) -> list[str]:
    """The active stages' params files (Snakefile parse time); returns the stages rewritten.

    Also the listing of a user's image folder (:func:`write_folder_listing`).
    """
    write_folder_listing(params)
    return [s for s in active_stages(params) if write_params_file(params, s)]


def write_folder_listing(params: Params) -> bool:
    """Snakemake's stand-in for each of a user's image folders: every file's path, size and mtime.

    Each is rewritten only when one of them changes, so an image overwritten inside the
    folder reruns prepare_real (DVC sees the same through the folder's hash). True when
    one was written.
    """
    inputs = user_data_inputs(params) if real_enabled(params) else {}
    written = [_write_listing(paths.folder_listing_file(key), folder) for key, folder in inputs.items() if os.path.isdir(folder)]
    return any(written)


def _write_listing(path: str, folder: str) -> bool:
    """Write ``folder``'s listing to ``path`` unless it already holds it; True when written."""
    text = dumps_json({"folder": folder, "files": folder_listing(folder)})
    with contextlib.suppress(OSError):
        if Path(path).read_text() == text:
            return False
    write_text(Path(path), text)
    return True


# ----------------------------------------------------------------------------- benchmarks (DVC runs)


BENCHMARK_COLUMNS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time")


def write_benchmark(stage: str, f: Fields | None, seconds: float) -> None:
    """A benchmark file in Snakemake's columns for a job DVC ran (wall time; the rest NA)."""
    hms = f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    row = [f"{seconds:.4f}", hms] + ["NA"] * (len(BENCHMARK_COLUMNS) - 2)
    write_text(benchmark_path(stage, f), "\t".join(BENCHMARK_COLUMNS) + "\n" + "\t".join(row) + "\n")


# ----------------------------------------------------------------------------- a step's hooks


def _canonical_job(step: str, params: Params, argv: Sequence[str]) -> tuple[str, Fields | None] | None:
    """The (stage, cell) of the current params whose command is exactly ``argv``, else None."""
    for stage, f in instances(params):
        if STAGE[stage].step.name == step and list(argv) == shlex.split(command(stage, f))[3:]:
            return stage, f
    return None


@contextlib.contextmanager
def step_hooks(step: str, params: Params, argv: Sequence[str]) -> Iterator[None]:
    """Wrap one CLI step (cli.py): params file before it runs, a receipt after it succeeds.

    ``argv``: the step's arguments after ``python -m mae_hlvm``. Only the canonical
    stage command gets a receipt, and none under DVC (DVC records its own runs). Under
    DVC a stale dvc.yaml (the stage set no longer that of params.yaml) stops the step.
    """
    stages = [s for s in active_stages(params) if STAGE[s].step.name == step]
    if stages and os.environ.get("DVC_STAGE"):
        check_dvc_yaml(params)
    for stage in stages:
        write_params_file(params, stage)
    if "prepare_real" in stages:
        write_folder_listing(params)  # before the step, so that its output is newer
    started = time.perf_counter()
    yield
    job = _canonical_job(step, params, argv) if stages else None
    if job is None:
        return
    # an output `verify` removed and this job gave back byte for byte keeps its old mtime
    verify.restore_mtimes([o.path for o in outputs(job[0], job[1], params)])
    if os.environ.get("DVC_STAGE"):
        # Snakemake judges a rule's benchmark: file like an output: one older than the
        # outputs DVC just rewrote would make it rerun the job, so DVC runs write it too
        write_benchmark(job[0], job[1], time.perf_counter() - started)
        return
    rec = job_receipt(job[0], params, job[1])
    write_json(paths.receipt(rec["stage"]), rec)
    from mae_hlvm.workflow import progress

    progress.job_done(rec["stage"])


# ----------------------------------------------------------------------------- runs


# Snakemake options under which it runs no job (a dry run, a report, a listing...)
NOT_A_RUN = (
    "dryrun", "touch", "unlock", "lint", "summary", "detailed_summary", "list_rules", "list_target_rules",
    "list_changes", "list_input_changes", "list_params_changes", "list_untracked", "list_conda_envs", "dag",
    "rulegraph", "filegraph", "d3dag", "report", "cleanup_metadata", "cleanup_shadow", "delete_all_output",
    "delete_temp_output", "containerize", "export_cwl", "archive", "print_compilation", "generate_unit_tests",
    "no_hooks", "debug_dag",
)


def _runs_jobs(argv: Sequence[str]) -> bool:
    """Whether a Snakemake command line (``sys.argv`` at the Snakefile's parse) is a run in the
    main process: not a dry run, a listing, a report or a cluster job's own Snakemake."""
    try:
        from snakemake.cli import get_argument_parser

        with contextlib.redirect_stderr(io.StringIO()):
            args, _ = get_argument_parser().parse_known_args(list(argv[1:]))
    except (Exception, SystemExit):  # noqa: BLE001 - not Snakemake's command line: not a run
        return False
    mode = getattr(args, "mode", None)
    return getattr(mode, "name", "DEFAULT") == "DEFAULT" and not any(getattr(args, k, None) for k in NOT_A_RUN)


def record_left_receipts(argv: Sequence[str]) -> None:
    """At the Snakefile's parse: record the receipts an earlier run left (its final commit
    failed or was interrupted), and put back a dvc.lock a killed commit left half-written.

    Snakemake calls ``onstart`` only when it has jobs to run: after "Nothing to be done"
    the receipts stayed unrecorded and ``dvc status`` dirty (issue 27). Only for a run (not
    ``-n``, a report or a listing) and only when the run lock and DVC are free here; otherwise
    ``onstart`` refuses with one line, or the running tool records them.
    """
    from mae_hlvm.workflow.sync import SYNCING

    pending = Path(paths.RECEIPTS_DIR).is_dir() and any(Path(paths.RECEIPTS_DIR).glob("*.json"))
    if os.environ.get(SYNCING) or not (pending or ledger.journal_left()) or not _runs_jobs(argv):
        return
    try:
        with runlock.exclusive("snakemake", dvc=False):
            if runlock.claim():
                runlock.release()  # DVC is not running here; our own `dvc commit` needs its lock
            commit_receipts()
    except runlock.BusyError:
        return
    except KeyboardInterrupt:
        raise SystemExit(f"error: interrupted before recording the jobs an earlier run left: {PENDING}") from None


def unwritable_folder(params: Params) -> str | None:
    """One line naming the first folder a job of ``params`` writes into (outputs, logs,
    benchmarks) that this process cannot write; None when it can write them all.

    Snakemake itself stops with a traceback (PermissionError) when it removes a job's old outputs.
    """
    files = [*all_outputs(params), paths.receipt("x")]
    files += [p for stage, f in instances(params) for p in (log_path(stage, f), benchmark_path(stage, f))]
    tried: set[str] = set()
    for folder in sorted({os.path.dirname(p) or "." for p in files}):
        existing = folder
        while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing) or "."
        if existing in tried:
            continue
        tried.add(existing)
        try:
            fd, probe = tempfile.mkstemp(prefix=".mae_hlvm-write-check.", dir=existing)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            return (f"{existing}: this process cannot write in it ({err.strerror}), and the run writes {folder}: make it "
                    f"writable (`chmod -R u+w {existing}`) and run again; no job was started")
    return None


def start_run() -> None:
    """The Snakefile's ``onstart``: stop with one line while DVC, another run or ``verify`` is busy in
    this working copy; otherwise record the receipts an interrupted run left, hold the run lock
    and DVC's lock (runlock), and check that every folder the jobs write is writable."""
    try:
        try:
            if runlock.claim():
                runlock.release()  # our own `dvc commit` needs the lock
                commit_receipts()
                runlock.claim()
            ledger.read_ledger()  # an unusable dvc.lock stops the run here, not in every job
            problem = unwritable_folder(load_params("params.yaml"))
        except (runlock.BusyError, ArtifactError) as err:
            raise SystemExit(f"error: {err}") from None
        except KeyboardInterrupt:
            raise SystemExit(f"error: interrupted before the first job: {PENDING}") from None
        if problem:
            raise SystemExit(f"error: {problem}")
    except SystemExit:
        runlock.release()
        runlock.release_run()
        raise
    from mae_hlvm.workflow import progress  # one overall progress line per finished job (mae_hlvm.workflow.progress)

    with contextlib.suppress(ParamsError, OSError):
        n = progress.start(load_params("params.yaml"), sys.argv)
        if n:
            print(f"run: {n} jobs planned; each finished job prints jobs done and an ETA", file=sys.stderr)


def finish_run() -> None:
    """The Snakefile's ``onsuccess``/``onerror``: give DVC's lock back, record the finished jobs,
    then the run lock. Ctrl-C here is one line (dvc.lock as it was, receipts kept), exit 130."""
    from mae_hlvm.workflow import progress

    try:
        progress.stop()
        runlock.release()
        commit_receipts()
    except KeyboardInterrupt:
        say(f"interrupted before recording the finished jobs in dvc.lock: dvc.lock is as it was; {PENDING}")
        raise SystemExit(130) from None
    finally:
        runlock.release_run()
