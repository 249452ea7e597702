"""The claims check: known curves give the verdicts the fixed rules promise."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import real_cell_result

from mae_hlvm.core.config import parse_params
from mae_hlvm.core.io import ArtifactError, write_json
from mae_hlvm.review.claims import (
    BUDGET_SENSITIVE,
    MIN_SEEDS,
    NO_STABILITY,
    NOT_LEARNED,
    Evidence,
    increases,
    interior_peak,
    judge_all,
    real_claims,
    render_markdown,
    run,
    synthetic_claims,
    verdict,
)
from mae_hlvm.workflow.pipeline import stage_param_keys

REPO = Path(__file__).resolve().parents[1]

RATIOS = [0.1, 0.25, 0.5, 0.75, 0.9]


def raw_params() -> dict:
    """The repository's params with 3 latent levels pinned (the fake tables below have r2_level0..2)."""
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.pop("stability", None)  # its set names cells of the shipped grid
    # the quadtree, whose masking units need not be whole leaves; C5 follows the prediction JSON written below
    raw["data"].update(generator="quadtree", depth=2, latent_dims=[8, 8, 8], noise_scales=[1.0, 1.0, 1.0])
    return raw


def frame(root_curve, leaf_curve, patches=(2, 4), seeds=(0, 1, 2), noise=0.002, patch_gain=0.0, failing=()):
    """A metrics table; the cells (ratio, patch, seed) in ``failing`` fail the learning gate."""
    rng = np.random.default_rng(0)
    rows = []
    for (i, r), p, s in itertools.product(enumerate(RATIOS), patches, seeds):
        passes = (r, p, s) not in failing
        rows.append({
            "mask_ratio": r, "mask_unit": p, "seed": s,
            "r2_level0": root_curve[i] + patch_gain * p + rng.normal(0, noise),
            "r2_level1": 0.5, "r2_level2": leaf_curve[i] + rng.normal(0, noise),
            "probe_acc": 0.5, "recon_mse": 0.1 if passes else 0.119, "mean_pred_mse": 0.12, "linear_mse": 0.11,
            "recon_rel": 0.833333 if passes else 0.991667, "gain_share": 2.0 if passes else 0.4,
            "last_quarter_drop": 0.02, "gate_pass": int(passes), "c_excess": 0.1,
            "r2sp_level0": root_curve[i], "r2in_level1": 0.3, "r2in_level2": leaf_curve[i],
        })
    return pd.DataFrame(rows)


SAME = "same"  # judged(): the stability set's cells are the 1x cells of its seed (effects keep their sign)


def judged(metrics, base=None, pred=None, stable=SAME, real=None, stable_real=SAME, factor=2, seed=0, levels=3):
    """Every claim of a metrics table (and real cells) judged by the full rule (claims.judge_all).

    ``stable``: the stability set's rows at ``factor`` x, None for no stability set, SAME for a copy
    of the stability seed's 1x rows (so every effect keeps its sign and a bootstrap verdict is reached).
    """
    ev = Evidence(metrics, base, pred, levels, real, 8, 0.75)
    if stable is None:
        return judge_all(ev, None, factor, seed)
    stable_metrics = metrics[metrics.seed == seed] if isinstance(stable, str) else stable
    st_real = None if real is None else (real[real.seed == seed] if isinstance(stable_real, str) else stable_real)
    st_base = None if base is None else base[base.seed == seed]
    return judge_all(ev, Evidence(stable_metrics, st_base, pred, levels, st_real, 8, 0.75), factor, seed)


def by_id(claims):
    return {(c["id"], c.get("mask_unit", c.get("scope"))): c for c in claims}


def prediction(generator: str = "copytree") -> dict:
    """A prediction JSON (predict step) of ``generator``, one c share list per (ratio, unit)."""
    from mae_hlvm.synthetic.predict import cell_key

    return {"generator": generator,
            "cells": {cell_key(r, p): {"c_share_per_level": [1 - abs(r - 0.5), 0.5, 0.0]} for r in RATIOS for p in (2, 4)}}


