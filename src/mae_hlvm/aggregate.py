"""Collect every grid cell's probe output into one table: ``results/metrics.{csv,json}``.

Exactly the cells of the current ``params.grid`` are read, by their paths, never by
globbing ``results/cells``: a cell removed from the grid leaves its old file behind, and
that file must not leak into the table. A missing or malformed cell file stops the step
with one :class:`~mae_hlvm.io.ArtifactError` naming it.

The seeds' baselines (``results/baselines/s<seed>.json``: a random-init encoder and raw
pixels under the same probes) go to ``results/baselines.csv``, one row per (baseline,
seed), and their means over seeds to ``metrics.json["baselines"]``.

Every cell's learning gate (:mod:`mae_hlvm.gate`, the probe JSON's ``gate`` object) goes
into the table as ``mean_pred_mse``, ``linear_mse``, ``recon_rel``, ``gain_share`` (NaN
where the fallback rule judged the cell), ``plateau`` and ``gate_pass`` (the flags as
0/1), and into ``metrics.json`` per cell, with the count of passing cells under ``gate``.

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

from . import paths
from .config import Params, cell_id
from .io import ArtifactError, check_recorded, read_json, write_json, write_text

log = logging.getLogger("mae_hlvm.aggregate")

FLOAT_FORMAT = "%.6f"
JSON_DIGITS = 6  # the CSV's precision, so the two files agree
POOLINGS = ("mean", "cls")
ID_COLUMNS = ("mask_ratio", "patch_size", "seed")
INT_COLUMNS = ("patch_size", "seed", "n_visible", "n_hidden", "plateau", "gate_pass")
GATE_COLUMNS = ("mean_pred_mse", "linear_mse", "recon_rel", "gain_share", "plateau", "gate_pass")


# --------------------------------------------------------------------------- grid


def grid_cells(params: Params) -> list[tuple[float, int, int]]:
    """Every (mask_ratio, patch_size, seed) of the grid, sorted by (patch_size, mask_ratio, seed)."""
    g = params.grid
    cells = [(r, p, s) for p in g.patch_sizes for r in g.mask_ratios for s in g.seeds]
    return sorted(cells, key=lambda c: (c[1], c[0], c[2]))


def n_levels(params: Params) -> int:
    """Latent levels of the generator: the root plus ``data.depth`` levels below it."""
    return params.data.depth + 1


# --------------------------------------------------------------------------- cell files


def _get(obj: Any, keys: tuple[str, ...], path: str) -> Any:
    """``obj[k0][k1]...``; a missing key is an error naming the file and the key path."""
    node = obj
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(keys[: depth + 1])
            raise ArtifactError(f"{path}: lacks key {where!r}; was it made by another version of the probe?")
        node = node[key]
    return node


def _number(value: Any, what: str, path: str, allow_none: bool = False) -> float:
    """A JSON number as float (None -> NaN where allowed); anything else is an error."""
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArtifactError(f"{path}: {what}={value!r} is not a number")
    return float(value)


def _numbers(value: Any, length: int, what: str, path: str, allow_none: bool = False) -> list[float]:
    """A JSON list of exactly ``length`` numbers."""
    if not isinstance(value, list) or len(value) != length:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise ArtifactError(f"{path}: {what} needs {length} values (one per latent level), got {got}")
    return [_number(v, f"{what}[{i}]", path, allow_none) for i, v in enumerate(value)]


def _check_identity(cell: dict, expected: tuple[float, int, int], path: str) -> None:
    """The file must describe the cell its name says (guards against copied or stale files)."""
    ratio, patch, seed = expected
    got = _get(cell, ("cell",), path)
    same = (
        _number(_get(got, ("mask_ratio",), path), "cell.mask_ratio", path) == ratio
        and _get(got, ("patch_size",), path) == patch
        and _get(got, ("seed",), path) == seed
    )
    if not same:
        raise ArtifactError(
            f"{path}: describes cell {got!r}, expected mask_ratio={ratio}, patch_size={patch}, seed={seed}"
        )


def validate_cell(cell: Any, expected: tuple[float, int, int], levels: int, path: str) -> dict:
    """Check one probe JSON against the schema; return it unchanged.

    Lists per pooling must have ``levels`` entries; ``r2_region.levels`` too (entry 0,
    the root, has no region probe and is null).
    """
    if not isinstance(cell, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(cell).__name__}")
    _check_identity(cell, expected, path)
    found = _get(cell, ("n_levels",), path)
    if found != levels:
        raise ArtifactError(
            f"{path}: has n_levels={found}, params.data.depth gives {levels}; rerun the probe step"
        )
    for kind in ("r2_linear", "r2_nonlinear"):
        for pooling in POOLINGS:
            _numbers(_get(cell, (kind, pooling), path), levels, f"{kind}.{pooling}", path, allow_none=True)
    _numbers(_get(cell, ("r2_region", "levels"), path), levels, "r2_region.levels", path, allow_none=True)
    validate_spatial(cell, "", levels, path)
    for pooling in POOLINGS:
        _number(_get(cell, ("probe_acc", pooling), path), f"probe_acc.{pooling}", path, allow_none=True)
        validate_shape_bias(_get(cell, ("shape_bias", pooling), path), f"shape_bias.{pooling}", path)
    _number(_get(cell, ("recon_mse",), path), "recon_mse", path, allow_none=True)
    for key in ("n_visible", "n_hidden"):
        value = _get(cell, (key,), path)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArtifactError(f"{path}: {key}={value!r} is not an integer")
    validate_gate(cell, path)
    return cell


SHAPE_BIAS_KEYS = ("shape_bias", "shape", "texture")


def validate_shape_bias(value: Any, what: str, path: str) -> None:
    """A :func:`mae_hlvm.probe.shape_bias` object, or null (the data have no cue-conflict set)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: {what}={value!r} is neither an object nor null")
    for key in SHAPE_BIAS_KEYS:
        _number(_get(value, (key,), path), f"{what}.{key}", path, allow_none=key == "shape_bias")


