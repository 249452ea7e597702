"""``replay-check``: does a rerun's results agree with the committed ones?

    python -m mae_hlvm.workflow.replay [--ref REV] [--repo DIR] [--metrics results/metrics.csv]
                              [--baselines results/baselines.csv] [--table1 results/real/table1.csv]
                              [--file other.csv ...]

Compares each results table of the working tree with the same file at ``REV`` (``git
show REV:path``, default ``HEAD``), row by row (rows matched on their key columns, e.g.
the cell's ratio, unit and seed) and column by column, within the tolerances below.
Prints every value outside its tolerance (row, column, committed, now, difference,
tolerance), the columns it skipped and why, and one verdict line. Exit status: 0 when
every compared value is within tolerance, 1 when not, 2 on bad input (a missing file, not
a git repository, an unknown revision, an unreadable table).

Why tolerances rather than bytes: on the same kind of CPU a rerun is byte-identical, but
on another kind of CPU torch, MKL, oneDNN and OpenBLAS take other kernels whose floating
point sums round differently, so checkpoints differ in their last bits and the metrics in
their last digits (docs/reproducibility.md). The tolerances are measured, with a margin,
not guessed: see the comment on each constant.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mae_hlvm.core import results
from mae_hlvm.core.cells import cell_id

# --------------------------------------------------------------------------- tolerances
#
# Each tolerance is the largest difference measured between CPU kinds (bench/cpu_kinds.py,
# emulated kinds and two physical CPUs; docs/reproducibility.md has the measurements), times
# a margin of 5 to 10, and never below the rounding step of the stored numbers. A value
# passes when |now - committed| <= abs + rel * |committed|. Not measured on a GPU.

# metrics.csv / baselines.csv hold 6 decimals: two runs whose unrounded values differ by
# 1e-9 can still print 1e-6 apart.
ROUNDING_6DP = 2e-6


@dataclass(frozen=True)
class Tolerance:
    abs: float
    rel: float
    why: str

    def allows(self, committed: float, now: float) -> bool:
        return abs(now - committed) <= self.abs + self.rel * abs(committed)

    def text(self) -> str:
        if self.rel == 0:
            return f"abs {self.abs:.1e}"
        return f"abs {self.abs:.1e} + rel {self.rel:.0e}"


# R^2 of every probe (r2_*, r2nl_*, r2cls_*, r2region_*, r2sp_*, r2in_*): measured at most
# 4.7e-5 (tiny cell, torch's baseline non-AVX kernels) and 1.0e-5 (default cell); x10.
R2_TOL = Tolerance(abs=5e-4, rel=0.0, why="R^2: measured <= 4.7e-5 across emulated CPU kinds, x10")
# Mean squared errors (recon_mse, mean_pred_mse, linear_mse): not one 6-decimal rounding
# step apart in the synthetic cells (< 7e-6 relative), 7.3e-7 relative in the real-track
# cell's 8-decimal MSE; rel 1e-4 is 14 rounding steps at the cells' ~0.14.
MSE_TOL = Tolerance(abs=ROUNDING_6DP, rel=1e-4, why="MSE: measured < 7e-6 relative (under one rounding step), allow 1e-4")
# Ratios of those MSEs (recon_rel, linear_rel): as the MSEs.
RATIO_TOL = Tolerance(abs=ROUNDING_6DP, rel=1e-4, why="ratio of MSEs: as MSE")
# gain_share = (mean_pred - recon) / (mean_pred - linear) divides by a difference of
# ~0.06: an MSE at its tolerance (1e-4 of ~0.14) moves it by ~2.3e-4. Measured 0 at 6
# decimals; allow 1e-3.
GAIN_TOL = Tolerance(abs=1e-3, rel=0.0, why="gain share: MSE tolerance propagated (2.3e-4), x4")
# Class accuracies count test images (0.001 per image of 1000): one image changed sides
# under emulation (0.001), three between an AMD EPYC and an Intel Xeon (0.003); allow 15 of 1000.
ACC_TOL = Tolerance(abs=1.5e-2 + ROUNDING_6DP, rel=0.0,
                    why="accuracy: measured <= 0.003 (3 test images, AMD EPYC vs Intel Xeon), x5")
# Cue-conflict shares (shape_bias, cue_shape, cue_texture; the paper's Table 2): shares of
# the cue-conflict images' class decisions; measured 0.009 (cue_shape, 9 of 1000 images) and
# 0.014 (shape_bias, a ratio of two such shares) between the two CPUs; x5.
CUE_TOL = Tolerance(abs=0.07, rel=0.0, why="cue-conflict share: measured <= 0.014 (AMD EPYC vs Intel Xeon), x5")
# Table 1 (real track), percent over 500 test images per seed (0.2 points per image) and
# the mean over seeds: measured at most 0.2 points (one k-NN test image of one seed);
# allow 1 point (5 images); between the two CPUs the means moved by 0.1.
TABLE1_TOL = Tolerance(abs=1.0, rel=0.0, why="Table 1 %: measured <= 0.2 points (1 of 500 images), allow 1")
# The sd over seeds moved by 0.42 points between the two CPUs (one seed's image); x5.
TABLE1_SD_TOL = Tolerance(abs=2.0, rel=0.0, why="Table 1 sd over seeds: measured <= 0.42 points (AMD EPYC vs Intel Xeon), x5")
# A numeric column none of the rules names (a column added later): loose, and listed.
OTHER_TOL = Tolerance(abs=1e-3, rel=1e-3, why="unclassified numeric column: generic tolerance")

EXACT = "exact"
SKIP = "skip"

# (pattern on the lower-cased column name, EXACT | SKIP | Tolerance, reason); first match wins.
COLUMN_RULES: list[tuple[str, object, str]] = [
    # Byte hashes follow the CPU kind (weights differ in their last bits): not comparable.
    (r"sha256|sha1|md5|hash|weights_digest", SKIP, "hash of bytes that differ across CPU kinds"),
    # Stamps of when, where and with which code revision a run happened.
    (r"(^|[_ ])(code_revision|revision|commit|git|timestamp|date|hostname|host|machine|device|cpu)($|[_ ])",
     SKIP, "stamp of the run, not a result"),
    (r"(^|_)(seconds|threads)$|_s$|_cpu_s$|per_s$|images_per_s", SKIP, "timing, run-dependent"),
    # A digest of params is the same on every machine for the same params: meaningful.
    (r"digest", EXACT, "params digest: same params, same digest"),
    (r"^paper ", EXACT, "the paper's numbers, copied"),
    # Keys, geometry and flags: no arithmetic noise can move them, or a flip is a finding.
    (r"^(seed|seeds|mask_unit|vit_patch|n_seeds|n_visible|n_hidden|n_train|n_test|sweep|"
     r"baseline|cell|cell_id|mask_ratio|actual_ratio|pooling|n_levels)$", EXACT, "key or geometry"),
    (r"(^|_)n_(train|test)$", EXACT, "split size"),
    (r"^(gate_pass|learned)$", EXACT, "gate flag: a flip changes a verdict"),
    (r"^r2", R2_TOL, R2_TOL.why),
    (r"acc", ACC_TOL, ACC_TOL.why),
    (r"^(shape_bias|cue_shape|cue_texture)", CUE_TOL, CUE_TOL.why),
    (r"mse", MSE_TOL, MSE_TOL.why),
    (r"^(recon_rel|linear_rel)$", RATIO_TOL, RATIO_TOL.why),
    (r"^(gain_share|last_quarter_drop)$", GAIN_TOL, GAIN_TOL.why),
    (r"^ours .* sd$", TABLE1_SD_TOL, TABLE1_SD_TOL.why),
    (r"^ours ", TABLE1_TOL, TABLE1_TOL.why),
]

# The tolerances a metric's declaration names (core/results.py, ``Column.tolerance``).
TOLERANCES: dict[str, object] = {
    "exact": EXACT, "r2": R2_TOL, "acc": ACC_TOL, "mse": MSE_TOL, "ratio": RATIO_TOL, "gain": GAIN_TOL, "cue": CUE_TOL,
}


def _declared_rules() -> list[tuple[str, object, str]]:
    """One rule per declared per-cell metric, matching its column and its per-level columns."""
    rules = []
    for column in results.CELL_COLUMNS:
        if column.tolerance is None:
            continue
        names = {column.name.replace("{alt}", p) for p in ("mean", "cls")}
        rule = TOLERANCES[column.tolerance]
        why = rule.why if isinstance(rule, Tolerance) else "declared exact: key, geometry or flag"
        rules += [(rf"^{re.escape(n.lower())}(_level\d+)?$", rule, why) for n in sorted(names)]
    return rules


# Columns renamed since (README, "Changelog"): a table from before the rename reads with the new name.
RENAMED_COLUMNS = {"patch_size": "mask_unit"}

# Key columns per table (rows are matched on these); other tables use their first column.
KEY_COLUMNS = {
    "metrics.csv": ("mask_ratio", "mask_unit", "seed"),
    "baselines.csv": ("baseline", "seed"),
    "table1.csv": ("sweep", "mask_ratio", "mask_unit"),
}

DEFAULT_METRICS = "results/metrics.csv"
DEFAULT_BASELINES = "results/baselines.csv"
DEFAULT_TABLE1 = "results/real/table1.csv"


class ReplayError(Exception):
    """Bad input: one line, exit status 2."""


# --------------------------------------------------------------------------- git


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60)
    except OSError as err:
        raise ReplayError(f"cannot run git ({err.strerror})") from None


def repo_root(repo: Path) -> Path:
    if not repo.is_dir():
        raise ReplayError(f"{repo}: no such folder")
    done = _git(repo, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise ReplayError(f"{repo}: not inside a git repository")
    return Path(done.stdout.decode().strip())


def resolve_rev(root: Path, rev: str) -> str:
    done = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if done.returncode != 0 or not done.stdout.strip():
        raise ReplayError(f"{rev}: unknown revision in {root}")
    return done.stdout.decode().strip()


def committed_text(root: Path, commit: str, rel: str, rev: str) -> str | None:
    """The file at ``commit``, or None when the revision has no such file."""
    done = _git(root, "show", f"{commit}:{rel}")
    if done.returncode != 0:
        return None
    try:
        return done.stdout.decode()
    except UnicodeDecodeError:
        raise ReplayError(f"{rev}:{rel}: not a text file") from None


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    name: str
    columns: list[str]
    rows: dict[tuple[str, ...], dict[str, str]]
    keys: tuple[str, ...]


def parse_table(text: str, name: str, where: str) -> Table:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ReplayError(f"{where}: empty file") from None
    except csv.Error as err:
        raise ReplayError(f"{where}: not a CSV table ({err})") from None
    if len(set(header)) != len(header):
        raise ReplayError(f"{where}: repeated column names")
    header = [RENAMED_COLUMNS.get(h, h) if RENAMED_COLUMNS.get(h) not in header else h for h in header]
    keys = KEY_COLUMNS.get(Path(name).name, (header[0],))
    missing = [k for k in keys if k not in header]
    if missing:
        raise ReplayError(f"{where}: lacks its key columns {missing}")
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    try:
        for line_no, values in enumerate(reader, start=2):
            if not values:
                continue
            if len(values) != len(header):
                raise ReplayError(f"{where}: line {line_no} has {len(values)} fields, the header {len(header)}")
            row = dict(zip(header, values))
            key = tuple(_canonical(row[k]) for k in keys)
            if key in rows:
                raise ReplayError(f"{where}: line {line_no} repeats the row {_row_label(keys, key)}")
            rows[key] = row
    except csv.Error as err:
        raise ReplayError(f"{where}: not a CSV table ({err})") from None
    return Table(name, header, rows, keys)


def _canonical(value: str) -> str:
    """Key values compare as numbers when they are numbers: ``0.1`` == ``0.100000``."""
    number = _number(value)
    return repr(number) if number is not None else value


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _row_label(keys: tuple[str, ...], key: tuple[str, ...]) -> str:
    values = dict(zip(keys, key))
    if keys == KEY_COLUMNS["metrics.csv"]:
        return cell_id(float(values["mask_ratio"]), int(float(values["mask_unit"])), int(float(values["seed"])))
    return " ".join(f"{k}={v}" for k, v in values.items())


def column_rule(column: str) -> tuple[object, str]:
    name = column.lower()
    for pattern, rule, why in _declared_rules() + COLUMN_RULES:
        if re.search(pattern, name):
            return rule, why
    return OTHER_TOL, OTHER_TOL.why


# --------------------------------------------------------------------------- comparison


@dataclass
class Finding:
    file: str
    row: str
    column: str
    committed: str
    now: str
    diff: str
    tolerance: str


@dataclass
class FileReport:
    file: str
    compared: int
    findings: list[Finding]
    skipped: dict[str, str]  # column -> reason
    skipped_differ: list[str]  # skipped columns whose values differ (for information)
    unclassified: list[str]


def _same_missing(a: str, b: str) -> bool:
    return a.strip().lower() in ("", "nan", "none", "null") and b.strip().lower() in ("", "nan", "none", "null")


def compare_tables(old: Table, new: Table, file: str) -> FileReport:
    findings: list[Finding] = []
    skipped: dict[str, str] = {}
    skipped_differ: list[str] = []
    unclassified: list[str] = []
    compared = 0
    for col in old.columns:
        if col not in new.columns:
            findings.append(Finding(file, "(header)", col, "present", "missing", "column removed", "exact"))
    for col in new.columns:
        if col not in old.columns:
            findings.append(Finding(file, "(header)", col, "missing", "present", "column added", "exact"))
    for key in old.rows:
        if key not in new.rows:
            findings.append(Finding(file, _row_label(old.keys, key), "(row)", "present", "missing", "row removed", "exact"))
    for key in new.rows:
        if key not in old.rows:
            findings.append(Finding(file, _row_label(new.keys, key), "(row)", "missing", "present", "row added", "exact"))
    columns = [c for c in old.columns if c in new.columns and c not in old.keys]
    for col in columns:
        rule, why = column_rule(col)
        if rule is SKIP:
            skipped[col] = why
            if any(old.rows[k][col] != new.rows[k][col] for k in old.rows if k in new.rows):
                skipped_differ.append(col)
            continue
        if isinstance(rule, Tolerance) and rule is OTHER_TOL:
            unclassified.append(col)
        for key, row in old.rows.items():
            if key not in new.rows:
                continue
            a, b = row[col], new.rows[key][col]
            compared += 1
            if a == b or _same_missing(a, b):
                continue
            x, y = _number(a), _number(b)
            label = _row_label(old.keys, key)
            if rule is EXACT or x is None or y is None:
                if rule is EXACT and x is not None and y is not None and x == y:
                    continue  # 0.5 and 0.500000: the same number
                findings.append(Finding(file, label, col, a, b, "differs", "exact"))
                continue
            assert isinstance(rule, Tolerance)
            if math.isnan(x) or math.isnan(y) or not rule.allows(x, y):
                diff = "nan" if math.isnan(x) or math.isnan(y) else f"{y - x:+.3e}"
                findings.append(Finding(file, label, col, a, b, diff, rule.text()))
    return FileReport(file, compared, findings, skipped, skipped_differ, unclassified)


# --------------------------------------------------------------------------- main


def _print_findings(findings: list[Finding], limit: int) -> None:
    header = ("file", "row", "column", "committed", "now", "diff", "tolerance")
    rows = [header] + [(f.file, f.row, f.column, f.committed, f.now, f.diff, f.tolerance) for f in findings[:limit]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    if len(findings) > limit:
        print(f"  ... and {len(findings) - limit} more (--max-rows to show them)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mae_hlvm.workflow.replay",
        description="Compare a rerun's results tables with the committed ones, within measured tolerances.",
    )
    p.add_argument("--ref", default="HEAD", help="the revision holding the committed results (default: HEAD)")
    p.add_argument("--repo", default=".", help="the repository (default: the current folder)")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help=f"per-cell metrics (default: {DEFAULT_METRICS})")
    p.add_argument("--baselines", default=DEFAULT_BASELINES, help=f"floors and ceiling (default: {DEFAULT_BASELINES})")
    p.add_argument("--table1", default=DEFAULT_TABLE1,
                   help=f"real-track Table 1; checked when the working tree has it (default: {DEFAULT_TABLE1}); "
                        "'none' to skip")
    p.add_argument("--file", action="append", default=[], help="another CSV table to compare (repeatable)")
    p.add_argument("--max-rows", type=int, default=50, help="differences to print at most (default: 50)")
    return p


def check(args: argparse.Namespace) -> tuple[list[FileReport], list[str], str]:
    """(per-file reports, notes, short commit); raises ReplayError on bad input."""
    root = repo_root(Path(args.repo).resolve())
    commit = resolve_rev(root, args.ref)
    files: list[tuple[str, bool]] = [(args.metrics, True), (args.baselines, True)]
    if args.table1 and args.table1.lower() != "none":
        files.append((args.table1, args.table1 != DEFAULT_TABLE1))
    files += [(f, True) for f in args.file]
    reports, notes = [], []
    for name, required in files:
        path = Path(name) if Path(name).is_absolute() else Path(args.repo).resolve() / name
        try:
            rel = path.resolve().relative_to(root).as_posix()
        except ValueError:
            raise ReplayError(f"{name}: outside the repository {root}") from None
        if not path.is_file():
            if required:
                raise ReplayError(f"{name}: missing in the working tree (run the pipeline first)")
            notes.append(f"{name}: not in the working tree, not checked")
            continue
        text_old = committed_text(root, commit, rel, args.ref)
        if text_old is None:
            if required:
                raise ReplayError(f"{args.ref}:{rel}: no such file in that revision")
            notes.append(f"{name}: not in {args.ref}, not checked")
            continue
        try:
            text_new = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ReplayError(f"{name}: unreadable ({err.__class__.__name__})") from None
        old = parse_table(text_old, rel, f"{args.ref}:{rel}")
        new = parse_table(text_new, rel, name)
        reports.append(compare_tables(old, new, rel))
    short = _git(root, "rev-parse", "--short", commit).stdout.decode().strip() or commit[:12]
    return reports, notes, short


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        reports, notes, short = check(args)
    except ReplayError as err:
        print(f"replay-check: error: {err}", file=sys.stderr)
        return 2
    findings = [f for r in reports for f in r.findings]
    compared = sum(r.compared for r in reports)
    print(f"replay-check: {len(reports)} tables against {args.ref} ({short})")
    if findings:
        print("values outside tolerance:")
        _print_findings(findings, args.max_rows)
    for r in reports:
        if r.skipped:
            listed = "; ".join(f"{c} ({why})" for c, why in r.skipped.items())
            print(f"skipped in {r.file}: {listed}")
            if r.skipped_differ:
                print(f"  (differ, not judged: {', '.join(r.skipped_differ)})")
        if r.unclassified:
            print(f"no rule for {r.file}: {', '.join(r.unclassified)} (compared with {OTHER_TOL.text()})")
    for note in notes:
        print(f"note: {note}")
    files = ", ".join(r.file for r in reports)
    if findings:
        n_files = len({f.file for f in findings})
        print(f"replay-check: FAIL: {len(findings)} differences outside tolerance in {n_files} of "
              f"{len(reports)} tables ({files}) against {args.ref} ({short})")
        return 1
    print(f"replay-check: OK: {compared} values in {len(reports)} tables ({files}) within tolerance of "
          f"{args.ref} ({short})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
