"""The Markdown summary and LaTeX table of a revision's results."""

from __future__ import annotations

import argparse
import copy
import io
import itertools
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mae_hlvm.core import paths
from mae_hlvm.core.config import parse_params
from mae_hlvm.core.io import ArtifactError, write_json, write_text
from mae_hlvm.review import summary
from mae_hlvm.review.summary import baselines_table, latex_table, render_summary, seed_table
from mae_hlvm.workflow import pipeline

REPO = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((REPO / "params.yaml").read_text())
RAW.pop("stability", None)  # its set names cells of the shipped grid
RAW["data"].update(generator="quadtree", depth=2, latent_dims=[8, 8, 8], noise_scales=[1.0, 1.0, 1.0])  # 3 levels


def params_with(real_enabled: bool):
    raw = copy.deepcopy(RAW)
    raw["real"]["enabled"] = real_enabled
    return parse_params(raw)


def metrics(failing=()) -> pd.DataFrame:
    """8 cells; those (ratio, patch, seed) in ``failing`` fail the learning gate (not learned)."""
    rows = []
    for r, p, s in itertools.product([0.25, 0.75], [2, 4], [0, 1]):
        passes = (r, p, s) not in failing
        rows.append({"mask_ratio": r, "mask_unit": p, "seed": s, "r2_level0": 0.5 + 0.1 * s,
                     "r2_level1": 0.4, "r2_level2": 0.3, "probe_acc": 0.6, "recon_mse": 0.1,
                     "mean_pred_mse": 0.125 if passes else 0.1, "linear_mse": 0.1 if passes else 0.09,
                     "recon_rel": 0.8 if passes else 1.0, "gain_share": 1.0 if passes else 0.0,
                     "last_quarter_drop": 0.02, "gate_pass": int(passes),
                     "r2sp_level0": 0.6, "r2sp_level1": 0.5, "r2sp_level2": 0.4, "r2in_level1": 0.2, "r2in_level2": 0.1 + 0.1 * s})
    return pd.DataFrame(rows)


def baselines() -> pd.DataFrame:
    rows = []
    for kind, s in itertools.product(["random_init", "pixels"], [0, 1]):
        base = 0.2 if kind == "random_init" else 0.7
        rows.append({"baseline": kind, "seed": s, **{f"r2_level{i}": base + 0.02 * s for i in range(3)},
                     **{f"r2nl_level{i}": base + 0.05 for i in range(3)}, "probe_acc": 0.3})
    return pd.DataFrame(rows)


def baselines_file() -> str:
    """baselines.csv as the aggregate step writes it: the ceiling's rows too (spatial probes only), NaN as 'nan'."""
    latents = pd.DataFrame([{"baseline": "latents", "seed": s, "r2sp_level0": 0.8, "r2sp_level1": 0.9, "r2sp_level2": 1.0,
                             "r2in_level1": 0.7, "r2in_level2": 1.0} for s in (0, 1)])
    return pd.concat([baselines(), latents], ignore_index=True).to_csv(index=False, na_rep="nan")


def test_seed_table_means_and_spreads():
    t = seed_table(metrics(), 3)
    assert len(t) == 4 and set(t["seeds"]) == {2}
    assert t.loc[0, "r2_level0"] == "0.550 ± 0.071"


def test_baselines_table_keeps_the_kind_order_and_spreads():
    t = baselines_table(baselines(), 3)
    assert t["baseline"].tolist() == ["random_init", "pixels"]
    assert t.loc[0, "r2_level0"] == "0.210 ± 0.014" and t.loc[1, "r2nl_level2"] == "0.750 ± 0.000"


def test_summary_carries_stamp_params_claims_baselines_and_figures():
    params = params_with(False)
    text, tex = render_summary(params, metrics(), "# Claims check\n\nC1 supported\n", ["figures/r2_vs_ratio.png"], baselines())
    assert "Stamp: params " in text and "## Claims check" in text and "C1 supported" in text
    assert "![r2_vs_ratio](figures/r2_vs_ratio.png)" in text and "mask_ratios:" in text
    assert "## Baselines" in text and "| random_init |" in text and "| pixels |" in text
    assert "Table 1" not in text and "\nreal:" not in text
    assert tex.startswith("% mae-hlvm synthetic grid, params ") and r"\begin{tabular}" in tex and r"$\pm$" in tex
    assert render_summary(params, metrics(), "# Claims check\n", []) == render_summary(params, metrics(), "# Claims check\n", [])