def theorem_frame(excess_of, seeds=(0, 1, 2), failing=()) -> pd.DataFrame:
    """Cells whose c_excess (the masked probe's, claim C5) is ``excess_of(ratio, unit)`` + noise."""
    f = frame([0.5] * 5, [0.5] * 5, seeds=seeds, failing=failing)
    rng = np.random.default_rng(1)
    return f.assign(c_excess=[excess_of(r, p) for r, p in zip(f.mask_ratio, f.mask_unit)] + rng.normal(0, 0.01, len(f)))


def test_theorem_claim_reads_c_excess_on_a_generator_that_meets_the_premises():
    from mae_hlvm.review.claims import C5_MIN_EXCESS, theorem_claim

    pred = prediction()
    c5 = lambda f: next(c for c in judged(f, pred=pred) if c["id"] == "C5")  # noqa: E731
    holds = c5(theorem_frame(lambda r, p: 0.2 + r / 10))
    assert holds["verdict"] == "supported" and holds["effect"] == pytest.approx(0.25, abs=0.01) and holds["n_seeds"] == 3
    assert holds["per_cell"]["r0.5_u2"]["c_share_per_level"] == [1.0, 0.5, 0.0]
    assert holds["per_cell"]["r0.5_u2"]["c_excess"] == pytest.approx(0.25, abs=0.02)
    assert c5(theorem_frame(lambda r, p: -0.2))["verdict"] == "contradicted"
    # what a lossy or untrained encoder gets (within 0.03 of 0 on average) is no verdict
    assert C5_MIN_EXCESS == 0.05
    assert c5(theorem_frame(lambda r, p: 0.03))["verdict"] == "inconclusive"
    assert c5(theorem_frame(lambda r, p: 0.2, seeds=(0, 1)))["verdict"] == "not judged: 2 seeds"
    assert c5(theorem_frame(lambda r, p: 0.2, failing=[(0.5, 2, 1)]))["verdict"] == NOT_LEARNED
    # a cell with no c_excess (no level holds both shared and visible-only latents) is left out
    partial = theorem_frame(lambda r, p: 0.2)
    partial.loc[(partial.mask_ratio == 0.9) & (partial.mask_unit == 4), "c_excess"] = np.nan
    assert "r0.9_u4" not in c5(partial)["per_cell"] and c5(partial)["verdict"] == "supported"
    # no theorem behind it on the quadtree: no C5 at all
    assert theorem_claim(theorem_frame(lambda r, p: 0.2), prediction("quadtree"), 3) is None
    assert not [c for c in judged(theorem_frame(lambda r, p: 0.2), pred=prediction("quadtree")) if c["id"] == "C5"]
    with pytest.raises(ArtifactError, match="c_excess"):
        theorem_claim(frame([0.5] * 5, [0.5] * 5).drop(columns="c_excess"), pred, 3)


def test_rule_needs_both_probability_and_effect():
    assert verdict(0.99, 0.01, 0.05) == "supported"
    assert verdict(0.99, 0.01, 0.001) == "inconclusive"
    assert verdict(0.01, 0.99, -0.05) == "contradicted"
    assert verdict(0.6, 0.4, 0.05) == "inconclusive"


def test_interior_peak_supported_and_monotone_contradicted():
    hump = [0.3, 0.5, 0.7, 0.5, 0.3]
    claims = synthetic_claims(frame(hump, [0.6] * 5), 3)
    c1 = [c for c in claims if c["id"] == "C1"]
    assert all(c["verdict"] == "supported" and c["peak_ratio"] == 0.5 for c in c1)
    rising = [0.3, 0.4, 0.5, 0.6, 0.7]
    c1 = [c for c in synthetic_claims(frame(rising, [0.6] * 5), 3) if c["id"] == "C1"]
    assert all(c["verdict"] == "contradicted" and c["peak_ratio"] == 0.9 for c in c1)


def test_flat_curve_is_inconclusive():
    claims = synthetic_claims(frame([0.5] * 5, [0.5] * 5, noise=0.0), 3)
    assert [c["verdict"] for c in claims] == ["inconclusive"] * 5


