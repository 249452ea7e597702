"""The learning gate: a cell counts for a claim only if its MAE learned and its training settled.

Both tracks apply it to every trained cell (the synthetic ``probe`` step, the real
``evaluate-real`` step); the claims step refuses to judge a claim that reads a failing
cell (:mod:`mae_hlvm.claims`). The rules and thresholds below were fixed in code before
any result was looked at.

learned
    The MAE beats the per-position-mean predictor on the hidden patches:
    ``recon_rel = recon_mse / mean_pred_mse < GATE_MAX_REL`` (0.97: at least 3 % lower
    error). Both are pixel MSEs over the same hidden patches of the same test images under
    the same masks (the cell's own masking ratio and unit, one fixed mask stream,
    :func:`mae_hlvm.probe.recon_seed`); the mean predictor fills every hidden pixel with
    that pixel's mean over the TRAIN images, the best guess that ignores the visible
    patches. A converged MAE at ratio 0.9 stays near it (0.128 vs 0.137 measured, rel
    0.93), so the bound still lets a converged high-ratio cell pass. With
    ``norm_pix_loss`` the MAE's output is mapped back to pixels with each hidden patch's
    own mean and variance (:func:`mae_hlvm.probe.pixel_prediction`), which the mean
    predictor does not get: there the test is easier to pass.
plateau
    The logged per-epoch training loss (the checkpoint's ``meta["history"]``) has stopped
    falling. With n epochs and ``q = n // 4`` (at least 1), the relative drop
    ``(prev - last) / prev`` of the mean loss over the last q epochs (``last``) against the
    q epochs before them (``prev``) is below PLATEAU_REL_DROP (1 %). A loss that rises
    counts as settled (``learned`` catches a model that got worse). Fewer than
    MIN_EPOCHS (4) epochs: not plateaued, "too few epochs to judge"; a non-finite or
    non-positive loss: not plateaued.
gate_pass
    ``learned and plateau``; ``gate_reason`` is "ok" or what failed, "; "-joined.

Shapes: N images, C channels, S image side, L tokens, P pixels per token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

GATE_MAX_REL = 0.97  # learned: recon_mse / mean_pred_mse below this
PLATEAU_REL_DROP = 0.01  # plateau: last quarter's mean loss less than 1 % below the quarter before
MIN_EPOCHS = 4  # fewer logged epochs: the curve is too short to judge
DECIMALS = 6
RULES = {"gate_max_rel": GATE_MAX_REL, "plateau_rel_drop": PLATEAU_REL_DROP, "min_epochs": MIN_EPOCHS}


# --------------------------------------------------------------------------- the mean predictor


def train_mean_image(train_images: np.ndarray) -> np.ndarray:
    """The per-position-mean predictor: train images (N, C, S, S) -> their mean (C, S, S) float32."""
    return train_images.mean(axis=0, dtype=np.float64).astype(np.float32)


def hidden_sq_errors(
    pix: torch.Tensor, target: torch.Tensor, mean_patches: torch.Tensor, mask: torch.Tensor
) -> tuple[float, float, int]:
    """Summed squared errors on hidden tokens of the MAE and of the mean predictor, and the count.

    pix, target: (N, L, P) pixel predictions and true patches; mean_patches: (1, L, P) the
    patchified train-mean image; mask: (N, L), 1 = hidden. Returns (MAE sum, mean-predictor
    sum, number of hidden pixel values), summed in float64.
    """
    mae = ((pix - target) ** 2).sum(dim=-1)  # (N, L)
    mean = ((mean_patches - target) ** 2).sum(dim=-1)
    return (
        float((mae * mask).sum(dtype=torch.float64)),
        float((mean * mask).sum(dtype=torch.float64)),
        int(mask.sum()) * target.shape[-1],
    )


# --------------------------------------------------------------------------- the rules


def history_losses(history: Any) -> list[float]:
    """Per-epoch losses from a checkpoint's ``meta["history"]`` (list of {"epoch", "loss", "lr"})."""
    if not isinstance(history, list) or not all(isinstance(h, dict) and "loss" in h for h in history):
        raise ValueError("checkpoint history must be a list of {'epoch', 'loss', 'lr'} records")
    return [float(h["loss"]) for h in sorted(history, key=lambda h: h.get("epoch", 0))]


