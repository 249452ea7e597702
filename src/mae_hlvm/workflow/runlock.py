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

Snakemake's job processes (``--no-hooks``: cluster jobs) never run ``onstart``, so they do
not contend for the lock their own run holds.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

DVC_LOCK = ".dvc/tmp/lock"
DVC_RWLOCK = ".dvc/tmp/rwlock"


class BusyError(RuntimeError):
    """Another tool is building in this working copy; the message names it in one line."""


_held = None  # the zc.lockfile.LockFile a Snakemake run holds


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
    # `python .../bin/dvc repro` -> `dvc repro`
    for i, w in enumerate(words):
        if os.path.basename(w) == "dvc" or (w == "-m" and i + 1 < len(words) and words[i + 1] == "dvc"):
            start = i if os.path.basename(w) == "dvc" else i + 1
            return " ".join(["dvc", *words[start + 1:]])
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
    who = f"`{cmd}` (pid {pid})" if pid else f"`{cmd}`"
    return BusyError(
        f"{who} is running in this working copy and would delete or rebuild the same outputs: "
        f"wait for it to finish{f', or stop it with `kill {pid}`' if pid else ''}, then run again"
    )


def claim() -> bool:
    """Take DVC's lock for this Snakemake process; BusyError when DVC is running here.

    Returns False (and does nothing) outside a DVC repository or without DVC installed.
    """
    global _held
    if _held is not None or not Path(".dvc").is_dir():
        return False
    try:
        import zc.lockfile
    except ImportError:
        return False
    Path(DVC_LOCK).parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = zc.lockfile.LockFile(DVC_LOCK, content_template="{pid} snakemake")
    except zc.lockfile.LockError:
        pid = _lock_owner()
        raise _busy(pid, _cmdline(pid) if pid else "dvc") from None
    users = _rwlock_users()
    if users:
        lock.close()
        raise _busy(*users[0])
    _held = lock
    return True


def release() -> None:
    """Give DVC's lock back (before this run's own ``dvc commit``); safe to call twice."""
    global _held
    if _held is not None:
        with contextlib.suppress(Exception):
            _held.close()
        _held = None