def test_level_gap_and_patch_effect():
    hump = [0.3, 0.5, 0.7, 0.5, 0.3]
    claims = synthetic_claims(frame([0.5] * 5, [0.5 - (h - 0.3) for h in hump], patch_gain=0.05), 3)
    c2 = [c for c in claims if c["id"] == "C2"]
    assert all(c["verdict"] == "supported" for c in c2)
    c3 = next(c for c in claims if c["id"] == "C3")
    assert c3["verdict"] == "supported" and c3["effect"] == pytest.approx(0.1, abs=0.01)


def test_one_seed_is_never_a_verdict():
    claims = judged(frame([0.3, 0.5, 0.7, 0.5, 0.3], [0.6] * 5, seeds=(0,)))
    assert all(c["verdict"] == "not judged: 1 seed" and c["n_seeds"] == 1 for c in claims)


def test_two_seeds_are_not_judged_and_their_bootstrap_is_withheld():
    assert MIN_SEEDS == 3
    hump = [0.3, 0.5, 0.7, 0.5, 0.3]  # with three seeds this is supported (see above)
    claims = judged(frame(hump, [0.6] * 5, seeds=(0, 1)), baselines([0.2, 0.2]))
    assert [c["verdict"] for c in claims] == ["not judged: 2 seeds"] * len(claims)
    assert all(c["n_seeds"] == 2 and "fewer than 3: bootstrap withheld" in c["note"] for c in claims)
    c1 = next(c for c in claims if c["id"] == "C1")
    assert c1["p_interior"] is None and c1["peak_ratio_bootstrap_share"] is None and c1["peak_ratio"] == 0.5
    c3 = next(c for c in claims if c["id"] == "C3")
    assert c3["p_increase"] is None and c3["interval95"] is None and isinstance(c3["effect"], float)
    md = render_markdown(claims)
    rows = [line for line in md.splitlines() if line.startswith("| C")]
    assert len(rows) == len(claims)
    for row in rows:
        cols = [c.strip() for c in row.strip("|").split("|")]
        assert cols[3] == "2" and cols[5] == "n/a" and cols[6] == "2 of 2", row  # n_seeds, P(claim), seeds with its sign
    assert "| 0.000 |" not in md and "| 1.000 |" not in md and "interval n/a" in md


def test_a_bootstrap_of_two_seeds_is_never_printed_even_if_given():
    # a claim dict made elsewhere (or by an older version) that still carries p = 1.0
    claim = {"id": "C1", "claim": "x", "mask_unit": 2, "verdict": "not judged: 2 seeds", "n_seeds": 2,
             "effect": 0.1, "p_interior": 1.0, "peak_ratio": 0.5}
    assert "| n/a |" in render_markdown([claim]) and "1.000" not in render_markdown([claim])


def test_a_claim_reading_a_cell_that_did_not_learn_is_not_testable():
    hump = [0.3, 0.5, 0.7, 0.5, 0.3]
    f = frame(hump, [0.6] * 5, patch_gain=0.05, failing={(0.9, 2, 1)})  # gain share 0.4 < 0.5
    claims = by_id(judged(f, baselines([0.2, 0.21, 0.19])))
    # every claim that reads masking unit 2 (C0, C1, C2 at p2; C3 compares p2 with p4) fails
    for key in (("C0", 2), ("C1", 2), ("C2", 2), ("C3", "2 -> 4")):
        assert claims[key]["verdict"] == NOT_LEARNED, key
        assert claims[key]["n_cells_not_learned"] == 1
    assert claims[("C1", 2)]["note"] == "1 of 15 cells did not learn"
    assert claims[("C3", "2 -> 4")]["note"] == "1 of 30 cells did not learn"
    # the claims on masking unit 4 alone read no failing cell and keep their verdicts
    assert claims[("C1", 4)]["verdict"] == "supported" and claims[("C0", 4)]["verdict"] == "supported"
    assert claims[("C1", 4)]["n_cells_not_learned"] == 0 and "note" not in claims[("C1", 4)]
    md = render_markdown(list(claims.values()))
    assert md.count(f"**{NOT_LEARNED}**") == 4 and "| n_seeds |" in md
    # a stability cell that did not learn counts too, at its budget
    stable = f[f.seed == 0].copy()
    stable.loc[(stable.mask_ratio == 0.1) & (stable.mask_unit == 4), ["gate_pass", "gain_share"]] = [0, 0.4]
    c1 = by_id(judged(f, stable=stable))[("C1", 4)]
    assert c1["verdict"] == NOT_LEARNED and c1["note"] == "0 of 15 cells did not learn, 1 at 2x"