def loss_rel_drop(losses: Sequence[float]) -> float | None:
    """(prev - last) / prev over the last two quarters of the curve (see module docstring); None if too short."""
    n = len(losses)
    if n < MIN_EPOCHS:
        return None
    q = max(1, n // 4)
    last = float(np.mean(losses[n - q :]))
    prev = float(np.mean(losses[n - 2 * q : n - q]))
    if not (math.isfinite(last) and math.isfinite(prev) and prev > 0):
        return math.nan
    return (prev - last) / prev


def plateau(losses: Sequence[float]) -> tuple[bool, str]:
    """(plateaued, reason): reason is "ok" or why the curve does not count as settled."""
    drop = loss_rel_drop(losses)
    if drop is None:
        return False, "too few epochs to judge"
    if not math.isfinite(drop):
        return False, "training loss not finite and positive"
    if drop >= PLATEAU_REL_DROP:
        return False, f"not plateaued (loss fell {drop:.1%} over the last quarter of epochs)"
    return True, "ok"


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), DECIMALS)


def evaluate_gate(recon_mse: float, mean_pred_mse: float, losses: Sequence[float]) -> dict[str, Any]:
    """The gate of one cell as JSON-ready data (floats rounded to 6 decimals, NaN as null).

    Keys: recon_mse, mean_pred_mse, recon_rel, learned, loss_rel_drop, plateau, gate_pass,
    gate_reason, rules. ``learned`` is decided on the rounded recon_rel, so the JSON agrees
    with itself.
    """
    recon, mean = _round(recon_mse), _round(mean_pred_mse)
    rel = _round(recon / mean) if recon is not None and mean is not None and mean > 0 else None
    learned = rel is not None and rel < GATE_MAX_REL
    settled, why = plateau(losses)
    reasons = []
    if not learned:
        reasons.append(f"not learned (recon_rel {rel:.3f} >= {GATE_MAX_REL})" if rel is not None
                       else "not learned (no finite reconstruction error ratio)")
    if not settled:
        reasons.append(why)
    return {
        "recon_mse": recon,
        "mean_pred_mse": mean,
        "recon_rel": rel,
        "learned": learned,
        "loss_rel_drop": _round(loss_rel_drop(losses)),
        "plateau": settled,
        "gate_pass": learned and settled,
        "gate_reason": "; ".join(reasons) or "ok",
        "rules": dict(RULES),
    }


def flag_reason(recon_rel: float, plateaued: bool) -> str:
    """A short reason from the table's columns alone (metrics.csv keeps no reason string)."""
    reasons = []
    if not (math.isfinite(recon_rel) and recon_rel < GATE_MAX_REL):
        reasons.append(f"not learned (recon_rel {recon_rel:.3f})" if math.isfinite(recon_rel) else "not learned")
    if not plateaued:
        reasons.append("not plateaued")
    return "; ".join(reasons) or "ok"


def gate_line(track: str, n_cells: int, failing: Sequence[tuple[str, str]]) -> str:
    """One Markdown line: how many of a track's cells pass, and each failing cell with its reason."""
    line = f"Learning gate, {track}: {n_cells - len(failing)} of {n_cells} cells pass"
    if not failing:
        return line + "."
    return line + "; failing: " + ", ".join(f"{name} ({why})" for name, why in failing) + "."


__all__ = [
    "GATE_MAX_REL", "PLATEAU_REL_DROP", "MIN_EPOCHS", "RULES", "train_mean_image", "hidden_sq_errors",
    "history_losses", "loss_rel_drop", "plateau", "evaluate_gate", "flag_reason", "gate_line",
]