def shape_bias_columns(value: dict | None, suffix: str = "") -> dict[str, float]:
    """``shape_bias``, ``cue_shape``, ``cue_texture`` (each + suffix) of a shape-bias object; NaN for null."""
    value = value or {}

    def get(key: str) -> float:
        v = value.get(key)
        return math.nan if v is None else float(v)

    return {f"shape_bias{suffix}": get("shape_bias"), f"cue_shape{suffix}": get("shape"), f"cue_texture{suffix}": get("texture")}


def validate_spatial(obj: dict, where: str, levels: int, path: str) -> None:
    """Check an ``r2_spatial`` object (probe.level_scores) under ``obj[where]`` (or ``obj`` itself for "")."""
    keys = ((where,) if where else ()) + ("r2_spatial",)
    name = ".".join(keys)
    _numbers(_get(obj, keys + ("levels",), path), levels, f"{name}.levels", path, allow_none=True)
    _numbers(_get(obj, keys + ("innovations",), path), levels, f"{name}.innovations", path, allow_none=True)


def spatial_columns(values: dict) -> dict[str, float]:
    """``r2sp_level<l>`` (whole level) and ``r2in_level<l>`` (its innovation, l >= 1) from an ``r2_spatial`` object."""
    out = {f"r2sp_level{i}": math.nan if v is None else float(v) for i, v in enumerate(values["levels"])}
    out.update({
        f"r2in_level{i}": math.nan if v is None else float(v) for i, v in enumerate(values["innovations"]) if i >= 1
    })
    return out


def validate_gate(cell: dict, path: str) -> dict:
    """Check a cell's ``gate`` object (:func:`mae_hlvm.gate.evaluate_gate`); return it unchanged."""
    for key in ("mean_pred_mse", "linear_mse", "recon_rel", "gain_share"):
        _number(_get(cell, ("gate", key), path), f"gate.{key}", path, allow_none=True)
    gate = cell["gate"]
    for key in ("learned", "plateau", "gate_pass"):
        value = _get(cell, ("gate", key), path)
        if not isinstance(value, bool):
            raise ArtifactError(f"{path}: gate.{key}={value!r} is not true or false")
    if gate["gate_pass"] != (gate["learned"] and gate["plateau"]):
        raise ArtifactError(f"{path}: gate.gate_pass={gate['gate_pass']} contradicts gate.learned and gate.plateau")
    if not isinstance(_get(cell, ("gate", "gate_reason"), path), str):
        raise ArtifactError(f"{path}: gate.gate_reason={gate['gate_reason']!r} is not a string")
    return gate


