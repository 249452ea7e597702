"""Records of runs made elsewhere (``runs/<name>/``): keep one on main, and re-judge it.

Only main reaches users, so a run made on a GPU or a cluster is kept under ``runs/<name>/``
with everything needed to re-judge its claims and replay it from a clone: its params,
``dvc.lock``, the theorem's prediction, every per-cell JSON (both tracks, both budgets),
the seeds' baselines and the review outputs (:data:`KEPT`).

``python -m mae_hlvm.review.records keep runs/<name>`` copies them from the working copy;
``python -m mae_hlvm.review.records rejudge runs/<name>`` judges the record's claims again
under today's rules (:mod:`mae_hlvm.review.claims`) from what it holds, without training,
and rewrites its ``claims.json`` / ``claims.md`` / ``stability.csv``.

A record kept before per-cell JSONs were (the GPU run of 2026-11-27) lacks the real
track's cells: its real claims are then read from ``real/table1.csv`` (seed means, which
is all the effects need), each cell's gate from the summary's real gate line, and the
per-seed counts are "n/a". Without a stability set every claim reads "not testable: no
stability run" whatever those numbers say.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mae_hlvm.core import paths
from mae_hlvm.core.cells import stability_enabled, stability_real
from mae_hlvm.core.config import Params, ParamsError, load_params
from mae_hlvm.core.gate import learned_from
from mae_hlvm.core.io import ArtifactError, read_json, write_json, write_text
from mae_hlvm.review import claims as claims_mod
from mae_hlvm.review import verdicts
from mae_hlvm.review.aggregate import frame_to_csv, load_baselines, load_metrics
from mae_hlvm.review.summary import headline

# What a record keeps: files, and folders copied whole (relative to the working copy and to the record)
KEPT = (
    "params.yaml", "dvc.lock", paths.PREDICTION_JSON,
    paths.METRICS_CSV, paths.BASELINES_CSV, paths.CLAIMS_JSON, paths.CLAIMS_MD, paths.STABILITY_CSV,
    paths.SUMMARY_MD, paths.HEADLINE_JSON, paths.LOSS_CURVES_CSV,
)
KEPT_DIRS = (
    paths.CELLS_DIR, paths.STABLE_CELLS_DIR, paths.BASELINES_DIR, paths.REAL_CELLS_DIR, paths.REAL_STABLE_CELLS_DIR,
    paths.FIGURES_DIR, paths.REAL_FIGURES_DIR,
)
KEPT_REAL = tuple(f"{paths.REAL_TABLE_STEM}.{ext}" for ext in ("csv", "md", "tex"))
LEGACY_NOTE = "per-seed accuracies not kept (real/table1.csv holds seed means): seeds with its sign n/a"


def record_path(record: Path, rel: str) -> Path:
    """Where a working-copy path lives in a record: ``results/`` is the record's root."""
    return record / rel.removeprefix("results/")


def keep(root: Path, record: Path) -> list[str]:
    """Copy a finished run's params, dvc.lock, prediction, per-cell JSONs and review outputs
    from working copy ``root`` into ``record``; returns the copied paths. A missing file the
    params' run must have made is one ArtifactError line, before anything is copied."""
    params = load_params(root / "params.yaml")
    wanted = [p for p in (*KEPT, *KEPT_REAL) if p != paths.STABILITY_CSV or stability_enabled(params)]
    missing = [p for p in wanted if not (root / p).is_file()]
    if missing:
        raise ArtifactError(f"{root}: lacks {missing[0]} (and {len(missing) - 1} more); finish the run before keeping it")
    copied = []
    for rel in wanted:
        dest = record / rel if rel in ("params.yaml", "dvc.lock", paths.PREDICTION_JSON) else record_path(record, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest)
        copied.append(rel)
    for rel in KEPT_DIRS:
        if (root / rel).is_dir():
            for src in sorted((root / rel).rglob("*")):
                if src.is_file() and src.suffix in (".json", ".png", ".csv"):
                    dest = record_path(record, str(src.relative_to(root)))
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest)
                    copied.append(str(src.relative_to(root)))
    return copied


