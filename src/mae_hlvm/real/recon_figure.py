"""Fig. 5: reconstruction quality of UNmasked test images against masking ratio and unit.

:func:`recon_quality_figure` draws the cells' :func:`mae_hlvm.real.evaluate.recon_quality_cell`
outputs, following the synthetic track's conventions (:mod:`mae_hlvm.review.figures`):
seed spread as the min-max band over seeds, axes that include each metric's zero.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mae_hlvm.real.stamp import save_figure
from mae_hlvm.real.tables import sweep_part

RECON_METRICS = (("ssim", "SSIM (higher: structure)"), ("psnr", "PSNR dB (higher: pixels)"), ("neg_mse", "-MSE (higher: pixels)"))


SPREAD = ("pi", 100)  # min-max band over seeds, as in every synthetic figure; exact, no random numbers


def recon_axis_limits(metric: str, values: Any) -> tuple[float, float]:
    """Fig. 5's y range: each metric's zero included, so a 0.001 change reads as one.

    SSIM: 0 to 1 (down to the next 0.1, at most -1, when a value is negative); PSNR: 0 dB
    to the next 5 dB above the largest value; -MSE: the next 0.05 below the lowest to 0.
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if metric == "ssim":
        low = 0.0 if finite.size == 0 else min(0.0, math.floor(float(finite.min()) * 10) / 10)
        return max(low, -1.0), 1.0
    if metric == "psnr":
        top = 0.0 if finite.size == 0 else float(finite.max())
        return 0.0, max(5.0, math.ceil(top / 5) * 5)
    low = 0.0 if finite.size == 0 else float(finite.min())
    return min(-0.05, math.floor(low / 0.05) * 0.05), 0.0


def spread_note(part: pd.DataFrame, x: str, metric: str) -> str:
    """'means span A; widest seed range B': the effect against the seed spread, for a panel title."""
    groups = part.groupby(x)[metric]
    means = groups.mean()
    ranges = groups.max() - groups.min()
    return f"means span {float(means.max() - means.min()):.3g}; widest seed range {float(ranges.max()):.3g}"


def recon_quality_figure(df: pd.DataFrame, *, sweep_a_unit: int, sweep_b_ratio: float) -> Figure:
    """Fig. 5: SSIM, PSNR, -MSE against masking ratio (top) and masking unit (bottom).

    df: one row per cell and seed with mask_ratio, mask_unit, ssim, psnr, neg_mse
    (:func:`recon_quality_cell` outputs), optionally ``sweep_tag`` (:func:`sweep_part`).
    Line: mean over seeds; band: min-max over seeds; y axes include the metric's zero
    (:func:`recon_axis_limits`) and each panel's title compares the span of the means
    with the widest seed range (:func:`spread_note`).
    """
    import seaborn as sns

    fig = Figure(figsize=(11, 7.0), layout="constrained")
    axes = fig.subplots(2, len(RECON_METRICS))
    where = {"sweep_a_unit": sweep_a_unit, "sweep_b_ratio": sweep_b_ratio}
    sweeps = (
        ("mask_ratio", sweep_part(df, "A", **where), f"Sweep A: masking unit {sweep_a_unit}"),
        ("mask_unit", sweep_part(df, "B", **where), f"Sweep B: masking ratio {sweep_b_ratio:g}"),
    )
    for row, (x, part, title) in enumerate(sweeps):
        for col, (metric, label) in enumerate(RECON_METRICS):
            ax = axes[row, col]
            if part.empty:
                ax.text(0.5, 0.5, "no cells", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(title, fontsize=8)
            else:
                sns.lineplot(data=part, x=x, y=metric, marker="o", errorbar=SPREAD, ax=ax)
                ax.set_xticks(sorted(part[x].unique()))
                ax.set_title(f"{title}\n{spread_note(part, x, metric)}", fontsize=8)
            ax.set_ylim(*recon_axis_limits(metric, part[metric] if not part.empty else []))
            ax.set_xlabel("masking ratio" if x == "mask_ratio" else "masking unit (pixels)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    fig.suptitle("Reconstruction of UNmasked test images (Fig. 5 analogue)\n"
                 "line: mean over seeds, band: min-max over seeds; every y axis includes the metric's zero", fontsize=10)
    return fig


def plot_recon_quality(
    df: pd.DataFrame, out_stem: str | Path, *, sweep_a_unit: int, sweep_b_ratio: float, stamp: str | None = None
) -> list[Path]:
    """Fig. 5 (:func:`recon_quality_figure`) written as PNG + PDF."""
    return save_figure(recon_quality_figure(df, sweep_a_unit=sweep_a_unit, sweep_b_ratio=sweep_b_ratio), out_stem, stamp)
