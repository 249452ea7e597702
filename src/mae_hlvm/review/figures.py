"""The figures of the synthetic study, each as PNG and PDF with byte-identical reruns.

Determinism: the Agg/PDF backends stamp software names and dates into the files; every
one of those fields is blanked through ``savefig(metadata=...)``, SVG ids get a fixed
salt, and ``SOURCE_DATE_EPOCH`` is pinned while saving so no backend falls back to the
clock. Seed spread is drawn as the min-max band over seeds (``errorbar=("pi", 100)``),
which, unlike a bootstrap CI, involves no random numbers; every figure that shows a band or
an error bar uses that one convention and says so on the figure (the real track's Fig. 5 too).

Axes show the scale of an effect, not only its shape: R^2 is drawn on a fixed 0-1 axis
(:func:`r2_axis`), losses from 0, latent levels on the fixed 0..D scale.

Every figure carries the params digest and the code revision in a footer strip reserved
below everything else (:func:`mae_hlvm.review.figure_files.stamp`), so the stamp never covers a panel, title or label.
Level 0 is the root, level D the leaves; legends and titles say so (:func:`level_label`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from mae_hlvm.core import paths  # noqa: E402
from mae_hlvm.core.cells import cell_id  # noqa: E402
from mae_hlvm.core.config import Params  # noqa: E402
from mae_hlvm.core.io import ArtifactError, check_recorded, read_json, write_bytes  # noqa: E402
from mae_hlvm.core.paths import FIGURE_NAMES  # noqa: E402  (the files the figures stage declares, one list)
from mae_hlvm.review.aggregate import grid_cells, load_baselines, load_metrics  # noqa: E402
from mae_hlvm.review.figure_files import provenance_label, save_figure, stamp  # noqa: E402
from mae_hlvm.review.reconstructions import plot_reconstructions  # noqa: E402

log = logging.getLogger("mae_hlvm.review.figures")

RC = {
    "svg.hashsalt": "mae-hlvm",
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "pdf.compression": 6,
    "font.size": 9,
}
SPREAD = ("pi", 100)  # min-max band over seeds
# Baselines as horizontal lines in the level's colour: the untrained encoder, raw pixels.
BASELINE_STYLES = {
    "random_init": ("--", "random-init encoder"),
    "pixels": (":", "raw pixels"),
    "latents": ("-.", "true leaf latents (ceiling)"),
}


# --------------------------------------------------------------------------- tables


def level_numbers(frame: pd.DataFrame, prefix: str) -> list[int]:
    """Levels ``i`` for which a column ``<prefix>_level<i>`` exists, ascending."""
    pattern = re.compile(rf"^{re.escape(prefix)}_level(\d+)$")
    return sorted(int(m.group(1)) for c in frame.columns if (m := pattern.match(c)))


def long_by_level(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Columns ``<prefix>_level*`` melted to rows: mask_ratio, mask_unit, seed, level, value."""
    levels = level_numbers(frame, prefix)
    cols = [f"{prefix}_level{i}" for i in levels]
    long = frame.melt(id_vars=["mask_ratio", "mask_unit", "seed"], value_vars=cols, var_name="column")
    long["level"] = long["column"].str.removeprefix(f"{prefix}_").str.replace("level", "level ")
    return long.drop(columns="column")


def check_grid(frame: pd.DataFrame, params: Params, path: str | Path) -> None:
    """The metrics table must hold exactly the current grid's cells."""
    have = {(float(r), int(p), int(s)) for r, p, s in frame[["mask_ratio", "mask_unit", "seed"]].itertuples(index=False)}
    want = set(grid_cells(params))
    if have != want:
        extra, missing = sorted(have - want), sorted(want - have)
        raise ArtifactError(
            f"{path}: cells do not match params.grid (missing {missing[:3]}, extra {extra[:3]}); "
            "rerun the aggregate step"
        )