def test_a_sign_that_flips_with_the_budget_is_budget_sensitive():
    hump = [0.3, 0.5, 0.7, 0.5, 0.3]
    f = frame(hump, [0.6] * 5)
    flipped = frame([0.7, 0.5, 0.3, 0.5, 0.7], [0.6] * 5, seeds=(0,))  # at 2x the peak is at the ends
    claims = by_id(judged(f, stable=flipped))
    c1 = claims[("C1", 2)]
    assert c1["verdict"].startswith(BUDGET_SENSITIVE) and c1["budget_stable"] is False
    e1, e2 = c1["effect_1x"], c1["effect_2x"]
    assert e1 > 0 > e2 and c1["verdict"] == f"{BUDGET_SENSITIVE} (effect {e1:+.4f} at 1x, {e2:+.4f} at 2x)"
    assert c1["p_interior"] is not None  # the bootstrap is still shown with 3 seeds
    # an effect of exactly 0 at either budget is not stable either
    zero = frame([0.5] * 5, [0.6] * 5, seeds=(0,), noise=0.0)
    assert by_id(judged(f, stable=zero))[("C1", 2)]["verdict"].startswith(BUDGET_SENSITIVE)
    # the rule reads the stability seed's own effect, not the mean over seeds
    assert by_id(judged(f, stable=f[f.seed == 1].assign(seed=0)))[("C1", 2)]["verdict"] == "supported"


def test_without_a_stability_set_no_claim_is_judged():
    hump = [0.3, 0.5, 0.7, 0.5, 0.3]
    f = frame(hump, [0.6] * 5)
    claims = judged(f, stable=None)
    assert {c["verdict"] for c in claims} == {NO_STABILITY}
    assert all(c["effect_1x"] is None and c["budget_stable"] is None for c in claims)
    # a stability set that lacks a cell the claim reads is no stability run for that claim
    part = f[(f.seed == 0) & (f.mask_unit == 2) & (f.mask_ratio != 0.25)]
    claims = by_id(judged(f, stable=part))
    assert claims[("C1", 2)]["verdict"] == NO_STABILITY and "lacks cells" in claims[("C1", 2)]["note"]
    assert claims[("C1", 4)]["verdict"] == NO_STABILITY
    # cells that did not learn come first
    failing = frame(hump, [0.6] * 5, failing={(0.5, 2, 0)})
    assert by_id(judged(failing, stable=None))[("C1", 2)]["verdict"] == NOT_LEARNED


def test_a_stable_three_seed_frame_gets_a_bootstrap_verdict_with_seed_counts():
    hump = [0.3, 0.5, 0.7, 0.5, 0.3]
    f = frame(hump, [0.6] * 5)
    longer = frame([0.35, 0.55, 0.75, 0.55, 0.35], [0.6] * 5, seeds=(0,))
    claims = by_id(judged(f, stable=longer))
    c1 = claims[("C1", 2)]
    assert c1["verdict"] == "supported" and c1["budget_stable"] is True and c1["seeds_with_sign"] == 3
    assert c1["effect_1x"] > 0 and c1["effect_2x"] > 0 and c1["budget_factor"] == 2 and c1["stability_seed"] == 0
    md = render_markdown(list(claims.values()), 2)
    row = next(line for line in md.splitlines() if line.startswith("| C1: ") and "| 2 |" in line)
    assert "| 3 of 3 |" in row and "**supported**" in row
    # one seed against the others: 2 of 3 seeds show the sign
    odd = f.copy()
    odd.loc[(odd.seed == 2) & odd.mask_ratio.isin([0.25, 0.5, 0.75]), "r2_level0"] = 0.1
    assert by_id(judged(odd, stable=longer))[("C1", 2)]["seeds_with_sign"] == 2


