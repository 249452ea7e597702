"""One working copy, one running tool: Snakemake and DVC never build the same outputs at once.

Run together, ``snakemake`` and ``dvc repro`` each train every cell, and DVC deletes the
outputs of a stage before running it, under Snakemake's feet. The two are kept apart with
DVC's own repository lock (``.dvc/tmp/lock``, an ``flock`` through zc.lockfile):

* A Snakemake run (the Snakefile's ``onstart``) first looks for a running DVC: its lock
  held, or a live process in ``.dvc/tmp/rwlock`` (DVC releases its lock while a stage's
  command runs, but lists the command there). If it finds one it stops with one line
  naming that process. Otherwise it takes DVC's lock and holds it until its own
  ``dvc commit`` at the end, so a ``dvc`` command started meanwhile refuses before it
  touches anything ("Unable to acquire lock"; the lock file names the Snakemake process).
* A killed Snakemake loses the lock with its process (``flock``): nothing to clean up.
* The run lock (``.pipeline/run.lock``, an ``flock`` too) is held by a Snakemake run from its
  ``onstart`` until after its final ``dvc commit`` (when DVC's lock is already given back), by
  ``python -m mae_hlvm verify`` and by ``commit-receipts``: ``verify`` refuses with one line
  while either tool runs, and a run refuses while ``verify`` repairs (issue 27: ``verify``
  during a run restored the previous run's bytes over fresh outputs).
* DVC killed while it rewrites ``.dvc/tmp/rwlock`` leaves it empty, and every later ``dvc``
  command then fails on it; a claim removes such a file (it can only be a leftover while
  DVC's lock is held).

Snakemake's job processes (``--no-hooks``: cluster jobs) never run ``onstart``, so they do
not contend for the lock their own run holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from mae_hlvm.core import paths

DVC_LOCK = ".dvc/tmp/lock"
DVC_RWLOCK = ".dvc/tmp/rwlock"
RUN_LOCK = f"{paths.STATE_DIR}/run.lock"


class BusyError(RuntimeError):
    """Another tool is building in this working copy; the message names it in one line."""


_held = None  # the zc.lockfile.LockFile a Snakemake run holds
_run: tuple[str, int] | None = None  # (absolute path, descriptor) of the run lock this process holds


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "dvc"
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    # `python .../bin/dvc repro` -> `dvc repro`; `python .../bin/snakemake --cores 2` -> `snakemake --cores 2`
    for i, w in enumerate(words):
        tool = os.path.basename(w) if i < 2 else ""
        if tool in ("dvc", "snakemake") or (w == "-m" and i + 1 < len(words) and words[i + 1] in ("dvc", "snakemake")):
            start = i if tool else i + 1
            return " ".join([tool or words[start], *words[start + 1:]])
        if w == "-m" and i + 1 < len(words):
            return " ".join(["python", *words[i:]])
    return " ".join(words) or "dvc"


def _rwlock_users() -> list[tuple[int, str]]:
    """(pid, command) of every live process DVC lists as reading or writing outputs."""
    try:
        info = json.loads(Path(DVC_RWLOCK).read_text())
    except (OSError, ValueError):
        return []
    found = []
    for kind in ("read", "write"):
        for entries in (info.get(kind) or {}).values():
            for e in entries if isinstance(entries, list) else [entries]:
                pid = int(e.get("pid", 0) or 0)
                if pid and pid != os.getpid() and _alive(pid):
                    found.append((pid, _cmdline(pid) if Path(f"/proc/{pid}").exists() else str(e.get("cmd", "dvc"))))
    return sorted(set(found))


def _lock_owner() -> int | None:
    try:
        text = Path(DVC_LOCK).read_text().split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def _busy(pid: int | None, cmd: str) -> BusyError:
    cmd = " ".join(cmd.split())  # a `python -c` program spans lines; the message is one
    cmd = cmd if len(cmd) <= 100 else cmd[:97] + "..."
    who = f"`{cmd}` (pid {pid})" if pid else f"`{cmd}`"
    return BusyError(
        f"{who} is running in this working copy and would delete or rebuild the same outputs: "
        f"wait for it to finish{f', or stop it with `kill {pid}`' if pid else ''}, then run again"
    )


def _take_run_lock(who: str) -> None:
    """The run lock for this process (re-entrant); BusyError naming its holder."""
    global _run
    path = os.path.abspath(RUN_LOCK)
    if _run is not None and _run[0] == path:
        return
    release_run()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            words = os.read(fd, 200).decode(errors="replace").split()
        finally:
            os.close(fd)
        pid = int(words[0]) if words and words[0].isdigit() else None
        raise _busy(pid, _cmdline(pid) if pid and _alive(pid) else " ".join(words[1:]) or "a run") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {who}\n".encode())
    _run = (path, fd)


def release_run() -> None:
    """Give the run lock back; safe to call twice."""
    global _run
    if _run is not None:
        with contextlib.suppress(OSError):
            os.close(_run[1])
        _run = None


def claim(who: str = "snakemake") -> bool:
    """Take the run lock, then DVC's lock for this process; BusyError (holding neither) when
    another run, ``verify`` or DVC is busy here.

    Returns whether DVC's lock is held: False outside a DVC repository or without DVC installed.
    """
    _take_run_lock(who)
    try:
        return _claim_dvc(who)
    except BusyError:
        release_run()
        raise


def _claim_dvc(who: str) -> bool:
    global _held
    if _held is not None:
        return True
    if not Path(".dvc").is_dir():
        return False
    try:
        import zc.lockfile
    except ImportError:
        return False
    Path(DVC_LOCK).parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = zc.lockfile.LockFile(DVC_LOCK, content_template="{pid} " + who.split()[0])
    except zc.lockfile.LockError:
        pid = _lock_owner()
        raise _busy(pid, _cmdline(pid) if pid else "dvc") from None
    users = _rwlock_users()
    if users:
        lock.close()
        raise _busy(*users[0])
    _repair_rwlock(zc.lockfile)
    _held = lock
    return True


def _repair_rwlock(lockfile) -> None:  # noqa: ANN001 - the zc.lockfile module
    """Remove an rwlock file that is not JSON (DVC killed while it wrote it): while DVC's lock
    is held and its rwlock guard is free, no DVC process can be using it."""
    try:
        text = Path(DVC_RWLOCK).read_text()
        json.loads(text)
        return
    except OSError:
        return
    except ValueError:
        pass
    try:
        guard = lockfile.LockFile(f"{DVC_RWLOCK}.lock")
    except lockfile.LockError:
        return
    try:
        Path(DVC_RWLOCK).unlink(missing_ok=True)
    finally:
        guard.close()
    print(f"mae_hlvm.workflow.runlock: removed {DVC_RWLOCK}, left {'empty' if not text.strip() else 'unreadable'} by a DVC "
          "process killed while writing it (every dvc command refused to run with it)", file=sys.stderr)


def release() -> None:
    """Give DVC's lock back (before this run's own ``dvc commit``); safe to call twice."""
    global _held
    if _held is not None:
        with contextlib.suppress(Exception):
            _held.close()
        _held = None


@contextlib.contextmanager
def exclusive(who: str, dvc: bool = True) -> Iterator[None]:
    """Hold the run lock (and, with ``dvc``, DVC's lock) for a tool that repairs or records
    (``verify``, ``commit-receipts``); BusyError with one line while a run or DVC is busy here.
    Locks this process held already stay held."""
    had_run, had_dvc = _run is not None and _run[0] == os.path.abspath(RUN_LOCK), _held is not None
    _take_run_lock(who)
    try:
        if dvc:
            _claim_dvc(who)
        yield
    finally:
        if not had_dvc:
            release()
        if not had_run:
            release_run()
