"""``python -m mae_hlvm verify``: every output judged against the ledger, damaged ones repaired.

:func:`verify` judges each output with :func:`mae_hlvm.workflow.ledger.judge`; a damaged
file whose recorded bytes are in DVC's cache is restored from there, any other is moved to
``.pipeline/quarantine/`` (nothing is deleted), its old mtime kept so that a rebuild giving
back the recorded bytes gets it again (:func:`restore_mtimes`, called after each step).
:func:`run_verify` is the step: under the runs' lock, one line per damaged artifact, a
summary and the command that repairs the rest.

Only the standard library and PyYAML at import: the Snakefile imports this module at parse time.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from mae_hlvm.core import paths
from mae_hlvm.workflow.ledger import LOCK_FILE, REBUILD, Record, Today, file_digest, judge, read_ledger

# Old mtimes of outputs `verify` moved to the quarantine: a rebuild that gives back the
# recorded bytes gets its old mtime again, so Snakemake does not take the consumers for stale.
REMOVED_FILE = f"{paths.STATE_DIR}/removed.json"
QUARANTINE_DIR = f"{paths.STATE_DIR}/quarantine"
DVC_CACHE = ".dvc/cache/files/md5"


def cached_copy(rec: Record) -> Path | None:
    """DVC's cached copy of a recorded output, when present and intact."""
    if rec.algo != "md5":  # a receipt's output has not been cached yet
        return None
    obj = Path(DVC_CACHE) / rec.digest[:2] / rec.digest[2:]
    return obj if obj.is_file() and file_digest(obj, "md5") == rec.digest else None


@dataclass
class Report:
    """What :func:`verify` found; ``moved``: damaged path -> where in the quarantine it went."""

    total: int = 0
    quarantine: str = ""
    damaged: list[Record] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    outdated: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.damaged or self.missing or self.outdated or self.pending or self.unrecorded)


def verify(repair: bool = True, outputs: list[str] | None = None, params_path: str = "params.yaml") -> Report:
    """Judge every output (``outputs``: today's; None: every recorded one) with :func:`judge`.

    With ``repair`` a damaged file whose recorded bytes are in DVC's cache is restored from
    there with its old mtime (nothing to rebuild); any other damaged file is moved to
    ``.pipeline/quarantine/<time>/`` (its mtime kept in REMOVED_FILE), so that both tools see
    it as missing and rebuild it. Nothing is deleted.
    """
    ledger, today = read_ledger(), Today(params_path)
    report = Report()
    for path in sorted(ledger.paths() if outputs is None else {os.path.normpath(p) for p in outputs}):
        report.total += 1
        verdict = judge(path, ledger, today)
        if verdict == "damaged":
            report.damaged.append(ledger.recorded(path))
        elif verdict != "ok":
            getattr(report, verdict).append(path)
    if repair and report.damaged:
        _repair(report)
    return report


def _repair(report: Report) -> None:
    from mae_hlvm.core.io import write_bytes, write_json

    removed = _read_removed()
    folder = Path(QUARANTINE_DIR) / time.strftime("%Y%m%d-%H%M%S")
    report.quarantine = str(folder)
    for rec in report.damaged:
        mtime = os.stat(rec.path).st_mtime_ns
        cached = cached_copy(rec)
        if cached is not None:
            write_bytes(rec.path, cached.read_bytes())
            os.utime(rec.path, ns=(mtime, mtime))
            report.restored.append(rec.path)
            continue
        target = folder / rec.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(rec.path, target)  # a rename within the working copy's file system
        removed[rec.path] = {"mtime_ns": mtime, "algo": rec.algo, "digest": rec.digest}
        report.moved[rec.path] = str(target)
    if report.moved:
        write_json(REMOVED_FILE, removed)
        report.missing = sorted(set(report.missing) | set(report.moved))


def _read_removed() -> dict[str, dict]:
    try:
        return json.loads(Path(REMOVED_FILE).read_text())
    except (OSError, ValueError):
        return {}


def restore_mtimes(outputs: list[str]) -> list[str]:
    """After a step rebuilt some of ``outputs`` that ``verify`` moved aside: when the new bytes
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


def _listed(paths_: list[str]) -> str:
    return f"{', '.join(paths_[:3])}{', ...' if len(paths_) > 3 else ''}"


def run_verify(params: object, args: object) -> int:  # noqa: ARG001 - the `verify` step; needs no params
    """``python -m mae_hlvm verify``: under the runs' lock, one line per damaged artifact (restored
    or moved aside unless --keep), a summary, and the command that repairs the rest; exit 1
    while anything is damaged, missing, out of date or not in dvc.lock."""
    from mae_hlvm.core.io import ArtifactError
    from mae_hlvm.workflow import receipts, runlock

    if not Path(LOCK_FILE).is_file():
        raise ArtifactError(f"{LOCK_FILE}: missing here: run verify in the pipeline's working copy (where dvc.lock is)")
    keep = bool(getattr(args, "keep", False))
    params_path = getattr(args, "params", "params.yaml")
    try:
        with runlock.exclusive("verify"):
            receipts.recover_commit()
            report = verify(repair=not keep, outputs=_current_outputs(params_path), params_path=params_path)
    except runlock.BusyError as err:
        raise ArtifactError(f"verify refused: {err}") from None
    for rec in report.damaged:
        done = ("" if keep else "; restored from DVC's cache" if rec.path in report.restored
                else f"; moved to {report.moved[rec.path]}")
        print(f"{rec.path}: damaged (its bytes match no record, and its stage's inputs and params are as recorded "
              f"in {rec.source}){done}")
    if report.moved:
        print(f"verify: {len(report.moved)} damaged file(s) moved to {report.quarantine}/ (nothing is deleted)")
    counts = [f"{len(report.damaged)} damaged", f"{len(report.missing)} missing", f"{len(report.outdated)} out of date",
              f"{len(report.pending) + len(report.unrecorded)} not in dvc.lock"]
    print(f"verify: {report.total} artifacts, {', '.join(counts)}")
    if keep and report.damaged:
        print("verify: rerun without --keep to restore the damaged file(s) from DVC's cache or move them aside")
    if report.missing:
        print(f"verify: missing: {_listed(report.missing)}; rebuild them and what depends on them: {REBUILD}")
    if report.outdated or report.unrecorded:
        stale = report.outdated + report.unrecorded
        print(f"verify: out of date or unrecorded in dvc.lock: {_listed(stale)}; rerun and record them: `dvc repro`")
    if report.pending:
        print(f"verify: made by Snakemake, not yet in dvc.lock: {_listed(report.pending)}; record them: "
              "`python -m mae_hlvm.workflow.pipeline commit-receipts` (the next run does it too)")
    return 0 if report.clean else 1


def _current_outputs(params_path: str) -> list[str] | None:
    """Every output of the current params; None (every recorded one) if they do not load."""
    from mae_hlvm.core.config import ParamsError, load_params
    from mae_hlvm.workflow.pipeline import all_outputs

    try:
        params = load_params(params_path)
    except ParamsError:
        return None
    return all_outputs(params)