def test_a_failing_gate_outranks_too_few_seeds():
    f = frame([0.3, 0.5, 0.7, 0.5, 0.3], [0.6] * 5, seeds=(0, 1), failing={(0.1, 4, 0)})
    claims = by_id(judged(f))
    assert claims[("C1", 4)]["verdict"] == NOT_LEARNED
    # (judged() copies seed 0's 1x cells as its stability set, the failing one with them)
    assert claims[("C1", 4)]["note"] == "1 of 10 cells did not learn, 1 at 2x; 2 seeds per cell, fewer than 3: bootstrap withheld"
    assert claims[("C1", 2)]["verdict"] == "not judged: 2 seeds"


def test_a_metrics_table_without_the_gate_is_refused():
    f = frame([0.3, 0.5, 0.7, 0.5, 0.3], [0.6] * 5).drop(columns="gate_pass")
    with pytest.raises(ArtifactError, match="gate_pass"):
        judged(f)


def test_bootstrap_is_deterministic_and_markdown_lists_every_claim():
    f = frame([0.3, 0.5, 0.7, 0.5, 0.3], [0.6] * 5)
    a, b = judged(f), judged(f)
    assert a == b
    md = render_markdown(a)
    assert md.count("| C") == len(a) and "supported" in md


def test_primitives_on_raw_arrays():
    rng = np.random.default_rng(1)
    res = interior_peak([0.1, 0.5, 0.9], {0.1: np.array([0.1, 0.1]), 0.5: np.array([0.9, 0.8]), 0.9: np.array([0.2, 0.2])}, rng)
    assert res["p_interior"] == 1.0 and res["verdict"] == "supported"
    res = increases(np.array([0.5, 0.5, 0.5]), np.array([0.4, 0.41, 0.39]), rng)
    assert res["verdict"] == "contradicted" and res["interval95"][1] < 0


# ----------------------------------------------------------------------------- C0: the random-init baseline


def baselines(root_by_seed, pixels=0.9):
    rows = [{"baseline": "random_init", "seed": s, "r2_level0": v, "probe_acc": 0.2} for s, v in enumerate(root_by_seed)]
    rows += [{"baseline": "pixels", "seed": s, "r2_level0": pixels, "probe_acc": 0.5} for s in range(len(root_by_seed))]
    rows += [{"baseline": "latents", "seed": s, "r2_level0": np.nan, "probe_acc": np.nan} for s in range(len(root_by_seed))]
    return pd.DataFrame(rows)


def test_c0_compares_trained_root_with_the_random_encoder_per_mask_unit():
    hump = [0.3, 0.5, 0.7, 0.5, 0.3]  # mean over ratios 0.46 (+ patch gain)
    f = frame(hump, [0.6] * 5)
    c0 = [c for c in synthetic_claims(f, 3, baselines([0.20, 0.21, 0.19])) if c["id"] == "C0"]
    assert [c["mask_unit"] for c in c0] == [2, 4]
    assert all(c["verdict"] == "supported" and c["effect"] == pytest.approx(0.26, abs=0.01) for c in c0)
    c0 = [c for c in synthetic_claims(f, 3, baselines([0.60, 0.61, 0.59])) if c["id"] == "C0"]
    assert all(c["verdict"] == "contradicted" for c in c0)
    c0 = [c for c in synthetic_claims(f, 3, baselines([0.455, 0.46, 0.465])) if c["id"] == "C0"]
    assert all(c["verdict"] == "inconclusive" for c in c0), "an effect below MIN_EFFECT is no verdict"
    # C1-C3 do not change with the baselines given (their bootstrap draws come after C0's, but verdicts hold)
    with_c0 = [c["verdict"] for c in synthetic_claims(f, 3, baselines([0.2] * 3)) if c["id"] != "C0"]
    assert with_c0 == [c["verdict"] for c in synthetic_claims(f, 3)]