def check_baseline_seeds(baselines: pd.DataFrame, params: Params, path: str | Path) -> None:
    """The baselines table must hold exactly the grid's seeds."""
    have, want = set(baselines["seed"].astype(int)), set(params.grid.seeds)
    if have != want:
        raise ArtifactError(f"{path}: has seeds {sorted(have)}, params.grid.seeds is {sorted(want)}; rerun the aggregate step")


def read_loss_curves(params: Params) -> pd.DataFrame:
    """Every grid cell's train_log.csv stacked: epoch, loss, lr, mask_ratio, mask_unit, seed."""
    parts = []
    for ratio, patch, seed in grid_cells(params):
        path = Path(paths.train_log(cell_id(ratio, patch, seed)))
        if not path.exists():
            raise ArtifactError(f"{path}: missing (run the train step first)")
        check_recorded(path)
        try:
            log_frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ArtifactError(f"{path}: corrupt training log ({err.__class__.__name__})") from None
        if not {"epoch", "loss"} <= set(log_frame.columns) or log_frame.empty:
            raise ArtifactError(f"{path}: needs columns epoch and loss and at least one row")
        parts.append(log_frame.assign(mask_ratio=ratio, mask_unit=patch, seed=seed))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- figures


def _panel_grid(n_rows: int, n_cols: int, width: float = 3.2, height: float = 2.7) -> tuple[plt.Figure, np.ndarray]:
    # at least 6 in wide: a one-unit grid's suptitle and legend still fit
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(max(width * n_cols, 6.0), height * n_rows), squeeze=False, sharex=True, sharey="row"
    )
    return fig, axes


def level_index(name: str) -> int:
    """The number in a level name: 'level 2' and 'level 2 (leaves)' -> 2."""
    match = re.match(r"level (\d+)", name)
    if match is None:
        raise ValueError(f"{name!r} is not a level name")
    return int(match.group(1))


def level_label(name: str, deepest: int) -> str:
    """A level name as figures show it: 'level 0 (root)', 'level <deepest> (leaves)', else unchanged."""
    index = level_index(name)
    return f"level {index} (root)" if index == 0 else f"level {index} (leaves)" if index == deepest else f"level {index}"


def level_palette(levels: list[str]) -> dict[str, Any]:
    """A fixed colour per level name ('level 2' is the same colour in every figure)."""
    colors = sns.color_palette("tab10", 10)
    return {name: colors[level_index(name) % 10] for name in levels}


R2_FLOOR = -1.0  # an R^2 axis extends below 0 at most to here


