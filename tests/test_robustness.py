"""The budget-robustness stage (issue 9 item 3): a subset retrained longer, verdicts and the
ratio ordering compared with rules fixed in code."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mae_hlvm.core.config import ParamsError, load_params, parse_params
from mae_hlvm.review import robustness
from mae_hlvm.workflow import pipeline

REPO = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def frame(root_r2: dict[tuple[float, int], float], gate: int = 1) -> pd.DataFrame:
    rows = [{"mask_ratio": r, "mask_unit": p, "seed": s, "r2_level0": v, "r2_level3": 0.5, "gate_pass": gate}
            for (r, p), v in root_r2.items() for s in (0,)]
    return pd.DataFrame(rows)


def test_kendall_tau_is_one_for_the_same_order_and_minus_one_reversed():
    assert robustness.kendall_tau([0.1, 0.5, 0.3], [0.2, 0.9, 0.4]) == 1.0
    assert robustness.kendall_tau([0.1, 0.5, 0.3], [0.9, 0.1, 0.5]) == -1.0


def test_orderings_say_whether_the_root_r2_order_over_ratios_survives():
    short = frame({(0.1, 2): 0.5, (0.5, 2): 0.7, (0.9, 2): 0.6})
    same = frame({(0.1, 2): 0.6, (0.5, 2): 0.8, (0.9, 2): 0.7})
    flipped = frame({(0.1, 2): 0.9, (0.5, 2): 0.8, (0.9, 2): 0.7})
    (o,) = robustness.orderings(short, same)
    assert o["survives"] and o["kendall_tau"] == 1.0 and o["mask_ratios"] == [0.1, 0.5, 0.9]
    (o,) = robustness.orderings(short, flipped)
    assert not o["survives"] and o["kendall_tau"] < 1


def test_verdicts_use_the_claims_rules_so_unconverged_cells_read_not_testable():
    short = frame({(0.1, 2): 0.5, (0.5, 2): 0.7, (0.9, 2): 0.6}, gate=0)
    long = frame({(0.1, 2): 0.5, (0.5, 2): 0.7, (0.9, 2): 0.6}, gate=1)
    out = {v["claim"]: v for v in robustness.verdicts(short, long, 4)}
    assert set(out) == {"C1_p2", "C2_p2"}
    assert out["C1_p2"]["verdict_budget1"].startswith("not testable")
    assert out["C1_p2"]["verdict_budget2"].startswith("not judged")  # 1 seed
    assert out["C1_p2"]["survives"] is False


def test_the_subset_must_be_cells_of_the_grid():
    raw = copy.deepcopy(RAW)
    raw["robustness"]["mask_ratios"] = [0.33]
    with pytest.raises(ParamsError, match=r"robustness.mask_ratios\[0\]=0.33: the subset must be cells of the grid"):
        parse_params(raw)
    raw = copy.deepcopy(RAW)
    raw["robustness"]["budget_factor"] = 1
    with pytest.raises(ParamsError, match="robustness.budget_factor"):
        parse_params(raw)


def test_both_dags_get_the_subset_stages_and_the_summary_reads_the_outcome():
    params = load_params(REPO / "params.yaml")
    names = [pipeline.dvc_stage_name(s, f) for s, f in pipeline.instances(params) if s in pipeline.ROBUST_STAGES]
    r = params.robustness
    assert len(names) == 2 * len(r.mask_ratios) * len(r.mask_units) * len(r.seeds) + 1
    assert "train_long@0.5-2-0" in names and names[-1] == "robustness"
    assert "results/robustness.md" in pipeline.input_files("summary", None, params)
    assert "robustness" in pipeline.stage_param_keys("summary", params)
    long_cmd = pipeline.command("train_long", pipeline.cell_fields(0.5, 2, 0))
    assert "train-long" in long_cmd and "--out-dir models_long/r0.5_p2_s0" in long_cmd
    off = params.model_copy(update={"robustness": r.model_copy(update={"enabled": False})})
    assert not set(pipeline.active_stages(off)) & set(pipeline.ROBUST_STAGES)
    assert "results/robustness.md" not in pipeline.input_files("summary", None, off)


def test_train_long_multiplies_the_epochs_and_nothing_else():
    from mae_hlvm.synthetic.train_long import long_train_params

    params = load_params(REPO / "params.yaml")
    long = long_train_params(params)
    assert long.train.epochs == params.train.epochs * params.robustness.budget_factor
    assert long.train.model_copy(update={"epochs": params.train.epochs}) == params.train
    assert long.model == params.model and long.data == params.data
