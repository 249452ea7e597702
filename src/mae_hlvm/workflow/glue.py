"""How Snakemake and DVC agree on what is up to date, in one module (README, "Snakemake and DVC together").

1. Params: each stage's params live in ``.pipeline/params/<stage>.json`` (exactly the keys it
   reads, and its command and input list), rewritten only when their content changes, at
   Snakefile parse time and by the step itself (:func:`step_hooks`). They are Snakemake
   inputs, and Snakemake reruns on mtime only, so an edit reruns exactly the stages DVC reruns.
2. Snakemake -> DVC: a step Snakemake ran leaves a receipt (params digest, sha256 of its
   inputs and outputs); the Snakefile's onstart/onsuccess/onerror call :func:`commit_receipts`:
   one ``dvc commit -f`` for the receipts still valid, with output mtimes restored after.
3. DVC -> Snakemake: ``dvc repro`` runs the same commands (same params-file writes, and a
   benchmark file per job); after ``dvc pull``/``checkout`` run ``python -m mae_hlvm.workflow.sync``.
4. A user's image folder is judged by a listing file (path, size, mtime of each file).

Nothing here computes a result, so editing it reruns nothing (pipeline.NOT_CODE_DEPS).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mae_hlvm.core import paths
from mae_hlvm.core.cells import real_enabled
from mae_hlvm.core.config import Params, ParamsError, load_params
from mae_hlvm.core.io import ArtifactError, dumps_json, read_json, write_json, write_text
from mae_hlvm.core.provenance import digest
from mae_hlvm.workflow import ledger, runlock
from mae_hlvm.workflow.pipeline import (
    STAGE,
    Fields,
    Out,
    active_stages,
    benchmark_path,
    check_dvc_yaml,
    code_deps,
    command,
    dvc_stage_name,
    input_files,
    instances,
    outputs,
    smk_inputs,
    smk_shell,
    stage_params,
)
from mae_hlvm.workflow.stages import user_data_inputs

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


# ----------------------------------------------------------------------------- receipts


def _sha256(path: str, memo: dict[tuple[str, int, int], str] | None = None) -> str | None:
    """SHA-256 of a file, or of a folder's tree (every file's relative path and bytes); None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if os.path.isdir(path):  # a user's image folder, the dep of prepare_real
        h = hashlib.sha256()
        for rel, _, _ in folder_listing(path):
            h.update(rel.encode() + b"\0" + (_sha256(os.path.join(path, rel), memo) or "").encode() + b"\0")
        return h.hexdigest()
    key = (path, st.st_mtime_ns, st.st_size)
    if memo is not None and key in memo:
        return memo[key]
    digest_ = ledger.file_digest(path, "sha256")
    if memo is not None:
        memo[key] = digest_
    return digest_


