"""Test the paper's claims on our own results, with statistics over seeds (step ``claims``).

Each claim below computes its effect and a bootstrap over seeds from the rows it reads;
:mod:`mae_hlvm.review.verdicts` holds the rules, fixed before any result was looked at,
that turn them into a verdict. Beside the bootstrap probability every claim says how many
seeds show its effect's sign on their own ("3 of 3 seeds"), and, per stability cell it
reads, ``settle_rel``, how much the hidden-patch error still fell from 1x to 2x (no
threshold: how far from settled the cells were). Every claim records ``n_seeds`` (the
fewest seeds of any cell it reads), ``n_cells`` and ``n_cells_not_learned``.

Claims (Kong et al., CVPR 2023, as summarised in the project's paper notes):
  C0 baseline (ours, for interpretation): pretraining adds root-level information beyond
     a random encoder: the trained encoders' root R^2 (mean over ratios) exceeds that of
     the same architecture untrained (results/baselines.csv), per masking unit.
  C1 non-monotonic: the root level's R^2 peaks at an interior masking ratio, not at the
     smallest or largest one (per masking unit).
  C2 level balance: the root-minus-leaf R^2 gap (how much more high-level than low-level
     information the features hold) peaks at an interior ratio (per masking unit).
  C3 masking unit: larger masking units give higher root-level R^2 (mean over ratios),
     largest vs smallest masking unit.
  C4 real track (when real.enabled): clean linear-probe accuracy (CLS, the Table 1
     column; as a fraction, so MIN_EFFECT is one percentage point) peaks at an interior
     ratio in Sweep A; and rises from the smallest to the largest masking unit in Sweep B.
     Per-seed values come from the per-cell JSONs (results/real/cells/<sweep>/), not
     from table1.csv, which holds only means. The paper's own Table 1 says both.
  C5 the theorem itself (ours; the paper never simulates its model), only on a generator that
     meets its premises (the copy tree, docs/theorem.md): the encoder of the visible part
     holds the shared latents ``c`` in preference to the visible part's own (Theorem 2's block
     identifiability): its ``c_excess`` (:mod:`mae_hlvm.synthetic.masked`: the R^2 of ``c``
     beyond what the visible pixels under even noise keep at the same R^2 of the visible-only
     latents), mean over the grid's (ratio, unit) cells, is above 0. Bootstrap over seeds;
     supported when P(effect > 0) >= SUPPORT_PROB and the effect exceeds C5_MIN_EXCESS (set
     from the oracle table before any MAE on the copy tree: the held-out lossy and untrained
     encoders stay within it), contradicted by the mirror rule, else inconclusive.
  C6 shape bias (the paper's Table 2: 0.135 / 0.255 / 0.246 / 0.256 / 0.201 at ratios
     0.1 / 0.25 / 0.5 / 0.75 / 0.9): on the generator's cue-conflict images (root and upper
     levels of one class, the leaves' texture shift of another), the share of the class
     probe's cue-following decisions that follow the shape peaks at an interior masking
     ratio (per masking unit), judged as C1. Only when the data have a cue-conflict set
     (``data.texture_separation`` > 0).
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mae_hlvm.core import paths
from mae_hlvm.core.cells import cell_id, real_enabled, real_sweep_cells, stability_cells, stability_enabled, stability_real
from mae_hlvm.core.config import Params
from mae_hlvm.core.gate import RULES as GATE_RULES
from mae_hlvm.core.io import ArtifactError, read_json, write_json, write_text
from mae_hlvm.core.provenance import code_revision, params_digest
from mae_hlvm.core.results import cell_row, read_cell, read_real_cell
from mae_hlvm.review.aggregate import frame_to_csv, has_shape_bias, load_baselines, load_metrics
from mae_hlvm.review.verdicts import (
    BOOTSTRAP_SEED,
    BUDGET_SENSITIVE,
    C5_MIN_EXCESS,
    MIN_EFFECT,
    MIN_SEEDS,
    N_BOOTSTRAP,
    NO_STABILITY,
    NOT_LEARNED,
    RULES,
    SUPPORT_PROB,
    Budget,
    bootstrap_means,
    increases,
    interior_peak,
    judge,
    min_seeds,
    verdict,
)

log = logging.getLogger("mae_hlvm.review.claims")

def _per_seed(frame: pd.DataFrame, value: Callable[[pd.DataFrame], pd.Series], by: str) -> dict[Any, np.ndarray]:
    frame = frame.assign(_v=value(frame))
    return {k: g.sort_values("seed")["_v"].to_numpy() for k, g in frame.groupby(by)}


# --------------------------------------------------------------------------- the claims
# Each builder returns claims with their effect and bootstrap, and under "_rows" the rows
# (cells x seeds) each one reads; judge() then applies the rule's checks.


def _claim(fields: dict[str, Any], rows: pd.DataFrame, n_seeds: int) -> dict[str, Any]:
    return {**fields, "_rows": rows, "n_seeds": int(n_seeds)}


def baseline_claims(metrics: pd.DataFrame, baselines: pd.DataFrame, rng: np.random.Generator) -> list[dict[str, Any]]:
    """C0 per masking unit: trained root R^2 (per seed, mean over ratios) vs the random-init encoder's (per seed)."""
    untrained_rows = baselines[(baselines["baseline"] == "random_init") & baselines["seed"].isin(metrics["seed"])]
    untrained = untrained_rows.sort_values("seed")["r2_level0"].to_numpy()
    per_seed = metrics.groupby(["mask_unit", "seed"])["r2_level0"].mean().reset_index()
    claims = []
    for patch, g in per_seed.groupby("mask_unit"):
        trained = g.sort_values("seed")["r2_level0"].to_numpy()
        cells = metrics[metrics["mask_unit"] == patch]
        claims.append(_claim({
            "id": "C0", "mask_unit": int(patch),
            "claim": "pretraining adds root-level information beyond a random encoder (root R^2, mean over ratios)",
            **increases(untrained, trained, rng),
        }, cells, min(min_seeds(cells, ["mask_ratio", "mask_unit"]), len(untrained))))
    return claims


