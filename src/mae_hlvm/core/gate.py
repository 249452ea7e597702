"""The learning gate: a cell counts for a claim only if its MAE learned.

learned: the MAE achieves at least GATE_MIN_SHARE of a linear predictor's gain over the
per-position-mean predictor on the hidden pixels (a fixed bound cannot serve every cell:
what is achievable depends on the cell's masking); ``gate_pass`` is ``learned`` (issue 25:
whether a claim depends on the training budget is judged on the stability set, per claim).
``last_quarter_drop``, the relative drop of the mean loss of the last quarter of epochs
against the quarter before, is a diagnostic: under a cosine schedule it reads the
learning-rate anneal. Both tracks apply the gate to every cell; the rules, fixed before any
result, are in docs/gate.md.

Shapes: N images, C channels, S image side, L tokens, P pixels per token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mae_hlvm.core.linear import ridge_fit_predict
from mae_hlvm.core.masks import draw_masks

GATE_MIN_SHARE = 0.5  # learned: the MAE achieves at least this share of the linear predictor's gain
LINEAR_MIN_GAIN_REL = 1e-6  # a linear gain at most this share of mean_pred_mse is none: the fallback rule
LINEAR_REF_MASKS = 4  # masks of the linear reference, one ridge fit each
LINEAR_REF_SEED = 20230606  # fixed before any result: the linear reference's masks
MIN_EPOCHS = 4  # fewer logged epochs: last_quarter_drop is null (the curve is too short to read)
DECIMALS = 6
RULES = {
    "gate_min_share": GATE_MIN_SHARE, "linear_min_gain_rel": LINEAR_MIN_GAIN_REL,
    "linear_ref_masks": LINEAR_REF_MASKS, "linear_ref_seed": LINEAR_REF_SEED,
    "min_epochs": MIN_EPOCHS,
}
RULE_SHARE = "gain_share"
RULE_FALLBACK = "recon_mse < mean_pred_mse (the linear predictor does not beat the mean predictor)"
_GATHER_ROWS = 4096  # rows per chunk when gathering pixels into float64 (bounds the float32 temporary)


# --------------------------------------------------------------------------- the mean predictor


def train_mean_image(train_images: np.ndarray) -> np.ndarray:
    """The per-position-mean predictor: train images (N, C, S, S) -> their mean (C, S, S) float32."""
    return train_images.mean(axis=0, dtype=np.float64).astype(np.float32)


# --------------------------------------------------------------------------- the linear predictor


def _gather(flat: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Columns of flat images (N, F) as a new float64 array (N, K), in row chunks (no full float32 copy)."""
    out = np.empty((flat.shape[0], len(columns)), dtype=np.float64)
    for start in range(0, flat.shape[0], _GATHER_ROWS):
        out[start : start + _GATHER_ROWS] = flat[start : start + _GATHER_ROWS, columns]
    return out


