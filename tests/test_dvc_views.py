"""DVC at grid scale (issue 13 item 3): `dvc metrics show` shows a small headline, not every
cell; `dvc plots` draw named x and y with our templates (a line per unit, per cell)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from mae_hlvm.review.summary import headline
from mae_hlvm.workflow import pipeline

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def test_headline_counts_cells_claims_and_root_r2_per_unit():
    metrics = pd.DataFrame({
        "mask_unit": [2, 2, 2, 2, 4, 4],
        "mask_ratio": [0.25, 0.25, 0.75, 0.75, 0.25, 0.75],
        "r2_level0": [0.5, 0.7, 0.9, 0.7, 0.2, 0.1],
        "gate_pass": [True, True, False, True, False, False],
        "gain_share": [0.8, 0.6, 0.2, 0.7, 0.1, 0.0],
        "c_excess": [0.1, 0.3, 0.2, 0.0, float("nan"), -0.2],
    })
    claims = {"claims": {
        "C1_u2": {"verdict": "supported"}, "C1_u4": {"verdict": "not testable: cells did not learn"},
        "C2_u2": {"verdict": "not judged: 2 seeds"}, "C5": {"verdict": "contradicted", "effect": -0.41234},
    }}
    h = headline(metrics, claims)
    assert h["cells"] == 6 and h["learned"] == 3 and h["gain_share"] == 0.4
    assert h["root_u2"] == 0.7 and h["root_at_u2"] == 0.75
    assert h["root_u4"] == 0.15 and h["root_at_u4"] == 0.25
    assert h["c_excess"] == 0.08  # claim C5's quantity, mean over the cells that have one
    assert h["claims"] == {"contradicted": 1, "not_judged": 1, "not_testable": 1, "supported": 1}
    assert all(isinstance(v, (int, float)) for v in h.values() if not isinstance(v, dict))  # no hashes


def test_only_the_headline_is_a_dvc_metric_and_csv_plots_name_x_and_y():
    params = pipeline.load_params(REPO / "params.yaml")
    kinds = {o.path: o.kind for stage, f in pipeline.instances(params) for o in pipeline.outputs(stage, f, params)}
    assert [p for p, k in kinds.items() if k == "metrics"] == ["results/headline.json"]
    assert all(p.endswith(".png") for p, k in kinds.items() if k == "plots")
    for entry in pipeline.DVC_PLOTS:
        (spec,) = entry.values()
        assert spec["x"] and spec["y"] and (REPO / ".dvc/plots" / f"{spec['template']}.json").is_file()
        (csv,) = spec["y"]
        assert kinds[csv] == "outs"


def test_dvc_metrics_show_fits_a_screen():
    proc = subprocess.run([*DVC, "metrics", "show"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    # 2 lines (header, values); 200 columns fit a full-screen terminal (296 before the keys were shortened)
    assert len(lines) <= 3 and max(len(ln) for ln in lines) <= 200, proc.stdout
    assert "results/headline.json" in proc.stdout and "learned" in proc.stdout


def test_dvc_plots_render_with_our_templates_and_fields(tmp_path):
    proc = subprocess.run([*DVC, "plots", "show", "--json", "-o", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)["data"]
    for name, field, color in (("root_r2_vs_ratio", "r2_level0", "mask_unit"), ("learning_curves", "loss", "cell")):
        (plot,) = shown[name]
        spec = plot["content"]
        assert spec["encoding"]["x"]["field"] in ("mask_ratio", "epoch")
        assert spec["encoding"]["y"]["field"] == field and spec["encoding"]["color"]["field"] == color
        assert len(spec["data"]["values"]) > 0
    # R^2 on its whole range, the loss from zero: the figures' axis convention (report/*.rst)
    assert shown["root_r2_vs_ratio"][0]["content"]["encoding"]["y"]["scale"] == {"domain": [0, 1]}
