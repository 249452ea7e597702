"""The hashes recorded for every artifact, and the checks that compare files against them.

The ledger of a working copy is everything it records about an output's bytes:

* ``dvc.lock``: the md5 of each stage's outputs (written by ``dvc repro`` after each stage
  and by ``dvc commit``), and the md5 of each stage's inputs as that stage read them;
* the pending Snakemake receipts (``.pipeline/receipts/*.json``: the sha256 of the outputs
  of jobs Snakemake finished but has not yet recorded in dvc.lock; :mod:`mae_hlvm.workflow.receipts`).

**Damage** is bytes that match no record the working copy holds (the output's dvc.lock
entry, a pending receipt, the hash a downstream entry recorded for it as its input) while
the producing stage's record (its cmd, its inputs' hashes and its params) still matches
today's working copy. Only then do the recorded bytes describe what the stage makes today.
An output that matches no record while its stage's record does not match today is **newer
than its record** (a run since, whose recording in dvc.lock was interrupted, or a stale or
torn dvc.lock entry): a reason to rerun or record, never to restore (issue 27: `verify`
restored a previous run's bytes over fresh ones when dvc.lock lagged behind the outputs).

* Every consumer checks what it loads (:func:`check`, called by :mod:`mae_hlvm.core.io`): a
  damaged file (a byte flip keeps the mtime, so neither tool would notice) is refused with one line.
* ``python -m mae_hlvm verify`` (:mod:`mae_hlvm.workflow.verify`) takes the lock the runs take, checks every
  output of the current params at once, restores a damaged one from DVC's cache when its
  recorded bytes are there, moves any other damaged one to ``.pipeline/quarantine/`` (nothing
  is deleted) and exits non-zero while anything is damaged, missing, out of date or not yet in
  dvc.lock, printing the one command that repairs it.
* An unreadable, empty or invalid dvc.lock is an error for both, with one line saying how to recover.

Outside a pipeline working copy (no dvc.lock in the current folder, e.g. a step run by
hand elsewhere) and for files the ledger does not list, nothing is checked.

Only the standard library and PyYAML at import: the Snakefile imports this module at parse time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mae_hlvm.core import paths

LOCK_FILE = "dvc.lock"
# dvc.lock as it was before a `dvc commit` of receipts that has not finished (receipts.commit_receipts);
# the second name stands for "there was no dvc.lock".
JOURNAL = f"{paths.STATE_DIR}/dvc.lock.before"
JOURNAL_ABSENT = f"{paths.STATE_DIR}/dvc.lock.absent"
_MD5 = re.compile(r"[0-9a-f]{32}(?:\.dir)?\Z")
REBUILD = "`make run` (or `dvc repro`)"


@dataclass(frozen=True)
class Record:
    """The recorded hash of one artifact: ``algo`` is md5 (dvc.lock) or sha256 (a receipt)."""

    path: str
    algo: str
    digest: str
    source: str
    stage: str


@dataclass
class Ledger:
    """What a working copy records: each output's own entry, pending receipts, and the hashes
    consumers recorded for their inputs; the raw entries, to judge whether they are current."""

    own: dict[str, Record] = field(default_factory=dict)
    pending: dict[str, Record] = field(default_factory=dict)
    expected: dict[str, list[Record]] = field(default_factory=dict)
    entries: dict[str, dict] = field(default_factory=dict)
    receipts: dict[str, dict] = field(default_factory=dict)

    def paths(self) -> set[str]:
        return set(self.own) | set(self.pending)

    def recorded(self, path: str) -> Record | None:
        """The record a message names: the pending receipt (newer), else the dvc.lock entry."""
        return self.pending.get(path) or self.own.get(path)


_cache: dict[tuple, Ledger] = {}


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _load_yaml(text: str) -> object:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader


def journal_left() -> bool:
    """Whether a `dvc commit` of receipts was cut short before it could put dvc.lock back."""
    return Path(JOURNAL).exists() or Path(JOURNAL_ABSENT).exists()


def lock_error(problem: str) -> Exception:
    """One ArtifactError line: dvc.lock is unusable, and how to recover."""
    from mae_hlvm.core.io import ArtifactError

    if journal_left():
        fix = (f"a `dvc commit` was cut short and {JOURNAL} holds dvc.lock as it was before it: "
               "`python -m mae_hlvm.workflow.pipeline commit-receipts` puts it back and records the finished jobs")
    else:
        fix = ("put the committed one back with `git checkout dvc.lock`; what it no longer matches is then rerun, "
               "never restored (`python -m mae_hlvm verify` lists it)")
    return ArtifactError(f"{LOCK_FILE}: {problem}: {fix}")


def parse_lock(text: str) -> dict[str, dict]:
    """dvc.lock's stage entries (name -> entry); raises :func:`lock_error` when it is unusable."""
    if not text.strip():
        raise lock_error("empty (no stage is recorded)")
    try:
        data = _load_yaml(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}" if mark else ""
        raise lock_error(f"not valid YAML{where} ({' '.join(str(err.problem or err.context).split())})") from None
    except yaml.YAMLError as err:
        raise lock_error(f"not valid YAML ({' '.join(str(err).split())[:200]})") from None
    if data is None:
        raise lock_error("empty (no stage is recorded)")
    if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict) or set(data) - {"schema", "stages"}:
        raise lock_error("not a DVC lock file (it needs `schema:` and a `stages:` mapping)")
    return {str(k): v for k, v in (data.get("stages") or {}).items() if isinstance(v, dict)}


