"""A Markdown summary of one revision's results, and the grid's table as LaTeX (step ``summary``).

``results/summary.md`` gathers what a reviewer needs to judge a revision without
running anything: the params (and their digest), the code revision, library versions,
the per-cell table averaged over seeds, the baselines (random-init encoder, raw pixels),
the learning gate (:mod:`mae_hlvm.core.gate`: how many cells of each track pass, and which
fail: the synthetic grid's from metrics.csv, the real track's line from its Table 1),
the claims check, links to every figure (:data:`mae_hlvm.core.paths.FIGURE_NAMES`, never a
glob of the folder, so a stale file cannot appear) and, when the real track is on, its
Table 1 (results/real/table1.md) and figures.
``results/metrics.tex`` is the same table ready for the paper. Both are stamped with the
params digest and code revision and contain nothing that varies between reruns.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mae_hlvm.core import paths, results
from mae_hlvm.core.cells import cell_id, real_enabled, stability_enabled
from mae_hlvm.core.config import Params
from mae_hlvm.core.gate import GATE_MIN_SHARE, flag_reason, gate_line
from mae_hlvm.core.io import ArtifactError, check_recorded, read_json, write_json, write_text
from mae_hlvm.core.paper import table2_rows
from mae_hlvm.core.paths import FIGURE_NAMES, REAL_FIGURE_NAMES
from mae_hlvm.core.provenance import code_revision, digest, library_versions, section_dict
from mae_hlvm.review.aggregate import has_shape_bias, load_baselines, load_metrics


def shown_params(params: Params) -> dict:
    """The params the summary prints and stamps: the synthetic sections, plus ``real`` when on."""
    shown = section_dict(params, ["data", "model", "train", "probe", "grid"])
    if real_enabled(params):
        shown.update(section_dict(params, ["real"]))
    if stability_enabled(params):
        shown.update(section_dict(params, ["stability"]))
    return shown


def _mean_sd(frame: pd.DataFrame, by: list[str] | str, cols: list[str], sort: bool = True) -> pd.DataFrame:
    """``mean ± sd`` over seeds of ``cols`` per group of ``by``, with a ``seeds`` count; a
    group with any NaN (a probe that failed, or has nothing to measure) reads ``n/a``."""
    grouped = frame.groupby(by, sort=sort)[cols]
    mean, sd = grouped.mean(skipna=False), grouped.std(ddof=1).fillna(0.0)
    out = mean.copy()
    for c in cols:
        out[c] = [f"{m:.3f} ± {s:.3f}" if np.isfinite(m) else "n/a" for m, s in zip(mean[c], sd[c])]
    out["seeds"] = grouped.size()
    return out.reset_index()


def seed_table(metrics: pd.DataFrame, n_levels: int) -> pd.DataFrame:
    """Mean and standard deviation over seeds, one row per (masking unit, masking ratio), of
    every ``summary`` column of ``results.CELL_COLUMNS`` that some cell has a value of (the
    hierarchy-free quadtree has no ``c_excess``)."""
    cols = [name for c in results.CELL_COLUMNS if c.summary for name in c.names(n_levels, "mean")]
    cols = [c for c in cols if c in metrics.columns and metrics[c].notna().any()]
    return _mean_sd(metrics, ["mask_unit", "mask_ratio"], cols)


def markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def baselines_table(baselines: pd.DataFrame, n_levels: int) -> pd.DataFrame:
    """Mean ± sd over seeds per baseline (random-init encoder, raw pixels): linear/nonlinear R^2 per level, accuracy.

    Kinds with none of these probes (the leaf-latent ceiling) are left out.
    """
    cols = [f"r2_level{i}" for i in range(n_levels)] + [f"r2nl_level{i}" for i in range(n_levels)] + ["probe_acc"]
    has = baselines[cols].notna().any(axis=1)
    return _mean_sd(baselines[has], "baseline", cols, sort=False)


def spatial_table(metrics: pd.DataFrame, baselines: pd.DataFrame, n_levels: int) -> pd.DataFrame:
    """Spatial-probe R^2 per level and of each level's innovation: trained cells (mean over every cell and
    seed), then the floors (random-init encoder, raw pixels) and the ceiling (true leaf latents)."""
    cols = [f"r2sp_level{i}" for i in range(n_levels)] + [f"r2in_level{i}" for i in range(1, n_levels)]
    trained = metrics.reindex(columns=cols).assign(baseline="trained cells (all)")
    rows = pd.concat([trained, baselines.reindex(columns=["baseline", *cols])], ignore_index=True)
    return _mean_sd(rows, "baseline", cols, sort=False)


REAL_GATE_PREFIX = "Learning gate, real track:"


def synthetic_gate_line(metrics: pd.DataFrame) -> str:
    """:func:`mae_hlvm.core.gate.gate_line` over metrics.csv's rows (columns gate_pass, gain_share, recon_rel)."""
    failing = [
        (cell_id(r.mask_ratio, r.mask_unit, r.seed), flag_reason(float(r.gain_share), float(r.recon_rel)))
        for r in metrics.itertuples(index=False) if r.gate_pass != 1
    ]
    return gate_line("synthetic grid", len(metrics), failing)