def read_cells(params: Params) -> list[dict]:
    """The probe JSON of every cell of the current grid, in (patch_size, mask_ratio, seed) order.

    Reads ``paths.probe_json(cell_id)`` for exactly the grid's cells; raises
    :class:`ArtifactError` naming the first missing, corrupt or mismatching file.
    """
    levels = n_levels(params)
    cells = []
    for ratio, patch, seed in grid_cells(params):
        path = paths.probe_json(cell_id(ratio, patch, seed))
        cells.append(validate_cell(read_json(path), (ratio, patch, seed), levels, path))
    return cells


# --------------------------------------------------------------------------- the table


def level_columns(prefix: str, levels: int, first: int = 0) -> list[str]:
    return [f"{prefix}_level{i}" for i in range(first, levels)]


def metric_columns(levels: int) -> list[str]:
    """Every column of ``metrics.csv``, in order: headline columns first, then extras."""
    return [
        *ID_COLUMNS,
        *level_columns("r2", levels),
        *level_columns("r2nl", levels),
        "probe_acc",
        "recon_mse",
        *GATE_COLUMNS,
        "n_visible",
        "n_hidden",
        "actual_ratio",
        *level_columns("r2alt", levels),
        *level_columns("r2nlalt", levels),
        *level_columns("r2region", levels, first=1),
        "probe_acc_alt",
        *level_columns("r2sp", levels),
        *level_columns("r2in", levels, first=1),
        "shape_bias",
        "cue_shape",
        "cue_texture",
        "shape_bias_alt",
    ]


def _other_pooling(pooling: str) -> str:
    return next(p for p in POOLINGS if p != pooling)


def column_names(levels: int, pooling: str) -> list[str]:
    """:func:`metric_columns` with ``alt`` spelt as the non-default pooling (``cls`` by default)."""
    other = _other_pooling(pooling)
    return [c.replace("alt", other) for c in metric_columns(levels)]


def cell_row(cell: dict, pooling: str) -> dict[str, Any]:
    """One flat CSV row of a validated cell JSON (keys as in :func:`column_names`)."""
    other = _other_pooling(pooling)
    meta = cell["cell"]

    def numbers(values: list[Any]) -> list[float]:
        return [math.nan if v is None else float(v) for v in values]

    def per_level(prefix: str, values: list[Any], first: int = 0) -> dict[str, float]:
        return {f"{prefix}_level{i}": v for i, v in enumerate(numbers(values)) if i >= first}

    def scalar(value: Any) -> float:
        return math.nan if value is None else float(value)

    return {
        "mask_ratio": float(meta["mask_ratio"]),
        "patch_size": int(meta["patch_size"]),
        "seed": int(meta["seed"]),
        **per_level("r2", cell["r2_linear"][pooling]),
        **per_level("r2nl", cell["r2_nonlinear"][pooling]),
        "probe_acc": scalar(cell["probe_acc"][pooling]),
        "recon_mse": scalar(cell["recon_mse"]),
        "mean_pred_mse": scalar(cell["gate"]["mean_pred_mse"]),
        "linear_mse": scalar(cell["gate"]["linear_mse"]),
        "recon_rel": scalar(cell["gate"]["recon_rel"]),
        "gain_share": scalar(cell["gate"]["gain_share"]),
        "plateau": int(cell["gate"]["plateau"]),
        "gate_pass": int(cell["gate"]["gate_pass"]),
        "n_visible": int(cell["n_visible"]),
        "n_hidden": int(cell["n_hidden"]),
        # the hidden share after MAE's rounding int(U * (1 - r)): 0.938 at nominal 0.9 with 16 units
        "actual_ratio": round(int(cell["n_hidden"]) / (int(cell["n_visible"]) + int(cell["n_hidden"])), 6),
        **per_level(f"r2{other}", cell["r2_linear"][other]),
        **per_level(f"r2nl{other}", cell["r2_nonlinear"][other]),
        **per_level("r2region", cell["r2_region"]["levels"], first=1),
        f"probe_acc_{other}": scalar(cell["probe_acc"][other]),
        **spatial_columns(cell["r2_spatial"]),
        **shape_bias_columns(cell["shape_bias"][pooling]),
        f"shape_bias_{other}": shape_bias_columns(cell["shape_bias"][other])["shape_bias"],
    }


