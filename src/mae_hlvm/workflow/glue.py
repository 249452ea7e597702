"""How Snakemake and DVC agree on what is up to date, in one module (README, "Snakemake and DVC together").

1. Params: each stage's params live in ``.pipeline/params/<stage>.json`` (exactly the keys it
   reads, and its command and input list), rewritten only when their content changes, at
   Snakefile parse time and by the step itself (:func:`step_hooks`). They are Snakemake
   inputs, and Snakemake reruns on mtime only, so an edit reruns exactly the stages DVC reruns.
2. Snakemake -> DVC: a step Snakemake ran leaves a receipt (params digest, sha256 of its
   inputs and outputs); the Snakefile (at parse time, :func:`record_left_receipts`) and its
   onstart/onsuccess/onerror call :func:`commit_receipts`: one ``dvc commit -f`` for the
   receipts still valid, with output mtimes restored after. Recording is all or nothing: a
   commit that fails, is interrupted or leaves dvc.lock without every job puts dvc.lock back
   as it was (from ``.pipeline/dvc.lock.before``) and keeps the receipts for the next run.
3. DVC -> Snakemake: ``dvc repro`` runs the same commands (same params-file writes, and a
   benchmark file per job); after ``dvc pull``/``checkout`` run ``python -m mae_hlvm.workflow.sync``.
4. A user's image folder is judged by a listing file (path, size, mtime of each file).

Nothing here computes a result, so editing it reruns nothing (pipeline.NOT_CODE_DEPS).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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
    all_outputs,
    benchmark_path,
    check_dvc_yaml,
    code_deps,
    command,
    dvc_stage_name,
    input_files,
    instances,
    log_path,
    outputs,
    smk_inputs,
    smk_shell,
    stage_params,
)
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


def receipt_matches_inputs(rec: dict, stage: str, f: Fields | None, params: Params, memo: dict | None = None) -> bool | None:
    """Whether a receipt's params digest and input hashes are today's (its outputs not looked
    at); None when nothing present contradicts it but an input is missing."""
    inst = _instance(stage, params, f)
    deps = rec.get("deps")
    if rec.get("params") != inst["params"] or not isinstance(deps, dict) or sorted(deps) != inst["deps"]:
        return False
    now = {p: _sha256(p, memo) for p in deps}
    if any(sha is not None and sha != deps[p] for p, sha in now.items()):
        return False
    return None if None in now.values() else True


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


PENDING = (f"receipts kept in {paths.RECEIPTS_DIR}, recorded by the next run "
           "(or `python -m mae_hlvm.workflow.pipeline commit-receipts`)")


def _say(message: str) -> None:
    print(f"mae_hlvm.workflow.glue: {message}", file=sys.stderr, flush=True)


def _fsync_dir(folder: str | Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_journal() -> None:
    """Keep dvc.lock as it is, bytes and mtime, before a commit rewrites it (DVC writes it in
    place, one target at a time). Putting it back is then a rename: no write that a full disk
    or a write limit could stop halfway."""
    Path(paths.STATE_DIR).mkdir(parents=True, exist_ok=True)
    if not Path(ledger.LOCK_FILE).exists():
        Path(ledger.JOURNAL_ABSENT).touch()
        _fsync_dir(paths.STATE_DIR)
        return
    fd, tmp = tempfile.mkstemp(prefix=".dvc.lock.", suffix=".tmp", dir=paths.STATE_DIR)
    os.close(fd)
    try:
        shutil.copy2(ledger.LOCK_FILE, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, ledger.JOURNAL)
        _fsync_dir(paths.STATE_DIR)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _drop_journal() -> None:
    """The commit point: dvc.lock records every job, so the copy from before goes."""
    Path(ledger.JOURNAL).unlink(missing_ok=True)
    Path(ledger.JOURNAL_ABSENT).unlink(missing_ok=True)


def recover_commit() -> bool:
    """Put dvc.lock back as it was before a commit that did not finish; True when one was put back.

    For a commit killed outright (SIGKILL, a power cut): the next run, ``verify`` and
    ``commit-receipts`` call this before anything reads dvc.lock; the receipts are still there.
    """
    if Path(ledger.JOURNAL).exists():
        os.replace(ledger.JOURNAL, ledger.LOCK_FILE)
    elif Path(ledger.JOURNAL_ABSENT).exists():
        Path(ledger.LOCK_FILE).unlink(missing_ok=True)
        Path(ledger.JOURNAL_ABSENT).unlink()
    else:
        return False
    _fsync_dir(".")
    return True


def _put_back() -> str:
    """:func:`recover_commit` after a failed commit, as the words of its one line."""
    try:
        recover_commit()
    except OSError as err:
        return (f"dvc.lock could not be put back ({err.strerror}): {ledger.JOURNAL} holds it, put back by the next run "
                "or `python -m mae_hlvm verify`;")
    return "dvc.lock is as it was before it;"


@contextlib.contextmanager
def _no_sigint() -> Iterator[None]:
    """Ctrl-C ignored while dvc.lock is put back (a second one would leave it half-done)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def communicate(proc: subprocess.Popen, grace_s: float = 10) -> tuple[str, str]:
    """``proc.communicate()`` for a child started in its own session (so Ctrl-C reaches only us):
    on Ctrl-C, stop it with SIGINT (SIGKILL after ``grace_s``), then let KeyboardInterrupt go on."""
    try:
        return proc.communicate()
    except KeyboardInterrupt:
        with _no_sigint():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise


