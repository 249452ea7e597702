"""The hash recorded for every artifact, and the checks that compare files against it.

The ledger of a working copy is ``dvc.lock`` (the md5 of every stage output, written by
``dvc repro`` after each stage and by ``dvc commit``) overlaid with the pending Snakemake
receipts (``.pipeline/receipts/*.json``: the sha256 of the outputs of jobs Snakemake
finished but has not yet recorded in dvc.lock; see :mod:`mae_hlvm.workflow.pipeline`). A receipt
newer than dvc.lock wins; an older one was overtaken by a DVC run and is ignored.

* Every consumer checks what it loads (:func:`check`, called by :mod:`mae_hlvm.core.io`): a file
  whose bytes differ from the recorded hash was damaged after its step wrote it (a byte
  flip keeps the mtime, so neither tool would notice) and is refused with one line.
* ``python -m mae_hlvm verify`` (:func:`verify`) checks every recorded output at once and
  removes the damaged ones, so that both tools rebuild exactly those.

Outside a pipeline working copy (no dvc.lock in the current folder, e.g. a step run by
hand elsewhere) and for files the ledger does not list, nothing is checked.

Only the standard library and PyYAML: the Snakefile imports this module at parse time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from mae_hlvm.core import paths

LOCK_FILE = "dvc.lock"
# Old mtimes of outputs `verify` removed: a rebuild that gives back the recorded bytes gets
# its old mtime again, so Snakemake does not take the consumers for stale.
REMOVED_FILE = f"{paths.STATE_DIR}/removed.json"


@dataclass(frozen=True)
class Record:
    """The recorded hash of one artifact: ``algo`` is md5 (dvc.lock) or sha256 (a receipt)."""

    path: str
    algo: str
    digest: str
    source: str
    stage: str


_cache: dict[tuple, dict[str, Record]] = {}


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _load_yaml(text: str) -> object:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader


def read_ledger(root: str | Path = ".") -> dict[str, Record]:
    """path (relative to ``root``) -> its recorded hash; {} when ``root`` has no dvc.lock.

    Cached per process on the mtimes and sizes of dvc.lock and the receipts.
    """
    root = Path(root)
    lock = root / LOCK_FILE
    receipts = sorted((root / paths.RECEIPTS_DIR).glob("*.json")) if (root / paths.RECEIPTS_DIR).is_dir() else []
    key = (str(root.resolve()), _stamp(lock), tuple((p.name, _stamp(p)) for p in receipts))
    if key in _cache:
        return _cache[key]
    ledger: dict[str, Record] = {}
    if key[1] is None:
        _cache[key] = ledger
        return ledger
    try:
        data = _load_yaml(lock.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None  # a damaged dvc.lock is DVC's to report; there is nothing to check against
    stages = data.get("stages", {}) if isinstance(data, dict) else {}
    for name, stage in (stages or {}).items():
        for out in (stage or {}).get("outs", []) or []:
            md5 = str(out.get("md5", ""))
            if out.get("path") and md5 and not md5.endswith(".dir"):
                ledger[os.path.normpath(out["path"])] = Record(
                    os.path.normpath(out["path"]), "md5", md5, f"{LOCK_FILE} ({name})", str(name)
                )
    for rec_path in receipts:
        # a receipt older than dvc.lock was overtaken by a DVC run of the same stage
        if (_stamp(rec_path) or (0, 0))[0] < key[1][0]:
            continue
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            continue
        for out, sha in (rec.get("outs") or {}).items():
            if sha:
                p = os.path.normpath(out)
                ledger[p] = Record(p, "sha256", sha, str(rec_path.relative_to(root)), str(rec.get("stage")))
    _cache.clear()
    _cache[key] = ledger
    return ledger


def file_digest(path: str | Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _relative(path: str | Path) -> str | None:
    """``path`` relative to the current folder, or None when it lies outside it."""
    rel = os.path.relpath(os.path.abspath(path), os.getcwd())
    return None if rel.startswith("..") else os.path.normpath(rel)


def mismatch(path: str | Path) -> Record | None:
    """The record ``path`` fails to match, or None (matches, not recorded, or missing)."""
    rel = _relative(path)
    if rel is None:
        return None
    rec = read_ledger().get(rel)
    if rec is None or not Path(rel).is_file():
        return None
    return None if file_digest(rel, rec.algo) == rec.digest else rec


def damaged_line(path: str | Path, rec: Record) -> str:
    return (
        f"{path}: its bytes do not match the hash recorded in {rec.source} (damaged after it was written): "
        "run `python -m mae_hlvm verify` to remove every damaged artifact, then rebuild them "
        "with `dvc repro` or `snakemake --cores N <the paths it prints>`"
    )


def check(path: str | Path) -> None:
    """Raise one ArtifactError line when ``path`` differs from its recorded hash."""
    rec = mismatch(path)
    if rec is not None:
        from mae_hlvm.core.io import ArtifactError

        raise ArtifactError(damaged_line(path, rec))


DVC_CACHE = ".dvc/cache/files/md5"


def cached_copy(rec: Record) -> Path | None:
    """DVC's cached copy of a recorded output, when present and intact."""
    if rec.algo != "md5":  # a receipt's output has not been cached yet
        return None
    obj = Path(DVC_CACHE) / rec.digest[:2] / rec.digest[2:]
    return obj if obj.is_file() and file_digest(obj, "md5") == rec.digest else None