# ----------------------------------------------------------------------------- C4: the real track


def real_cells(acc_a, acc_b, seeds=(0, 1, 2), shared=None):
    """Sweep A over RATIOS at unit 8, Sweep B over units 4/8/16 at 0.75; acc per seed +-0.002; every gate passes."""
    rows = []
    for s in seeds:
        jitter = 0.002 * (s - 1)
        rows += [{"sweep": "A", "mask_ratio": r, "mask_unit": 8, "seed": s, "acc": a + jitter} for r, a in zip(RATIOS, acc_a)]
        rows += [{"sweep": "B", "mask_ratio": 0.75, "mask_unit": u, "seed": s, "acc": a + jitter} for u, a in zip((4, 8, 16), acc_b)]
    return pd.DataFrame(rows).assign(gate_pass=1, gain_share=0.9, recon_rel=0.5)


def judged_real(cells, stable_real=SAME):
    """The real track's two C4 claims judged (no synthetic cells)."""
    empty = frame([0.5] * 5, [0.5] * 5).iloc[0:0]
    return [c for c in judged(empty, real=cells, stable_real=stable_real) if c["id"] == "C4"]


def test_c4_reads_each_sweep_and_the_paper_shape_is_supported():
    cells = real_cells([0.47, 0.54, 0.60, 0.67, 0.63], [0.62, 0.69, 0.73])  # the paper's Table 1 shape
    a, b = real_claims(cells, sweep_a_unit=8, sweep_b_ratio=0.75)
    assert a["scope"] == "Sweep A (unit 8)" and a["verdict"] == "supported" and a["peak_ratio"] == 0.75
    assert b["scope"].startswith("Sweep B (ratio 0.75), unit 4 -> 16") and b["verdict"] == "supported"
    assert b["effect"] == pytest.approx(0.11)
    # the shared cell's Sweep-B copy (0.75, unit 8) must not enter Sweep A: make it absurd and check
    cells.loc[(cells.sweep == "B") & (cells.mask_unit == 8), "acc"] = 0.0
    assert real_claims(cells, 8, 0.75)[0]["seed_means"] == a["seed_means"]


def test_c4_monotone_is_contradicted_and_one_seed_is_inconclusive():
    cells = real_cells([0.4, 0.5, 0.6, 0.7, 0.8], [0.7, 0.6, 0.5])
    a, b = real_claims(cells, 8, 0.75)
    assert a["verdict"] == "contradicted" and b["verdict"] == "contradicted"
    a, b = judged_real(real_cells([0.47, 0.54, 0.60, 0.67, 0.63], [0.62, 0.69, 0.73], seeds=(0,)))
    assert a["verdict"] == b["verdict"] == "not judged: 1 seed" and "1 seed per cell" in a["note"]
    assert a["p_interior"] is None and b["p_increase"] is None
    a, b = judged_real(real_cells([0.47, 0.54, 0.60, 0.67, 0.63], [0.62, 0.69, 0.73], seeds=(0, 1)))
    assert a["verdict"] == b["verdict"] == "not judged: 2 seeds" and a["n_seeds"] == b["n_seeds"] == 2


def test_c4_with_an_unconverged_cell_is_not_testable_where_it_is_read():
    cells = real_cells([0.47, 0.54, 0.60, 0.67, 0.63], [0.62, 0.69, 0.73])
    # Sweep B's middle unit is not one of the two units its claim compares
    cells.loc[(cells.sweep == "B") & (cells.mask_unit == 8) & (cells.seed == 0), "gate_pass"] = 0
    a, b = judged_real(cells)
    assert a["verdict"] == "supported" and b["verdict"] == "supported" and b["n_cells"] == 6
    cells.loc[(cells.sweep == "A") & (cells.mask_ratio == 0.9) & (cells.seed == 2), "gate_pass"] = 0
    a, b = judged_real(cells)
    assert a["verdict"] == NOT_LEARNED and a["note"] == "1 of 15 cells did not learn"
    assert b["verdict"] == "supported"
    # the real track's stability set: a flip at 2x in Sweep B makes it budget-sensitive
    flipped = cells[cells.seed == 0].copy()
    flipped.loc[flipped.sweep == "B", "acc"] = flipped.loc[flipped.sweep == "B", "acc"].to_numpy()[::-1]
    a, b = judged_real(cells, stable_real=flipped)
    assert a["verdict"] == NOT_LEARNED and b["verdict"].startswith(BUDGET_SENSITIVE)