def test_the_real_track_adds_its_table_params_and_changes_the_stamp():
    off, on = params_with(False), params_with(True)
    text_on, _ = render_summary(on, metrics(), "# Claims check\n", [], None, "| sweep | ratio |\n|---|---|\n| A | 0.1 |\n")
    assert "## Real-image track: Table 1" in text_on and "| A | 0.1 |" in text_on and "\nreal:" in text_on
    stamp = lambda text: text.split("Stamp: ")[1].split(",")[0]  # noqa: E731
    assert stamp(text_on) != stamp(render_summary(off, metrics(), "# Claims check\n", [])[0])


def test_the_gate_section_counts_each_track_and_names_failing_cells():
    params = params_with(True)
    real_md = "| A | 0.1 |\n\nLearning gate, real track: 9 of 10 cells pass; failing: B/r0.75_u16_s1 (too few epochs to judge).\n"
    text, _ = render_summary(params, metrics(failing={(0.75, 4, 1)}), "# Claims check\n", [], None, real_md)
    section = text.split("## Learning gate")[1].split("## Claims check")[0]
    assert ("- Learning gate, synthetic grid: 7 of 8 cells pass; failing: r0.75_u4_s1 (not learned (gain share 0.00 "
            "< 0.5 of the linear predictor's)).") in section
    assert "a share of at least 0.5 of a linear predictor's gain over the per-position-mean predictor" in text
    assert "- Learning gate, real track: 9 of 10 cells pass; failing: B/r0.75_u16_s1 (too few epochs to judge)." in section
    text, _ = render_summary(params_with(False), metrics(), "# Claims check\n", [])
    section = text.split("## Learning gate")[1].split("## Claims check")[0]
    assert "- Learning gate, synthetic grid: 8 of 8 cells pass." in section and "real track" not in section
    # a table1.md from before the gate says so instead of passing silently
    assert "not reported in table1.md" in summary.real_gate_line_of_table("| A | 0.1 |\n")


def test_latex_escapes_underscores():
    assert r"r2\_level0" in latex_table(seed_table(metrics(), 3), "x")


# ----------------------------------------------------------------------------- the step


def write_inputs(real: bool) -> argparse.Namespace:
    """Every input of the summary step in the working directory (fake numbers)."""
    write_text(paths.METRICS_CSV, metrics().to_csv(index=False))
    write_text(paths.BASELINES_CSV, baselines_file())
    write_text(paths.CLAIMS_MD, "# Claims check\n\n| C1 | **supported** |\n")
    write_json(paths.CLAIMS_JSON, {"claims": {}})
    names = [f"{paths.FIGURES_DIR}/{n}.png" for n in pipeline.FIGURE_NAMES]
    if real:
        names += [f"{paths.REAL_FIGURES_DIR}/{n}.png" for n in pipeline.REAL_FIGURE_NAMES]
        write_text(f"{paths.REAL_TABLE_STEM}.md", "| A | 0.1 | 12.5 |\n")
    for name in names:
        write_text(name, "png")
    Path(paths.FIGURES_DIR, "stale_old_figure.png").write_text("png")  # no glob: never linked
    write_json(paths.PREDICTION_JSON, {"generator": "quadtree", "cells": {}})
    write_text(paths.ORACLES_MD, "| cell | measure |\n")
    return argparse.Namespace(
        metrics=paths.METRICS_CSV, baselines=paths.BASELINES_CSV, claims_md=paths.CLAIMS_MD,
        claims_json=paths.CLAIMS_JSON, figures_dir=paths.FIGURES_DIR, real_dir=paths.REAL_RESULTS_DIR,
        out_md=paths.SUMMARY_MD, out_tex=paths.METRICS_TEX,
    )


@pytest.mark.parametrize("real", [False, True])
def test_step_links_exactly_the_pipeline_figures_relative_to_the_summary(tmp_path, monkeypatch, real):
    monkeypatch.chdir(tmp_path)
    args = write_inputs(real)
    summary.run(params_with(real), args)
    text = Path(paths.SUMMARY_MD).read_text()
    links = [line for line in text.splitlines() if line.startswith("![")]
    want = [f"![{n}](figures/{n}.png)" for n in pipeline.FIGURE_NAMES]
    if real:
        want += [f"![{n}](real/figures/{n}.png)" for n in pipeline.REAL_FIGURE_NAMES]
    assert links == want
    assert ("| A | 0.1 | 12.5 |" in text) == real
    assert Path(paths.METRICS_TEX).read_text().startswith("% mae-hlvm synthetic grid")
    first = Path(paths.SUMMARY_MD).read_bytes()
    summary.run(params_with(real), args)
    assert Path(paths.SUMMARY_MD).read_bytes() == first, "same inputs, same bytes"


