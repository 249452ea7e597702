"""Budget robustness: do the verdicts and the ratio ordering survive twice the training?

A fixed subset of grid cells (``robustness:`` in params.yaml) is retrained at
``budget_factor`` x ``train.epochs`` (``train-long``, into ``models_long/``) and probed
like every cell (``probe``, into ``results/cells_long/``). This step then compares the
subset at the two budgets, with rules fixed here before any result:

* **Verdicts.** The synthetic claims (C1, C2 per masking unit, C3 when the subset has two
  units) are computed on the subset's cells at each budget with the claims module's own
  rules (gate, seeds, bootstrap); a claim *survives* when its verdict is the same.
* **Ordering.** Per masking unit and seed, root R^2 over the subset's ratios is ranked at
  each budget; the ordering *survives* when Kendall's tau between the two rankings is at
  least :data:`MIN_TAU` (1 = the same order).

Writes ``results/robustness.json`` and ``results/robustness.md`` (shown in the summary).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mae_hlvm.core import paths
from mae_hlvm.core.cells import cell_id
from mae_hlvm.core.config import Params
from mae_hlvm.core.io import ArtifactError, read_json, write_json, write_text
from mae_hlvm.core.results import cell_row, read_cell
from mae_hlvm.review.aggregate import load_metrics, n_levels
from mae_hlvm.review.claims import claim_key, synthetic_claims

MIN_TAU = 1.0  # the ordering survives only if it is the same order


def subset_cells(params: Params) -> list[tuple[float, int, int]]:
    """The subset's (ratio, unit, seed) cells, in the grid's order."""
    r = params.robustness
    return list(itertools.product(r.mask_ratios, r.mask_units, r.seeds))


def long_frame(params: Params, cells_dir: str | Path) -> pd.DataFrame:
    """One metrics row per subset cell at the longer budget (the columns of metrics.csv)."""
    levels = n_levels(params)
    rows = []
    for ratio, unit, seed in subset_cells(params):
        path = str(Path(cells_dir) / f"{cell_id(ratio, unit, seed)}.json")
        rows.append(cell_row(read_cell(read_json(path), (ratio, unit, seed), levels, path), params.probe.pooling))
    return pd.DataFrame(rows).sort_values(["mask_unit", "mask_ratio", "seed"], kind="stable").reset_index(drop=True)


def short_frame(params: Params, metrics: pd.DataFrame) -> pd.DataFrame:
    """metrics.csv's rows of the subset's cells (the grid's budget)."""
    keys = set(subset_cells(params))
    mask = [(r, p, s) in keys for r, p, s in zip(metrics.mask_ratio, metrics.mask_unit, metrics.seed)]
    sub = metrics[mask].sort_values(["mask_unit", "mask_ratio", "seed"], kind="stable").reset_index(drop=True)
    if len(sub) != len(keys):
        raise ArtifactError(f"{paths.METRICS_CSV}: lacks some robustness cells; rerun the aggregate step")
    return sub


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a between two equally long sequences (ties count as discordant)."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    if not pairs:
        return float("nan")
    score = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs)
    return float(score / len(pairs))


def orderings(short: pd.DataFrame, long: pd.DataFrame) -> list[dict[str, Any]]:
    """Per (unit, seed): root R^2 over the subset's ratios at both budgets, and whether the order holds."""
    out = []
    for (unit, seed), g in short.groupby(["mask_unit", "seed"]):
        lg = long[(long.mask_unit == unit) & (long.seed == seed)]
        ratios = sorted(g.mask_ratio)
        a = [float(g[g.mask_ratio == r].r2_level0.iloc[0]) for r in ratios]
        b = [float(lg[lg.mask_ratio == r].r2_level0.iloc[0]) for r in ratios]
        tau = kendall_tau(a, b)
        out.append({
            "mask_unit": int(unit), "seed": int(seed), "mask_ratios": ratios,
            "root_r2_budget1": [round(v, 6) for v in a], "root_r2_budget2": [round(v, 6) for v in b],
            "kendall_tau": round(tau, 6) if np.isfinite(tau) else None,
            "survives": bool(np.isfinite(tau) and tau >= MIN_TAU),
        })
    return out


def verdicts(short: pd.DataFrame, long: pd.DataFrame, levels: int) -> list[dict[str, Any]]:
    """Per claim the subset can test: its verdict at both budgets, and whether it survives."""
    before = {claim_key(c): c for c in synthetic_claims(short, levels)}
    after = {claim_key(c): c for c in synthetic_claims(long, levels)}
    return [
        {"claim": key, "text": before[key]["claim"], "verdict_budget1": before[key]["verdict"],
         "verdict_budget2": after[key]["verdict"], "survives": before[key]["verdict"] == after[key]["verdict"]}
        for key in sorted(before) if key in after
    ]


def render_markdown(report: dict[str, Any]) -> str:
    f = report["budget_factor"]
    lines = [
        f"Subset: ratios {report['mask_ratios']}, units {report['mask_units']}, seeds {report['seeds']}, "
        f"retrained at {f} x the epochs. Cells passing the learning gate: "
        f"{report['cells_learned_budget1']} of {report['n_cells']} at 1x, {report['cells_learned_budget2']} at {f}x.",
        "",
        f"| claim | verdict at 1x | verdict at {f}x | survives |",
        "|---|---|---|---|",
    ]
    lines += [f"| {v['claim']} | {v['verdict_budget1']} | {v['verdict_budget2']} | {'yes' if v['survives'] else 'no'} |"
              for v in report["verdicts"]]
    lines += ["", f"| unit | seed | root R^2 over ratios at 1x | at {f}x | Kendall tau | order survives |", "|---|---|---|---|---|---|"]
    for o in report["orderings"]:
        fmt = lambda xs: " / ".join(f"{x:.3f}" for x in xs)  # noqa: E731
        tau = "n/a" if o["kendall_tau"] is None else f"{o['kendall_tau']:.2f}"
        lines.append(f"| {o['mask_unit']} | {o['seed']} | {fmt(o['root_r2_budget1'])} | {fmt(o['root_r2_budget2'])} "
                     f"| {tau} | {'yes' if o['survives'] else 'no'} |")
    return "\n".join(lines) + "\n"


def run(params: Params, args: argparse.Namespace) -> None:
    short = short_frame(params, load_metrics(args.metrics))
    long = long_frame(params, args.cells_dir)
    r = params.robustness
    report = {
        "budget_factor": r.budget_factor, "mask_ratios": list(r.mask_ratios), "mask_units": list(r.mask_units),
        "seeds": list(r.seeds), "n_cells": len(short),
        "cells_learned_budget1": int(short.gate_pass.sum()), "cells_learned_budget2": int(long.gate_pass.sum()),
        "verdicts": verdicts(short, long, n_levels(params)),
        "orderings": orderings(short, long),
        "rules": {"min_tau": MIN_TAU},
    }
    write_json(args.out_json, report)
    write_text(args.out_md, render_markdown(report))
