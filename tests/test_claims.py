"""The claims check: known curves give the verdicts the fixed rules promise."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from mae_hlvm.claims import increases, interior_peak, render_markdown, synthetic_claims, verdict

RATIOS = [0.1, 0.25, 0.5, 0.75, 0.9]


def frame(root_curve, leaf_curve, patches=(2, 4), seeds=(0, 1, 2), noise=0.002, patch_gain=0.0):
    rng = np.random.default_rng(0)
    rows = []
    for (i, r), p, s in itertools.product(enumerate(RATIOS), patches, seeds):
        rows.append({
            "mask_ratio": r, "patch_size": p, "seed": s,
            "r2_level0": root_curve[i] + patch_gain * p + rng.normal(0, noise),
            "r2_level1": 0.5, "r2_level2": leaf_curve[i] + rng.normal(0, noise),
        })
    return pd.DataFrame(rows)


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
    claims = synthetic_claims(frame([0.3, 0.5, 0.7, 0.5, 0.3], [0.6] * 5, seeds=(0,)), 3)
    assert all(c["verdict"] == "inconclusive" for c in claims)


def test_bootstrap_is_deterministic_and_markdown_lists_every_claim():
    f = frame([0.3, 0.5, 0.7, 0.5, 0.3], [0.6] * 5)
    a, b = synthetic_claims(f, 3), synthetic_claims(f, 3)
    assert a == b
    md = render_markdown(a)
    assert md.count("| C") == len(a) and "supported" in md


def test_primitives_on_raw_arrays():
    rng = np.random.default_rng(1)
    res = interior_peak([0.1, 0.5, 0.9], {0.1: np.array([0.1, 0.1]), 0.5: np.array([0.9, 0.8]), 0.9: np.array([0.2, 0.2])}, rng)
    assert res["p_interior"] == 1.0 and res["verdict"] == "supported"
    res = increases(np.array([0.5, 0.5, 0.5]), np.array([0.4, 0.41, 0.39]), rng)
    assert res["verdict"] == "contradicted" and res["interval95"][1] < 0
