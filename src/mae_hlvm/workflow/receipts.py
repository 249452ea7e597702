"""Receipts, and recording them in dvc.lock all or nothing (README, "Snakemake and DVC together").

A step Snakemake ran leaves a receipt (:func:`job_receipt`: params digest, sha256 of its
inputs and outputs). :func:`commit_receipts` records those still valid with one
``dvc commit -f``, output mtimes restored after. Recording is all or nothing: a commit that
fails, is interrupted or leaves dvc.lock without every job puts dvc.lock back as it was (from
``.pipeline/dvc.lock.before``, :func:`recover_commit`) and keeps the receipts for the next run.

Part of the glue: :mod:`mae_hlvm.workflow.glue` calls it at the Snakefile's parse and in its
onstart/onsuccess/onerror, and its lines carry the glue's name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
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
from mae_hlvm.core.config import Params, load_params
from mae_hlvm.core.io import ArtifactError, read_json
from mae_hlvm.core.provenance import digest
from mae_hlvm.workflow import ledger
from mae_hlvm.workflow.pipeline import (
    Fields,
    Out,
    code_deps,
    dvc_stage_name,
    input_files,
    instances,
    outputs,
    stage_params,
)

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


def job_receipt(stage: str, params: Params, f: Fields | None, memo: dict | None = None) -> dict[str, Any]:
    inst = _instance(stage, params, f)
    return {
        "stage": dvc_stage_name(stage, f),
        "params": inst["params"],
        "deps": {p: _sha256(p, memo) for p in inst["deps"]},
        "outs": {p: _sha256(p, memo) for p in inst["outs"]},
    }


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
        now = job_receipt(stage, params, f, memo)
        if now == rec and None not in now["outs"].values():
            valid.append(name)
    return valid, done


# ----------------------------------------------------------------------------- the all-or-nothing commit


PENDING = (f"receipts kept in {paths.RECEIPTS_DIR}, recorded by the next run "
           "(or `python -m mae_hlvm.workflow.pipeline commit-receipts`)")


def say(message: str) -> None:
    """One line on stderr in the glue's name (every line the glue prints: here and glue.py)."""
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


# The program that records the targets it is given in dvc.lock: this environment's DVC, driven in
# one process (dvc_commit: one rewrite of dvc.lock, where DVC's own command rewrites it per target).
# A program named in this variable replaces it (a wrapper that limits writes, another DVC's commit).
COMMIT_PROGRAM_ENV = "MAE_HLVM_DVC_COMMIT"


def _dvc_commit(targets: Sequence[str]) -> tuple[int, str]:
    """Record ``targets`` as ``dvc commit -f`` does: (exit code, its output); DVC stopped on Ctrl-C."""
    program = os.environ.get(COMMIT_PROGRAM_ENV)
    cmd = [program] if program else [sys.executable, "-m", "mae_hlvm.workflow.dvc_commit"]
    try:
        proc = subprocess.Popen([*cmd, *targets], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    except OSError as err:
        return 127, f"ERROR: cannot run {cmd[0]} ({err.strerror})"
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
    Snakemake); :mod:`mae_hlvm.workflow.dvc_commit` writes dvc.lock once for all targets. dvc.lock is copied aside first; when DVC fails, is interrupted (one line,
    exit 130) or leaves dvc.lock without every job (a full disk, a write limit), it is put
    back as it was and the receipts are kept for the next call. Receipts go only after dvc.lock
    records every job, or when stale. The caller holds the run lock (runlock); DVC's lock must
    be free. Returns the committed stages.
    """
    if not Path(".dvc").is_dir():
        return []
    if recover_commit():
        say("a `dvc commit` cut short earlier had left dvc.lock half-written: put back as it was before it")
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
            say(f"recording {len(valid)} Snakemake job(s) in dvc.lock (one `dvc commit` of {len(targets)} stage(s) or "
                 "group(s)) ...")
        try:
            _save_journal()
        except OSError as err:
            say(f"cannot copy dvc.lock aside before recording ({err.strerror}): nothing recorded, dvc.lock is as it "
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
            say(f"interrupted while recording {len(valid)} job(s) in dvc.lock: {back} {PENDING}")
            raise SystemExit(130) from None
        _restore_mtimes(mtimes)
        if problem is not None:
            with _no_sigint():
                back = _put_back()
            say(f"dvc commit failed ({problem}); {back} {PENDING}")
            return []
        _drop_journal()
    for path in done:
        path.unlink(missing_ok=True)
    if valid and not quiet:
        say(f"recorded {len(valid)} Snakemake job(s) in dvc.lock ({time.perf_counter() - started:.1f} s)")
    return valid


def _restore_mtimes(mtimes: dict[str, int]) -> None:
    for p, ns in mtimes.items():
        with contextlib.suppress(OSError):
            os.utime(p, ns=(ns, ns))


def commit_targets(names: Sequence[str], params: Params) -> list[str]:
    """``dvc commit`` targets for stage instances ``names``: a whole foreach group by its name.

    A group name keeps the command line short when every cell of the group is recorded (a
    paper grid has hundreds of cells, and DVC's own ``dvc commit``, which a program in
    ``$MAE_HLVM_DVC_COMMIT`` may be, rewrites dvc.lock once per target). Groups with any
    cell missing from ``names`` stay per cell.
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