def metrics_frame(cells: list[dict], levels: int, pooling: str) -> pd.DataFrame:
    """(n_cells, n_columns) table, rows sorted by (patch_size, mask_ratio, seed)."""
    columns = column_names(levels, pooling)
    frame = pd.DataFrame([cell_row(c, pooling) for c in cells], columns=columns)
    for col in INT_COLUMNS:
        frame[col] = frame[col].astype("int64")
    frame = frame.sort_values(["patch_size", "mask_ratio", "seed"], kind="stable")
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


# --------------------------------------------------------------------------- metrics.json


def _json_number(x: float) -> float | None:
    """Rounded to the CSV's precision; NaN becomes null (DVC cannot read NaN)."""
    x = float(x)
    return None if not math.isfinite(x) else round(x, JSON_DIGITS)


def ratio_key(mask_ratio: float) -> str:
    return f"r{float(mask_ratio)!r}"


def patch_summary(frame: pd.DataFrame) -> dict[str, Any]:
    """Seed-mean root R^2 per ratio for one patch size and the ratio where it peaks.

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
    """``{cell_id: {r2_level*, r2nl_level*, probe_acc, recon_mse, mean_pred_mse, linear_mse, recon_rel,
    gain_share, shape_bias, plateau, gate_pass}, "gate": {"n_cells", "n_pass"}, "summary": {"p<size>": ...}}``;
    flags as 0/1, gain_share null under the gate's fallback rule."""
    keys = [*level_columns("r2", levels), *level_columns("r2nl", levels), "probe_acc", "recon_mse",
            "mean_pred_mse", "linear_mse", "recon_rel", "gain_share", "shape_bias"]
    out: dict[str, Any] = {}
    for row in frame.itertuples(index=False):
        values = row._asdict()
        name = cell_id(values["mask_ratio"], values["patch_size"], values["seed"])
        out[name] = {k: _json_number(values[k]) for k in keys}
        out[name].update({k: int(values[k]) for k in ("plateau", "gate_pass")})
    out["gate"] = {"n_cells": len(frame), "n_pass": int(frame["gate_pass"].sum())}
    out["summary"] = {
        f"p{int(p)}": patch_summary(part) for p, part in frame.groupby("patch_size", sort=True)
    }
    return out


# --------------------------------------------------------------------------- baselines

BASELINE_KINDS = ("random_init", "pixels", "latents")


def validate_baseline(obj: Any, seed: int, levels: int, path: str) -> dict:
    """Check one baseline JSON (baseline step) against the schema; return it unchanged."""
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    if _get(obj, ("seed",), path) != seed:
        raise ArtifactError(f"{path}: describes seed {obj['seed']!r}, expected {seed}")
    if _get(obj, ("n_levels",), path) != levels:
        raise ArtifactError(f"{path}: has n_levels={obj['n_levels']}, params.data.depth gives {levels}; rerun the baseline step")
    for kind in ("r2_linear", "r2_nonlinear"):
        for pooling in POOLINGS:
            _numbers(_get(obj, ("random_init", kind, pooling), path), levels, f"random_init.{kind}.{pooling}", path, True)
        _numbers(_get(obj, ("pixels", kind), path), levels, f"pixels.{kind}", path, True)
    _numbers(_get(obj, ("random_init", "r2_region", "levels"), path), levels, "random_init.r2_region.levels", path, True)
    for pooling in POOLINGS:
        _number(_get(obj, ("random_init", "probe_acc", pooling), path), f"random_init.probe_acc.{pooling}", path, True)
    _number(_get(obj, ("pixels", "probe_acc"), path), "pixels.probe_acc", path, True)
    for pooling in POOLINGS:
        validate_shape_bias(_get(obj, ("random_init", "shape_bias", pooling), path), f"random_init.shape_bias.{pooling}", path)
    validate_shape_bias(_get(obj, ("pixels", "shape_bias"), path), "pixels.shape_bias", path)
    for kind in BASELINE_KINDS:
        validate_spatial(obj, kind, levels, path)
    return obj


