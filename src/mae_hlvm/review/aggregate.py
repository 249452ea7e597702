"""Collect every grid cell's probe output into one table: ``results/metrics.{csv,json}``.

Exactly the cells of the current ``params.grid`` are read, by their paths, never by
globbing ``results/cells``: a cell removed from the grid leaves its old file behind, and
that file must not leak into the table. A missing or malformed cell file stops the step
with one :class:`~mae_hlvm.core.io.ArtifactError` naming it.

The seeds' baselines (``results/baselines/s<seed>.json``: a random-init encoder and raw
pixels under the same probes) go to ``results/baselines.csv``, one row per (baseline,
seed), and their means over seeds to ``metrics.json["baselines"]``.

Every cell's learning gate (:mod:`mae_hlvm.core.gate`, the probe JSON's ``gate`` object) goes
into the table as ``mean_pred_mse``, ``linear_mse``, ``recon_rel``, ``gain_share`` (NaN
where the fallback rule judged the cell), ``last_quarter_drop`` (a diagnostic) and
``gate_pass`` (learned, as 0/1), and into ``metrics.json`` per cell, with the count of passing cells under ``gate``.

Wall-clock timings (``logs/timings/...``) vary run to run, so they go to an untracked
``results/timings.csv`` and are skipped when absent.
"""

from __future__ import annotations

import io as _stdio
import logging
import math
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mae_hlvm.core import paths, results
from mae_hlvm.core.cells import cell_id
from mae_hlvm.core.config import Params
from mae_hlvm.core.io import ArtifactError, check_recorded, read_json, write_json, write_text

log = logging.getLogger("mae_hlvm.review.aggregate")

FLOAT_FORMAT = "%.6f"
JSON_DIGITS = 6  # the CSV's precision, so the two files agree
ID_COLUMNS, INT_COLUMNS, BASELINE_KINDS = results.ID_COLUMNS, results.INT_COLUMNS, results.BASELINE_KINDS
GATE_COLUMNS = ("mean_pred_mse", "linear_mse", "recon_rel", "gain_share", "last_quarter_drop", "gate_pass")


# --------------------------------------------------------------------------- grid


def grid_cells(params: Params) -> list[tuple[float, int, int]]:
    """Every (mask_ratio, mask_unit, seed) of the grid, sorted by (mask_unit, mask_ratio, seed)."""
    g = params.grid
    cells = [(r, p, s) for p in g.mask_units for r in g.mask_ratios for s in g.seeds]
    return sorted(cells, key=lambda c: (c[1], c[0], c[2]))


def n_levels(params: Params) -> int:
    """Latent levels of the generator: the root plus ``data.depth`` levels below it."""
    return params.data.depth + 1


# --------------------------------------------------------------------------- cell files


def read_cells(params: Params) -> list[results.CellResult]:
    """The probe JSON of every cell of the current grid, in (mask_unit, mask_ratio, seed) order.

    Reads ``paths.probe_json(cell_id)`` for exactly the grid's cells; raises
    :class:`ArtifactError` naming the first missing, corrupt or mismatching file.
    """
    levels = n_levels(params)
    cells = []
    for ratio, patch, seed in grid_cells(params):
        path = paths.probe_json(cell_id(ratio, patch, seed))
        cells.append(results.read_cell(read_json(path), (ratio, patch, seed), levels, path))
    return cells


# --------------------------------------------------------------------------- the table


def metrics_frame(cells: list[results.CellResult], levels: int, pooling: str) -> pd.DataFrame:
    """(n_cells, n_columns) table (:data:`mae_hlvm.core.results.CELL_COLUMNS`), rows sorted by (mask_unit, mask_ratio, seed)."""
    columns = results.cell_columns(levels, pooling)
    frame = pd.DataFrame([results.cell_row(c, pooling) for c in cells], columns=columns)
    for col in INT_COLUMNS:
        frame[col] = frame[col].astype("int64")
    frame = frame.sort_values(["mask_unit", "mask_ratio", "seed"], kind="stable")
    return frame.reset_index(drop=True)


def frame_to_csv(frame: pd.DataFrame) -> str:
    """Stable CSV text: fixed float format, '\\n' line ends, NaN spelt 'nan'."""
    buf = _stdio.StringIO()
    frame.to_csv(buf, index=False, float_format=FLOAT_FORMAT, na_rep="nan", lineterminator="\n")
    return buf.getvalue()


