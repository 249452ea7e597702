"""Tables 1 and 2 over every real cell, beside the paper's numbers.

- Table 1: :func:`table1_render` (CSV, Markdown, LaTeX and the rank correlations with the
  paper's columns) of the cells' :func:`mae_hlvm.real.evaluate.table1_cell` outputs.
- Table 2, when the data hold a cue-conflict set: :func:`shape_bias_frame` (the clean
  Table 1 probe's shape bias per masking ratio) and :func:`shape_bias_markdown`.

Every artifact is written atomically with deterministic bytes (same inputs -> same files).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mae_hlvm.core.io import write_json, write_text
from mae_hlvm.core.paper import table2_rows
from mae_hlvm.real.shifts import PAPER_COLUMNS, STAND_IN_FOR, TEST_SETS

# (sweep, mask_ratio, masking unit, ViT patch, top-1 % per PAPER_COLUMNS), Kong et al. 2023.
PAPER_TABLE1 = (
    ("A", 0.1, 16, 16, (47.45, 34.72, 9.42, 14.63, 2.00, 7.25)),
    ("A", 0.25, 16, 16, (53.58, 40.34, 11.54, 18.68, 2.49, 10.27)),
    ("A", 0.5, 16, 16, (60.07, 46.71, 13.94, 22.44, 2.89, 12.58)),
    ("A", 0.75, 16, 16, (67.41, 54.23, 18.24, 25.20, 3.76, 15.51)),
    ("A", 0.9, 16, 16, (62.97, 49.52, 15.87, 19.11, 2.76, 10.46)),
    ("B", 0.75, 8, 8, (62.57, 49.17, 13.44, 19.42, 3.73, 10.73)),
    ("B", 0.75, 16, 8, (68.96, 55.94, 13.73, 24.23, 6.29, 18.81)),
    ("B", 0.75, 32, 8, (73.31, 61.35, 19.03, 27.84, 12.69, 28.30)),
)


# ------------------------------------------------------------------ Table 1 rendering


def _paper_row(sweep: str, ratio: float, unit: int, vit_patch: int) -> tuple[float, ...] | None:
    """The paper's numbers for our cell: Sweep A by ratio, Sweep B by unit / ViT patch."""
    for p_sweep, p_ratio, p_unit, p_vit, values in PAPER_TABLE1:
        if p_sweep != sweep:
            continue
        if sweep == "A" and math.isclose(p_ratio, ratio):
            return values
        if sweep == "B" and p_unit * vit_patch == unit * p_vit:
            return values
    return None


def sweep_part(df: pd.DataFrame, sweep: str, *, sweep_a_unit: int, sweep_b_ratio: float) -> pd.DataFrame:
    """The rows of ``df`` on Sweep A (unit ``sweep_a_unit``) or B (ratio ``sweep_b_ratio``).

    Rows tagged with the sweep they were trained for (column ``sweep_tag``: A, B, or G
    for the full grid) only count for their own sweep, so the cell both sweeps share is
    not counted twice; untagged and grid rows count wherever they lie.
    """
    on = df.mask_unit == sweep_a_unit if sweep == "A" else np.isclose(df.mask_ratio, sweep_b_ratio)
    if "sweep_tag" in df:
        tag = df.sweep_tag
        on &= tag.isna() | tag.isin([sweep, "G"])
    return df[on]