def verify(remove: bool = True, stages: set[str] | None = None) -> tuple[list[Record], list[str], list[str]]:
    """Check every recorded output of the current folder: (damaged records, missing paths,
    paths repaired from DVC's cache).

    ``stages``: only outputs of these stage instances (dvc.lock keeps entries of stages
    the params no longer have). With ``remove`` a damaged file whose recorded bytes are in
    DVC's cache is restored from there with its old mtime (nothing to rebuild); any other
    damaged file is deleted (its mtime kept in REMOVED_FILE), so that both tools see it as
    missing and rebuild exactly those.
    """
    damaged, missing, repaired = [], [], []
    for path, rec in sorted(read_ledger().items()):
        if stages is not None and rec.stage not in stages:
            continue
        if not Path(path).is_file():
            missing.append(path)
        elif file_digest(path, rec.algo) != rec.digest:
            damaged.append(rec)
    if remove and damaged:
        from mae_hlvm.core.io import write_bytes, write_json

        removed = _read_removed()
        for rec in damaged:
            mtime = os.stat(rec.path).st_mtime_ns
            cached = cached_copy(rec)
            if cached is not None:
                write_bytes(rec.path, cached.read_bytes())
                os.utime(rec.path, ns=(mtime, mtime))
                repaired.append(rec.path)
                continue
            removed[rec.path] = {"mtime_ns": mtime, "algo": rec.algo, "digest": rec.digest}
            os.unlink(rec.path)
        if len(repaired) < len(damaged):
            write_json(REMOVED_FILE, removed)
    return damaged, missing, repaired


def _read_removed() -> dict[str, dict]:
    try:
        return json.loads(Path(REMOVED_FILE).read_text())
    except (OSError, ValueError):
        return {}


def restore_mtimes(outputs: list[str]) -> list[str]:
    """After a step rebuilt some of ``outputs`` that ``verify`` removed: when the new bytes
    equal the recorded ones, give each its old mtime back (its consumers read exactly these
    bytes, so they stay up to date for Snakemake too). Returns the paths restored."""
    removed = _read_removed()
    seen = [os.path.normpath(o) for o in outputs if os.path.normpath(o) in removed]
    done = []
    for out in seen:
        entry = removed.pop(out)
        if Path(out).is_file() and file_digest(out, entry["algo"]) == entry["digest"]:
            os.utime(out, ns=(entry["mtime_ns"], entry["mtime_ns"]))
            done.append(out)
    if seen:
        from mae_hlvm.core.io import write_json

        if removed:
            write_json(REMOVED_FILE, removed)
        else:
            Path(REMOVED_FILE).unlink(missing_ok=True)
    return done


def run_verify(params: object, args: object) -> int:  # noqa: ARG001 - the `verify` step; needs no params
    """``python -m mae_hlvm verify``: one line per damaged artifact, removed unless --keep; exit 1 if any."""
    if not Path(LOCK_FILE).is_file():
        from mae_hlvm.core.io import ArtifactError

        raise ArtifactError(f"{LOCK_FILE}: missing here: run verify in the pipeline's working copy (where dvc.lock is)")
    keep = bool(getattr(args, "keep", False))
    stages = _current_stages(getattr(args, "params", "params.yaml"))
    damaged, missing, repaired = verify(remove=not keep, stages=stages)
    for rec in damaged:
        done = "" if keep else "; restored from DVC's cache" if rec.path in repaired else "; removed"
        print(f"{rec.path}: damaged (its bytes differ from {rec.source}){done}")
    total = sum(1 for r in read_ledger().values() if stages is None or r.stage in stages)
    print(f"verify: {total} recorded artifacts, {len(damaged)} damaged, {len(missing)} missing"
          + (f" ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})" if missing else ""))
    rebuild = [rec.path for rec in damaged if rec.path not in repaired]
    if rebuild:
        print(f"rebuild exactly these: `dvc repro`, or `snakemake --cores 2 {' '.join(rebuild)}`"
              + (" (rerun verify without --keep first: it removes them)" if keep else ""))
    return 1 if damaged else 0


def _current_stages(params_path: str) -> set[str] | None:
    """The stage instances of the current params; None (every recorded one) if they do not load."""
    from mae_hlvm.core.config import ParamsError, load_params
    from mae_hlvm.workflow.pipeline import dvc_stage_name, instances

    try:
        params = load_params(params_path)
    except ParamsError:
        return None
    return {dvc_stage_name(stage, f) for stage, f in instances(params)}
