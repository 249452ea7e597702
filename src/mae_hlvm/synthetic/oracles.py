"""Every masked measure on encoders whose answer is known (step ``oracles``, one job per
(ratio, unit) cell of the grid).

A measure that a claim reads must first order encoders we understand (issue 26): per
(ratio, unit) cell, the masked probe (:mod:`mae_hlvm.synthetic.masked`) runs on

- ``c``: the true shared latents of each mask (each visible token carries its leaf's
  variables that are in ``c``), the answer Theorem 2 names;
- ``level<k>``: every latent variable of level ``k`` (each token its leaf's);
- ``pixels``: the visible pixels themselves;
- lossy encoders that lose information evenly: ``pixels_snr<s>`` (Gaussian noise at
  signal-to-noise ratio ``s``) and ``proj<r>`` (a fixed random rank-``r`` projection of each
  token's pixels);
- ``random_init``: the cell's MAE encoder untrained (seed 0, as the seeds' baselines build it).

The pixels at SNR infinity, 4, 1 and 0.25 give the cell's frontier of even loss
(:func:`mae_hlvm.synthetic.masked.frontier`); every oracle's ``c_excess`` is read against it.
It writes ``results/oracles/<cell>.json``; ``aggregate`` tables them (``results/oracles.md``,
in the summary) and reads every trained cell's ``c_excess`` against its cell's frontier. The
checks the measures must pass (tests/test_oracles.py): ``c`` keeps the most in excess of even
loss and all of c, no held-out lossy encoder (the projections) nor the untrained encoder keeps
more than :data:`LOSSY_TOLERANCE` in excess, ``h`` variables are never recovered, and the
retention-weighted level orders the level oracles by level.

Probes fit on the first :data:`ORACLE_TRAIN` train images (or ``probe.max_train``, if fewer).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from mae_hlvm.core.config import Params
from mae_hlvm.core.data import Dataset, load_dataset
from mae_hlvm.core.io import ArtifactError, write_json
from mae_hlvm.core.provenance import params_digest
from mae_hlvm.synthetic.latents import LatentVariables, categories, latent_variables
from mae_hlvm.synthetic.masked import (
    TokenFn,
    excess,
    frontier,
    masked_scores,
    mean_excess,
    model_tokens,
    oracle_tokens,
    pixel_tokens,
    probe_masks,
)

log = logging.getLogger("mae_hlvm.synthetic.oracles")

ORACLE_TRAIN = 5000  # train images per oracle probe: the table's cost stays bounded at GPU-profile sizes
ORACLE_SEED = 20231208  # the lossy encoders' noise and projections, fixed before any result
SNRS = (4.0, 1.0, 0.25)
RANKS = (6, 3)
ORACLE_MASKS = 2  # fixed probe masks per oracle (the trained cells use probe.masked_masks)


def measured_level(scores: dict[str, Any]) -> float | None:
    """Retention-weighted mean level: levels weighted by the R^2 (clipped at 0) of their
    visible-determined variables (``c`` and ``v``, each level's mean of the two present)."""
    weights = []
    for c, v in zip(scores["c"], scores["v"]):
        present = [x for x in (c, v) if x is not None]
        weights.append(max(0.0, float(np.mean(present))) if present else 0.0)
    total = sum(weights)
    return None if total <= 0 else round(sum(lv * w for lv, w in enumerate(weights)) / total, 6)


def _noisy(snr: float) -> Callable[[np.ndarray], np.ndarray]:
    def transform(x: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([ORACLE_SEED, int(snr * 1000), x.shape[0]])
        return x + np.sqrt(x.var() / snr) * rng.standard_normal(x.shape)
    return transform


def _projection(rank: int, width: int) -> Callable[[np.ndarray], np.ndarray]:
    w = np.random.default_rng([ORACLE_SEED, rank]).standard_normal((width, rank)) / np.sqrt(width)
    return lambda x: x @ w


def encoders(params: Params, ds: Dataset, variables: LatentVariables, ratio: float, unit: int) -> dict[str, TokenFn]:
    """The oracle encoders of one cell (module docstring), by name, in the table's order."""
    from mae_hlvm.synthetic.baseline import random_init_model

    patch = params.model.vit_patch
    depth = len(ds.latents) - 1

    def in_c(hidden: np.ndarray) -> np.ndarray:
        return categories(variables, hidden[None], depth)[0] == 0

    out: dict[str, TokenFn] = {"c": oracle_tokens(variables, patch, in_c)}
    for level in range(variables.n_levels):
        out[f"level{level}"] = oracle_tokens(variables, patch, lambda hidden, lv=level: variables.level == lv)
    width = patch * patch * ds.channels
    out["pixels"] = pixel_tokens(patch)
    out.update({f"pixels_snr{s:g}": pixel_tokens(patch, _noisy(s)) for s in SNRS})
    out.update({f"proj{r}": pixel_tokens(patch, _projection(r, width)) for r in RANKS if r < width})
    model = random_init_model(params, ds.image_size, ds.channels, 0)
    model.mask_ratio, model.mask_unit = ratio, unit  # only encode_visible is used: the mask comes from the probe
    out["random_init"] = model_tokens(model, params.probe.batch_size)
    return out


def cell_table(params: Params, ds: Dataset, variables: LatentVariables, ratio: float, unit: int) -> dict[str, Any]:
    """Every oracle's masked scores for one (ratio, unit) cell with its measured level and
    ``c_excess``, and the cell's frontier of even loss: {"frontier": [...], "encoders": {...}}."""
    train = ds.split(test=False, limit=min(ORACLE_TRAIN, params.probe.max_train))
    test = ds.split(test=True)
    masks = probe_masks(ds.image_size, unit, ratio, min(ORACLE_MASKS, params.probe.masked_masks))
    scores = {name: masked_scores(tokens, train, test, variables, masks, params.probe.masked_token_dims)
              for name, tokens in encoders(params, ds, variables, ratio, unit).items()}
    front = frontier([scores["pixels"], *(scores[f"pixels_snr{s:g}"] for s in SNRS)])
    for sc in scores.values():
        sc["excess"] = excess(sc, front)
        sc["c_excess"] = mean_excess(sc["excess"])
        sc["level"] = measured_level(sc)
    return {"frontier": front, "encoders": scores}


MEASURES = ("recovery", "c_excess", "level")


def render_markdown(cells: dict[str, dict[str, Any]]) -> str:
    """The oracle table: per (ratio, unit) cell and encoder, recovery, c_excess and measured level."""
    lines = [
        "Masked probe on encoders with known answers (`results/oracles/`): recovery = mean R^2 of the shared "
        "latents c from the encoder of the visible part; c_excess = R^2 of c beyond what the visible pixels under "
        "even noise keep of c at the same R^2 of the visible-only latents (claim C5 reads it); level = "
        "retention-weighted mean level (0 = root; it orders the level oracles but also calls any lossy encoder "
        "higher-level, so no claim reads it).",
        "",
    ]
    names = list(next(iter(cells.values()))["encoders"])
    lines += ["| cell | measure | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    for cell, table in cells.items():
        for key in MEASURES:
            lines.append(f"| {cell} | {key} | " + " | ".join(fmt(table["encoders"][n][key]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def run(params: Params, args: argparse.Namespace) -> None:
    """Write the oracle table of one (ratio, unit) cell to ``args.out``."""
    from threadpoolctl import threadpool_limits

    ds = load_dataset(args.data)
    if not ds.latents:
        raise ArtifactError(f"{args.data}: has no latents_level* arrays; the oracles step needs synthetic data")
    variables = latent_variables(params.data)
    with threadpool_limits(limits=params.train.threads):
        table = cell_table(params, ds, variables, args.mask_ratio, args.mask_unit)
    write_json(args.out, {"generator": params.data.generator, "mask_ratio": float(args.mask_ratio),
                          "mask_unit": int(args.mask_unit), **table,
                          "params_digest": params_digest(params, args.reads)})
