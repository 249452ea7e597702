"""The Markdown summary and LaTeX table of a revision's results."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import yaml

from mae_hlvm.config import parse_params
from mae_hlvm.summary import latex_table, render_summary, seed_table

REPO = Path(__file__).resolve().parents[1]


def metrics() -> pd.DataFrame:
    rows = []
    for r, p, s in itertools.product([0.25, 0.75], [2, 4], [0, 1]):
        rows.append({"mask_ratio": r, "patch_size": p, "seed": s, "r2_level0": 0.5 + 0.1 * s,
                     "r2_level1": 0.4, "r2_level2": 0.3, "probe_acc": 0.6, "recon_mse": 0.1})
    return pd.DataFrame(rows)


def test_seed_table_means_and_spreads():
    t = seed_table(metrics(), 3)
    assert len(t) == 4 and set(t["seeds"]) == {2}
    assert t.loc[0, "r2_level0"] == "0.550 ± 0.071"


def test_summary_carries_stamp_params_claims_and_figures():
    params = parse_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    text, tex = render_summary(params, metrics(), "# Claims check\n\nC1 supported\n", ["results/figures/r2_vs_ratio.png"])
    assert "Stamp: params " in text and "## Claims check" in text and "C1 supported" in text
    assert "![r2_vs_ratio](figures/r2_vs_ratio.png)" in text and "mask_ratios:" in text
    assert tex.startswith("% mae-hlvm synthetic grid, params ") and r"\begin{tabular}" in tex and r"$\pm$" in tex
    assert render_summary(params, metrics(), "# Claims check\n", []) == render_summary(params, metrics(), "# Claims check\n", [])


def test_latex_escapes_underscores():
    assert r"r2\_level0" in latex_table(seed_table(metrics(), 3), "x")