def read_ledger(root: str | Path = ".") -> Ledger:
    """The ledger of ``root``; empty when it has no dvc.lock. While a commit of receipts is under
    way or was cut short, dvc.lock as it was before it (:data:`JOURNAL`): the recording is all or
    nothing for every reader too. Cached per process on the mtimes and sizes of dvc.lock and the
    receipts. An unusable dvc.lock raises one ArtifactError line."""
    root = Path(root)
    lock = root / LOCK_FILE
    if (root / JOURNAL).exists():  # a commit under way or cut short: dvc.lock as it was before it
        lock = root / JOURNAL
    elif (root / JOURNAL_ABSENT).exists():
        lock = root / JOURNAL_ABSENT / "none"
    rdir = root / paths.RECEIPTS_DIR
    receipts = sorted(rdir.glob("*.json")) if rdir.is_dir() else []
    key = (str(root.resolve()), str(lock), _stamp(lock), tuple((p.name, _stamp(p)) for p in receipts))
    if key in _cache:
        return _cache[key]
    ledger = Ledger()
    if key[2] is None:
        _cache[key] = ledger
        return ledger
    try:
        text = lock.read_bytes().decode()
    except OSError as err:
        raise lock_error(f"cannot be read ({err.strerror or err.__class__.__name__})") from None
    except UnicodeDecodeError:
        raise lock_error("not UTF-8 text") from None
    ledger.entries = parse_lock(text)
    for name, entry in ledger.entries.items():
        for kind in ("outs", "deps"):
            items = entry.get(kind)
            for item in items if isinstance(items, list) else []:
                md5 = str(item.get("md5", "")) if isinstance(item, dict) else ""
                if not item or not item.get("path") or not _MD5.match(md5) or md5.endswith(".dir"):
                    continue
                p = os.path.normpath(str(item["path"]))
                if kind == "outs":
                    ledger.own[p] = Record(p, "md5", md5, f"{LOCK_FILE} ({name})", name)
                else:
                    ledger.expected.setdefault(p, []).append(Record(p, "md5", md5, f"{LOCK_FILE} ({name}, as its input)", name))
    for rec_path in receipts:  # oldest first: a newer receipt for the same output wins
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("outs"), dict):
            continue
        ledger.receipts[str(rec.get("stage"))] = rec
        for out, sha in rec["outs"].items():
            if sha:
                p = os.path.normpath(out)
                ledger.pending[p] = Record(p, "sha256", sha, str(rec_path.relative_to(root)), str(rec.get("stage")))
    _cache.clear()
    _cache[key] = ledger
    return ledger