def r2_limits(values: Any) -> tuple[float, float]:
    """The fixed R^2 axis: 0 to 1, extended down (to the next 0.1, at most to -1) when a value is negative."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    low = 0.0 if finite.size == 0 else min(0.0, math.floor(float(finite.min()) * 10) / 10)
    return max(low, R2_FLOOR), 1.0


def r2_axis(ax: Any, values: Any) -> None:
    """Set :func:`r2_limits` on ``ax`` (a small margin so markers at 0 or 1 are not cut)."""
    low, high = r2_limits(values)
    ax.set_ylim(low - 0.03, high + 0.03)
    ax.set_yticks(np.round(np.arange(low, high + 1e-9, 0.2 if low > -0.5 else 0.5), 2))


def baseline_levels(baselines: pd.DataFrame, prefix: str) -> dict[str, dict[str, float]]:
    """{baseline kind: {"level i": mean over seeds of <prefix>_level<i>}} from baselines.csv rows."""
    out: dict[str, dict[str, float]] = {}
    for kind in BASELINE_STYLES:
        part = baselines[baselines["baseline"] == kind]
        out[kind] = {f"level {i}": float(part[f"{prefix}_level{i}"].mean()) for i in level_numbers(part, prefix)}
    return out


def _draw_baselines(ax: Any, levels: dict[str, dict[str, float]], palette: dict[str, Any]) -> None:
    """Dashed (random-init) and dotted (pixels) horizontal lines, one per level present in the panel."""
    for kind, (style, _) in BASELINE_STYLES.items():
        for name, value in levels.get(kind, {}).items():
            if name in palette and np.isfinite(value):
                ax.axhline(value, color=palette[name], linestyle=style, linewidth=1.0, alpha=0.8, zorder=1)


def _baseline_legend(ax: Any, kinds: list[str]) -> None:
    """The last panel's legend: seaborn's level entries plus one entry per baseline kind drawn."""
    legend = ax.get_legend()
    if legend is None:
        return
    # seaborn's legend holds proxy handles that ax.get_legend_handles_labels() may not see
    handles = list(legend.legend_handles)
    labels = [text.get_text() for text in legend.get_texts()]
    for style, label in (BASELINE_STYLES[k] for k in kinds):
        handles.append(Line2D([], [], color="0.3", linestyle=style, linewidth=1.0))
        labels.append(label)
    ax.legend(handles, labels, title=legend.get_title().get_text())


def _line_panels(
    ax_row: np.ndarray, long: pd.DataFrame, mask_units: list[int], ylabel: str,
    baselines: dict[str, dict[str, float]] | None = None,
) -> None:
    """One seaborn lineplot per masking unit along ``ax_row``, hue = level; legend on the last panel only.

    ``baselines`` ({kind: {level name: value}}, see :func:`baseline_levels`) adds a horizontal
    line per level in every panel, styled per kind, with legend entries.
    """
    order = sorted(long["level"].unique(), key=level_index)
    palette = level_palette(order)
    deepest = level_index(order[-1])
    shown = {name: level_label(name, deepest) for name in order}
    long = long.assign(level=long["level"].map(shown))
    # y: the fixed R^2 axis over the whole row (every seed, every baseline drawn)
    drawn = list(long["value"]) + [v for kind in (baselines or {}).values() for n, v in kind.items() if n in palette]
    for i, (ax, patch) in enumerate(zip(ax_row, mask_units)):
        part = long[long["mask_unit"] == patch]
        sns.lineplot(
            data=part, x="mask_ratio", y="value", hue="level", hue_order=[shown[n] for n in order],
            palette={shown[n]: c for n, c in palette.items()},
            errorbar=SPREAD, marker="o", ax=ax, legend=i == len(mask_units) - 1,
        )
        if baselines is not None:
            _draw_baselines(ax, baselines, palette)
            if i == len(mask_units) - 1:
                _baseline_legend(ax, [k for k, v in baselines.items() if any(np.isfinite(x) for x in v.values())])
        ax.set_title(f"masking unit {patch} px")
        ax.set_xlabel("masking ratio")
        ax.set_ylabel(ylabel if i == 0 else "")
        r2_axis(ax, drawn)
        ax.grid(alpha=0.3)
    legend = ax_row[-1].get_legend()
    if legend is not None:
        sns.move_legend(ax_row[-1], "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def plot_r2_vs_ratio(frame: pd.DataFrame, label: str, baselines: pd.DataFrame | None = None) -> plt.Figure:
    """Row 1: linear-probe R^2 per level vs ratio; row 2: nonlinear; one column per masking unit.

    ``baselines`` (baselines.csv rows) adds each level's random-init (dashed) and raw-pixel
    (dotted) R^2, mean over seeds, in the level's colour.
    """
    mask_units = sorted(frame["mask_unit"].unique())
    fig, axes = _panel_grid(2, len(mask_units))
    for row, prefix, ylabel in ((0, "r2", "linear probe R$^2$"), (1, "r2nl", "nonlinear probe R$^2$")):
        lines = None if baselines is None else baseline_levels(baselines, prefix)
        _line_panels(axes[row], long_by_level(frame, prefix), mask_units, ylabel, lines)
    title = "Which latent level does the encoder recover?\nline: mean over seeds, band: min-max over seeds; R$^2$ axis fixed 0 to 1"
    if baselines is not None:
        title += "\ndashed: random-init encoder, dotted: raw pixels (same probes, mean over seeds)"
    fig.suptitle(title, fontsize=8)
    stamp(fig, label)
    return fig


def plot_spatial_r2(frame: pd.DataFrame, label: str, baselines: pd.DataFrame | None = None) -> plt.Figure:
    """Row 1: spatial-probe R^2 of each whole level; row 2: of each level's innovation (l >= 1).

    One column per masking unit; floors (random-init encoder, raw pixels) and the ceiling
    (a linear probe on the true leaf latents) as horizontal lines in the level's colour.
    """
    if not level_numbers(frame, "r2sp"):
        raise ArtifactError("metrics table has no r2sp_level* columns; rerun the aggregate step")
    mask_units = sorted(frame["mask_unit"].unique())
    fig, axes = _panel_grid(2, len(mask_units))
    for row, prefix, ylabel in ((0, "r2sp", "R$^2$ of the level"), (1, "r2in", "R$^2$ of its innovation")):
        lines = None if baselines is None else baseline_levels(baselines, prefix)
        _line_panels(axes[row], long_by_level(frame, prefix), mask_units, ylabel, lines)
    fig.suptitle(
        "Spatial probe (4 x 4 region means of the tokens):\neach level (top) and what it adds beyond its parent (bottom)\n"
        "line: mean over seeds, band: min-max over seeds; R$^2$ axis fixed 0 to 1\n"
        "dashed: random-init encoder, dotted: raw pixels, dash-dot: true leaf latents (ceiling)",
        fontsize=8,
    )
    stamp(fig, label)
    return fig


def heatmap_annotations(frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(means, labels) over (masking ratio x masking unit): the seed mean, and 'mean' over 'min-max' text.

    NaN seeds propagate (as in metrics.json's summary): a failed probe shows as a blank cell.
    """
    groups = frame.groupby(["mask_ratio", "mask_unit"])[column]
    means = groups.agg(lambda v: v.mean(skipna=False)).unstack("mask_unit").sort_index()
    low = groups.min().unstack("mask_unit").reindex_like(means)
    high = groups.max().unstack("mask_unit").reindex_like(means)
    text = means.copy().astype(object)
    for r in means.index:
        for c in means.columns:
            m = means.loc[r, c]
            text.loc[r, c] = "" if not np.isfinite(m) else f"{m:.2f}\n{low.loc[r, c]:.2f}\u2013{high.loc[r, c]:.2f}"
    return means, text