def test_c4_grid_sweep_counts_for_both_and_single_sweeps_give_one_claim():
    cells = real_cells([0.47, 0.54, 0.60, 0.67, 0.63], [0.62, 0.69, 0.73])
    grid = cells.assign(sweep="G").drop_duplicates(["mask_ratio", "mask_unit", "seed"])
    assert [c["verdict"] for c in real_claims(grid, 8, 0.75)] == ["supported", "supported"]
    only_a = real_claims(cells[cells.sweep == "A"], 8, 0.75)
    assert [c["scope"].split()[1] for c in only_a] == ["A"]


# ----------------------------------------------------------------------------- the step


def write_real_cells(root, params, acc):
    from mae_hlvm.core.cells import cell_id, real_sweep_cells

    for sweep, cells in real_sweep_cells(params.real).items():
        for r, u, s in cells:
            path = root / "real_cells" / sweep / f"{cell_id(r, u, s)}.json"
            write_json(path, real_cell_result(sweep, r, u, s, clean_acc=100 * acc(r, u) + s))


def test_step_writes_keyed_json_without_nan_and_markdown(tmp_path):
    raw = raw_params()
    raw["real"].update(enabled=True, sweep="AB", mask_ratios=[0.1, 0.5, 0.9], mask_units=[4, 8], sweep_a_unit=8,
                       sweep_b_ratio=0.5, seeds=[0, 1])
    params = parse_params(raw)
    f = frame([0.3, 0.5, 0.7, 0.5, 0.3], [0.6] * 5, seeds=(0, 1))
    f.to_csv(tmp_path / "metrics.csv", index=False)
    b = baselines([0.2, 0.2])
    b.to_csv(tmp_path / "baselines.csv", index=False, na_rep="nan")
    write_real_cells(tmp_path, params, lambda r, u: 0.5 - abs(r - 0.5) + u / 100)
    write_json(tmp_path / "prediction.json", prediction())
    args = argparse.Namespace(metrics=tmp_path / "metrics.csv", baselines=tmp_path / "baselines.csv",
                              real_cells_dir=tmp_path / "real_cells", out_json=tmp_path / "claims.json",
                              out_md=tmp_path / "claims.md", prediction=tmp_path / "prediction.json",
                              out_stability=tmp_path / "stability.csv", reads=stage_param_keys("claims", params))
    run(params, args)
    text = (tmp_path / "claims.json").read_text()
    assert "NaN" not in text
    claims = json.loads(text)["claims"]
    assert set(claims) == {"C0_u2", "C0_u4", "C1_u2", "C1_u4", "C2_u2", "C2_u4", "C3", "C5", "C4_sweepA", "C4_sweepB"}
    assert claims["C4_sweepA"]["peak_ratio"] == 0.5 and claims["C4_sweepB"]["effect"] == pytest.approx(0.04)
    assert claims["C2_u2"]["effect"] is None or isinstance(claims["C2_u2"]["effect"], float)
    assert all(c["verdict"] == NO_STABILITY for c in claims.values()), "no stability set: nothing is judged"
    assert all(c["seeds"] == 2 and c["n_seeds"] == 2 for c in claims.values())
    assert (tmp_path / "stability.csv").read_text().startswith("track,sweep,mask_ratio,mask_unit,seed,gain_share_1x")
    rules = json.loads(text)["rules"]
    assert rules["min_seeds"] == 3 and rules["gate"]["gate_min_share"] == 0.5 and "gate_max_rel" not in rules["gate"]
    md = (tmp_path / "claims.md").read_text()
    assert ">= 50% of a linear predictor's gain over the per-position-mean predictor" in md
    assert md.count("| C") == 10 and "Sweep B (ratio 0.5), unit 4 -> 8" in md
    assert "| 0.000 |" not in md and "| 1.000 |" not in md
    # the track off: no C4, and no real file is read
    raw["real"]["enabled"] = False
    off = parse_params(raw)
    run(off, argparse.Namespace(**{**vars(args), "real_cells_dir": tmp_path / "nowhere", "reads": stage_param_keys("claims", off)}))
    assert not any(k.startswith("C4") for k in json.loads((tmp_path / "claims.json").read_text())["claims"])


