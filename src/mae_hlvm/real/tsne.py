"""Fig. 8: t-SNE of each cell's test features, coloured by class.

:func:`tsne_figure` embeds the features and scores the classes' separation
(silhouette); :func:`tsne_plot` draws the panels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mae_hlvm.core.data import Dataset
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.real.probes import extract_features
from mae_hlvm.real.realdata import class_names
from mae_hlvm.real.stamp import save_figure


def tsne_figure(
    models: Sequence[tuple[str, MaskedAutoencoder]],
    ds: Dataset,
    out_stem: str | Path,
    *,
    n_points: int = 500,
    pooling: str = "cls",
    seed: int = 0,
    stamp: str | None = None,
) -> dict[str, Any]:
    """Fig. 8: t-SNE of test features per cell, coloured by class (PNG + PDF).

    Uses ``n_points`` test images drawn by ``seed`` (the same for every cell). Returns per
    cell the silhouette score of the classes in the 2-D embedding (higher: more separable).
    """
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    if not models:
        raise ValueError("tsne_figure: no models given")
    test = ds.split(test=True)
    n = min(n_points, len(test.labels))
    rows = np.sort(np.random.default_rng(seed).permutation(len(test.labels))[:n])
    labels = test.labels[rows]
    summary, panels = {}, []
    for label, model in models:
        feats = extract_features(model, test.images[rows])[pooling].astype(np.float64)
        perplexity = min(30.0, (n - 1) / 3)
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(feats)
        score = float(silhouette_score(emb, labels)) if len(np.unique(labels)) > 1 else float("nan")
        summary[label] = {"silhouette": round(score, 6)}
        panels.append((label, emb, score))
    fig = tsne_plot(panels, labels, class_names(ds), ds.n_classes, pooling)
    written = save_figure(fig, out_stem, stamp)
    return {"n_points": n, "pooling": pooling, "cells": summary, "files": [str(w) for w in written]}


def tsne_plot(
    panels: Sequence[tuple[str, np.ndarray, float]], labels: np.ndarray, names: Sequence[str], n_classes: int, pooling: str
) -> Figure:
    """Fig. 8's drawing: one panel per (cell label, embedding (n, 2), silhouette), points coloured by ``labels``."""
    n_cols = min(4, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    # at least 6.4 in wide, so the title and a ten-class legend fit over a single panel
    fig = Figure(figsize=(max(3.2 * n_cols, 6.4), 3.2 * n_rows + 0.6), layout="constrained")
    # the class legend gets its own row, so the layout keeps it above the stamp's footer
    grid = fig.add_gridspec(n_rows + 1, n_cols, height_ratios=[1.0] * n_rows + [0.1])
    axes = np.array([fig.add_subplot(grid[r, c]) for r in range(n_rows) for c in range(n_cols)])
    legend_ax = fig.add_subplot(grid[n_rows, :])
    legend_ax.set_axis_off()
    cmap = "tab10" if n_classes <= 10 else "tab20"
    for ax, (label, emb, score) in zip(axes, panels):
        scatter = ax.scatter(emb[:, 0], emb[:, 1], c=labels, cmap=cmap, vmin=0, vmax=max(9, n_classes - 1), s=5)
        ax.set_title(f"{label}\nsilhouette {score:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    handles, _ = scatter.legend_elements(num=None)
    present = [names[k] for k in np.unique(labels)]
    legend_ax.legend(handles[: len(present)], present, loc="center", ncol=min(10, len(present)), fontsize=8, title="class",
                     title_fontsize=8)
    fig.suptitle(f"t-SNE of test features ({pooling} token), coloured by class (Fig. 8 analogue)\n"
                 "first seed only, no band; t-SNE axes have no units", fontsize=10)
    return fig