def plot_root_heatmap(frame: pd.DataFrame, label: str) -> plt.Figure:
    """Seed-mean root-level R^2 over (masking ratio x masking unit); each cell also gives the min-max over seeds.

    The colour scale is the fixed R^2 range (0 to 1), so colour differences are effect sizes.
    """
    table, text = heatmap_annotations(frame, "r2_level0")
    fig, ax = plt.subplots(figsize=(max(1.4 * table.shape[1] + 2.4, 4.8), 0.6 * table.shape[0] + 1.8))
    sns.heatmap(
        table, annot=text.to_numpy(), fmt="", annot_kws={"fontsize": 7}, cmap="viridis", vmin=0.0, vmax=1.0, ax=ax,
        cbar_kws={"label": "R$^2$ (mean over seeds; scale fixed 0 to 1)"},
    )
    ax.set_xlabel("masking unit (px)")
    ax.set_ylabel("masking ratio")
    ax.set_title("level 0 (root) latent: linear probe R$^2$\ncell: mean over seeds, below it min\u2013max over seeds",
                 fontsize=8)
    stamp(fig, label)
    return fig


def plot_region_r2(frame: pd.DataFrame, label: str) -> plt.Figure:
    """Region-probe R^2 (mean over nodes) per level vs ratio, one panel per masking unit."""
    if not level_numbers(frame, "r2region"):
        raise ArtifactError("metrics table has no r2region_level* columns; rerun the aggregate step")
    mask_units = sorted(frame["mask_unit"].unique())
    fig, axes = _panel_grid(1, len(mask_units))
    _line_panels(axes[0], long_by_level(frame, "r2region"), mask_units, "region probe R$^2$")
    fig.suptitle("Per-node latents from their own region's features\n"
                 "line: mean over seeds, band: min-max over seeds; R$^2$ axis fixed 0 to 1", fontsize=8)
    stamp(fig, label)
    return fig