def _dvc_commit(targets: Sequence[str]) -> tuple[int, str]:
    """Run ``dvc commit -f`` on ``targets``: (exit code, its output); DVC stopped on Ctrl-C."""
    try:
        proc = subprocess.Popen(["dvc", "commit", "-f", *targets], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    except OSError as err:
        return 127, f"ERROR: cannot run dvc ({err.strerror})"
    out, err = communicate(proc)
    return proc.returncode, err + out


def _not_recorded(names: Sequence[str], params: Params) -> str | None:
    """None when dvc.lock records each output of the stage instances ``names`` with its bytes;
    else what is not (DVC exits 0 with a dvc.lock cut short by a write limit)."""
    try:
        entries = ledger.parse_lock(Path(ledger.LOCK_FILE).read_text())
    except (OSError, UnicodeDecodeError, ArtifactError):
        return "dvc.lock unreadable after it"
    for name in names:
        outs = entries.get(name, {}).get("outs")
        recorded = {os.path.normpath(str(o.get("path"))): o.get("md5") for o in outs or [] if isinstance(o, dict)}
        for out in _outs_of(name, params):
            if recorded.get(os.path.normpath(out.path)) != ledger.file_digest(out.path, "md5"):
                return f"dvc.lock does not record {out.path} of {name} after it"
    return None


def commit_receipts(params_path: str = "params.yaml", quiet: bool = False) -> list[str]:
    """Record in dvc.lock every stage Snakemake finished whose receipt is still valid, all or nothing.

    One ``dvc commit -f`` for all of them; output mtimes are restored afterwards because
    DVC relinks committed files (a fresh mtime would make downstream outputs look stale to
    Snakemake). dvc.lock is copied aside first; when DVC fails, is interrupted (one line,
    exit 130) or leaves dvc.lock without every job (a full disk, a write limit), it is put
    back as it was and the receipts are kept for the next call. Receipts go only after dvc.lock
    records every job, or when stale. The caller holds the run lock (runlock); DVC's lock must
    be free. Returns the committed stages.
    """
    if not Path(".dvc").is_dir():
        return []
    if recover_commit():
        _say("a `dvc commit` cut short earlier had left dvc.lock half-written: put back as it was before it")
    if not Path(paths.RECEIPTS_DIR).is_dir():
        return []
    params = load_params(params_path)
    valid, done = _valid_receipts(params)
    if valid:
        started = time.perf_counter()
        outs = [o.path for name in valid for o in _outs_of(name, params)]
        mtimes = {p: os.stat(p).st_mtime_ns for p in outs}
        targets = commit_targets(valid, params)
        if not quiet:  # the commit takes seconds with nothing on screen: say what it does first
            _say(f"recording {len(valid)} Snakemake job(s) in dvc.lock (one `dvc commit` of {len(targets)} stage(s) or "
                 "group(s)) ...")
        try:
            _save_journal()
        except OSError as err:
            _say(f"cannot copy dvc.lock aside before recording ({err.strerror}): nothing recorded, dvc.lock is as it "
                 f"was; {PENDING}")
            return []
        try:
            code, text = _dvc_commit(targets)
            lines = [ln for ln in text.splitlines() if ln.startswith("ERROR")]
            problem = (lines[0] if lines else f"exit {code}") if code != 0 else _not_recorded(valid, params)
        except KeyboardInterrupt:
            with _no_sigint():
                back = _put_back()
                _restore_mtimes(mtimes)
            _say(f"interrupted while recording {len(valid)} job(s) in dvc.lock: {back} {PENDING}")
            raise SystemExit(130) from None
        _restore_mtimes(mtimes)
        if problem is not None:
            with _no_sigint():
                back = _put_back()
            _say(f"dvc commit failed ({problem}); {back} {PENDING}")
            return []
        _drop_journal()
    for path in done:
        path.unlink(missing_ok=True)
    if valid and not quiet:
        _say(f"recorded {len(valid)} Snakemake job(s) in dvc.lock ({time.perf_counter() - started:.1f} s)")
    return valid


def _restore_mtimes(mtimes: dict[str, int]) -> None:
    for p, ns in mtimes.items():
        with contextlib.suppress(OSError):
            os.utime(p, ns=(ns, ns))


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
        _say(f"interrupted before recording the finished jobs in dvc.lock: dvc.lock is as it was; {PENDING}")
        raise SystemExit(130) from None
    finally:
        runlock.release_run()


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

