"""Figs. 6 and 7: last-layer attention of the CLS token and of the centre token.

:func:`attention_grid` computes the maps (:func:`attention_maps`) and the share of CLS
attention on the foreground (:func:`foreground_mass`) per cell, and draws both figures
(:func:`attention_figures`).
Shapes: N images, C channels, S image side, g = S / vit_patch tokens per side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from mae_hlvm.core.data import Dataset
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.real.pixels import to_unit_range
from mae_hlvm.real.stamp import save_figure


def pick_test_images(ds: Dataset, n: int) -> np.ndarray:
    """Indices into the test split: the first image of each class, then the next ones."""
    labels = ds.split(test=True).labels
    chosen = [int(np.flatnonzero(labels == k)[0]) for k in np.unique(labels)][:n]
    rest = [i for i in range(len(labels)) if i not in chosen]
    return np.array(chosen + rest[: n - len(chosen)], dtype=np.int64)


def centre_token(model: MaskedAutoencoder) -> int:
    """Index (into the L patch tokens) of the token covering the image centre."""
    row = (model.image_size // 2) // model.vit_patch
    return row * model.grid + row


@torch.no_grad()
def attention_maps(model: MaskedAutoencoder, images: np.ndarray, token: int) -> tuple[np.ndarray, np.ndarray]:
    """Last-layer attention averaged over heads on UNmasked images (N, C, S, S).

    Returns (CLS -> patches, token -> patches), each (N, g, g), rows summing to at most 1
    (the rest of the mass goes to the CLS token).
    """
    model.eval()
    device = next(model.parameters()).device
    attn = model.last_attention(torch.from_numpy(np.ascontiguousarray(images)).to(device)).float().mean(dim=1).cpu()
    g = model.grid
    cls_map = attn[:, 0, 1:].reshape(-1, g, g).numpy()
    token_map = attn[:, 1 + token, 1:].reshape(-1, g, g).numpy()
    return cls_map, token_map


def foreground_mass(model: MaskedAutoencoder, ds: Dataset, n_images: int = 256) -> float:
    """Share of CLS attention on foreground tokens (mean pixel above the image mean).

    A number behind the paper's "object-centric" reading of Fig. 6, on the first
    ``n_images`` test images; attention to the CLS token itself is left out.
    """
    images = ds.split(test=True).images[:n_images]
    cls_map, _ = attention_maps(model, images, 0)
    pixels = to_unit_range(images, ds.settings).mean(axis=1)  # (N, S, S)
    p, g = model.vit_patch, model.grid
    token_mean = pixels.reshape(len(images), g, p, g, p).mean(axis=(2, 4))
    foreground = token_mean > pixels.mean(axis=(1, 2))[:, None, None]
    share = (cls_map * foreground).sum(axis=(1, 2)) / cls_map.sum(axis=(1, 2))
    return float(share.mean())


def _show_image(ax: Any, pixels: np.ndarray) -> None:
    """pixels (C, S, S) in [0, 1]."""
    if pixels.shape[0] == 1:
        ax.imshow(pixels[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(pixels.transpose(1, 2, 0), interpolation="nearest")


ATTENTION_TITLES = (
    "Last-layer attention of the CLS token to the patch tokens,\nmean over heads (Fig. 6 analogue)\n"
    "colour: 0 (black) to each panel's own maximum; first seed only, no band",
    "Last-layer attention of the centre token (red box) to the patch tokens,\nmean over heads (Fig. 7 analogue)\n"
    "colour: 0 (black) to each panel's own maximum; first seed only, no band\n"
    "compare Fig. 6: the caption says why the two look alike",
)


def _attention_figure(
    labels: Sequence[str], pixels: np.ndarray, maps: list[np.ndarray], title: str, token_box: tuple[int, int, int] | None
) -> Figure:
    """Rows: the inputs, then one row of maps (N, g, g) per cell, each panel coloured 0 to its maximum."""
    from matplotlib.patches import Rectangle

    n_rows, n_cols = 1 + len(maps), len(pixels)
    # at least 5.2 in wide, so the three-line title fits over a single image
    fig = Figure(figsize=(max(1.3 * n_cols + 1.2, 5.2), 1.3 * n_rows + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    for col in range(n_cols):
        _show_image(axes[0, col], np.clip(pixels[col], 0, 1))
        if token_box is not None:
            top, left, side = token_box
            axes[0, col].add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, edgecolor="red", linewidth=1))
        for row, cell_maps in enumerate(maps, start=1):
            top = float(cell_maps[col].max())
            axes[row, col].imshow(cell_maps[col], cmap="inferno", interpolation="nearest", vmin=0.0,
                                  vmax=top if top > 0 else 1.0)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=8)
    for row, label in enumerate(labels, start=1):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=8)
    return fig


def attention_figures(
    labels: Sequence[str], pixels: np.ndarray, cls_maps: list[np.ndarray], token_maps: list[np.ndarray],
    token_box: tuple[int, int, int],
) -> tuple[Figure, Figure]:
    """Figs. 6 and 7: (CLS maps, centre-token maps), each one row of (N, g, g) maps per cell under the inputs."""
    return (
        _attention_figure(labels, pixels, cls_maps, ATTENTION_TITLES[0], None),
        _attention_figure(labels, pixels, token_maps, ATTENTION_TITLES[1], token_box),
    )


def attention_grid(
    models: Sequence[tuple[str, MaskedAutoencoder]], ds: Dataset, out_dir: str | Path, *, n_images: int = 6,
    stamp: str | None = None,
) -> dict[str, Any]:
    """Figs. 6 and 7: fig6_cls_attention and fig7_token_attention (PNG + PDF) in ``out_dir``.

    models: (row label, model) per cell, all on the same test images. The token of
    Fig. 7 is the one covering the image centre. Returns the test indices, the token and
    each cell's :func:`foreground_mass`.
    """
    if not models:
        raise ValueError("attention_grid: no models given")
    out_dir = Path(out_dir)
    picks = pick_test_images(ds, n_images)
    images = ds.split(test=True).images[picks]
    pixels = to_unit_range(images, ds.settings)
    cls_maps, token_maps, summary = [], [], {}
    for label, model in models:
        cls_map, token_map = attention_maps(model, images, centre_token(model))
        cls_maps.append(cls_map)
        token_maps.append(token_map)
        summary[label] = {"cls_foreground_mass": round(foreground_mass(model, ds), 6)}
    first = models[0][1]
    token = centre_token(first)
    p = first.vit_patch
    box = ((token // first.grid) * p, (token % first.grid) * p, p)
    labels = [label for label, _ in models]
    fig6, fig7 = attention_figures(labels, pixels, cls_maps, token_maps, box)
    written = save_figure(fig6, out_dir / "fig6_cls_attention", stamp)
    written += save_figure(fig7, out_dir / "fig7_token_attention", stamp)
    return {
        "test_indices": picks.tolist(),
        "token_pixel_box": list(box),
        "cells": summary,
        "files": [str(w) for w in written],
    }