def linear_reference(
    train_images: np.ndarray,
    test_images: np.ndarray,
    mask_unit: int,
    mask_ratio: float,
    n_masks: int = LINEAR_REF_MASKS,
    seed: int = LINEAR_REF_SEED,
) -> tuple[float, float]:
    """Hidden-pixel test MSE of the best linear predictor from the visible pixels (docs/gate.md).

    train_images (N, C, S, S), test_images (N', C, S, S). Draws ``n_masks`` masks (S, S)
    as the MAE draws them (:func:`mae_hlvm.core.masks.draw_masks`; a mask hides a pixel in
    every channel); per mask, a ridge regression (:func:`mae_hlvm.core.linear.ridge_fit_predict`:
    intercept, alpha picked on the last quarter of train) from all visible pixel values
    (N, C*V) to all hidden ones (N, C*H) is fitted on the train images and applied to
    the test images. Returns the squared error summed over every mask's hidden test
    values, divided by their count, and the per-position-mean predictor's MSE on the
    same hidden test values: (linear MSE, mean-predictor MSE). Their ratio is what the
    gate compares with the MAE's (the MAE's own masks differ, and the mean predictor's
    error differs between mask sets by about 1 %, a large share of a small linear gain).
    Float64 throughout; the images are not copied whole, only each mask's columns.
    """
    if train_images.ndim != 4 or test_images.ndim != 4 or train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            "train and test images must both be (N, C, S, S) of one size, "
            f"got {train_images.shape} and {test_images.shape}"
        )
    _, channels, side, side2 = train_images.shape
    if side != side2:
        raise ValueError(f"images must be square, got {side}x{side2}")
    if train_images.shape[0] < 4 or test_images.shape[0] < 1:
        raise ValueError(
            f"the linear reference needs at least 4 train images (alpha is picked on the last quarter) and 1 test "
            f"image, got {train_images.shape[0]} and {test_images.shape[0]}"
        )
    masks = draw_masks(side, mask_unit, mask_ratio, n_masks, seed).reshape(n_masks, side * side)
    pixels = side * side
    flat_tr = train_images.reshape(train_images.shape[0], channels * pixels)  # a view when contiguous
    flat_te = test_images.reshape(test_images.shape[0], channels * pixels)
    offsets = (np.arange(channels) * pixels)[:, None]
    sq_err, mean_sq_err, count = 0.0, 0.0, 0
    for hidden in masks:
        visible_cols = (offsets + np.flatnonzero(~hidden)).ravel()  # every channel of each visible pixel
        hidden_cols = (offsets + np.flatnonzero(hidden)).ravel()
        if not len(visible_cols) or not len(hidden_cols):
            raise ValueError(
                f"mask_ratio={mask_ratio}, mask_unit={mask_unit}: a mask needs visible and hidden pixels"
            )
        hidden_tr = _gather(flat_tr, hidden_cols)
        (err,) = ridge_fit_predict(_gather(flat_tr, visible_cols), [hidden_tr], _gather(flat_te, visible_cols))
        truth = _gather(flat_te, hidden_cols)
        err -= truth  # prediction minus truth, in place
        sq_err += float(np.einsum("ij,ij->", err, err))
        truth -= hidden_tr.mean(axis=0)  # minus the train mean: the mean predictor's error
        mean_sq_err += float(np.einsum("ij,ij->", truth, truth))
        count += err.size
        del err, truth, hidden_tr
    return sq_err / count, mean_sq_err / count


def linear_on_mae_masks(linear: tuple[float, float], mean_pred_mse: float) -> float:
    """The linear reference expressed on the MAE's masks: its own (linear / mean) ratio x ``mean_pred_mse``.

    So ``(mean - recon) / (mean - this) = (1 - recon_rel) / (1 - linear_rel)``, each
    ratio taken on its own masks.
    """
    linear_mse, own_mean = linear
    return linear_mse / own_mean * mean_pred_mse if own_mean > 0 else math.nan


# --------------------------------------------------------------------------- the rules


def history_losses(history: Any) -> list[float]:
    """Per-epoch losses from a checkpoint's ``meta["history"]`` (list of {"epoch", "loss", "lr"})."""
    if not isinstance(history, list) or not all(isinstance(h, dict) and "loss" in h for h in history):
        raise ValueError("checkpoint history must be a list of {'epoch', 'loss', 'lr'} records")
    return [float(h["loss"]) for h in sorted(history, key=lambda h: h.get("epoch", 0))]


def loss_rel_drop(losses: Sequence[float]) -> float | None:
    """(prev - last) / prev over the last two quarters of the curve (docs/gate.md); None if too short."""
    n = len(losses)
    if n < MIN_EPOCHS:
        return None
    q = max(1, n // 4)
    last = float(np.mean(losses[n - q :]))
    prev = float(np.mean(losses[n - 2 * q : n - q]))
    if not (math.isfinite(last) and math.isfinite(prev) and prev > 0):
        return math.nan
    return (prev - last) / prev


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), DECIMALS)


def has_linear_gain(mean_pred_mse: float | None, linear_mse: float | None) -> bool:
    """Whether the linear predictor beats the mean predictor by more than LINEAR_MIN_GAIN_REL of its MSE."""
    if mean_pred_mse is None or linear_mse is None or not (math.isfinite(mean_pred_mse) and math.isfinite(linear_mse)):
        return False
    return mean_pred_mse > 0 and mean_pred_mse - linear_mse > LINEAR_MIN_GAIN_REL * mean_pred_mse