def synthetic_claims(metrics: pd.DataFrame, n_levels: int, baselines: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """C1-C3 (and C6) on results/metrics.csv (one row per cell); C0 first when ``baselines`` is given."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    root, leaf = "r2_level0", f"r2_level{n_levels - 1}"
    claims = [] if baselines is None else baseline_claims(metrics, baselines, rng)
    by = ["mask_ratio", "mask_unit"]
    for patch, g in metrics.groupby("mask_unit"):
        ratios = sorted(g["mask_ratio"].unique())
        c1 = interior_peak(ratios, _per_seed(g, lambda f: f[root], "mask_ratio"), rng)
        c2 = interior_peak(ratios, _per_seed(g, lambda f: f[root] - f[leaf], "mask_ratio"), rng)
        n_seeds = min_seeds(g, by)
        claims += [
            _claim({"id": "C1", "mask_unit": int(patch), "claim": "root-level R^2 peaks at an interior masking ratio", **c1},
                   g, n_seeds),
            _claim({"id": "C2", "mask_unit": int(patch),
                    "claim": "root-minus-leaf R^2 gap peaks at an interior masking ratio", **c2}, g, n_seeds),
        ]
    patches = sorted(metrics["mask_unit"].unique())
    if len(patches) > 1:
        mean_over_ratios = metrics.groupby(["mask_unit", "seed"])[root].mean().reset_index()
        low = mean_over_ratios[mean_over_ratios.mask_unit == patches[0]].sort_values("seed")[root].to_numpy()
        high = mean_over_ratios[mean_over_ratios.mask_unit == patches[-1]].sort_values("seed")[root].to_numpy()
        cells = metrics[metrics["mask_unit"].isin([patches[0], patches[-1]])]
        claims.append(_claim({
            "id": "C3", "mask_unit": f"{patches[0]} -> {patches[-1]}",
            "claim": "larger masking units give higher root-level R^2 (mean over ratios)", **increases(low, high, rng),
        }, cells, min_seeds(cells, by)))
    # last, so that the bootstrap draws of C0-C3 are those of data without a texture cue
    if has_shape_bias(metrics):
        for patch, g in metrics.groupby("mask_unit"):
            ratios = sorted(g["mask_ratio"].unique())
            c6 = interior_peak(ratios, _per_seed(g, lambda f: f["shape_bias"], "mask_ratio"), rng)
            claims.append(_claim({"id": "C6", "mask_unit": int(patch), "claim": "shape bias peaks at an interior masking ratio",
                                  **c6}, g, min_seeds(g, by)))
    return claims


def theorem_claim(metrics: pd.DataFrame, prediction: dict[str, Any], n_levels: int) -> dict[str, Any] | None:
    """C5 (module docstring): mean over cells of ``c_excess``; None when the data's generator does
    not meet the theorems' premises (the quadtree), so the claim has no theorem behind it."""
    from mae_hlvm.synthetic.predict import cell_key

    if prediction.get("generator") != "copytree":
        return None
    if "c_excess" not in metrics:
        raise ArtifactError("metrics.csv lacks c_excess (the masked probe); rerun the probe and aggregate steps")
    rng = np.random.default_rng(BOOTSTRAP_SEED + 5)  # its own stream: C0-C4 keep theirs
    # a cell with no level holding both shared and visible-only latents has no c_excess (all seeds alike)
    per_cell = {(r, p): g.sort_values("seed")["c_excess"].to_numpy(dtype=float)
                for (r, p), g in metrics.groupby(["mask_ratio", "mask_unit"]) if g["c_excess"].notna().all()}
    if not per_cell:
        return None
    means = np.array([v.mean() for v in per_cell.values()])
    effect = float(means.mean())
    boot = bootstrap_means(per_cell, rng).mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    p_pos, p_neg = float(np.mean(boot > 0)), float(np.mean(boot < 0))
    cells = prediction.get("cells", {})
    return _claim({
        "id": "C5", "mask_unit": "all",
        "claim": "the encoder of the visible part holds the shared latents c beyond what even loss keeps (c_excess)",
        "effect": effect, "p_increase": p_pos, "interval95": [float(lo), float(hi)],
        "verdict": verdict(p_pos, p_neg, effect, C5_MIN_EXCESS),
        "per_cell": {cell_key(r, p): {"c_share_per_level": cells.get(cell_key(r, p), {}).get("c_share_per_level"),
                                      "c_excess": float(m)} for (r, p), m in zip(per_cell, means)},
    }, metrics, min_seeds(metrics, ["mask_ratio", "mask_unit"]))


def real_claims(cells: pd.DataFrame, sweep_a_unit: int, sweep_b_ratio: float) -> list[dict[str, Any]]:
    """C4 on the real track's cells: columns sweep (A, B or G), mask_ratio, mask_unit, seed, acc (fraction),
    gate_pass (bool).

    A cell counts for the sweep it was trained for (the grid's for both), so the cell
    that Sweeps A and B share is never counted twice in one sweep.
    """
    rng = np.random.default_rng(BOOTSTRAP_SEED + 4)  # its own stream: C1-C3 keep theirs whatever the track does
    claims = []
    part_a = cells[cells["sweep"].isin(["A", "G"]) & (cells["mask_unit"] == sweep_a_unit)]
    if len(part_a):
        ratios = sorted(part_a["mask_ratio"].unique())
        res = interior_peak(ratios, _per_seed(part_a, lambda f: f["acc"], "mask_ratio"), rng)
        claims.append(_claim({"id": "C4", "scope": f"Sweep A (unit {sweep_a_unit})",
                              "claim": "real track: clean linear-probe accuracy peaks at an interior masking ratio", **res},
                             part_a, min_seeds(part_a, ["mask_ratio"])))
    part_b = cells[cells["sweep"].isin(["B", "G"]) & np.isclose(cells["mask_ratio"], sweep_b_ratio)]
    units = sorted(part_b["mask_unit"].unique())
    if len(units) > 1:
        low = part_b[part_b["mask_unit"] == units[0]].sort_values("seed")["acc"].to_numpy()
        high = part_b[part_b["mask_unit"] == units[-1]].sort_values("seed")["acc"].to_numpy()
        cells = part_b[part_b["mask_unit"].isin([units[0], units[-1]])]
        claims.append(_claim({"id": "C4", "scope": f"Sweep B (ratio {sweep_b_ratio:g}), unit {units[0]} -> {units[-1]}",
                              "claim": "real track: clean linear-probe accuracy rises with the masking unit",
                              **increases(low, high, rng)}, cells, min(len(low), len(high))))
    return claims


def claim_key(c: dict[str, Any]) -> str:
    """A stable key per claim for claims.json, so `dvc metrics diff` lines up claims across revisions."""
    if "scope" in c:
        return f"{c['id']}_sweep{c['scope'].split()[1]}"
    return c["id"] if c["id"] in ("C3", "C5") else f"{c['id']}_u{c['mask_unit']}"


# --------------------------------------------------------------------------- what the claims read


@dataclass(frozen=True)
class Evidence:
    """Everything the claims read at one budget: the synthetic grid's rows (metrics.csv's
    columns), the seeds' baselines (None: no C0), the theorem's prediction (None: no C5), the
    real cells (None when the track is off) and the real sweeps' geometry."""

    metrics: pd.DataFrame
    baselines: pd.DataFrame | None
    prediction: dict[str, Any] | None
    n_levels: int
    real: pd.DataFrame | None = None
    sweep_a_unit: int = 0
    sweep_b_ratio: float = 0.0

    def seed(self, seed: int) -> Evidence:
        """The same evidence restricted to one seed."""
        real = None if self.real is None else self.real[self.real["seed"] == seed]
        baselines = None if self.baselines is None else self.baselines[self.baselines["seed"] == seed]
        return replace(self, metrics=self.metrics[self.metrics["seed"] == seed], baselines=baselines, real=real)


def all_claims(ev: Evidence) -> dict[str, dict[str, Any]]:
    """Every claim the evidence holds, keyed by :func:`claim_key`, not yet judged."""
    claims = synthetic_claims(ev.metrics, ev.n_levels, ev.baselines) if len(ev.metrics) else []
    c5 = theorem_claim(ev.metrics, ev.prediction, ev.n_levels) if len(ev.metrics) and ev.prediction is not None else None
    if c5 is not None:
        claims.append(c5)
    if ev.real is not None and len(ev.real):
        claims += real_claims(ev.real, ev.sweep_a_unit, ev.sweep_b_ratio)
    return {claim_key(c): c for c in claims}


def judge_all(ev: Evidence, stable: Evidence | None, factor: int, stability_seed: int) -> list[dict[str, Any]]:
    """Every claim of ``ev`` judged; ``stable``: the stability set's cells at ``factor`` x (None: no set).
    Each claim's ``settle_rel`` is the [min, max] over the stability cells it reads (None: none)."""
    claims = all_claims(ev)
    table = stability_table(ev, stable) if stable is not None else None
    seeds = sorted(set(ev.metrics["seed"]) | (set(ev.real["seed"]) if ev.real is not None else set()))
    per_seed = {s: all_claims(ev.seed(s)) for s in seeds}
    budget = None
    if stable is not None:
        budget = Budget(factor, stability_seed, per_seed.get(stability_seed, {}), all_claims(stable))
    out = []
    for key, claim in claims.items():
        effects = {s: float(per_seed[s][key]["effect"]) for s in seeds if key in per_seed[s]}
        judge(claim, effects, budget, key)
        rows = claim.pop("_rows")
        claim["settle_rel"] = None if table is None else settle_range(table, rows[rows["seed"] == stability_seed])
        out.append(claim)
    return out


# --------------------------------------------------------------------------- reading


def read_real_cells(params: Params, cells_dir: str | Path, seeds: set[int] | None = None) -> pd.DataFrame:
    """One row per current real cell (per sweep it was trained for) from its evaluate-real JSON;
    ``seeds``: only these seeds (the stability set's). Columns: sweep, ratios, unit, seed, acc,
    gate_pass, recon_rel."""
    rows = []
    for sweep, cells in real_sweep_cells(params.real).items():
        for ratio, unit, seed in cells:
            if seeds is not None and seed not in seeds:
                continue
            path = Path(cells_dir) / sweep / f"{cell_id(ratio, unit, seed)}.json"
            res = read_real_cell(read_json(path), str(path))
            rows.append({"sweep": sweep, "mask_ratio": float(ratio), "mask_unit": int(unit), "seed": int(seed),
                         "acc": res.table1.linear_cls["clean"] / 100.0, "gate_pass": int(res.gate.gate_pass),
                         "gain_share": res.gate.gain_share, "recon_rel": res.gate.recon_rel})
    return pd.DataFrame(rows, columns=["sweep", "mask_ratio", "mask_unit", "seed", "acc", "gate_pass", "gain_share",
                                       "recon_rel"])


def read_stable_cells(params: Params, cells_dir: str | Path) -> pd.DataFrame:
    """The synthetic stability set's rows (metrics.csv's columns) from its probe JSONs."""
    levels = params.data.depth + 1
    rows = []
    for ratio, unit, seed in stability_cells(params):
        path = str(Path(cells_dir) / f"{cell_id(ratio, unit, seed)}.json")
        rows.append(cell_row(read_cell(read_json(path), (ratio, unit, seed), levels, path), params.probe.pooling))
    return pd.DataFrame(rows).sort_values(["mask_unit", "mask_ratio", "seed"], kind="stable").reset_index(drop=True)


STABILITY_COLUMNS = ("track", "sweep", "mask_ratio", "mask_unit", "seed", "gain_share_1x", "gain_share_2x",
                     "recon_rel_1x", "recon_rel_2x", "settle_rel")


def stability_table(ev: Evidence, stable: Evidence) -> pd.DataFrame:
    """Every stability cell at both budgets: gain share, hidden rel (recon_mse / mean_pred_mse) and
    ``settle_rel`` = (rel at 1x - rel at 2x) / rel at 1x (how much hidden-patch error still fell)."""
    parts = []
    for track, one, two in (("synthetic", ev.metrics, stable.metrics), ("real", ev.real, stable.real)):
        if one is None or two is None or not len(two):
            continue
        keys = [k for k in ("sweep", "mask_ratio", "mask_unit", "seed") if k in two]
        both = two[[*keys, "gain_share", "recon_rel"]].merge(
            one[[*keys, "gain_share", "recon_rel"]], on=keys, how="left", suffixes=("_2x", "_1x"))
        both.insert(0, "track", track)
        if "sweep" not in both:
            both.insert(1, "sweep", "")
        parts.append(both)
    if not parts:
        return pd.DataFrame(columns=list(STABILITY_COLUMNS))
    table = pd.concat(parts, ignore_index=True)
    table["settle_rel"] = (table["recon_rel_1x"] - table["recon_rel_2x"]) / table["recon_rel_1x"]
    return table[list(STABILITY_COLUMNS)].sort_values(["track", "sweep", "mask_unit", "mask_ratio"], kind="stable")


def settle_range(table: pd.DataFrame, rows: pd.DataFrame) -> list[float] | None:
    """[min, max] settle_rel over the stability cells among ``rows`` (a claim's rows at the stability
    seed); None when none of them is in the set."""
    track = "real" if "sweep" in rows else "synthetic"
    sub = table[table["track"] == track]
    keys = ["sweep", "mask_ratio", "mask_unit"] if track == "real" else ["mask_ratio", "mask_unit"]
    picked = sub.merge(rows[keys].drop_duplicates(), on=keys)["settle_rel"].astype(float)
    picked = picked[np.isfinite(picked)]
    return [float(picked.min()), float(picked.max())] if len(picked) else None


# --------------------------------------------------------------------------- writing


def _finite(obj: Any) -> Any:
    """NaN and infinities as null, recursively: DVC cannot read them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _p_text(c: dict[str, Any]) -> str:
    """The bootstrap probability as printed: "n/a" when withheld (fewer than MIN_SEEDS seeds) or absent."""
    p = c.get("p_interior", c.get("p_increase"))
    return "n/a" if p is None or c.get("n_seeds", 0) < MIN_SEEDS else f"{p:.3f}"


def _num(x: Any, fmt: str = "{:+.4f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def rules_text(factor: int | None) -> str:
    """The rule, as claims.md and the summary state it."""
    two = f"{factor}x" if factor else "2x"
    return (
        f"Verdict order, per claim (rules fixed in `src/mae_hlvm/review/verdicts.py` before any result was seen): "
        f"*{NOT_LEARNED}* when any cell it reads (at either budget) did not learn (`src/mae_hlvm/core/gate.py`: "
        f"on hidden pixels the MAE achieves >= {GATE_RULES['gate_min_share']:.0%} of a linear predictor's gain over "
        f"the per-position-mean predictor); *{BUDGET_SENSITIVE}* when its effect, computed on the stability seed "
        f"alone, does not keep one nonzero sign at 1x and at {two} the training (the stability set); "
        f"*{NO_STABILITY}* when the stability set lacks a cell it reads; *not judged: N seeds* with fewer than "
        f"{MIN_SEEDS} seeds (the bootstrap is then withheld: n/a); otherwise a bootstrap over seeds ({N_BOOTSTRAP} "
        f"resamples, seed {BOOTSTRAP_SEED}): *supported* when its probability is >= {SUPPORT_PROB} and its effect on "
        f"the seed means exceeds {MIN_EFFECT} (C5: a c_excess above {C5_MIN_EXCESS}), *contradicted* when the "
        "opposite holds likewise, *inconclusive* otherwise. 'seeds' counts the seeds whose own effect has the "
        "claim's sign; settle_rel = (hidden rel at 1x - at 2x) / at 1x over the claim's stability cells "
        "(how far from settled they were; no threshold)."
    )


def render_markdown(claims: list[dict[str, Any]], factor: int | None = None) -> str:
    two = f"{factor}x" if factor else "2x"
    lines = [
        "# Claims check",
        "",
        rules_text(factor),
        "",
        f"| claim | masking unit / sweep | verdict | n_seeds | effect | P(claim) | seeds with its sign | effect 1x / {two} "
        "(stability seed) | settle_rel | detail |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        if "peak_ratio" in c:
            detail = f"peak at ratio {c['peak_ratio']}"
        elif c.get("interval95") is None or c.get("n_seeds", 0) < MIN_SEEDS:
            detail = "95% interval n/a"
        else:
            detail = f"95% interval {c['interval95'][0]:.3f} .. {c['interval95'][1]:.3f}"
        if "note" in c:
            detail += f"; {c['note']}"
        scope = c.get("scope", c.get("mask_unit"))
        seeds = f"{c['seeds_with_sign']} of {c['seeds']}" if c.get("seeds") else "n/a"
        budgets = "n/a" if c.get("effect_1x") is None else f"{_num(c['effect_1x'])} / {_num(c['effect_2x'])}"
        settle = c.get("settle_rel")
        settle_text = "n/a" if not settle else (
            f"{settle[0]:+.3f}" if settle[0] == settle[1] else f"{settle[0]:+.3f} .. {settle[1]:+.3f}")
        lines.append(
            f"| {c['id']}: {c['claim']} | {scope} | **{c['verdict']}** | {c.get('n_seeds', 'n/a')} | {_num(c['effect'], '{:.4f}')} "
            f"| {_p_text(c)} | {seeds} | {budgets} | {settle_text} | {detail} |"
        )
    return "\n".join(lines) + "\n"


def evidence(params: Params, args: argparse.Namespace) -> tuple[Evidence, Evidence | None]:
    """The 1x evidence and the stability set's (None when the set is off)."""
    metrics = load_metrics(args.metrics)
    baselines = load_baselines(args.baselines)
    seeds = set(metrics["seed"])
    if set(baselines["seed"]) != seeds:
        raise ArtifactError(
            f"{args.baselines}: seeds {sorted(set(baselines['seed']))} differ from {args.metrics}'s {sorted(seeds)}; "
            "rerun the aggregate step"
        )
    real, a_unit, b_ratio = None, 0, 0.0
    if real_enabled(params):
        real = read_real_cells(params, args.real_cells_dir)
        a_unit, b_ratio = params.real.sweep_a_unit, params.real.sweep_b_ratio
    ev = Evidence(metrics, baselines, read_json(args.prediction), params.data.depth + 1, real, a_unit, b_ratio)
    if not stability_enabled(params):
        return ev, None
    st = params.stability
    stable_real = None
    if stability_real(params):
        stable_real = read_real_cells(params, getattr(args, "real_stable_cells_dir", paths.REAL_STABLE_CELLS_DIR),
                                      seeds={st.seed})
    stable_metrics = read_stable_cells(params, getattr(args, "stable_cells_dir", paths.STABLE_CELLS_DIR))
    stable = replace(ev, metrics=stable_metrics, baselines=baselines[baselines["seed"] == st.seed], real=stable_real)
    return ev, stable


def run(params: Params, args: argparse.Namespace) -> None:
    """Write ``args.out_json`` (claims keyed by :func:`claim_key`), ``args.out_md`` and the stability table."""
    ev, stable = evidence(params, args)
    factor = params.stability.budget_factor if stable is not None else None
    seed = params.stability.seed if stable is not None else 0
    claims = judge_all(ev, stable, factor or 0, seed)
    table = stability_table(ev, stable) if stable is not None else pd.DataFrame(columns=list(STABILITY_COLUMNS))
    rules = {**RULES, "gate": GATE_RULES, "budget_factor": factor, "stability_seed": seed if stable is not None else None}
    write_json(args.out_json, _finite({"rules": rules, "claims": {claim_key(c): c for c in claims}}))
    write_text(args.out_stability, frame_to_csv(table))
    # the digest covers the keys this step reads (args.reads, the stage table's), so it
    # changes exactly when the claims could
    stamp = f"params {params_digest(params, args.reads)} (keys read here), code {code_revision()}"
    write_text(args.out_md, render_markdown(claims, factor) + f"\nStamp: {stamp}.\n")
    for c in claims:
        log.info("%s (%s): %s", c["id"], c.get("scope", c.get("mask_unit")), c["verdict"])
