"""The figures of the synthetic study, each as PNG and PDF with byte-identical reruns.

Determinism: the Agg/PDF backends stamp software names and dates into the files; every
one of those fields is blanked through ``savefig(metadata=...)``, SVG ids get a fixed
salt, and ``SOURCE_DATE_EPOCH`` is pinned while saving so no backend falls back to the
clock. Seed spread is drawn as the min-max band over seeds (``errorbar=("pi", 100)``),
which, unlike a bootstrap CI, involves no random numbers.

Every figure carries the params digest and the code revision in its bottom-right corner.
"""

from __future__ import annotations

import contextlib
import io as _stdio
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import paths  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .aggregate import grid_cells, load_baselines, load_metrics  # noqa: E402
from .config import Params, cell_id, digest, section_dict  # noqa: E402
from .io import ArtifactError, check_recorded, load_npz, read_json, write_bytes  # noqa: E402
from .provenance import code_revision  # noqa: E402

log = logging.getLogger("mae_hlvm.figures")

FORMATS = ("png", "pdf")
METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}
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
MAX_RECON_IMAGES = 4
FIGURE_NAMES = ("r2_vs_ratio", "root_r2_heatmap", "reconstructions", "loss_curves", "region_r2", "spatial_r2", "theorem_levels")


# --------------------------------------------------------------------------- saving


@contextlib.contextmanager
def _fixed_source_date() -> Iterator[None]:
    """Pin SOURCE_DATE_EPOCH while saving so no backend reads the clock."""
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def figure_bytes(fig: plt.Figure, fmt: str) -> bytes:
    """The figure rendered to ``fmt`` ('png' or 'pdf') with no time or software stamps."""
    buf = _stdio.BytesIO()
    with _fixed_source_date():
        fig.savefig(buf, format=fmt, metadata=METADATA[fmt])
    return buf.getvalue()


def save_figure(fig: plt.Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``<out_dir>/<name>.png`` and ``.pdf`` atomically, close the figure, return the paths."""
    written = []
    try:
        for fmt in FORMATS:
            path = Path(out_dir) / f"{name}.{fmt}"
            write_bytes(path, figure_bytes(fig, fmt))
            written.append(path)
    finally:
        plt.close(fig)
    return written


def stamp(fig: plt.Figure, label: str) -> None:
    """Small provenance text in the bottom-right corner."""
    fig.text(0.995, 0.004, label, ha="right", va="bottom", fontsize=6, color="0.4")


def provenance_label(params: Params) -> str:
    sections = section_dict(params, ["data", "model", "train", "probe", "grid"])
    return f"params {digest(sections)} | code {code_revision()}"


# --------------------------------------------------------------------------- tables


def level_numbers(frame: pd.DataFrame, prefix: str) -> list[int]:
    """Levels ``i`` for which a column ``<prefix>_level<i>`` exists, ascending."""
    pattern = re.compile(rf"^{re.escape(prefix)}_level(\d+)$")
    return sorted(int(m.group(1)) for c in frame.columns if (m := pattern.match(c)))


def long_by_level(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Columns ``<prefix>_level*`` melted to rows: mask_ratio, patch_size, seed, level, value."""
    levels = level_numbers(frame, prefix)
    cols = [f"{prefix}_level{i}" for i in levels]
    long = frame.melt(id_vars=["mask_ratio", "patch_size", "seed"], value_vars=cols, var_name="column")
    long["level"] = long["column"].str.removeprefix(f"{prefix}_").str.replace("level", "level ")
    return long.drop(columns="column")


def check_grid(frame: pd.DataFrame, params: Params, path: str | Path) -> None:
    """The metrics table must hold exactly the current grid's cells."""
    have = {(float(r), int(p), int(s)) for r, p, s in frame[["mask_ratio", "patch_size", "seed"]].itertuples(index=False)}
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
    """Every grid cell's train_log.csv stacked: epoch, loss, lr, mask_ratio, patch_size, seed."""
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
        parts.append(log_frame.assign(mask_ratio=ratio, patch_size=patch, seed=seed))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- figures


def _panel_grid(n_rows: int, n_cols: int, width: float = 3.2, height: float = 2.7) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False, sharex=True, sharey="row"
    )
    return fig, axes