def _learned_reason(gain_share: float | None, recon_rel: float | None, fallback: bool) -> str:
    """Why a cell is not learned (shared by :func:`evaluate_gate` and :func:`flag_reason`)."""
    if fallback:
        shown = f"recon_rel {recon_rel:.3f} >= 1" if recon_rel is not None else "no finite reconstruction error ratio"
        return f"not learned ({shown}; fallback rule: the linear predictor does not beat the mean predictor)"
    if gain_share is None:
        return "not learned (no finite reconstruction error ratio)"
    return f"not learned (gain share {gain_share:.2f} < {GATE_MIN_SHARE} of the linear predictor's)"


def evaluate_gate(
    recon_mse: float, mean_pred_mse: float, linear_mse: float, losses: Sequence[float]
) -> dict[str, Any]:
    """The gate of one cell as JSON-ready data (floats rounded to 6 decimals, NaN as null).

    recon_mse, mean_pred_mse: the MAE's and the mean predictor's hidden-pixel MSE;
    linear_mse: :func:`linear_reference` of the cell; losses: per-epoch training loss.
    Keys: recon_mse, mean_pred_mse, linear_mse, recon_rel, linear_rel, gain_share (null
    under the fallback rule), learned, learned_rule, last_quarter_drop (a diagnostic),
    gate_pass (= learned), gate_reason, rules. ``learned`` is decided on the rounded numbers (gain_share from the
    rounded MSEs, then rounded), so the JSON agrees with itself.
    """
    recon, mean, linear = _round(recon_mse), _round(mean_pred_mse), _round(linear_mse)
    positive = mean is not None and mean > 0
    rel = _round(recon / mean) if recon is not None and positive else None
    linear_rel = _round(linear / mean) if linear is not None and positive else None
    fallback = not has_linear_gain(mean, linear)
    if fallback:
        share = None
        learned = rel is not None and rel < 1.0
    else:
        share = _round((mean - recon) / (mean - linear)) if recon is not None else None
        learned = share is not None and share >= GATE_MIN_SHARE
    if not learned:
        reason = _learned_reason(share, rel, fallback)
    else:
        reason = "ok (fallback rule: the linear predictor does not beat the mean predictor)" if fallback else "ok"
    return {
        "recon_mse": recon,
        "mean_pred_mse": mean,
        "linear_mse": linear,
        "recon_rel": rel,
        "linear_rel": linear_rel,
        "gain_share": share,
        "learned": learned,
        "learned_rule": RULE_FALLBACK if fallback else RULE_SHARE,
        "last_quarter_drop": _round(loss_rel_drop(losses)),
        "gate_pass": learned,
        "gate_reason": reason,
        "rules": dict(RULES),
    }


def learned_from(gain_share: float, recon_rel: float) -> bool:
    """The gate from a table's columns alone: gain_share >= GATE_MIN_SHARE, or under the fallback
    (gain_share NaN, a finite recon_rel) recon_rel < 1. Re-judges tables written under older rules."""
    share = gain_share if math.isfinite(gain_share) else None
    rel = recon_rel if math.isfinite(recon_rel) else None
    return rel < 1.0 if share is None and rel is not None else share is not None and share >= GATE_MIN_SHARE


def flag_reason(gain_share: float, recon_rel: float) -> str:
    """A short reason from the table's columns alone (metrics.csv keeps no reason string).

    gain_share NaN with a finite recon_rel: the cell was judged by the fallback rule
    (recon_rel < 1); both NaN: no finite reconstruction error.
    """
    if learned_from(gain_share, recon_rel):
        return "ok"
    share = gain_share if math.isfinite(gain_share) else None
    rel = recon_rel if math.isfinite(recon_rel) else None
    return _learned_reason(share, rel, share is None and rel is not None)


def gate_line(track: str, n_cells: int, failing: Sequence[tuple[str, str]]) -> str:
    """One Markdown line: how many of a track's cells pass, and each failing cell with its reason."""
    line = f"Learning gate, {track}: {n_cells - len(failing)} of {n_cells} cells pass"
    if not failing:
        return line + "."
    return line + "; failing: " + ", ".join(f"{name} ({why})" for name, why in failing) + "."


__all__ = [
    "GATE_MIN_SHARE", "LINEAR_MIN_GAIN_REL", "LINEAR_REF_MASKS", "LINEAR_REF_SEED",
    "MIN_EPOCHS", "RULES", "train_mean_image", "linear_reference",
    "linear_on_mae_masks", "history_losses",
    "loss_rel_drop", "has_linear_gain", "evaluate_gate", "learned_from", "flag_reason", "gate_line",
]