def test_step_refuses_baselines_of_other_seeds_and_names_a_missing_real_cell(tmp_path):
    params = parse_params(raw_params())
    frame([0.3, 0.5, 0.7, 0.5, 0.3], [0.6] * 5, seeds=(0, 1)).to_csv(tmp_path / "metrics.csv", index=False)
    baselines([0.2, 0.2, 0.2]).to_csv(tmp_path / "baselines.csv", index=False, na_rep="nan")
    write_json(tmp_path / "prediction.json", prediction())
    args = argparse.Namespace(metrics=tmp_path / "metrics.csv", baselines=tmp_path / "baselines.csv",
                              real_cells_dir=tmp_path / "real_cells", out_json=tmp_path / "claims.json",
                              out_md=tmp_path / "claims.md", prediction=tmp_path / "prediction.json")
    with pytest.raises(ArtifactError, match=r"seeds \[0, 1, 2\] differ"):
        run(params, args)
    baselines([0.2, 0.2]).to_csv(tmp_path / "baselines.csv", index=False, na_rep="nan")
    with pytest.raises(ArtifactError, match=r"real_cells/A/r0\.1_u8_s0\.json: missing"):
        run(params, args)
    assert not (tmp_path / "claims.json").exists()
    # a real cell from before the gate existed
    write_real_cells(tmp_path, params, lambda r, u: 0.5)
    before_gate = real_cell_result("A", 0.1, 8, 0)
    del before_gate["gate"]
    write_json(tmp_path / "real_cells" / "A" / "r0.1_u8_s0.json", before_gate)
    with pytest.raises(ArtifactError, match=r"r0\.1_u8_s0\.json: lacks key 'gate'.*; rerun evaluate-real"):
        run(params, args)


def test_shape_bias_claim_c6_follows_the_peak_and_needs_a_cue_conflict_set():
    hump = frame([0.5] * 5, [0.5] * 5).assign(shape_bias=lambda f: 0.6 - (f.mask_ratio - 0.5).abs())
    c6 = [c for c in synthetic_claims(hump, 3) if c["id"] == "C6"]
    assert [(c["mask_unit"], c["verdict"]) for c in c6] == [(2, "supported"), (4, "supported")]
    assert c6[0]["peak_ratio"] == 0.5
    rising = hump.assign(shape_bias=lambda f: f.mask_ratio)
    assert {c["verdict"] for c in synthetic_claims(rising, 3) if c["id"] == "C6"} == {"contradicted"}
    # no texture cue in the data: no shape bias, no C6; and C0-C3 are what they were without the column
    nan = hump.assign(shape_bias=np.nan)
    assert not [c for c in synthetic_claims(nan, 3) if c["id"] == "C6"]
    without = judged(hump.drop(columns="shape_bias"))
    assert [c for c in judged(hump) if c["id"] != "C6"] == without
    # gate first, as for every claim
    failing = frame([0.5] * 5, [0.5] * 5, failing=[(0.5, 2, 0)]).assign(shape_bias=hump["shape_bias"])
    c6 = [c for c in judged(failing) if c["id"] == "C6"]
    assert c6[0]["verdict"] == NOT_LEARNED and c6[1]["verdict"] == "supported"