def _cells_frame(cell_results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per trained cell: its keys and our top-1 numbers."""
    rows = []
    for res in cell_results:
        row = {k: res[k] for k in ("mask_ratio", "mask_unit", "vit_patch", "seed")}
        row["sweep_tag"] = res.get("sweep")
        row["gate_pass"] = res.get("gate_pass")  # None: the result carries no gate
        row.update({f"ours {name}": res["linear_cls"][name] for name in TEST_SETS})
        row["ours clean mean-pool"] = res["linear_mean"]["clean"]
        row["ours clean k-NN"] = res["knn_cls"]["clean"]
        bias = (res.get("shape_bias") or {}).get("shape_bias")  # None: no cue-conflict set, or no decision follows a cue
        row["shape_bias"] = float("nan") if bias is None else bias
        rows.append(row)
    return pd.DataFrame(rows)


OURS_COLUMNS = tuple(f"ours {name}" for name in TEST_SETS) + ("ours clean mean-pool", "ours clean k-NN")


def table1_frame(cell_results: Sequence[dict[str, Any]], *, sweep_a_unit: int, sweep_b_ratio: float) -> pd.DataFrame:
    """Sweep A and Sweep B rows: our mean and sd over seeds beside the paper's values."""
    cells = _cells_frame(cell_results)
    rows = []
    for sweep in ("A", "B"):
        part = sweep_part(cells, sweep, sweep_a_unit=sweep_a_unit, sweep_b_ratio=sweep_b_ratio)
        for (ratio, unit, vit), group in part.groupby(["mask_ratio", "mask_unit", "vit_patch"], sort=True):
            row: dict[str, Any] = {"sweep": sweep, "mask_ratio": ratio, "mask_unit": unit, "vit_patch": vit, "n_seeds": len(group)}
            known = group["gate_pass"].notna().all()
            row["gate_pass"] = int(group["gate_pass"].astype(bool).sum()) if known else pd.NA
            for col in OURS_COLUMNS:
                row[col] = float(group[col].mean())
                row[f"{col} sd"] = float(group[col].std(ddof=1)) if len(group) > 1 else float("nan")
            paper = _paper_row(sweep, float(ratio), int(unit), int(vit))
            for name, value in zip(PAPER_COLUMNS, paper or (float("nan"),) * len(PAPER_COLUMNS)):
                row[f"paper {name}"] = value
            rows.append(row)
    table = pd.DataFrame(rows)
    if "gate_pass" in table:
        table["gate_pass"] = table["gate_pass"].astype("Int64")  # seeds passing; empty where unknown
    return table


def rank_correlations(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Spearman's rho between our column and the paper column it stands in for, per sweep.

    Sweep A runs across masking ratios, Sweep B across masking units; NaN where fewer
    than three rows have paper values or a column is constant.
    """
    from scipy.stats import spearmanr

    out: dict[str, dict[str, float]] = {}
    for sweep in ("A", "B"):
        part = table[(table.sweep == sweep) & table["paper IN1K"].notna()]
        out[f"sweep_{sweep}"] = {}
        for name in TEST_SETS:
            key = f"ours {name} ~ paper {STAND_IN_FOR[name]}"
            ours, paper = part[f"ours {name}"].to_numpy(), part[f"paper {STAND_IN_FOR[name]}"].to_numpy()
            if len(part) < 3 or np.ptp(ours) == 0 or np.ptp(paper) == 0:
                out[f"sweep_{sweep}"][key] = float("nan")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[f"sweep_{sweep}"][key] = round(float(spearmanr(ours, paper).statistic), 4)
    return out


def _fmt(value: float, sd: float | None = None, pm: str = " ± ") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.2f}"
    if sd is not None and not math.isnan(sd):
        text += f"{pm}{sd:.2f}"
    return text


def _display_columns() -> list[tuple[str, str]]:
    """(header, source column) for the Markdown and LaTeX tables."""
    ours = [(f"ours {n}" + ("" if n == "clean" else f" (≈{STAND_IN_FOR[n]})"), f"ours {n}") for n in TEST_SETS]
    ours += [("ours clean mean-pool", "ours clean mean-pool"), ("ours clean k-NN", "ours clean k-NN")]
    paper = [(f"paper {n}", f"paper {n}") for n in PAPER_COLUMNS]
    return ours + paper


def _display_rows(table: pd.DataFrame, pm: str) -> list[list[str]]:
    rows = []
    for _, r in table.iterrows():
        gate = "–" if pd.isna(r.gate_pass) else f"{int(r.gate_pass)}/{int(r.n_seeds)}"
        cells = [str(r.sweep), f"{r.mask_ratio:g}", str(int(r.mask_unit)), str(int(r.vit_patch)), str(int(r.n_seeds)), gate]
        for _, col in _display_columns():
            sd = r.get(f"{col} sd") if col.startswith("ours") else None
            cells.append(_fmt(r[col], sd, pm))
        rows.append(cells)
    return rows


_KEY_HEADERS = ["sweep", "ratio", "unit", "ViT patch", "seeds", "gate"]

TABLE1_NOTE = (
    "Columns 'ours ...' are this project's runs (linear probe on the frozen CLS token, top-1 %, "
    "mean ± sd over seeds; mean-pool and k-NN on the clean split as extra columns). "
    "Our shifted test sets are local stand-ins built from the clean test split, NOT the "
    "paper's ImageNet variants; '≈X' names the paper column each one stands in for. "
    "Columns 'paper ...' are copied from Table 1 of Kong et al. (CVPR 2023), ImageNet-1K "
    "with ViT-B; paper Sweep A uses ViT patch 16, Sweep B ViT patch 8, matched to ours by "
    "masking unit / ViT patch. 'gate': seeds whose MAE passes the learning gate "
    "(src/mae_hlvm/core/gate.py: on hidden pixels it achieves at least half of a linear predictor's gain over "
    "the per-position-mean predictor) of the seeds shown."
)


def _markdown(table: pd.DataFrame, rank: dict[str, dict[str, float]]) -> str:
    headers = _KEY_HEADERS + [h for h, _ in _display_columns()]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in _display_rows(table, " ± ")]
    lines += ["", TABLE1_NOTE, "", "Spearman rank correlation, ours vs the paper column it stands in for:", ""]
    for sweep, pairs in rank.items():
        across = "masking ratios" if sweep == "sweep_A" else "masking units"
        for pair, rho in pairs.items():
            lines.append(f"- {sweep} (across {across}): {pair}: rho = {_fmt(rho)}")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for old, new in (("\\", r"\textbackslash{}"), ("%", r"\%"), ("_", r"\_"), ("&", r"\&"), ("#", r"\#"), ("≈", r"$\approx$"), ("±", r"$\pm$"), ("–", "--")):
        text = text.replace(old, new)
    return text


def _latex(table: pd.DataFrame, rank: dict[str, dict[str, float]]) -> str:
    headers = _KEY_HEADERS + [h for h, _ in _display_columns()]
    n_ours = len(OURS_COLUMNS)
    lines = [
        "% " + TABLE1_NOTE,
        r"\begin{tabular}{" + "l" * len(_KEY_HEADERS) + "|" + "r" * n_ours + "|" + "r" * len(PAPER_COLUMNS) + "}",
        r"\hline",
        " & ".join(_latex_escape(h) for h in headers) + r" \\",
        r"\hline",
    ]
    lines += [" & ".join(_latex_escape(c) for c in r) + r" \\" for r in _display_rows(table, " ± ")]
    lines += [r"\hline", r"\end{tabular}"]
    for sweep, pairs in rank.items():
        for pair, rho in pairs.items():
            lines.append(f"% Spearman {sweep}: {pair}: rho = {_fmt(rho)}")
    return "\n".join(lines) + "\n"


def table1_render(
    cell_results: Sequence[dict[str, Any]], out_dir: str | Path, *, sweep_a_unit: int, sweep_b_ratio: float
) -> pd.DataFrame:
    """Write table1.csv, table1.md, table1.tex and table1_rank.json under ``out_dir``.

    cell_results: :func:`table1_cell` outputs (any number of seeds per cell), each
    optionally with ``sweep`` (A, B or G) naming the sweep it was trained for and
    ``gate_pass`` (bool, :func:`gate_cell`), counted per row in the ``gate_pass`` column.
    Returns the table (one row per sweep cell, ours and the paper's columns).
    """
    if not cell_results:
        raise ValueError("table1_render: no cell results given")
    out_dir = Path(out_dir)
    table = table1_frame(cell_results, sweep_a_unit=sweep_a_unit, sweep_b_ratio=sweep_b_ratio)
    rank = rank_correlations(table)
    write_text(out_dir / "table1.csv", table.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    write_text(out_dir / "table1.md", _markdown(table, rank))
    write_text(out_dir / "table1.tex", _latex(table, rank))
    write_json(out_dir / "table1_rank.json", {"spearman": rank, "note": TABLE1_NOTE})
    return table


# ------------------------------------------------------------------ Table 2: shape bias

TABLE2_NOTE = (
    "Shape bias (Geirhos et al.) of the clean Table 1 linear probe (frozen CLS token) on the cue-conflict images "
    "of real.cue_conflict: of its decisions that follow either cue, the share that follow the shape class; "
    "mean ± sd over seeds, Sweep A. Floors: the same probe on raw pixels and on the untrained encoder (first seed). "
    "Paper: Table 2 of Kong et al. (CVPR 2023), ImageNet-1K with ViT-B."
)


def shape_bias_frame(cell_results: Sequence[dict[str, Any]], *, sweep_a_unit: int, sweep_b_ratio: float) -> pd.DataFrame:
    """Sweep A's shape bias per masking ratio over seeds: columns mask_ratio, mean, sd, n_seeds.

    cell_results: :func:`table1_cell` outputs (optionally tagged with ``sweep``); empty
    when no Sweep A cell has a shape bias (no cue-conflict set).
    """
    cells = sweep_part(_cells_frame(cell_results), "A", sweep_a_unit=sweep_a_unit, sweep_b_ratio=sweep_b_ratio)
    cells = cells[cells["shape_bias"].notna()]
    stats = cells.groupby("mask_ratio", sort=True)["shape_bias"].agg(["mean", "std", "count"]).reset_index()
    return stats.rename(columns={"std": "sd", "count": "n_seeds"})


def _three(value: float | None) -> str:
    """A shape bias to 3 decimals, as the paper prints it; "–" for none."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def shape_bias_markdown(frame: pd.DataFrame, floors: dict[str, Any], sweep_a_unit: int) -> str:
    """Table 2 as Markdown: ours per ratio (mean ± sd), the floors, the paper's row; "" for an empty ``frame``.

    floors: :func:`table1_floors` output; a floor without "shape_bias" is left out.
    """
    if frame.empty:
        return ""
    ratios = frame["mask_ratio"].tolist()
    ours = [_three(m) + ("" if math.isnan(sd) else f" ± {sd:.3f}") for m, sd in zip(frame["mean"], frame["sd"])]
    rows = table2_rows(
        ratios, [(f"ours (unit {sweep_a_unit}, {int(frame['n_seeds'].max())} seed(s))", ours)],
        [(name, _three(scores["shape_bias"]["shape_bias"])) for name, scores in floors.items() if "shape_bias" in scores],
    )
    return "\n".join(["## Table 2: shape bias on cue-conflict images", "", TABLE2_NOTE, "", *rows]) + "\n"