def real_gate_line_of_table(real_table_md: str) -> str:
    """The real track's gate line, as report-real wrote it into table1.md."""
    found = [line for line in real_table_md.splitlines() if line.startswith(REAL_GATE_PREFIX)]
    return found[0] if found else f"{REAL_GATE_PREFIX} not reported in table1.md (rerun report-real)."


def gate_section(metrics: pd.DataFrame, real_table_md: str | None) -> list[str]:
    """The summary's learning-gate lines, one per track."""
    lines = [f"- {synthetic_gate_line(metrics)}"]
    if real_table_md is not None:
        lines.append(f"- {real_gate_line_of_table(real_table_md)}")
    return [
        "## Learning gate",
        "",
        "A cell passes (learned) when its MAE achieves on hidden pixels a share of at least "
        f"{GATE_MIN_SHARE} of a linear predictor's gain over the per-position-mean predictor (rules in "
        "`src/mae_hlvm/core/gate.py`); a claim reading a cell that did not learn is not tested. Whether a claim "
        "depends on the training budget is judged on the stability set (claims below).",
        "",
        *lines,
        "",
    ]


def stability_section(table: pd.DataFrame | None, factor: int | None) -> list[str]:
    """Markdown lines: every stability cell at both budgets (results/stability.csv), or what is missing."""
    head = ["## The stability set (each cell trained again at more passes)", ""]
    if table is None:
        return head + ["No stability set in these params: every claim reads \"not testable: no stability run\".", ""]
    lines = [
        f"Each cell at 1x and at {factor}x the training (same batch, peak lr and warmup, the cosine over the longer run). "
        "hidden rel = hidden-patch MSE / the per-position-mean predictor's; settle_rel = (rel at 1x - rel at "
        f"{factor}x) / rel at 1x: how much the error still fell (no threshold).",
        "",
        f"| track | sweep | ratio | unit | seed | gain share 1x | gain share {factor}x | hidden rel 1x | hidden rel {factor}x "
        "| settle_rel |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        sweep = r.sweep if isinstance(r.sweep, str) else ""
        lines.append(f"| {r.track} | {sweep} | {r.mask_ratio:g} | {int(r.mask_unit)} | {int(r.seed)} | "
                     f"{_number_text(_float(r.gain_share_1x))} | {_number_text(_float(r.gain_share_2x))} | "
                     f"{_number_text(_float(r.recon_rel_1x))} | {_number_text(_float(r.recon_rel_2x))} | "
                     f"{_number_text(_float(r.settle_rel))} |")
    return head + lines + [""]


def _float(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def latex_table(table: pd.DataFrame, stamp: str) -> str:
    cols = list(table.columns)
    names = [c.replace("_", r"\_") for c in cols]
    lines = [
        f"% mae-hlvm synthetic grid, {stamp}",
        r"\begin{tabular}{" + "l" * len(cols) + "}",
        r"\toprule",
        " & ".join(names) + r" \\",
        r"\midrule",
    ]
    for row in table.itertuples(index=False):
        lines.append(" & ".join(str(v).replace("±", r"$\pm$") for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _number_text(value: Any) -> str:
    """A JSON number to 3 decimals; "n/a" for null (claims.json writes NaN as null)."""
    return "n/a" if value is None else f"{value:.3f}"


def theorem_section(metrics: pd.DataFrame, claims: dict[str, Any] | None, prediction: dict[str, Any] | None,
                    oracles_md: str | None) -> list[str]:
    """Markdown lines: the theorem per (ratio, unit) cell (docs/theorem.md): the predicted share of each
    level's latents in c, the encoder of the visible part's R^2 of c (shared) and v (visible-only)
    latents per level and its c_excess (mean over seeds; claim C5), then the oracle table."""
    n_levels = len([c for c in metrics.columns if c.startswith("mr2c_level")])
    if not n_levels:
        return []
    generator = (prediction or {}).get("generator", "quadtree")
    lines = [
        "## The theorem: shared latents predicted and held (claim C5)",
        "",
        (f"Generator: {generator}; its premises are {(prediction or {}).get('premises', 'not stated')}. " if prediction
         else "") + "Predicted: the share of each level's latents in c (data/prediction.json). Measured, under the "
        "cell's own masks (the encoder of the visible part; mean over seeds): R^2 of the shared latents c and of the "
        "visible-only latents v per level (c / v), and c_excess, the R^2 of c beyond what the visible pixels under "
        "even noise keep at the same R^2 of v.",
        "",
    ]
    head = " | ".join(f"L{lv} share in c" for lv in range(n_levels))
    meas = " | ".join(f"L{lv} c / v" for lv in range(n_levels))
    lines += [f"| unit | ratio | {head} | {meas} | c_excess |", "|---|---|" + "---|" * (2 * n_levels + 1)]
    cells = (prediction or {}).get("cells", {})
    means = metrics.groupby(["mask_unit", "mask_ratio"]).mean(numeric_only=True)
    for (unit, ratio), row in means.iterrows():
        key = cell_id(ratio, unit, None)
        shares = cells.get(key, {}).get("c_share_per_level") or [None] * n_levels
        pred = " | ".join(_number_text(x) for x in shares)
        held = " | ".join(f"{_number_text(_float(row[f'mr2c_level{lv}']))} / {_number_text(_float(row[f'mr2v_level{lv}']))}"
                          for lv in range(n_levels))
        lines.append(f"| {int(unit)} | {ratio:g} | {pred} | {held} | {_number_text(_float(row['c_excess']))} |")
    lines.append("")
    c5 = (claims or {}).get("claims", {}).get("C5")
    if c5 is None:
        lines += ["No claim C5 on these data: the generator does not meet the theorems' premises (docs/theorem.md), "
                  "so the theorem says nothing about them.", ""]
    else:
        lines += [f"C5: mean c_excess {_number_text(c5.get('effect'))}; verdict **{c5['verdict']}**.", ""]
    if oracles_md is not None:
        lines += ["### The measures on known answers (oracle encoders)", "", oracles_md.rstrip(), ""]
    return lines


def shape_bias_section(metrics: pd.DataFrame, baselines: pd.DataFrame | None) -> list[str]:
    """Markdown lines: the Table 2 analogue (claim C6), shape bias per (unit, ratio) as mean ± sd over
    seeds, the floors and the paper's row; nothing when the data have no cue-conflict set."""
    if not has_shape_bias(metrics):
        return []
    ratios = sorted(metrics["mask_ratio"].unique())
    lines = [
        "## Shape bias on cue-conflict images (the paper's Table 2; claim C6)",
        "",
        "Cue-conflict images from the generator: root and upper levels of one class (shape), the leaves' "
        "texture shift of another (texture). Shape bias = of the class probe's decisions that follow either "
        "cue, the share that follow the shape (probe fitted on ordinary train images; default pooling; "
        "mean ± sd over seeds). Floors: the untrained encoder and raw pixels, under the same probe.",
        "",
    ]
    ours = []
    for unit, g in metrics.groupby("mask_unit"):
        stats = g.groupby("mask_ratio")["shape_bias"].agg(["mean", "std"]).fillna({"std": 0.0})
        ours.append((f"unit {int(unit)}", [f"{stats.loc[r, 'mean']:.3f} ± {stats.loc[r, 'std']:.3f}"
                                           if r in stats.index else "" for r in ratios]))
    floors = []
    if baselines is not None and "shape_bias" in baselines:
        for kind in ("random_init", "pixels"):
            values = baselines.loc[baselines["baseline"] == kind, "shape_bias"]
            if values.notna().any():
                floors.append((kind, f"{values.mean():.3f}"))
    return lines + table2_rows(ratios, ours, floors) + [""]


def render_summary(
    params: Params, metrics: pd.DataFrame, claims_md: str, figures: list[str],
    baselines: pd.DataFrame | None = None, real_table_md: str | None = None, claims: dict[str, Any] | None = None,
    stability: pd.DataFrame | None = None, prediction: dict[str, Any] | None = None, oracles_md: str | None = None,
) -> tuple[str, str]:
    """(summary.md text, metrics.tex text).

    ``figures``: image paths relative to the summary's folder; ``baselines``: baselines.csv
    rows; ``real_table_md``: the real track's Table 1 (Markdown), shown when given.
    """
    n_levels = params.data.depth + 1
    shown = shown_params(params)
    stamp = f"params {digest(shown)}, code {code_revision()}"
    table = seed_table(metrics, n_levels)
    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    parts = [
        "# mae-hlvm results summary",
        "",
        f"Stamp: {stamp}. Environment: {versions}.",
        "",
        "## Grid (linear probe, default pooling; mean ± sd over seeds)",
        "",
        markdown_table(table),
        "",
    ]
    if baselines is not None:
        parts += [
            "## Baselines (same probes; mean ± sd over seeds)",
            "",
            "`random_init`: the encoder each cell starts from, untrained (default pooling); "
            "`pixels`: the flattened raw image. r2 = linear probe, r2nl = nonlinear probe.",
            "",
            markdown_table(baselines_table(baselines, n_levels)),
            "",
            "Spatial probe (4 x 4 region means of the tokens; pixels and latents as they are): R^2 of each level "
            "(r2sp) and of each level's innovation beyond its parent (r2in), against the floors and the ceiling "
            "(`latents`: a linear probe on the true leaf latents).",
            "",
            markdown_table(spatial_table(metrics, baselines, n_levels)),
            "",
        ]
    parts += gate_section(metrics, real_table_md)
    parts += [claims_md.replace("# Claims check", "## Claims check")]
    parts += theorem_section(metrics, claims, prediction, oracles_md)
    parts += shape_bias_section(metrics, baselines)
    factor = params.stability.budget_factor if stability_enabled(params) else None
    parts += stability_section(stability, factor)
    if real_table_md is not None:
        parts += ["## Real-image track: Table 1", "", real_table_md.rstrip(), ""]
    parts += [
        "## Figures",
        "",
        *[f"![{Path(f).stem}]({f})" for f in figures],
        "",
        "## Params",
        "",
        "```yaml",
        yaml.safe_dump(shown, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(parts), latex_table(table, stamp)


def figure_paths(params: Params, figures_dir: str | Path, real_dir: str | Path) -> list[tuple[Path, str]]:
    """(PNG, the step drawing it) of every figure the summary links: the figures step's, then the real report's."""
    out = [(Path(figures_dir) / f"{name}.png", "figures") for name in FIGURE_NAMES]
    if real_enabled(params):
        out += [(Path(real_dir) / "figures" / f"{name}.png", "report-real") for name in REAL_FIGURE_NAMES]
    return out


def _existing(path: Path, step: str) -> Path:
    if not path.exists():
        raise ArtifactError(f"{path}: missing (run the {step} step first)")
    check_recorded(path)
    return path


def headline(metrics: pd.DataFrame, claims: dict[str, Any]) -> dict[str, Any]:
    """The numbers `dvc metrics show/diff` compares across revisions: no hashes, no per-cell rows.

    How many cells learned (the gate), the median gain share, per masking unit ``u<N>`` the
    root R^2 (``root_u<N>``) and the shape bias (``shape_u<N>``), each the mean over ratios and
    seeds, with the ratio where it peaks (``root_at_u<N>``, ``shape_at_u<N>``),
    the encoders' mean c_excess (claim C5's quantity), and how many claims got each verdict. Keys stay short, so
    the table `dvc metrics show` prints fits a terminal.
    """
    out: dict[str, Any] = {
        "cells": int(len(metrics)),
        "learned": int(metrics["gate_pass"].astype(bool).sum()),
        "gain_share": round(float(metrics["gain_share"].median()), 4),
    }
    columns = {"root": "r2_level0", "shape": "shape_bias"} if has_shape_bias(metrics) else {"root": "r2_level0"}
    for name, column in columns.items():
        for unit, group in metrics.groupby("mask_unit"):
            by_ratio = group.groupby("mask_ratio")[column].mean()
            out[f"{name}_u{int(unit)}"] = round(float(by_ratio.mean()), 4)  # root R^2 or shape bias
            out[f"{name}_at_u{int(unit)}"] = float(by_ratio.idxmax())  # the masking ratio where it peaks
    if "c_excess" in metrics and metrics["c_excess"].notna().any():
        out["c_excess"] = round(float(metrics["c_excess"].mean()), 4)  # claim C5's quantity, mean over cells
    counts: dict[str, int] = {}
    for claim in claims.get("claims", {}).values():
        kind = str(claim.get("verdict", "")).split(":")[0].strip().replace(" ", "_") or "none"
        counts[kind] = counts.get(kind, 0) + 1
    out["claims"] = dict(sorted(counts.items()))
    return out


def run(params: Params, args: argparse.Namespace) -> None:
    """Write ``args.out_md`` and ``args.out_tex`` from the metrics, baselines, claims and figures."""
    metrics = load_metrics(args.metrics)
    baselines = load_baselines(args.baselines)
    claims_md = _existing(Path(args.claims_md), "claims")
    claims = read_json(args.claims_json)  # a corrupt claims file stops here, named
    real_md = None
    if real_enabled(params):
        real_md = _existing(Path(args.real_dir) / Path(f"{paths.REAL_TABLE_STEM}.md").name, "report-real").read_text()
    out_dir = Path(args.out_md).parent
    # links relative to summary.md's folder, so the Markdown renders where it lies
    figures = [
        Path(os.path.relpath(_existing(f, step), out_dir)).as_posix()
        for f, step in figure_paths(params, args.figures_dir, args.real_dir)
    ]
    stability = None
    if stability_enabled(params):
        path = _existing(Path(getattr(args, "stability_csv", paths.STABILITY_CSV)), "claims")
        stability = pd.read_csv(path, na_values=["nan"], keep_default_na=False)
    prediction = read_json(getattr(args, "prediction", paths.PREDICTION_JSON))
    oracles_md = _existing(Path(getattr(args, "oracles_md", paths.ORACLES_MD)), "aggregate").read_text()
    text, tex = render_summary(params, metrics, claims_md.read_text(), figures, baselines, real_md, claims, stability,
                               prediction, oracles_md)
    write_text(args.out_md, text)
    write_text(args.out_tex, tex)
    out_headline = getattr(args, "out_headline", None) or Path(args.out_md).parent / Path(paths.HEADLINE_JSON).name
    write_json(out_headline, headline(metrics, claims))