def plot_loss_curves(curves: pd.DataFrame, label: str) -> plt.Figure:
    """Training loss per epoch, one line per ratio (seed band), one panel per masking unit."""
    curves = curves.assign(ratio=curves["mask_ratio"].map(lambda r: f"{r:g}"))
    order = [f"{r:g}" for r in sorted(curves["mask_ratio"].unique())]
    mask_units = sorted(curves["mask_unit"].unique())
    fig, axes = _panel_grid(1, len(mask_units))
    for i, (ax, patch) in enumerate(zip(axes[0], mask_units)):
        sns.lineplot(
            data=curves[curves["mask_unit"] == patch], x="epoch", y="loss", hue="ratio",
            hue_order=order, errorbar=SPREAD, ax=ax, legend=i == len(mask_units) - 1,
            palette="flare",
        )
        ax.set_title(f"masking unit {patch} px")
        ax.set_ylabel("MSE on hidden pixels" if i == 0 else "")
        ax.grid(alpha=0.3)
    top = float(curves["loss"].max())
    for ax in axes[0]:  # from 0: the drop is read against the loss itself
        ax.set_ylim(0.0, top * 1.05 if np.isfinite(top) and top > 0 else 1.0)
    sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="mask ratio")
    fig.suptitle("Training loss\nline: mean over seeds, band: min-max over seeds; y axis from 0", fontsize=8)
    stamp(fig, label)
    return fig


def level_axis_ticks(n_levels: int) -> tuple[list[int], list[str]]:
    """Ticks of a latent-level axis: 0 (root) .. D (leaves)."""
    deepest = n_levels - 1
    return list(range(n_levels)), [f"{lv} (root)" if lv == 0 else f"{lv} (leaves)" if lv == deepest else str(lv)
                                   for lv in range(n_levels)]


def plot_theorem_levels(frame: pd.DataFrame, prediction: dict[str, Any], n_levels: int, label: str) -> plt.Figure:
    """The theorem's test per (ratio, unit) cell (docs/theorem.md).

    Left: the prediction, the expected share of each level's latents in the shared set ``c``
    (data/prediction.json; on the quadtree, where the theorem's premises fail, the share of
    each level's nodes that reach both parts), one line per level and unit, against the
    masking ratio. Right: what the encoder of the visible part holds of ``c`` beyond even loss
    (``c_excess``, metrics.csv; claim C5), mean over seeds with its min-max band, and 0.
    """
    from mae_hlvm.synthetic.predict import cell_key

    fig, (ax, ax_r) = plt.subplots(1, 2, figsize=(9.6, 4.0))
    units = sorted(frame["mask_unit"].unique())
    palette = sns.color_palette("colorblind", n_colors=max(n_levels, len(units)))
    styles = ["-", "--", ":", "-."]
    cells = prediction.get("cells", {})
    for (i, unit), style in zip(enumerate(units), styles):
        ratios = sorted(frame.loc[frame.mask_unit == unit, "mask_ratio"].unique())
        for lv in range(n_levels):
            shares = [cells.get(cell_key(r, unit), {}).get("c_share_per_level", [np.nan] * n_levels)[lv] for r in ratios]
            ax.plot(ratios, shares, style, marker="o", color=palette[lv], label=f"{level_label(f'level {lv}', n_levels - 1)}"
                    + f", unit {unit}")
        part = frame[frame.mask_unit == unit].groupby("mask_ratio")["c_excess"].agg(["mean", "min", "max"])
        ax_r.fill_between(part.index, part["min"], part["max"], color=palette[i], alpha=0.2, linewidth=0)
        ax_r.plot(part.index, part["mean"], style, marker="o", color=palette[i], label=f"unit {unit} px")
    ax_r.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("masking ratio")
    ax.set_ylabel("predicted share of the level's latents in c")
    ax.legend(frameon=False, fontsize=6, ncol=2)
    ax_r.set_xlabel("masking ratio")
    ax_r.set_ylabel("c_excess (R$^2$ of c beyond even loss)")
    low = min(-0.1, float(np.nanmin(frame["c_excess"])) - 0.05) if frame["c_excess"].notna().any() else -0.1
    high = max(0.1, float(np.nanmax(frame["c_excess"])) + 0.05) if frame["c_excess"].notna().any() else 0.1
    ax_r.set_ylim(low, high)
    ax_r.legend(frameon=False, fontsize=7)
    for a in (ax, ax_r):
        a.grid(alpha=0.3)
    premises = "premises met" if prediction.get("generator") == "copytree" else "premises NOT met: no theorem behind it"
    fig.suptitle("The theorem on our generator (" + premises + "): which latents are shared, and does the encoder "
                 "of the visible part hold them?\nleft: prediction; right: measured, mean over seeds, band: min-max over "
                 "seeds", fontsize=8)
    stamp(fig, label)
    return fig


