"""The reconstructions figure: the same test images masked and reconstructed at every ratio,
one panel per masking unit (the probe step's ``.recon.npz`` files of the first seed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mae_hlvm.core import paths  # noqa: E402
from mae_hlvm.core.cells import cell_id  # noqa: E402
from mae_hlvm.core.config import Params  # noqa: E402
from mae_hlvm.core.io import ArtifactError, load_npz  # noqa: E402
from mae_hlvm.review.figure_files import stamp  # noqa: E402

MAX_RECON_IMAGES = 4


def to_display(images: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(n, C, S, S) -> (n, S, S, 3) in [0, 1], scaled per image by the original's range."""
    span = np.where(high > low, high - low, 1.0)
    scaled = np.clip((images - low) / span, 0.0, 1.0)
    scaled = scaled.transpose(0, 2, 3, 1)
    if scaled.shape[-1] == 1:
        scaled = np.repeat(scaled, 3, axis=-1)
    return scaled[..., :3]


def _tile_row(tiles: np.ndarray, gap: int) -> np.ndarray:
    """(n, S, S, 3) -> (S, n*S + (n-1)*gap, 3) with white gaps."""
    n, size = tiles.shape[0], tiles.shape[1]
    row = np.ones((size, n * size + (n - 1) * gap, 3))
    for i, tile in enumerate(tiles):
        row[:, i * (size + gap) : i * (size + gap) + size] = tile
    return row


def read_recon(path: str, n_show: int) -> dict[str, np.ndarray]:
    """The first ``n_show`` images of one cell's reconstruction file, shapes checked."""
    arrays = load_npz(path, required=("original", "masked", "reconstruction", "mask"))
    original = arrays["original"]
    if original.ndim != 4 or arrays["reconstruction"].shape != original.shape or arrays["masked"].shape != original.shape:
        raise ArtifactError(f"{path}: original, masked and reconstruction must share one (n, C, S, S) shape")
    if arrays["mask"].shape != (original.shape[0], *original.shape[2:]):
        raise ArtifactError(f"{path}: mask must be (n, S, S), got {arrays['mask'].shape}")
    return {k: np.asarray(v[:n_show], dtype=np.float64) for k, v in arrays.items()}


def recon_mosaic(per_ratio: list[dict[str, np.ndarray]], gap: int = 1) -> np.ndarray:
    """One masking unit's panel: row 0 originals, then one row per ratio.

    Each row is ``[masked inputs | reconstructions]``; row 0 repeats the originals on
    both sides. Hidden pixels (mask == 1, MAE's convention) are drawn mid-grey.
    """
    original = per_ratio[0]["original"]
    axes = tuple(range(1, original.ndim))
    low = original.min(axis=axes, keepdims=True)
    high = original.max(axis=axes, keepdims=True)
    shown = to_display(original, low, high)
    half_gap = np.ones((shown.shape[1], 3 * gap, 3))
    rows = [np.concatenate([_tile_row(shown, gap), half_gap, _tile_row(shown, gap)], axis=1)]
    for arrays in per_ratio:
        masked = to_display(arrays["masked"], low, high)
        masked[arrays["mask"] > 0.5] = 0.5
        recon = to_display(arrays["reconstruction"], low, high)
        rows.append(np.concatenate([_tile_row(masked, gap), half_gap, _tile_row(recon, gap)], axis=1))
    spacer = np.ones((gap, rows[0].shape[1], 3))
    stacked = [part for row in rows for part in (row, spacer)][:-1]
    return np.concatenate(stacked, axis=0)


def plot_reconstructions(params: Params, label: str) -> plt.Figure:
    """Same test images at every ratio, one panel per masking unit, first seed only."""
    seed = params.grid.seeds[0]
    ratios = sorted(params.grid.mask_ratios)
    mask_units = sorted(params.grid.mask_units)
    n_show = min(params.probe.n_recon_images, MAX_RECON_IMAGES)
    mosaics, sizes = [], []
    for patch in mask_units:
        per_ratio = [read_recon(paths.recon_npz(cell_id(r, patch, seed)), n_show) for r in ratios]
        mosaics.append(recon_mosaic(per_ratio))
        sizes.append(per_ratio[0]["original"].shape[-1])
    panel_width = 3.6
    panel_height = panel_width * mosaics[0].shape[0] / mosaics[0].shape[1]
    fig, axes = plt.subplots(
        1, len(mask_units), figsize=(panel_width * len(mask_units) + 0.8, panel_height + 1.0), squeeze=False
    )
    for ax, patch, mosaic, size in zip(axes[0], mask_units, mosaics, sizes):
        ax.imshow(mosaic, interpolation="nearest")
        step = size + 1
        ax.set_yticks([size / 2 + i * step for i in range(len(ratios) + 1)])
        ax.set_yticklabels(["original", *[f"r={r:g}" for r in ratios]])
        width = mosaic.shape[1]
        ax.set_xticks([width * 0.25, width * 0.75])
        ax.set_xticklabels(["masked input", "reconstruction"])
        ax.tick_params(length=0)
        ax.set_title(f"masking unit {patch} px (seed {seed})")
        for spine in ax.spines.values():
            spine.set_visible(False)
    stamp(fig, label)
    return fig