def level_palette(levels: list[str]) -> dict[str, Any]:
    """A fixed colour per level name ('level 2' is the same colour in every figure)."""
    colors = sns.color_palette("tab10", 10)
    return {name: colors[int(name.split()[-1]) % 10] for name in levels}


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
    ax_row: np.ndarray, long: pd.DataFrame, patch_sizes: list[int], ylabel: str,
    baselines: dict[str, dict[str, float]] | None = None,
) -> None:
    """One seaborn lineplot per patch size along ``ax_row``, hue = level; legend on the last panel only.

    ``baselines`` ({kind: {level name: value}}, see :func:`baseline_levels`) adds a horizontal
    line per level in every panel, styled per kind, with legend entries.
    """
    order = sorted(long["level"].unique(), key=lambda name: int(name.split()[-1]))
    palette = level_palette(order)
    for i, (ax, patch) in enumerate(zip(ax_row, patch_sizes)):
        part = long[long["patch_size"] == patch]
        sns.lineplot(
            data=part, x="mask_ratio", y="value", hue="level", hue_order=order, palette=level_palette(order),
            errorbar=SPREAD, marker="o", ax=ax, legend=i == len(patch_sizes) - 1,
        )
        if baselines is not None:
            _draw_baselines(ax, baselines, palette)
            if i == len(patch_sizes) - 1:
                _baseline_legend(ax, [k for k, v in baselines.items() if any(np.isfinite(x) for x in v.values())])
        ax.set_title(f"masking unit {patch} px")
        ax.set_xlabel("masking ratio")
        ax.set_ylabel(ylabel if i == 0 else "")
        ax.grid(alpha=0.3)
    legend = ax_row[-1].get_legend()
    if legend is not None:
        sns.move_legend(ax_row[-1], "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def plot_r2_vs_ratio(frame: pd.DataFrame, label: str, baselines: pd.DataFrame | None = None) -> plt.Figure:
    """Row 1: linear-probe R^2 per level vs ratio; row 2: nonlinear; one column per patch size.

    ``baselines`` (baselines.csv rows) adds each level's random-init (dashed) and raw-pixel
    (dotted) R^2, mean over seeds, in the level's colour.
    """
    patch_sizes = sorted(frame["patch_size"].unique())
    fig, axes = _panel_grid(2, len(patch_sizes))
    for row, prefix, ylabel in ((0, "r2", "linear probe R$^2$"), (1, "r2nl", "nonlinear probe R$^2$")):
        lines = None if baselines is None else baseline_levels(baselines, prefix)
        _line_panels(axes[row], long_by_level(frame, prefix), patch_sizes, ylabel, lines)
    title = "Which latent level does the encoder recover? (band: min-max over seeds)"
    if baselines is not None:
        title += "\ndashed: random-init encoder, dotted: raw pixels (same probes, mean over seeds)"
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    stamp(fig, label)
    return fig


def plot_spatial_r2(frame: pd.DataFrame, label: str, baselines: pd.DataFrame | None = None) -> plt.Figure:
    """Row 1: spatial-probe R^2 of each whole level; row 2: of each level's innovation (l >= 1).

    One column per masking unit; floors (random-init encoder, raw pixels) and the ceiling
    (a linear probe on the true leaf latents) as horizontal lines in the level's colour.
    """
    if not level_numbers(frame, "r2sp"):
        raise ArtifactError("metrics table has no r2sp_level* columns; rerun the aggregate step")
    patch_sizes = sorted(frame["patch_size"].unique())
    fig, axes = _panel_grid(2, len(patch_sizes))
    for row, prefix, ylabel in ((0, "r2sp", "R$^2$ of the level"), (1, "r2in", "R$^2$ of its innovation")):
        lines = None if baselines is None else baseline_levels(baselines, prefix)
        _line_panels(axes[row], long_by_level(frame, prefix), patch_sizes, ylabel, lines)
    fig.suptitle(
        "Spatial probe (4 x 4 region means of the tokens):\neach level (top) and what it adds beyond its parent (bottom)\n"
        "band: min-max over seeds; dashed: random-init encoder,\ndotted: raw pixels, dash-dot: true leaf latents (ceiling)",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    stamp(fig, label)
    return fig


def plot_root_heatmap(frame: pd.DataFrame, label: str) -> plt.Figure:
    """Seed-mean root-level R^2 over (masking ratio x patch size), annotated."""
    # NaN seeds propagate (as in metrics.json's summary): a failed probe shows as a blank cell.
    means = frame.groupby(["mask_ratio", "patch_size"])["r2_level0"].agg(lambda v: v.mean(skipna=False))
    table = means.unstack("patch_size").sort_index()
    fig, ax = plt.subplots(figsize=(1.4 * table.shape[1] + 2.4, 0.5 * table.shape[0] + 1.8))
    sns.heatmap(table, annot=True, fmt=".2f", cmap="viridis", ax=ax, cbar_kws={"label": "R$^2$ (mean over seeds)"})
    ax.set_xlabel("masking unit (px)")
    ax.set_ylabel("masking ratio")
    ax.set_title("root latent (level 0): linear probe R$^2$")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    stamp(fig, label)
    return fig


def plot_region_r2(frame: pd.DataFrame, label: str) -> plt.Figure:
    """Region-probe R^2 (mean over nodes) per level vs ratio, one panel per patch size."""
    if not level_numbers(frame, "r2region"):
        raise ArtifactError("metrics table has no r2region_level* columns; rerun the aggregate step")
    patch_sizes = sorted(frame["patch_size"].unique())
    fig, axes = _panel_grid(1, len(patch_sizes))
    _line_panels(axes[0], long_by_level(frame, "r2region"), patch_sizes, "region probe R$^2$")
    fig.suptitle("Per-node latents from their own region's features (band: min-max over seeds)")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    stamp(fig, label)
    return fig


def plot_loss_curves(curves: pd.DataFrame, label: str) -> plt.Figure:
    """Training loss per epoch, one line per ratio (seed band), one panel per patch size."""
    curves = curves.assign(ratio=curves["mask_ratio"].map(lambda r: f"{r:g}"))
    order = [f"{r:g}" for r in sorted(curves["mask_ratio"].unique())]
    patch_sizes = sorted(curves["patch_size"].unique())
    fig, axes = _panel_grid(1, len(patch_sizes))
    for i, (ax, patch) in enumerate(zip(axes[0], patch_sizes)):
        sns.lineplot(
            data=curves[curves["patch_size"] == patch], x="epoch", y="loss", hue="ratio",
            hue_order=order, errorbar=SPREAD, ax=ax, legend=i == len(patch_sizes) - 1,
            palette="flare",
        )
        ax.set_title(f"masking unit {patch} px")
        ax.set_ylabel("MSE on hidden pixels" if i == 0 else "")
        ax.grid(alpha=0.3)
    sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="mask ratio")
    fig.suptitle("Training loss (band: min-max over seeds)")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    stamp(fig, label)
    return fig


# --------------------------------------------------------------------------- reconstructions


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
    """One patch size's panel: row 0 originals, then one row per ratio.

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
    """Same test images at every ratio, one panel per patch size, first seed only."""
    seed = params.grid.seeds[0]
    ratios = sorted(params.grid.mask_ratios)
    patch_sizes = sorted(params.grid.patch_sizes)
    n_show = min(params.probe.n_recon_images, MAX_RECON_IMAGES)
    mosaics, sizes = [], []
    for patch in patch_sizes:
        per_ratio = [read_recon(paths.recon_npz(cell_id(r, patch, seed)), n_show) for r in ratios]
        mosaics.append(recon_mosaic(per_ratio))
        sizes.append(per_ratio[0]["original"].shape[-1])
    panel_width = 3.6
    panel_height = panel_width * mosaics[0].shape[0] / mosaics[0].shape[1]
    fig, axes = plt.subplots(
        1, len(patch_sizes), figsize=(panel_width * len(patch_sizes) + 0.8, panel_height + 1.0), squeeze=False
    )
    for ax, patch, mosaic, size in zip(axes[0], patch_sizes, mosaics, sizes):
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
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    stamp(fig, label)
    return fig


def plot_theorem_levels(frame: pd.DataFrame, prediction: dict[str, Any], n_levels: int, label: str) -> plt.Figure:
    """The theorem's test, per (ratio, unit) cell: predicted separator level vs the level the encoder holds.

    Left: x = the predicted mean level of the separating set (data/prediction.json), y =
    the measured level (:func:`mae_hlvm.predict.measured_level`), mean over seeds with a
    min-max bar, one marker per masking unit, each point labelled with its ratio. Right:
    both against the masking ratio (predicted solid, measured dashed, own axes).
    """
    from .predict import measured_level, predicted_mean_levels

    cells = frame.assign(measured=measured_level(frame, n_levels))
    agg = cells.groupby(["patch_size", "mask_ratio"])["measured"].agg(["mean", "min", "max"]).reset_index()
    agg["predicted"] = predicted_mean_levels(prediction, zip(agg.mask_ratio, agg.patch_size))
    fig, (ax, ax_r) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    palette = sns.color_palette("colorblind", n_colors=agg["patch_size"].nunique())
    markers = "osD^v<>"
    ax_p = ax_r.twinx()
    for (patch, part), colour, marker in zip(agg.groupby("patch_size"), palette, markers):
        err = np.vstack([part["mean"] - part["min"], part["max"] - part["mean"]])
        ax.errorbar(part["predicted"], part["mean"], yerr=err, fmt=marker, color=colour, capsize=2, label=f"unit {patch} px")
        for _, r in part.iterrows():
            ax.annotate(f"{r.mask_ratio:g}", (r.predicted, r["mean"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax_r.plot(part["mask_ratio"], part["mean"], "--", marker=marker, color=colour, label=f"measured, unit {patch}")
        ax_p.plot(part["mask_ratio"], part["predicted"], "-", marker=marker, color=colour, alpha=0.5, label=f"predicted, unit {patch}")
    ax.set_xlabel("predicted level of the separating set (0 = root)")
    ax.set_ylabel("measured level held by the encoder")
    ax.legend(frameon=False, fontsize=7)
    ax_r.set_xlabel("masking ratio")
    ax_r.set_ylabel("measured level (dashed)")
    ax_p.set_ylabel("predicted level (solid)")
    ax_p.invert_yaxis()
    ax_r.invert_yaxis()
    fig.suptitle("Theorem 1 in our generator: does the encoder hold the predicted level? (bars: min-max over seeds;\n"
                 "measured level = R$^2$-weighted mean level of the root and each level's innovation, spatial probe)")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    stamp(fig, label)
    return fig


# --------------------------------------------------------------------------- step


def render_all(
    params: Params, frame: pd.DataFrame, out_dir: str | Path, baselines: pd.DataFrame | None = None,
    prediction: dict[str, Any] | None = None,
) -> list[Path]:
    """Draw and save every figure; returns the written paths (PNG and PDF of each)."""
    label = provenance_label(params)
    builders = {
        "r2_vs_ratio": lambda: plot_r2_vs_ratio(frame, label, baselines),
        "root_r2_heatmap": lambda: plot_root_heatmap(frame, label),
        "reconstructions": lambda: plot_reconstructions(params, label),
        "loss_curves": lambda: plot_loss_curves(read_loss_curves(params), label),
        "region_r2": lambda: plot_region_r2(frame, label),
        "spatial_r2": lambda: plot_spatial_r2(frame, label, baselines),
        "theorem_levels": lambda: plot_theorem_levels(frame, prediction or {}, params.data.depth + 1, label),
    }
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
    with plt.rc_context(RC), sns.axes_style("ticks"):
        written = render_all(params, frame, args.out_dir, baselines, read_json(args.prediction))
    log.info("wrote %d figure files under %s", len(written), args.out_dir)
    # beside the figures folder unless named (results/loss_curves.csv)
    loss_table = getattr(args, "loss_curves", None) or Path(args.out_dir).parent / Path(paths.LOSS_CURVES_CSV).name
    write_loss_table(read_loss_curves(params), loss_table)


def write_loss_table(curves: pd.DataFrame, path: str | Path) -> None:
    """Every cell's loss per epoch, one row each (``cell`` names it), for ``dvc plots``."""
    table = curves.assign(cell=[cell_id(r, p, s) for r, p, s in zip(curves.mask_ratio, curves.patch_size, curves.seed)])
    cols = ["cell", "mask_ratio", "patch_size", "seed", "epoch", "loss"]
    write_bytes(path, table[cols].to_csv(index=False, float_format="%.8g", lineterminator="\n").encode())