# --------------------------------------------------------------------------- re-judging


def _learned_real_from_summary(summary_md: str) -> dict[str, bool]:
    """{"A/r0.1_p8_s0": learned} from a summary's real gate line (a record without real cells):
    a failing cell whose reason does not say "not learned" failed an older rule, not learning."""
    line = next((x for x in summary_md.splitlines() if "Learning gate, real track:" in x), "")
    failing = dict(re.findall(r"(\w/r[\d.]+_[pu]\d+_s\d+) \(((?:[^()]|\([^()]*\))*)\)", line))
    return {cell: "not learned" not in why for cell, why in failing.items()}


def legacy_real_frame(record: Path) -> pd.DataFrame:
    """The real track's cells of a record without per-cell JSONs: one row per (sweep, ratio,
    unit) from table1.csv's seed means (seed -1 marks a seed mean), learned from the summary."""
    table = pd.read_csv(record / "real" / "table1.csv")
    learned = _learned_real_from_summary((record / "summary.md").read_text())
    rows = []
    for r in table.to_dict("records"):
        # a record's names may be of before the masking unit's rename (``_p8`` for ``_u8``)
        prefixes = tuple(f"{r['sweep']}/r{float(r['mask_ratio'])!r}_{u}{int(r['mask_unit'])}_s" for u in "pu")
        cells = [ok for name, ok in learned.items() if name.startswith(prefixes)]
        rows.append({"sweep": r["sweep"], "mask_ratio": float(r["mask_ratio"]), "mask_unit": int(r["mask_unit"]), "seed": -1,
                     "acc": float(r["ours clean"]) / 100.0, "gate_pass": int(all(cells)), "gain_share": np.nan,
                     "recon_rel": np.nan, "n_seeds": int(r["n_seeds"])})
    return pd.DataFrame(rows)


def _record_metrics(path: Path) -> pd.DataFrame:
    """A record's metrics.csv; one kept before issue 25 has a plateau flag where today's has the drop."""
    frame = pd.read_csv(path, na_values=["nan"], keep_default_na=False)
    if "last_quarter_drop" not in frame and "plateau" in frame:
        frame = frame.assign(last_quarter_drop=np.nan)
        tmp = path.with_name(".metrics_rejudge.csv")
        frame.to_csv(tmp, index=False, na_rep="nan")
        try:
            return load_metrics(tmp)
        finally:
            tmp.unlink()
    return load_metrics(path)


def _record_params(record: Path) -> Params:
    try:
        return load_params(record / "params.yaml")
    except ParamsError as err:
        raise ParamsError(f"{record}: its params.yaml no longer loads ({err}); re-judge it with the code of its time") from None