def read_baselines(params: Params) -> list[dict]:
    """The baseline JSON of every seed of ``params.grid.seeds`` (by path, never a glob)."""
    levels = n_levels(params)
    return [
        validate_baseline(read_json(paths.baseline_json(s)), s, levels, paths.baseline_json(s))
        for s in sorted(params.grid.seeds)
    ]


def baseline_columns(levels: int) -> list[str]:
    """Columns of ``baselines.csv``: the metrics table's names, so one reader serves both."""
    return [
        "baseline", "seed", *level_columns("r2", levels), *level_columns("r2nl", levels), "probe_acc",
        *level_columns("r2region", levels, first=1), *level_columns("r2sp", levels), *level_columns("r2in", levels, first=1),
        "shape_bias", "cue_shape", "cue_texture",
    ]


def baseline_rows(obj: dict, pooling: str) -> list[dict[str, Any]]:
    """Three rows of one validated baseline JSON: the random-init encoder (default pooling), raw pixels,
    and the true leaf latents (the linear ceiling: spatial and innovation probes only)."""

    def per_level(prefix: str, values: list[Any], first: int = 0) -> dict[str, float]:
        return {f"{prefix}_level{i}": math.nan if v is None else float(v) for i, v in enumerate(values) if i >= first}

    enc, pix = obj["random_init"], obj["pixels"]
    acc = enc["probe_acc"][pooling]
    return [
        {
            "baseline": "random_init", "seed": int(obj["seed"]),
            **per_level("r2", enc["r2_linear"][pooling]), **per_level("r2nl", enc["r2_nonlinear"][pooling]),
            "probe_acc": math.nan if acc is None else float(acc),
            **per_level("r2region", enc["r2_region"]["levels"], first=1),
            **spatial_columns(enc["r2_spatial"]),
            **shape_bias_columns(enc["shape_bias"][pooling]),
        },
        {
            "baseline": "pixels", "seed": int(obj["seed"]),
            **per_level("r2", pix["r2_linear"]), **per_level("r2nl", pix["r2_nonlinear"]),
            "probe_acc": math.nan if pix["probe_acc"] is None else float(pix["probe_acc"]),
            **spatial_columns(pix["r2_spatial"]),
            **shape_bias_columns(pix["shape_bias"]),
        },
        {"baseline": "latents", "seed": int(obj["seed"]), **spatial_columns(obj["latents"]["r2_spatial"])},
    ]


def baselines_frame(objs: list[dict], levels: int, pooling: str) -> pd.DataFrame:
    """(2 * n_seeds, columns) table sorted by (baseline, seed); pixels have no region probe (NaN)."""
    rows = [row for obj in objs for row in baseline_rows(obj, pooling)]
    frame = pd.DataFrame(rows, columns=baseline_columns(levels))
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
            rows.append({"cell_id": name, "mask_ratio": ratio, "patch_size": patch, "seed": seed, **row})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    ids = ["cell_id", *ID_COLUMNS]
    return frame[ids + sorted(c for c in frame.columns if c not in ids)]


# --------------------------------------------------------------------------- step


def run(params: Params, args: Any) -> None:
    """Write ``args.out_csv``, ``args.out_json``, ``args.out_baselines`` (and the untracked timings table)."""
    levels = n_levels(params)
    frame = metrics_frame(read_cells(params), levels, params.probe.pooling)
    baselines = baselines_frame(read_baselines(params), levels, params.probe.pooling)
    summary = metrics_json(frame, levels)
    summary["baselines"] = baselines_json(baselines)
    write_text(args.out_baselines, frame_to_csv(baselines))
    write_text(args.out_csv, frame_to_csv(frame))
    write_json(args.out_json, summary)
    log.info("aggregated %d cells and %d seeds' baselines into %s, %s and %s",
             len(frame), len(baselines) // 2, args.out_csv, args.out_json, args.out_baselines)
    timings = read_timings(params)
    if not timings.empty:
        write_text(paths.TIMINGS_CSV, frame_to_csv(timings))
        log.info("timings of %d cells in %s", len(timings), paths.TIMINGS_CSV)