def test_step_names_a_missing_figure_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = write_inputs(True)
    Path(paths.REAL_FIGURES_DIR, "fig8_tsne.png").unlink()
    with pytest.raises(ArtifactError, match=r"results/real/figures/fig8_tsne\.png: missing \(run the report-real step"):
        summary.run(params_with(True), args)
    assert not Path(paths.SUMMARY_MD).exists() and not Path(paths.METRICS_TEX).exists()


def test_theorem_section_puts_the_prediction_beside_what_the_encoder_holds_and_the_oracles():
    from mae_hlvm.review.summary import theorem_section

    frame = metrics().assign(**{f"mr2{k}_level{lv}": 0.5 for k in "cv" for lv in range(3)}, c_excess=0.1)
    frame.loc[frame.mask_ratio == 0.75, "c_excess"] = 0.3
    pred = {"generator": "copytree", "premises": "met: (the doc)",
            "cells": {"r0.25_u2": {"c_share_per_level": [0.9, 0.6, 0.0]}}}
    claims = {"claims": {"C5": {"effect": 0.2, "verdict": "not judged: 2 seeds"}}}
    lines = theorem_section(frame, claims, pred, "| cell | measure |\n")
    text = "\n".join(lines)
    assert lines[0].startswith("## The theorem") and "Generator: copytree; its premises are met" in text
    rows = [ln for ln in lines if ln.startswith("| 2 |") or ln.startswith("| 4 |")]
    assert rows[0] == "| 2 | 0.25 | 0.900 | 0.600 | 0.000 | 0.500 / 0.500 | 0.500 / 0.500 | 0.500 / 0.500 | 0.100 |"
    assert rows[1].startswith("| 2 | 0.75 | n/a | n/a | n/a |") and rows[1].endswith("| 0.300 |")
    assert "C5: mean c_excess 0.200; verdict **not judged: 2 seeds**." in text and "### The measures on known answers" in text
    # the quadtree: no theorem behind it, said so; no masked probe columns: no section
    no_c5 = "\n".join(theorem_section(frame, {"claims": {}}, {"generator": "quadtree", "premises": "not met"}, None))
    assert "No claim C5 on these data" in no_c5 and "### The measures" not in no_c5
    assert theorem_section(metrics(), claims, pred, None) == []


def test_spatial_table_puts_trained_cells_beside_floors_and_ceiling():
    from mae_hlvm.review.summary import spatial_table

    base = pd.read_csv(io.StringIO(baselines_file()), na_values=["nan"], keep_default_na=False)
    base = base.assign(**{c: base.get(c, 0.3) for c in ("r2sp_level0", "r2sp_level1", "r2sp_level2", "r2in_level1", "r2in_level2")})
    t = spatial_table(metrics(), base, 3)
    assert t["baseline"].tolist() == ["trained cells (all)", "random_init", "pixels", "latents"]
    assert t.loc[0, "r2in_level2"] == "0.150 ± 0.053" and t.loc[3, "r2sp_level2"] == "1.000 ± 0.000"
    assert "latents" not in baselines_table(base, 3)["baseline"].tolist()


def test_shape_bias_section_is_table_2_with_floors_and_the_papers_row():
    from mae_hlvm.review.summary import headline, shape_bias_section

    m = metrics().assign(shape_bias=lambda f: 0.2 + f.mask_ratio / 10 + 0.01 * f.seed)
    b = baselines().assign(shape_bias=lambda f: f.baseline.map({"random_init": 0.4, "pixels": 0.3}))
    lines = shape_bias_section(m, b)
    assert lines[0].startswith("## Shape bias on cue-conflict images")
    assert "| | ratio 0.25 | ratio 0.75 |" in lines
    assert "| unit 2 | 0.230 ± 0.007 | 0.280 ± 0.007 |" in lines
    assert "| random_init (any ratio) | 0.400 | 0.400 |" in lines and "| pixels (any ratio) | 0.300 | 0.300 |" in lines
    assert "| paper, ImageNet ViT-B (Table 2) | 0.255 | 0.256 |" in lines
    head = headline(m, {"claims": {}})
    assert head["shape_u4"] == pytest.approx(0.255) and head["shape_at_u4"] == 0.75
    # no cue-conflict set (texture_separation 0): no section, no headline entry
    assert shape_bias_section(m.assign(shape_bias=float("nan")), b) == [] and shape_bias_section(metrics(), b) == []
    assert "shape_u2" not in headline(metrics(), {"claims": {}})