def _read_table(path: Path, what: str, hint: str) -> pd.DataFrame:
    """A CSV this step wrote (NaN spelt 'nan'); missing or unparsable is one ArtifactError."""
    if not path.exists():
        raise ArtifactError(f"{path}: missing ({hint})")
    check_recorded(path)
    try:
        return pd.read_csv(path, na_values=["nan"], keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: corrupt {what} table ({err.__class__.__name__})") from None


def load_metrics(path: str | Path = paths.METRICS_CSV) -> pd.DataFrame:
    """Read ``metrics.csv`` back: ids typed (float ratio, int patch/seed), metrics float."""
    path = Path(path)
    frame = _read_table(path, "metrics", "run the aggregate step first")
    needed = [*ID_COLUMNS, "r2_level0", "probe_acc", "recon_mse", *GATE_COLUMNS]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: lacks columns {missing}; rerun the aggregate step")
    if frame.empty:
        raise ArtifactError(f"{path}: has no rows")
    try:
        frame["mask_ratio"] = frame["mask_ratio"].astype(float)
        for col in INT_COLUMNS:
            if col in frame.columns:
                frame[col] = frame[col].astype("int64")
    except (ValueError, TypeError):
        raise ArtifactError(f"{path}: non-numeric cell identifiers") from None
    return frame


def has_shape_bias(frame: pd.DataFrame) -> bool:
    """Whether a table (metrics.csv or baselines.csv) holds any shape bias: the data had a
    cue-conflict set (generator v4 with ``data.texture_separation`` > 0)."""
    return "shape_bias" in frame and bool(frame["shape_bias"].notna().any())


# --------------------------------------------------------------------------- metrics.json


def _json_number(x: float) -> float | None:
    """Rounded to the CSV's precision; NaN becomes null (DVC cannot read NaN)."""
    x = float(x)
    return None if not math.isfinite(x) else round(x, JSON_DIGITS)


def ratio_key(mask_ratio: float) -> str:
    return f"r{float(mask_ratio)!r}"


def patch_summary(frame: pd.DataFrame) -> dict[str, Any]:
    """Seed-mean root R^2 per ratio for one masking unit and the ratio where it peaks.

    A NaN seed makes its ratio's mean NaN (a failed probe must show, not be averaged
    away); NaN means never peak. Ties go to the smallest ratio; all-NaN gives a null peak.
    """
    means = frame.groupby("mask_ratio", sort=True)["r2_level0"].agg(lambda v: v.mean(skipna=False))
    values = means.to_numpy(dtype=float)
    peak = None
    if np.isfinite(values).any():
        best = int(np.nanargmax(np.where(np.isfinite(values), values, -np.inf)))
        peak = float(means.index[best])
    return {
        "r2_level0_mean": {ratio_key(r): _json_number(v) for r, v in means.items()},
        "peak_mask_ratio": peak,
        "peak_r2_level0_mean": None if peak is None else _json_number(means.loc[peak]),
    }


def metrics_json(frame: pd.DataFrame, levels: int) -> dict[str, Any]:
    """``{cell_id: {every json column of results.CELL_COLUMNS}, "gate": {"n_cells", "n_pass"},
    "summary": {"u<size>": ...}}``; integer columns (the gate flag) as ints, NaN as null."""
    columns = [c for c in results.CELL_COLUMNS if c.json]
    keys = [(name, c.integer) for c in columns for name in c.names(levels, "mean")]
    out: dict[str, Any] = {}
    for row in frame.itertuples(index=False):
        values = row._asdict()
        name = cell_id(values["mask_ratio"], values["mask_unit"], values["seed"])
        out[name] = {k: int(values[k]) if integer else _json_number(values[k]) for k, integer in keys}
    out["gate"] = {"n_cells": len(frame), "n_pass": int(frame["gate_pass"].sum())}
    out["summary"] = {
        f"u{int(p)}": patch_summary(part) for p, part in frame.groupby("mask_unit", sort=True)
    }
    return out


# --------------------------------------------------------------------------- baselines

def read_baselines(params: Params) -> list[results.BaselineResult]:
    """The baseline JSON of every seed of ``params.grid.seeds`` (by path, never a glob)."""
    levels = n_levels(params)
    return [
        results.read_baseline(read_json(paths.baseline_json(s)), s, levels, paths.baseline_json(s))
        for s in sorted(params.grid.seeds)
    ]


def baselines_frame(objs: list[results.BaselineResult], levels: int, pooling: str) -> pd.DataFrame:
    """(3 * n_seeds, columns) table sorted by (baseline, seed); pixels have no region probe (NaN)."""
    rows = [row for obj in objs for row in results.baseline_rows(obj, pooling)]
    frame = pd.DataFrame(rows, columns=results.baseline_columns(levels))
    frame["seed"] = frame["seed"].astype("int64")
    order = {k: i for i, k in enumerate(BASELINE_KINDS)}
    frame = frame.sort_values(["baseline", "seed"], key=lambda c: c.map(order) if c.name == "baseline" else c, kind="stable")
    return frame.reset_index(drop=True)


def baselines_json(frame: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """{baseline: {column: mean over seeds}}; NaN (a failed probe, or no region probe) is null."""
    values = [c for c in frame.columns if c not in ("baseline", "seed")]
    out = {}
    for kind in BASELINE_KINDS:
        part = frame[frame["baseline"] == kind]
        out[kind] = {c: _json_number(part[c].mean(skipna=False)) for c in values}
    out["n_seeds"] = int(frame["seed"].nunique())
    return out


def load_baselines(path: str | Path = paths.BASELINES_CSV) -> pd.DataFrame:
    """Read ``baselines.csv`` back; a missing, corrupt or incomplete file is one ArtifactError."""
    path = Path(path)
    frame = _read_table(path, "baselines", "run the baseline and aggregate steps first")
    if not {"baseline", "seed", "r2_level0", "probe_acc"} <= set(frame.columns):
        raise ArtifactError(f"{path}: lacks the columns baseline, seed, r2_level0, probe_acc; rerun the aggregate step")
    if not set(BASELINE_KINDS) <= set(frame["baseline"]):
        raise ArtifactError(f"{path}: needs rows for every kind of {BASELINE_KINDS}; rerun the aggregate step")
    return frame


# --------------------------------------------------------------------------- timings


def _flat_numbers(obj: dict, prefix: str) -> dict[str, float]:
    """Top-level numeric entries of a timing record, prefixed by the step name."""
    return {
        f"{prefix}_{k}": float(v)
        for k, v in sorted(obj.items())
        if isinstance(v, Real) and not isinstance(v, bool)
    }


def read_timings(params: Params) -> pd.DataFrame:
    """One row per grid cell with any timing record; columns cell_id, ids, train_*, probe_*.

    Timings are diagnostics: an absent file is skipped, an unreadable one is skipped
    with a warning. Empty frame when there are none.
    """
    rows = []
    for ratio, patch, seed in grid_cells(params):
        name = cell_id(ratio, patch, seed)
        row: dict[str, Any] = {}
        for step in ("train", "probe"):
            path = Path(paths.timing(step, name))
            if not path.exists():
                continue
            try:
                record = read_json(path)
            except ArtifactError as err:
                log.warning("skipping timing: %s", err)
                continue
            if isinstance(record, dict):
                row.update(_flat_numbers(record, step))
        if row:
            rows.append({"cell_id": name, "mask_ratio": ratio, "mask_unit": patch, "seed": seed, **row})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    ids = ["cell_id", *ID_COLUMNS]
    return frame[ids + sorted(c for c in frame.columns if c not in ids)]


# --------------------------------------------------------------------------- step


def read_oracles(params: Params) -> dict[str, dict[str, Any]]:
    """The oracle table of every (ratio, unit) cell of the grid (oracles step), by path, keyed ``r0.5_p2``."""
    out = {}
    for unit in params.grid.mask_units:
        for ratio in params.grid.mask_ratios:
            key = cell_id(ratio, unit, None)
            obj = read_json(paths.oracle_json(key))
            if not isinstance(obj, dict) or "encoders" not in obj or "frontier" not in obj:
                raise ArtifactError(f"{paths.oracle_json(key)}: not an oracle table; rerun the oracles step")
            out[key] = obj
    return out


def run(params: Params, args: Any) -> None:
    """Write ``args.out_csv``, ``args.out_json``, ``args.out_baselines``, the oracle table (Markdown)
    and the untracked timings table."""
    from mae_hlvm.synthetic.oracles import render_markdown as oracle_markdown

    levels = n_levels(params)
    frame = metrics_frame(read_cells(params), levels, params.probe.pooling)
    baselines = baselines_frame(read_baselines(params), levels, params.probe.pooling)
    summary = metrics_json(frame, levels)
    summary["baselines"] = baselines_json(baselines)
    write_text(args.out_baselines, frame_to_csv(baselines))
    write_text(args.out_csv, frame_to_csv(frame))
    write_json(args.out_json, summary)
    write_text(getattr(args, "out_oracles", paths.ORACLES_MD), oracle_markdown(read_oracles(params)))
    log.info("aggregated %d cells and %d seeds' baselines into %s, %s and %s",
             len(frame), len(baselines) // len(BASELINE_KINDS), args.out_csv, args.out_json, args.out_baselines)
    timings = read_timings(params)
    if not timings.empty:
        write_text(paths.TIMINGS_CSV, frame_to_csv(timings))
        log.info("timings of %d cells in %s", len(timings), paths.TIMINGS_CSV)