def file_digest(path: str | Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_md5(path: str | Path, md5: Callable[[str], str] = lambda p: file_digest(p, "md5")) -> str:
    """DVC's hash of a folder dep (dvc_data's Tree): md5 of the sorted JSON list of each file's
    md5 and relative path, plus ``.dir``. ``md5``: a file's md5 (memoised by :class:`Today`)."""
    entries = []
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            full = os.path.join(dirpath, name)
            entries.append({"md5": md5(os.path.normpath(full)), "relpath": os.path.relpath(full, path).replace(os.sep, "/")})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def _same(a: Any, b: Any) -> bool:
    """A params value in dvc.lock (written by ruamel.yaml) against params.yaml's (read by PyYAML)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, str) and isinstance(b, (int, float)) or isinstance(b, str) and isinstance(a, (int, float)):
        try:  # a float one YAML version writes and the other reads as text (1e-05)
            return float(a) == float(b)
        except ValueError:
            return False
    return a == b


class Today:
    """Today's working copy, for judging whether a recorded stage still describes it:
    file hashes (memoised), params.yaml as plain data, and today's stage instances."""

    def __init__(self, params_path: str = "params.yaml") -> None:
        self.params_path = params_path
        self._digests: dict[tuple[str, str], str | None] = {}
        self._sha_memo: dict = {}
        self._current: dict[tuple[str, str], bool] = {}
        self._raw: Any = None
        self._raw_read = False
        self._instances: dict[str, tuple] | None = None

    def digest(self, path: str, algo: str = "md5") -> str | None:
        key = (path, algo)
        if key not in self._digests:
            try:
                self._digests[key] = folder_md5(path, self._md5) if os.path.isdir(path) else file_digest(path, algo)
            except OSError:
                self._digests[key] = None
        return self._digests[key]

    def _md5(self, path: str) -> str:
        md5 = self.digest(path)
        if md5 is None:
            raise OSError(f"{path}: gone while hashed")
        return md5

    def raw_params(self) -> Any:
        if not self._raw_read:
            self._raw_read = True
            try:
                self._raw = _load_yaml(Path(self.params_path).read_text())
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                self._raw = None
        return self._raw

    def instance(self, name: str) -> tuple | None:
        """(stage, fields, params) of today's stage instance ``name``; None when unknown or the params do not load."""
        if self._instances is None:
            self._instances = {}
            from mae_hlvm.core.config import ParamsError, load_params
            from mae_hlvm.workflow.pipeline import dvc_stage_name, instances

            try:
                params = load_params(self.params_path)
            except ParamsError:
                return None
            self._instances = {dvc_stage_name(s, f): (s, f, params) for s, f in instances(params)}
        return self._instances.get(name)

    def current(self, name: str, ledger: Ledger) -> bool:
        """Whether stage instance ``name``'s dvc.lock entry, or its pending receipt, matches today
        (every input present and as recorded)."""
        return self.lock_state(name, ledger) is True or self.receipt_state(name, ledger) is True

    def lock_state(self, name: str, ledger: Ledger) -> bool | None:
        """Whether ``name``'s dvc.lock entry (cmd, inputs' hashes, params) matches today; None
        when nothing present contradicts it but an input is missing (rebuilt first, then judged)."""
        if ("lock", name) not in self._current:
            self._current["lock", name] = self._lock_state(name, ledger.entries.get(name))
        return self._current["lock", name]

    def receipt_state(self, name: str, ledger: Ledger) -> bool | None:
        """:meth:`lock_state` for ``name``'s pending receipt (params digest, inputs' hashes)."""
        if ("receipt", name) not in self._current:
            rec = ledger.receipts.get(name)
            inst = self.instance(name) if isinstance(rec, dict) else None
            if inst is None:
                self._current["receipt", name] = False
            else:
                from mae_hlvm.workflow.receipts import receipt_matches_inputs

                self._current["receipt", name] = receipt_matches_inputs(rec, *inst, memo=self._sha_memo)
        return self._current["receipt", name]

    def _lock_state(self, name: str, entry: dict | None) -> bool | None:
        if not isinstance(entry, dict):
            return False
        deps, recorded = entry.get("deps") or [], entry.get("params") or {}
        if not isinstance(deps, list) or not isinstance(recorded, dict):
            return False
        inst = self.instance(name)
        if inst is not None:  # a torn or older entry lacks a dep, a param or today's cmd
            from mae_hlvm.workflow.pipeline import command, dvc_deps, stage_param_keys

            stage, f, params = inst
            if (entry.get("cmd") != command(stage, f)
                    or {os.path.normpath(str(d.get("path"))) for d in deps if isinstance(d, dict)}
                    != {os.path.normpath(p) for p in dvc_deps(stage, f, params)}
                    or set(recorded.get("params.yaml") or {}) != set(stage_param_keys(stage, params))):
                return False
        for file, values in recorded.items():
            if file != "params.yaml" or not isinstance(values, dict):
                return False
            raw = self.raw_params()
            for key, value in values.items():
                node: Any = raw
                for part in str(key).split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                if not _same(value, node):
                    return False
        state: bool | None = True
        for dep in deps:
            md5 = str(dep.get("md5", "")) if isinstance(dep, dict) else ""
            if not _MD5.match(md5):
                return False
            now = self.digest(os.path.normpath(str(dep.get("path"))))
            if now is None:
                state = None
            elif now != md5:
                return False
        return state


def judge(path: str, ledger: Ledger, today: Today, damage_only: bool = False) -> str:
    """What ``path``'s bytes are, against the ledger:

    ``missing``; ``ok`` (they match its dvc.lock entry, which matches today); ``pending`` (they
    match a receipt, not yet in dvc.lock, that matches today); ``outdated`` (they match a record
    that no longer matches today, or a consumer's record while their own entry differs, or no
    record while their stage's record no longer matches today: rerun or record);
    ``unrecorded`` (no record); ``damaged`` (no record matches, and the stage's record matches
    today). ``damage_only`` (a consumer's check) skips judging records the bytes match.
    """
    if not os.path.isfile(path):
        return "missing"
    own, pend = ledger.own.get(path), ledger.pending.get(path)
    if pend is not None and today.digest(path, "sha256") == pend.digest:
        return "pending" if damage_only or today.receipt_state(pend.stage, ledger) is not False else "outdated"
    md5 = today.digest(path, "md5") if own is not None or path in ledger.expected else None
    if own is not None and md5 == own.digest:
        return "ok" if damage_only or today.lock_state(own.stage, ledger) is not False else "outdated"
    if any(r.digest == md5 for r in ledger.expected.get(path, [])):
        return "outdated"
    if own is None and pend is None:
        return "unrecorded"
    return "damaged" if today.current((pend or own).stage, ledger) else "outdated"


def _relative(path: str | Path) -> str | None:
    """``path`` relative to the current folder, or None when it lies outside it."""
    rel = os.path.relpath(os.path.abspath(path), os.getcwd())
    return None if rel.startswith("..") else os.path.normpath(rel)


def mismatch(path: str | Path) -> Record | None:
    """The record ``path`` is damaged against (see the module's definition), or None."""
    rel = _relative(path)
    if rel is None:
        return None
    ledger = read_ledger()
    if rel not in ledger.own and rel not in ledger.pending:
        return None
    return ledger.recorded(rel) if judge(rel, ledger, Today(), damage_only=True) == "damaged" else None


def damaged_line(path: str | Path, rec: Record) -> str:
    return (
        f"{path}: its bytes do not match the hash recorded in {rec.source}, while the step's inputs and params are "
        "as recorded (damaged after it was written): run `python -m mae_hlvm verify` to restore it from DVC's cache "
        f"or move it aside, then rebuild with {REBUILD}"
    )


def check(path: str | Path) -> None:
    """Raise one ArtifactError line when ``path`` is damaged."""
    rec = mismatch(path)
    if rec is not None:
        from mae_hlvm.core.io import ArtifactError

        raise ArtifactError(damaged_line(path, rec))
