"""Test the paper's claims on our own results, with statistics over seeds (step ``claims``).

Each claim gets a verdict, *supported*, *contradicted* or *inconclusive*, by rules fixed
here before any result was looked at (the constants below). The statistic is a
bootstrap over seeds: for every (masking ratio, masking unit) cell the seeds are resampled
with replacement, the seed means recomputed, and the claim's quantity evaluated on each
resample. Two checks come before any verdict, in this order (:func:`judge`):

- the learning gate (:mod:`mae_hlvm.core.gate`): when any cell the claim reads (its cells,
  not the untrained baselines) fails it, the verdict is "not testable: cells not
  converged", with a note counting the failing cells;
- seeds: with fewer than MIN_SEEDS (3) seeds in any cell the claim reads (for C0, also
  in the baselines) the verdict is "not judged: N seeds", and the bootstrap's
  probabilities, interval and peak shares are withheld (null in claims.json, "n/a" in
  claims.md): a bootstrap over one or two seeds gives spurious 0.000 / 1.000.

Every claim records ``n_seeds`` (the fewest seeds of any cell it reads), ``n_cells`` and
``n_cells_failing_gate``.

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
  C5 the theorem itself (ours; the paper never simulates its model): across the grid's
     (ratio, unit) cells, the level the encoder holds (:func:`mae_hlvm.synthetic.predict.measured_level`)
     rises and falls with the level of the minimum separating set that Theorem 1
     predicts from the generator's tree (data/prediction.json, ``mean_level``): the
     Spearman rank correlation between the two over cells (seed means) is positive.
     Bootstrap over seeds as for the others; supported when P(rho > 0) >= SUPPORT_PROB and
     rho > MIN_RHO (0.3), contradicted by the mirror rule, else inconclusive.
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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mae_hlvm.core.cells import cell_id, real_enabled, real_sweep_cells
from mae_hlvm.core.config import Params
from mae_hlvm.core.gate import RULES as GATE_RULES
from mae_hlvm.core.io import ArtifactError, read_json, write_json, write_text
from mae_hlvm.core.provenance import code_revision, params_digest
from mae_hlvm.core.results import read_real_cell
from mae_hlvm.review.aggregate import has_shape_bias, load_baselines, load_metrics

log = logging.getLogger("mae_hlvm.review.claims")

# Fixed before looking at results. A claim is SUPPORTED when its bootstrap probability
# is at least SUPPORT_PROB and its effect (seed means) exceeds MIN_EFFECT; CONTRADICTED
# when the opposite holds with the same probability; otherwise INCONCLUSIVE.
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 20230604  # the paper's arXiv month, a number chosen in advance
SUPPORT_PROB = 0.95
MIN_EFFECT = 0.01  # in R^2 (or accuracy) units
MIN_SEEDS = 3  # fewer seeds per cell: the bootstrap is too coarse to judge (1 or 2 seeds give p = 0 or 1)
NOT_TESTABLE = "not testable: cells not converged"
BOOTSTRAP_KEYS = ("p_interior", "p_endpoint", "p_increase", "interval95", "peak_ratio_bootstrap_share")
MIN_RHO = 0.3  # C5: a rank correlation this small is no agreement worth the name


def verdict(p_claim: float, p_opposite: float, effect: float, min_effect: float = MIN_EFFECT) -> str:
    """The decision rule, the same for every claim (C5's effect is a rank correlation: MIN_RHO)."""
    if p_claim >= SUPPORT_PROB and effect > min_effect:
        return "supported"
    if p_opposite >= SUPPORT_PROB and -effect > min_effect:
        return "contradicted"
    return "inconclusive"


def not_judged(n_seeds: int) -> str:
    return f"not judged: {n_seeds} seed{'' if n_seeds == 1 else 's'}"


def judge(claim: dict[str, Any], cells: pd.DataFrame, n_seeds: int) -> dict[str, Any]:
    """Apply the gate and seed checks (module docstring) to ``claim`` in place; return it.

    cells: the rows (one per cell and seed) the claim reads, with a ``gate_pass`` column
    (1/True = passes; anything else, NaN included, fails); n_seeds: the fewest seeds of
    any cell it reads.
    """
    if "gate_pass" not in cells:
        raise ArtifactError("the claims' cells lack a gate_pass column; rerun the aggregate (or evaluate-real) step")
    failing = int((cells["gate_pass"] != 1).sum())
    claim.update(n_seeds=int(n_seeds), n_cells=len(cells), n_cells_failing_gate=failing)
    notes = []
    if failing:
        claim["verdict"] = NOT_TESTABLE
        notes.append(f"{failing} of {len(cells)} cells fail the learning gate")
    if n_seeds < MIN_SEEDS:
        if not failing:
            claim["verdict"] = not_judged(n_seeds)
        notes.append(f"{n_seeds} seed{'' if n_seeds == 1 else 's'} per cell, fewer than {MIN_SEEDS}: bootstrap withheld")
        claim.update({k: None for k in BOOTSTRAP_KEYS if k in claim})
    if notes:
        claim["note"] = "; ".join(notes)
    return claim


def _min_seeds(cells: pd.DataFrame, by: list[str]) -> int:
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


def _per_seed(frame: pd.DataFrame, value: Callable[[pd.DataFrame], pd.Series], by: str) -> dict[Any, np.ndarray]:
    frame = frame.assign(_v=value(frame))
    return {k: g.sort_values("seed")["_v"].to_numpy() for k, g in frame.groupby(by)}


def baseline_claims(metrics: pd.DataFrame, baselines: pd.DataFrame, rng: np.random.Generator) -> list[dict[str, Any]]:
    """C0 per masking unit: trained root R^2 (per seed, mean over ratios) vs the random-init encoder's (per seed)."""
    untrained = baselines[baselines["baseline"] == "random_init"].sort_values("seed")["r2_level0"].to_numpy()
    per_seed = metrics.groupby(["mask_unit", "seed"])["r2_level0"].mean().reset_index()
    claims = []
    for patch, g in per_seed.groupby("mask_unit"):
        trained = g.sort_values("seed")["r2_level0"].to_numpy()
        cells = metrics[metrics["mask_unit"] == patch]
        claims.append(judge({
            "id": "C0", "mask_unit": int(patch),
            "claim": "pretraining adds root-level information beyond a random encoder (root R^2, mean over ratios)",
            **increases(untrained, trained, rng),
        }, cells, min(_min_seeds(cells, ["mask_ratio", "mask_unit"]), len(untrained))))
    return claims


def synthetic_claims(metrics: pd.DataFrame, n_levels: int, baselines: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """C1-C3 on results/metrics.csv (one row per cell); C0 first when ``baselines`` (baselines.csv) is given."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    root, leaf = "r2_level0", f"r2_level{n_levels - 1}"
    claims = [] if baselines is None else baseline_claims(metrics, baselines, rng)
    by = ["mask_ratio", "mask_unit"]
    for patch, g in metrics.groupby("mask_unit"):
        ratios = sorted(g["mask_ratio"].unique())
        c1 = interior_peak(ratios, _per_seed(g, lambda f: f[root], "mask_ratio"), rng)
        c2 = interior_peak(ratios, _per_seed(g, lambda f: f[root] - f[leaf], "mask_ratio"), rng)
        n_seeds = _min_seeds(g, by)
        c1 = {"id": "C1", "mask_unit": int(patch), "claim": "root-level R^2 peaks at an interior masking ratio", **c1}
        c2 = {"id": "C2", "mask_unit": int(patch), "claim": "root-minus-leaf R^2 gap peaks at an interior masking ratio", **c2}
        claims += [judge(c1, g, n_seeds), judge(c2, g, n_seeds)]
    patches = sorted(metrics["mask_unit"].unique())
    if len(patches) > 1:
        mean_over_ratios = metrics.groupby(["mask_unit", "seed"])[root].mean().reset_index()
        low = mean_over_ratios[mean_over_ratios.mask_unit == patches[0]].sort_values("seed")[root].to_numpy()
        high = mean_over_ratios[mean_over_ratios.mask_unit == patches[-1]].sort_values("seed")[root].to_numpy()
        cells = metrics[metrics["mask_unit"].isin([patches[0], patches[-1]])]
        claims.append(judge({
            "id": "C3", "mask_unit": f"{patches[0]} -> {patches[-1]}",
            "claim": "larger masking units give higher root-level R^2 (mean over ratios)", **increases(low, high, rng),
        }, cells, _min_seeds(cells, by)))
    # last, so that the bootstrap draws of C0-C3 are those of data without a texture cue
    if has_shape_bias(metrics):
        for patch, g in metrics.groupby("mask_unit"):
            ratios = sorted(g["mask_ratio"].unique())
            c6 = interior_peak(ratios, _per_seed(g, lambda f: f["shape_bias"], "mask_ratio"), rng)
            c6 = {"id": "C6", "mask_unit": int(patch), "claim": "shape bias peaks at an interior masking ratio", **c6}
            claims.append(judge(c6, g, _min_seeds(g, by)))
    return claims


def spearman_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of x (K,) with every row of ys (B, K); ties get mean ranks."""
    from scipy.stats import rankdata

    rx = rankdata(x)
    ry = rankdata(ys, axis=1)
    rx, ry = rx - rx.mean(), ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum() * (ry**2).sum(axis=1))
    return np.where(denom > 0, (ry @ rx) / np.where(denom > 0, denom, 1.0), np.nan)


def theorem_claim(metrics: pd.DataFrame, prediction: dict[str, Any], n_levels: int) -> dict[str, Any]:
    """C5: Spearman rho over (ratio, unit) cells between predicted and measured level (module docstring)."""
    from mae_hlvm.synthetic.predict import cell_key, measured_level, predicted_mean_levels

    rng = np.random.default_rng(BOOTSTRAP_SEED + 5)  # its own stream: C0-C4 keep theirs
    frame = metrics.assign(measured=measured_level(metrics, n_levels))
    per_cell = {
        (r, p): g.sort_values("seed")["measured"].to_numpy() for (r, p), g in frame.groupby(["mask_ratio", "mask_unit"])
    }
    predicted = np.array(predicted_mean_levels(prediction, per_cell))
    means = np.array([v.mean() for v in per_cell.values()])
    rho = float(spearman_rows(predicted, means[None])[0])
    boot = spearman_rows(predicted, bootstrap_means(per_cell, rng))
    lo, hi = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (math.nan, math.nan)
    p_pos, p_neg = float(np.mean(boot > 0)), float(np.mean(boot < 0))
    claim = {
        "id": "C5", "mask_unit": "all",
        "claim": "the encoder's level follows the theorem's predicted separator level across cells (Spearman rho)",
        "effect": rho, "p_increase": p_pos, "interval95": [float(lo), float(hi)],
        "verdict": verdict(p_pos, p_neg, rho, MIN_RHO),
        "per_cell": {cell_key(r, p): {"predicted": float(x), "measured": float(m)} for (r, p), x, m in zip(per_cell, predicted, means)},
    }
    return judge(claim, metrics, _min_seeds(metrics, ["mask_ratio", "mask_unit"]))


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
        claims.append(judge({"id": "C4", "scope": f"Sweep A (unit {sweep_a_unit})",
                             "claim": "real track: clean linear-probe accuracy peaks at an interior masking ratio", **res},
                            part_a, _min_seeds(part_a, ["mask_ratio"])))
    part_b = cells[cells["sweep"].isin(["B", "G"]) & np.isclose(cells["mask_ratio"], sweep_b_ratio)]
    units = sorted(part_b["mask_unit"].unique())
    if len(units) > 1:
        low = part_b[part_b["mask_unit"] == units[0]].sort_values("seed")["acc"].to_numpy()
        high = part_b[part_b["mask_unit"] == units[-1]].sort_values("seed")["acc"].to_numpy()
        cells = part_b[part_b["mask_unit"].isin([units[0], units[-1]])]
        claims.append(judge({"id": "C4", "scope": f"Sweep B (ratio {sweep_b_ratio:g}), unit {units[0]} -> {units[-1]}",
                             "claim": "real track: clean linear-probe accuracy rises with the masking unit",
                             **increases(low, high, rng)}, cells, min(len(low), len(high))))
    return claims


def read_real_cells(params: Params, cells_dir: str | Path) -> pd.DataFrame:
    """One row per current real cell (per sweep it was trained for) from its evaluate-real JSON."""
    rows = []
    for sweep, cells in real_sweep_cells(params.real).items():
        for ratio, unit, seed in cells:
            path = Path(cells_dir) / sweep / f"{cell_id(ratio, unit, seed)}.json"
            res = read_real_cell(read_json(path), str(path))
            rows.append({"sweep": sweep, "mask_ratio": float(ratio), "mask_unit": int(unit), "seed": int(seed),
                         "acc": res.table1.linear_cls["clean"] / 100.0, "gate_pass": res.gate.gate_pass})
    return pd.DataFrame(rows)


def claim_key(c: dict[str, Any]) -> str:
    """A stable key per claim for claims.json, so `dvc metrics diff` lines up claims across revisions."""
    if "scope" in c:
        return f"{c['id']}_sweep{c['scope'].split()[1]}"
    return c["id"] if c["id"] in ("C3", "C5") else f"{c['id']}_p{c['mask_unit']}"


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


def render_markdown(claims: list[dict[str, Any]]) -> str:
    lines = [
        "# Claims check",
        "",
        f"Bootstrap over seeds ({N_BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED}). A claim is *supported* when "
        f"its bootstrap probability is >= {SUPPORT_PROB} and its effect on the seed means exceeds {MIN_EFFECT}; "
        "*contradicted* when the opposite holds likewise; *inconclusive* otherwise. Before that, a claim is "
        f"*{NOT_TESTABLE}* when any cell it reads fails the learning gate (`src/mae_hlvm/core/gate.py`: the MAE "
        f"achieves on hidden pixels >= {GATE_RULES['gate_min_share']:.0%} of a linear predictor's gain over the "
        "per-position-mean predictor, and its training loss has plateaued), and *not judged: N seeds* when a cell "
        f"has fewer than {MIN_SEEDS} seeds "
        "(the bootstrap is then withheld: n/a). Rules fixed in `src/mae_hlvm/review/claims.py` before any result was seen.",
        "",
        "| claim | masking unit / sweep | verdict | n_seeds | effect | P(claim) | detail |",
        "|---|---|---|---|---|---|---|",
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
        lines.append(
            f"| {c['id']}: {c['claim']} | {scope} | **{c['verdict']}** | {c.get('n_seeds', 'n/a')} | {c['effect']:.4f} "
            f"| {_p_text(c)} | {detail} |"
        )
    return "\n".join(lines) + "\n"


def run(params: Params, args: argparse.Namespace) -> None:
    """Write ``args.out_json`` (claims keyed by :func:`claim_key`) and ``args.out_md``."""
    metrics = load_metrics(args.metrics)
    baselines = load_baselines(args.baselines)
    seeds = set(metrics["seed"])
    if set(baselines["seed"]) != seeds:
        raise ArtifactError(
            f"{args.baselines}: seeds {sorted(set(baselines['seed']))} differ from {args.metrics}'s {sorted(seeds)}; "
            "rerun the aggregate step"
        )
    claims = synthetic_claims(metrics, params.data.depth + 1, baselines)
    claims.append(theorem_claim(metrics, read_json(args.prediction), params.data.depth + 1))
    if real_enabled(params):
        real = params.real
        claims += real_claims(read_real_cells(params, args.real_cells_dir), real.sweep_a_unit, real.sweep_b_ratio)
    rules = {"n_bootstrap": N_BOOTSTRAP, "seed": BOOTSTRAP_SEED, "support_prob": SUPPORT_PROB,
             "min_effect": MIN_EFFECT, "min_rho": MIN_RHO, "min_seeds": MIN_SEEDS, "gate": GATE_RULES}
    write_json(args.out_json, _finite({"rules": rules, "claims": {claim_key(c): c for c in claims}}))
    # the digest covers the keys this step reads (args.reads, the stage table's), so it
    # changes exactly when the claims could
    stamp = f"params {params_digest(params, args.reads)} (keys read here), code {code_revision()}"
    write_text(args.out_md, render_markdown(claims) + f"\nStamp: {stamp}.\n")
    for c in claims:
        log.info("%s (%s): %s", c["id"], c.get("scope", c.get("mask_unit")), c["verdict"])

