"""The rules that decide a claim's verdict, fixed before any result was looked at (issue 25).

A claim (:mod:`mae_hlvm.review.claims`) brings its effect, its bootstrap over seeds and
the rows (cells x seeds) it reads; :func:`judge` gives it the first verdict that applies:

1. any cell it reads (at either budget) did not learn (:mod:`mae_hlvm.core.gate`) ->
   "not testable: cells did not learn";
2. its effect, the claim's point estimate computed on the stability seed alone, does not
   keep one sign at 1x and at ``stability.budget_factor`` x the training (or is exactly 0)
   -> "not testable: budget-sensitive (effect +a at 1x, -b at 2x)";
3. the stability set lacks a cell it reads -> "not testable: no stability run";
4. fewer than MIN_SEEDS (3) seeds in a cell it reads -> "not judged: N seeds" (the
   bootstrap's probabilities, interval and peak shares are then withheld: a bootstrap over
   one or two seeds gives spurious 0.000 / 1.000);
5. otherwise a bootstrap over seeds: for every (masking ratio, masking unit) cell the seeds
   are resampled with replacement, the seed means recomputed and the claim's quantity
   evaluated on each resample; *supported*, *contradicted* or *inconclusive* by
   :func:`verdict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mae_hlvm.core.io import ArtifactError

# Fixed before looking at results. A claim is SUPPORTED when its bootstrap probability
# is at least SUPPORT_PROB and its effect (seed means) exceeds MIN_EFFECT; CONTRADICTED
# when the opposite holds with the same probability; otherwise INCONCLUSIVE.
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 20230604  # the paper's arXiv month, a number chosen in advance
SUPPORT_PROB = 0.95
MIN_EFFECT = 0.01  # in R^2 (or accuracy) units
MIN_SEEDS = 3  # fewer seeds per cell: the bootstrap is too coarse to judge (1 or 2 seeds give p = 0 or 1)
NOT_LEARNED = "not testable: cells did not learn"
NO_STABILITY = "not testable: no stability run"
BUDGET_SENSITIVE = "not testable: budget-sensitive"
BOOTSTRAP_KEYS = ("p_interior", "p_endpoint", "p_increase", "interval95", "peak_ratio_bootstrap_share")
# C5: fixed from the oracle table of the default copy tree before any MAE was trained on it: the
# held-out lossy encoders (random projections to rank 6 and 3) and the untrained encoder keep
# -0.083 .. +0.065 per cell and -0.006 / +0.008 / +0.003 on the mean over cells; the true c 0.98
C5_MIN_EXCESS = 0.05

# As claims.json records them (with the stability set's factor and seed beside them).
RULES = {"n_bootstrap": N_BOOTSTRAP, "seed": BOOTSTRAP_SEED, "support_prob": SUPPORT_PROB, "min_effect": MIN_EFFECT,
         "c5_min_excess": C5_MIN_EXCESS, "min_seeds": MIN_SEEDS}


def verdict(p_claim: float, p_opposite: float, effect: float, min_effect: float = MIN_EFFECT) -> str:
    """The decision rule, the same for every claim (C5's minimum effect is C5_MIN_EXCESS)."""
    if p_claim >= SUPPORT_PROB and effect > min_effect:
        return "supported"
    if p_opposite >= SUPPORT_PROB and -effect > min_effect:
        return "contradicted"
    return "inconclusive"


def not_judged(n_seeds: int) -> str:
    return f"not judged: {n_seeds} seed{'' if n_seeds == 1 else 's'}"


def budget_sensitive(effect_1x: float, effect_2x: float, factor: int) -> str:
    return f"{BUDGET_SENSITIVE} (effect {effect_1x:+.4f} at 1x, {effect_2x:+.4f} at {factor}x)"


def budget_stable(effect_1x: float, effect_2x: float) -> bool:
    """Rule 3 of issue 25: the same sign at both budgets, and neither exactly 0 (nor undefined)."""
    if not (math.isfinite(effect_1x) and math.isfinite(effect_2x)):
        return False
    return effect_1x != 0 and effect_2x != 0 and (effect_1x > 0) == (effect_2x > 0)


# --------------------------------------------------------------------------- primitives


def min_seeds(cells: pd.DataFrame, by: list[str]) -> int:
    """The fewest rows (seeds) of any cell, cells keyed by ``by``; 0 when there are none."""
    return int(cells.groupby(by).size().min()) if len(cells) else 0


def bootstrap_means(values: dict[Any, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Seed-resampled means, (N_BOOTSTRAP, len(values)), keys in the dict's order.

    values: key -> (n_seeds,) array of one quantity per seed.
    """
    out = np.empty((N_BOOTSTRAP, len(values)))
    for j, v in enumerate(values.values()):
        idx = rng.integers(0, len(v), size=(N_BOOTSTRAP, len(v)))
        out[:, j] = v[idx].mean(axis=1)
    return out


def interior_peak(ratios: list[float], per_seed: dict[float, np.ndarray], rng: np.random.Generator) -> dict[str, Any]:
    """Does the curve over ``ratios`` peak strictly inside? per_seed: ratio -> (n_seeds,)."""
    ratios = sorted(ratios)
    boot = bootstrap_means({r: per_seed[r] for r in ratios}, rng)
    argmax = boot.argmax(axis=1)
    interior = (argmax > 0) & (argmax < len(ratios) - 1)
    means = np.array([per_seed[r].mean() for r in ratios])
    peak = int(means.argmax())
    effect = float(means[1:-1].max() - max(means[0], means[-1])) if len(ratios) > 2 else float("nan")
    counts = np.bincount(argmax, minlength=len(ratios)) / N_BOOTSTRAP
    return {
        "peak_ratio": ratios[peak],
        "peak_ratio_bootstrap_share": {str(r): float(c) for r, c in zip(ratios, counts)},
        "p_interior": float(interior.mean()),
        "p_endpoint": float(1 - interior.mean()),
        "effect": effect,
        "seed_means": {str(r): float(m) for r, m in zip(ratios, means)},
        "verdict": verdict(float(interior.mean()), float(1 - interior.mean()), effect) if len(ratios) > 2 else "inconclusive",
    }


def increases(low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Is ``high`` (per-seed values) above ``low``? Bootstrap of the difference of means."""
    boot = bootstrap_means({"low": low, "high": high}, rng)
    diff = boot[:, 1] - boot[:, 0]
    effect = float(high.mean() - low.mean())
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {
        "effect": effect,
        "interval95": [float(lo), float(hi)],
        "p_increase": float((diff > 0).mean()),
        "verdict": verdict(float((diff > 0).mean()), float((diff < 0).mean()), effect),
    }


def _read_cells(rows: pd.DataFrame) -> set[tuple]:
    """The cells (sweep where there is one, ratio, unit) a claim's rows read, seeds aside."""
    cols = [c for c in ("sweep", "mask_ratio", "mask_unit") if c in rows]
    return {tuple(r) for r in rows[cols].itertuples(index=False)}


def _learned(rows: pd.DataFrame) -> pd.Series:
    if "gate_pass" not in rows:
        raise ArtifactError("the claims' cells lack a gate_pass column; rerun the aggregate (or evaluate-real) step")
    return rows["gate_pass"] == 1


@dataclass(frozen=True)
class Budget:
    """The stability set's evidence: the claims at 1x and at ``factor`` x on the stability seed."""

    factor: int
    seed: int
    at_1x: dict[str, dict[str, Any]]
    at_2x: dict[str, dict[str, Any]]


def judge(claim: dict[str, Any], seed_effects: dict[int, float], budget: Budget | None, key: str) -> dict[str, Any]:
    """Apply the rule (module docstring) to ``claim`` in place; return it.

    seed_effects: the claim's effect computed on each seed alone; budget: the stability
    set's claims, or None when there is no stability set.
    """
    rows, n_seeds = claim["_rows"], claim["n_seeds"]
    effect = claim["effect"]
    claim["seeds_with_sign"] = int(sum(
        1 for e in seed_effects.values() if math.isfinite(e) and math.isfinite(effect) and e != 0 and (e > 0) == (effect > 0)
    ))
    claim["seeds"] = len(seed_effects)
    not_learned = int((~_learned(rows)).sum())
    notes: list[str] = []
    stable_claim = budget.at_2x.get(key) if budget is not None else None
    covered = stable_claim is not None and _read_cells(stable_claim["_rows"]) == _read_cells(
        rows[rows["seed"] == budget.seed])
    not_learned_2x = int((~_learned(stable_claim["_rows"])).sum()) if covered else 0
    claim.update(n_cells=len(rows), n_cells_not_learned=not_learned + not_learned_2x)
    if covered:
        e1, e2 = budget.at_1x[key]["effect"], stable_claim["effect"]
        claim.update(effect_1x=e1, effect_2x=e2, budget_factor=budget.factor, stability_seed=budget.seed,
                     budget_stable=budget_stable(e1, e2))
    else:
        claim.update(effect_1x=None, effect_2x=None, budget_stable=None)
    if not_learned or not_learned_2x:
        claim["verdict"] = NOT_LEARNED
        notes.append(f"{not_learned} of {len(rows)} cells did not learn"
                     + (f", {not_learned_2x} at {budget.factor}x" if not_learned_2x else ""))
    elif covered and not claim["budget_stable"]:
        claim["verdict"] = budget_sensitive(claim["effect_1x"], claim["effect_2x"], budget.factor)
    elif not covered:
        claim["verdict"] = NO_STABILITY
        if budget is not None:
            notes.append("the stability set lacks cells it reads")
    elif n_seeds < MIN_SEEDS:
        claim["verdict"] = not_judged(n_seeds)
    if n_seeds < MIN_SEEDS:
        notes.append(f"{n_seeds} seed{'' if n_seeds == 1 else 's'} per cell, fewer than {MIN_SEEDS}: bootstrap withheld")
        claim.update({k: None for k in BOOTSTRAP_KEYS if k in claim})
    if notes:
        claim["note"] = "; ".join(notes)
    return claim