def folder_listing(path: str) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file under ``path``, sorted (a link: its target's)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:  # a dangling link: prepare_real names it
                st = os.lstat(full)
            out.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return sorted(out)


def _instance(stage: str, params: Params, f: Fields | None) -> dict[str, Any]:
    """What a valid receipt must match: params digest, input and output file hashes."""
    return {
        "params": digest(stage_params(params, stage)),
        "deps": sorted(code_deps(stage) + input_files(stage, f, params)),
        "outs": sorted(o.path for o in outputs(stage, f, params)),
    }


def _receipt(stage: str, params: Params, f: Fields | None, memo: dict | None = None) -> dict[str, Any]:
    inst = _instance(stage, params, f)
    return {
        "stage": dvc_stage_name(stage, f),
        "params": inst["params"],
        "deps": {p: _sha256(p, memo) for p in inst["deps"]},
        "outs": {p: _sha256(p, memo) for p in inst["outs"]},
    }


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
    ledger.restore_mtimes([o.path for o in outputs(job[0], job[1], params)])
    if os.environ.get("DVC_STAGE"):
        # Snakemake judges a rule's benchmark: file like an output: one older than the
        # outputs DVC just rewrote would make it rerun the job, so DVC runs write it too
        write_benchmark(job[0], job[1], time.perf_counter() - started)
        return
    rec = _receipt(job[0], params, job[1])
    write_json(paths.receipt(rec["stage"]), rec)
    from mae_hlvm.workflow import progress

    progress.job_done(rec["stage"])


def _valid_receipts(params: Params) -> tuple[list[str], list[Path]]:
    """(stage names whose receipts still match the tree, receipt files to delete)."""
    current = {dvc_stage_name(stage, f): (stage, f) for stage, f in instances(params)}
    valid, done = [], []
    memo: dict = {}
    for path in sorted(Path(paths.RECEIPTS_DIR).glob("*.json")):
        done.append(path)
        try:
            rec = read_json(path)
        except ArtifactError:
            continue
        name = rec.get("stage")
        if name not in current:
            continue
        stage, f = current[name]
        now = _receipt(stage, params, f, memo)
        if now == rec and None not in now["outs"].values():
            valid.append(name)
    return valid, done


def commit_receipts(params_path: str = "params.yaml", quiet: bool = False) -> list[str]:
    """Record in dvc.lock every stage Snakemake finished whose receipt is still valid.

    One ``dvc commit -f`` for all of them; output mtimes are restored afterwards because
    DVC relinks committed files (a fresh mtime would make downstream outputs look stale to
    Snakemake). Receipts are removed once committed or found stale; on a DVC failure
    (e.g. its lock is held) they are kept for the next call. Returns the committed stages.
    """
    if not Path(".dvc").is_dir() or not Path(paths.RECEIPTS_DIR).is_dir():
        return []
    params = load_params(params_path)
    valid, done = _valid_receipts(params)
    if valid:
        started = time.perf_counter()
        outs = [o.path for name in valid for o in _outs_of(name, params)]
        mtimes = {p: os.stat(p).st_mtime_ns for p in outs}
        targets = commit_targets(valid, params)
        if not quiet:  # the commit takes seconds with nothing on screen: say what it does first
            print(f"mae_hlvm.workflow.glue: recording {len(valid)} Snakemake job(s) in dvc.lock "
                  f"(one `dvc commit` of {len(targets)} stage(s) or group(s)) ...", file=sys.stderr, flush=True)
        proc = subprocess.run(["dvc", "commit", "-f", *targets], capture_output=True, text=True)
        for p, ns in mtimes.items():
            with contextlib.suppress(OSError):
                os.utime(p, ns=(ns, ns))
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith("ERROR")]
            msg = lines[0] if lines else f"exit {proc.returncode}"
            print(
                f"mae_hlvm.workflow.glue: dvc commit failed ({msg}); receipts kept in {paths.RECEIPTS_DIR}, "
                "recorded by the next run (or `python -m mae_hlvm.workflow.pipeline commit-receipts`)",
                file=sys.stderr,
            )
            return []
    for path in done:
        path.unlink(missing_ok=True)
    if valid and not quiet:
        took = time.perf_counter() - started
        print(f"mae_hlvm.workflow.glue: recorded {len(valid)} Snakemake job(s) in dvc.lock ({took:.1f} s)", file=sys.stderr)
    return valid


def start_run() -> None:
    """The Snakefile's ``onstart``: stop with one line while DVC runs in this working copy;
    otherwise record the receipts an interrupted run left and hold DVC's lock (runlock)."""
    try:
        if runlock.claim():
            runlock.release()  # our own `dvc commit` needs the lock
            commit_receipts()
            runlock.claim()
    except runlock.BusyError as err:
        raise SystemExit(f"error: {err}") from None
    from mae_hlvm.workflow import progress  # one overall progress line per finished job (mae_hlvm.workflow.progress)

    with contextlib.suppress(ParamsError, OSError):
        n = progress.start(load_params("params.yaml"), sys.argv)
        if n:
            print(f"run: {n} jobs planned; each finished job prints jobs done and an ETA", file=sys.stderr)


def finish_run() -> None:
    """The Snakefile's ``onsuccess``/``onerror``: give DVC's lock back, record the finished jobs."""
    from mae_hlvm.workflow import progress

    progress.stop()
    runlock.release()
    commit_receipts()


def commit_targets(names: Sequence[str], params: Params) -> list[str]:
    """``dvc commit`` targets for stage instances ``names``: a whole foreach group by its name.

    DVC rewrites dvc.lock once per target, so naming cells one by one costs time
    quadratic in the grid (the default grid's 67 stages: 28 s, against 7 s by group); a
    group name commits all its cells with one write. Groups with any cell missing from
    ``names`` stay per cell.
    """
    members: dict[str, list[str]] = {}
    for stage, f in instances(params):
        members.setdefault(stage, []).append(dvc_stage_name(stage, f))
    wanted, targets = set(names), []
    for stage, group in members.items():
        done = [n for n in group if n in wanted]
        targets += [stage] if len(done) == len(group) else done  # a plain stage is its own group
    return targets


def _outs_of(name: str, params: Params) -> list[Out]:
    for stage, f in instances(params):
        if dvc_stage_name(stage, f) == name:
            return outputs(stage, f, params)
    return []

