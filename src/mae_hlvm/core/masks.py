"""Masks drawn as the MAE draws them, outside the model: for the theorem's prediction and the
learning gate's linear reference. numpy only (the MAE's own masks are torch's, in model.py)."""

from __future__ import annotations

import numpy as np

from mae_hlvm.core.cells import unit_counts


def draw_masks(image_size: int, mask_unit: int, mask_ratio: float, n_masks: int, seed: int) -> np.ndarray:
    """Hidden-pixel masks (M, S, S) bool, True = hidden, drawn as the MAE draws them.

    ``int(U * (1 - r))`` of the U masking units stay visible, chosen uniformly at random
    per mask (the MAE's argsort of uniform noise gives the same distribution).
    """
    n_visible, _ = unit_counts(image_size, mask_unit, mask_ratio)
    side = image_size // mask_unit
    rng = np.random.default_rng(seed)
    ranks = np.argsort(rng.random((n_masks, side * side)), axis=1).argsort(axis=1)
    hidden_units = (ranks >= n_visible).reshape(n_masks, side, side)
    return hidden_units.repeat(mask_unit, axis=1).repeat(mask_unit, axis=2)