# --------------------------------------------------------------------------- step


def figure_style() -> contextlib.AbstractContextManager:
    """The rc settings and seaborn style every figure is drawn under."""
    stack = contextlib.ExitStack()
    stack.enter_context(plt.rc_context(RC))
    stack.enter_context(sns.axes_style("ticks"))
    return stack


def figure_builders(
    params: Params, frame: pd.DataFrame, label: str, baselines: pd.DataFrame | None = None,
    prediction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """{figure name: a function drawing it and returning the Figure}, for every name in :data:`FIGURE_NAMES`."""
    return {
        "r2_vs_ratio": lambda: plot_r2_vs_ratio(frame, label, baselines),
        "root_r2_heatmap": lambda: plot_root_heatmap(frame, label),
        "reconstructions": lambda: plot_reconstructions(params, label),
        "loss_curves": lambda: plot_loss_curves(read_loss_curves(params), label),
        "region_r2": lambda: plot_region_r2(frame, label),
        "spatial_r2": lambda: plot_spatial_r2(frame, label, baselines),
        "theorem_levels": lambda: plot_theorem_levels(frame, prediction or {}, params.data.depth + 1, label),
    }


def render_all(
    params: Params, frame: pd.DataFrame, out_dir: str | Path, baselines: pd.DataFrame | None = None,
    prediction: dict[str, Any] | None = None,
) -> list[Path]:
    """Draw and save every figure; returns the written paths (PNG and PDF of each)."""
    builders = figure_builders(params, frame, provenance_label(params), baselines, prediction)
    written: list[Path] = []
    for name in FIGURE_NAMES:
        written += save_figure(builders[name](), out_dir, name)
    return written


def run(params: Params, args: Any) -> None:
    """Render every figure from ``args.metrics``, ``args.baselines`` and the grid's cell files into ``args.out_dir``."""
    frame = load_metrics(args.metrics)
    check_grid(frame, params, args.metrics)
    baselines = load_baselines(args.baselines)
    check_baseline_seeds(baselines, params, args.baselines)
    with figure_style():
        written = render_all(params, frame, args.out_dir, baselines, read_json(args.prediction))
    log.info("wrote %d figure files under %s", len(written), args.out_dir)
    # beside the figures folder unless named (results/loss_curves.csv)
    loss_table = getattr(args, "loss_curves", None) or Path(args.out_dir).parent / Path(paths.LOSS_CURVES_CSV).name
    write_loss_table(read_loss_curves(params), loss_table)


def write_loss_table(curves: pd.DataFrame, path: str | Path) -> None:
    """Every cell's loss per epoch, one row each (``cell`` names it), for ``dvc plots``."""
    table = curves.assign(cell=[cell_id(r, p, s) for r, p, s in zip(curves.mask_ratio, curves.mask_unit, curves.seed)])
    cols = ["cell", "mask_ratio", "mask_unit", "seed", "epoch", "loss"]
    write_bytes(path, table[cols].to_csv(index=False, float_format="%.8g", lineterminator="\n").encode())