def rejudge(record: Path) -> list[dict[str, Any]]:
    """Judge a record's claims under today's rules from what it holds; write claims.json,
    claims.md and stability.csv into it and return the claims."""
    params = _record_params(record)
    metrics = _record_metrics(record / "metrics.csv")
    # the gate of the record's time may have asked more (a plateau): judge learning from its columns
    metrics["gate_pass"] = [int(learned_from(g, r)) for g, r in zip(metrics["gain_share"], metrics["recon_rel"])]
    baselines = load_baselines(record / "baselines.csv")
    prediction_file = record / paths.PREDICTION_JSON
    if prediction_file.exists():
        prediction = read_json(prediction_file)
    else:  # deterministic from the params (data/prediction.json is not a cached output)
        from mae_hlvm.synthetic.predict import predict_grid

        prediction = predict_grid(params, ())  # (its params digest is of no keys: the record's own params)
    real, legacy = None, False
    if params.real is not None and params.real.enabled:
        cells_dir = record_path(record, paths.REAL_CELLS_DIR)
        if cells_dir.is_dir():
            real = claims_mod.read_real_cells(params, cells_dir)
        else:
            real, legacy = legacy_real_frame(record), True
    ev = claims_mod.Evidence(metrics, baselines, prediction, params.data.depth + 1, real,
                             params.real.sweep_a_unit if real is not None else 0,
                             params.real.sweep_b_ratio if real is not None else 0.0)
    stable = None
    stable_dir = record_path(record, paths.STABLE_CELLS_DIR)
    if stability_enabled(params) and stable_dir.is_dir():
        st = params.stability
        stable_real = None
        if stability_real(params) and record_path(record, paths.REAL_STABLE_CELLS_DIR).is_dir():
            stable_real = claims_mod.read_real_cells(params, record_path(record, paths.REAL_STABLE_CELLS_DIR), {st.seed})
        stable = claims_mod.Evidence(claims_mod.read_stable_cells(params, stable_dir), baselines[baselines.seed == st.seed],
                                     prediction, ev.n_levels, stable_real, ev.sweep_a_unit, ev.sweep_b_ratio)
    factor = params.stability.budget_factor if stable is not None else None
    seed = params.stability.seed if stable is not None else 0
    judged = claims_mod.judge_all(ev, stable, factor or 0, seed)
    if legacy:
        n_real_seeds = int(real["n_seeds"].min())
        for c in judged:
            if "scope" in c:
                c.update(seeds=None, seeds_with_sign=None, n_seeds=n_real_seeds)
                c["note"] = "; ".join(x for x in (c.get("note", "").replace(
                    "1 seed per cell, fewer than 3: bootstrap withheld", "").strip("; "), LEGACY_NOTE) if x)
                c.update({k: None for k in verdicts.BOOTSTRAP_KEYS if k in c})
    table = claims_mod.stability_table(ev, stable) if stable is not None else pd.DataFrame(
        columns=list(claims_mod.STABILITY_COLUMNS))
    rules = {**verdicts.RULES, "budget_factor": factor, "rejudged_from": "the record (no training)"}
    write_json(record / "claims.json", claims_mod._finite({"rules": rules, "claims": {claims_mod.claim_key(c): c for c in judged}}))
    write_text(record / "stability.csv", frame_to_csv(table))
    header = ("Re-judged from this record's files under the rules below (`python -m mae_hlvm.review.records "
              f"rejudge {record.as_posix()}`): no cell was retrained.\n\n")
    write_text(record / "claims.md", claims_mod.render_markdown(judged, factor).replace(
        "# Claims check\n\n", "# Claims check\n\n" + header, 1))
    write_json(record / "headline.json", headline(metrics, {"claims": {claims_mod.claim_key(c): c for c in judged}}))
    _mark_superseded(record / "summary.md")
    return judged


SUPERSEDED = ("> **Re-judged** (`python -m mae_hlvm.review.records rejudge`): this summary is the run's own; "
              "its learning-gate and claims sections follow the rules of its time. Today's verdicts: "
              "`claims.md`, `headline.json` and `stability.csv` beside it.\n\n")


def _mark_superseded(summary: Path) -> None:
    """Say at the top of a record's own summary that its verdicts are superseded (once)."""
    if not summary.exists():
        return
    text = summary.read_text()
    if SUPERSEDED in text:
        return
    title, _, rest = text.partition("\n\n")
    write_text(summary, f"{title}\n\n{SUPERSEDED}{rest}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mae_hlvm.review.records", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["keep", "rejudge"])
    parser.add_argument("record", type=Path, help="the record's folder, runs/<name>")
    parser.add_argument("--root", type=Path, default=Path("."), help="keep: the working copy of the finished run")
    args = parser.parse_args(argv)
    try:
        if args.action == "keep":
            copied = keep(args.root, args.record)
            print(f"kept {len(copied)} files in {args.record}")
        else:
            for c in rejudge(args.record):
                print(f"{claims_mod.claim_key(c)}: {c['verdict']}")
    except (ParamsError, ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
