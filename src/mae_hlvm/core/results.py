"""Every per-cell result file, typed: one schema per artifact kind, shared by the
step that writes it and the steps that read it.

* :class:`CellResult`: ``results/cells/<cell>.json``, written by ``probe`` (checked
  before the file is written), read by ``aggregate`` and ``claims`` (the stability set).
* :class:`BaselineResult`: ``results/baselines/s<seed>.json``, written by ``baseline``,
  read by ``aggregate``.
* :class:`RealCellResult`: ``results/real/cells/<sweep>/<cell>.json`` (the real track),
  written by ``evaluate-real``, read by ``report-real`` and ``claims``.

Reading a file that does not fit is one :class:`~mae_hlvm.core.io.ArtifactError` line naming
the file and the key. The flat tables (``metrics.csv``, ``baselines.csv``) are derived
from the same schemas: :data:`CELL_COLUMNS` lists every column of ``metrics.csv`` and
where its value comes from. **A new probe metric** is its computation (probe.py), one
field here plus its column entry, and one test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, model_validator

from mae_hlvm.core.io import ArtifactError

POOLINGS = ("mean", "cls")
# a JSON number, or null where a probe could not be fitted
Score = Annotated[float | None, Field(strict=True)]
Number = Annotated[float, Field(strict=True)]


class _Schema(BaseModel):
    # the files carry a few diagnostics no table reads (gate.rules, r2_region.per_node, ...)
    model_config = ConfigDict(extra="allow", frozen=True)


class PooledLevels(_Schema):
    """One score per latent level (root first) for each pooling of the encoder's tokens."""

    mean: list[Score]
    cls: list[Score]


class PooledScore(_Schema):
    mean: Score
    cls: Score


class ShapeBias(_Schema):
    """:func:`mae_hlvm.synthetic.probe.shape_bias`: shape share of cue decisions, and each cue's accuracy."""

    shape_bias: Score
    shape: Number
    texture: Number


class PooledShapeBias(_Schema):
    """Null per pooling when the data have no cue-conflict set."""

    mean: ShapeBias | None
    cls: ShapeBias | None


class RegionScores(_Schema):
    levels: list[Score]  # entry 0, the root, has no region probe: null


class SpatialScores(_Schema):
    """:func:`mae_hlvm.synthetic.probe.level_scores`: each level, and each level's innovation (entry 0 null)."""

    levels: list[Score]
    innovations: list[Score]


class Gate(_Schema):
    """:func:`mae_hlvm.core.gate.evaluate_gate`: did the cell learn (the gate), and the last quarter's loss drop."""

    mean_pred_mse: Score
    linear_mse: Score
    recon_rel: Score
    gain_share: Score
    learned: StrictBool
    last_quarter_drop: Score  # a diagnostic, not a rule (core/gate.py)
    gate_pass: StrictBool
    gate_reason: StrictStr

    @model_validator(mode="after")
    def _pass_is_learned(self) -> Gate:
        if self.gate_pass != self.learned:
            raise ValueError(f"gate.gate_pass={self.gate_pass} contradicts gate.learned (the gate reads learning only)")
        return self


class MaskedScores(_Schema):
    """:func:`mae_hlvm.synthetic.masked.masked_scores` of the encoder of the visible part, per latent
    level: R^2 of the shared (``c``), visible-only (``v``) and hidden-only (``h``) latents; and
    ``c_excess`` against the cell's frontier of even loss (the oracle table's)."""

    c: list[Score]
    v: list[Score]
    h: list[Score]
    recovery: Score
    selectivity: Score
    excess: list[Score]
    c_excess: Score
    masks: StrictInt
    token_dims: StrictInt


class CellId(_Schema):
    cell_id: StrictStr
    mask_ratio: Number
    mask_unit: StrictInt
    seed: StrictInt


def _check_levels(n_levels: int, lists: dict[str, list]) -> None:
    for name, values in lists.items():
        if len(values) != n_levels:
            raise ValueError(f"{name} needs {n_levels} values (one per latent level), got {len(values)}")


class EncoderScores(_Schema):
    """An encoder under the cell's probes: a trained cell's (:class:`CellResult`) or the
    untrained one of a seed's baselines (:class:`BaselineResult`)."""

    r2_linear: PooledLevels
    r2_nonlinear: PooledLevels
    r2_region: RegionScores
    r2_spatial: SpatialScores
    probe_acc: PooledScore
    shape_bias: PooledShapeBias

    def level_lists(self, prefix: str = "") -> dict[str, list]:
        """Every list that holds one value per latent level, keyed by its path in the file."""
        return {
            **{f"{prefix}{k}.{p}": getattr(getattr(self, k), p) for k in ("r2_linear", "r2_nonlinear") for p in POOLINGS},
            f"{prefix}r2_region.levels": self.r2_region.levels,
            f"{prefix}r2_spatial.levels": self.r2_spatial.levels,
            f"{prefix}r2_spatial.innovations": self.r2_spatial.innovations,
        }


class CellResult(EncoderScores):
    """One grid cell's probe results (``probe`` step): its encoder's scores, and the cell's own."""

    cell: CellId
    n_visible: StrictInt
    n_hidden: StrictInt
    pooling: StrictStr
    n_levels: StrictInt
    recon_mse: Score
    gate: Gate
    masked: MaskedScores
    config_digest: StrictStr

    @model_validator(mode="after")
    def _one_value_per_level(self) -> CellResult:
        _check_levels(self.n_levels, {**self.level_lists(), **{f"masked.{k}": getattr(self.masked, k)
                                                                for k in ("c", "v", "h", "excess")}})
        return self


class PixelScores(_Schema):
    """Raw pixels under the same probes (no pooling, no region probe)."""

    r2_linear: list[Score]
    r2_nonlinear: list[Score]
    r2_spatial: SpatialScores
    probe_acc: Score
    shape_bias: ShapeBias | None


class LatentScores(_Schema):
    """The true leaf latents: the ceiling of the spatial and innovation probes."""

    r2_spatial: SpatialScores


class BaselineResult(_Schema):
    """One seed's floors and ceiling (``baseline`` step)."""

    seed: StrictInt
    n_levels: StrictInt
    pooling: StrictStr
    random_init: EncoderScores
    pixels: PixelScores
    latents: LatentScores
    config_digest: StrictStr

    @model_validator(mode="after")
    def _one_value_per_level(self) -> BaselineResult:
        pix = self.pixels
        _check_levels(self.n_levels, {
            **self.random_init.level_lists("random_init."),
            "pixels.r2_linear": pix.r2_linear, "pixels.r2_nonlinear": pix.r2_nonlinear,
            **{f"{kind}.r2_spatial.{k}": getattr(getattr(self, kind).r2_spatial, k)
               for kind in ("pixels", "latents") for k in ("levels", "innovations")},
        })
        return self


class RealTable1(_Schema):
    """A real cell's Table 1 numbers: accuracy (%) per test set (``clean``, and each shift) for each
    probe (linear or k-NN) on each pooling; the shape bias on the cue-conflict set, if one is set."""

    linear_cls: dict[str, Number]
    linear_mean: dict[str, Number]
    knn_cls: dict[str, Number]
    knn_mean: dict[str, Number]
    mask_ratio: Number
    mask_unit: StrictInt
    vit_patch: StrictInt
    seed: StrictInt
    n_train: StrictInt
    n_test: StrictInt
    shape_bias: ShapeBias | None
    sweep: StrictStr

    @model_validator(mode="after")
    def _clean_is_scored(self) -> RealTable1:
        for probe in ("linear_cls", "linear_mean", "knn_cls", "knn_mean"):
            if "clean" not in getattr(self, probe):
                raise ValueError(f"table1.{probe} lacks the clean test set")
        return self


class ReconQuality(_Schema):
    """Fig. 5: quality of unmasked reconstructions (SSIM, PSNR in dB, MSE) over ``n_images``."""

    ssim: Score
    psnr: Score
    mse: Score
    neg_mse: Score
    n_images: StrictInt
    mask_ratio: Number
    mask_unit: StrictInt
    seed: StrictInt
    sweep: StrictStr


class RealCellResult(_Schema):
    """One real-track cell of one sweep (``evaluate-real`` step)."""

    sweep: StrictStr
    cell_id: StrictStr
    checkpoint_weights_sha256: StrictStr  # the weights evaluated: report-real refuses any others
    gate: Gate
    table1: RealTable1
    recon_quality: ReconQuality


# ----------------------------------------------------------------------------- reading and checking


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _one_line(err: ValidationError) -> str:
    """The first problem of a validation, in the words the readers have always used."""
    first = err.errors(include_url=False)[0]
    where, kind, value = _where(first["loc"]), first["type"], first.get("input")
    if kind == "missing":
        return f"lacks key {where!r}; was it made by another version of its step?"
    if kind == "value_error":
        return str(first["ctx"]["error"])
    if kind.startswith(("float", "int")):
        return f"{where}={value!r} is not a number" if kind.startswith("float") else f"{where}={value!r} is not an integer"
    if kind.startswith("bool"):
        return f"{where}={value!r} is not true or false"
    if kind.startswith("string"):
        return f"{where}={value!r} is not a string"
    if kind.startswith("list"):
        return f"{where}={value!r} is not a list"
    return f"{where}={value!r}: {first['msg']}"


def check(schema: type[_Schema], obj: Any, path: str) -> Any:
    """``obj`` as ``schema`` (typed), or one ArtifactError line naming ``path`` and the key."""
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    try:
        return schema.model_validate(obj)
    except ValidationError as err:
        raise ArtifactError(f"{path}: {_one_line(err)}") from None


def read_cell(obj: Any, expected: tuple[float, int, int], levels: int, path: str) -> CellResult:
    """A cell JSON of cell ``expected`` = (mask_ratio, mask_unit, seed) with ``levels`` latent levels."""
    if isinstance(obj, dict):
        got = obj.get("cell")
        ratio, patch, seed = expected
        if not isinstance(got, dict) or (got.get("mask_ratio"), got.get("mask_unit"), got.get("seed")) != (ratio, patch, seed):
            if got is None:
                raise ArtifactError(f"{path}: lacks key 'cell'; was it made by another version of its step?")
            raise ArtifactError(f"{path}: describes cell {got!r}, expected mask_ratio={ratio}, mask_unit={patch}, seed={seed}")
        if "n_levels" in obj and obj["n_levels"] != levels:
            raise ArtifactError(f"{path}: has n_levels={obj['n_levels']}, params.data.depth gives {levels}; rerun the probe step")
    return check(CellResult, obj, path)


def read_real_cell(obj: Any, path: str) -> RealCellResult:
    """An evaluate-real JSON; a file from before a key existed is one line saying to rerun the step."""
    try:
        return check(RealCellResult, obj, path)
    except ArtifactError as err:
        raise ArtifactError(f"{err}; rerun evaluate-real") from None


def read_baseline(obj: Any, seed: int, levels: int, path: str) -> BaselineResult:
    """A baseline JSON of ``seed`` with ``levels`` latent levels."""
    if isinstance(obj, dict):
        if "seed" in obj and obj["seed"] != seed:
            raise ArtifactError(f"{path}: describes seed {obj['seed']!r}, expected {seed}")
        if "n_levels" in obj and obj["n_levels"] != levels:
            raise ArtifactError(f"{path}: has n_levels={obj['n_levels']}, params.data.depth gives {levels}; rerun the baseline step")
    return check(BaselineResult, obj, path)


# ----------------------------------------------------------------------------- the flat tables


def level_names(prefix: str, n_levels: int, first: int = 0) -> list[str]:
    """``<prefix>_level<l>`` for l = first .. n_levels - 1 (level 0 is the root)."""
    return [f"{prefix}_level{i}" for i in range(first, n_levels)]


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def other_pooling(pooling: str) -> str:
    return next(p for p in POOLINGS if p != pooling)


def _shape(value: ShapeBias | None, key: str) -> float:
    return math.nan if value is None else _nan(getattr(value, key))


@dataclass(frozen=True)
class Column:
    """One per-cell metric, declared once: its column of metrics.csv (``levels``: one per
    latent level from ``first``, named ``<name>_level<l>``; ``name`` may say ``{alt}``, the
    pooling the table does not lead with), read by ``value(cell, pooling)`` from a
    :class:`CellResult`, and where else it goes:

    - ``json``: into metrics.json's entry of the cell (``aggregate``);
    - ``summary``: into the summary's grid table, mean ± sd over seeds (``summary``);
    - ``baseline``: ``value`` reads only :class:`EncoderScores` fields, so the untrained
      encoder of each seed gets it too (baselines.csv's ``random_init`` rows);
    - ``tolerance``: how ``replay-check`` compares it across machines, a name of
      ``mae_hlvm.workflow.replay.TOLERANCES`` (none: the replay's rules by column name).
    """

    name: str
    value: Callable[[CellResult, str], Any]
    levels: bool = False
    first: int = 0
    integer: bool = False
    json: bool = False
    summary: bool = False
    baseline: bool = False
    tolerance: str | None = None

    def names(self, n_levels: int, pooling: str) -> list[str]:
        name = self.name.replace("{alt}", other_pooling(pooling))
        return level_names(name, n_levels, self.first) if self.levels else [name]

    def cells(self, cell: Any, pooling: str, n_levels: int | None = None) -> dict[str, Any]:
        """This column's values of ``cell`` (a :class:`CellResult`, or with ``n_levels`` any
        :class:`EncoderScores`), keyed by :meth:`names`."""
        levels = cell.n_levels if n_levels is None else n_levels
        value = self.value(cell, pooling)
        if not self.levels:
            return {self.names(levels, pooling)[0]: value}
        return dict(zip(self.names(levels, pooling), [_nan(v) for v in value[self.first:]], strict=True))


def _alt(pooled: BaseModel, pooling: str) -> Any:
    return getattr(pooled, other_pooling(pooling))


# metrics.csv, in order: the cell, the headline scores (the table's pooling), the learning
# gate, the masking actually done, then the other pooling's scores and the finer probes
CELL_COLUMNS: tuple[Column, ...] = (
    Column("mask_ratio", lambda c, p: float(c.cell.mask_ratio), tolerance="exact"),
    Column("mask_unit", lambda c, p: c.cell.mask_unit, integer=True, tolerance="exact"),
    Column("seed", lambda c, p: c.cell.seed, integer=True, tolerance="exact"),
    Column("r2", lambda c, p: getattr(c.r2_linear, p), levels=True, json=True, summary=True, baseline=True,
           tolerance="r2"),
    Column("r2nl", lambda c, p: getattr(c.r2_nonlinear, p), levels=True, json=True, baseline=True, tolerance="r2"),
    Column("probe_acc", lambda c, p: _nan(getattr(c.probe_acc, p)), json=True, summary=True, baseline=True,
           tolerance="acc"),
    Column("recon_mse", lambda c, p: _nan(c.recon_mse), json=True, summary=True, tolerance="mse"),
    Column("mean_pred_mse", lambda c, p: _nan(c.gate.mean_pred_mse), json=True, tolerance="mse"),
    Column("linear_mse", lambda c, p: _nan(c.gate.linear_mse), json=True, tolerance="mse"),
    Column("recon_rel", lambda c, p: _nan(c.gate.recon_rel), json=True, tolerance="ratio"),
    Column("gain_share", lambda c, p: _nan(c.gate.gain_share), json=True, tolerance="gain"),
    Column("last_quarter_drop", lambda c, p: _nan(c.gate.last_quarter_drop), json=True, tolerance="gain"),
    Column("gate_pass", lambda c, p: int(c.gate.gate_pass), integer=True, json=True, tolerance="exact"),
    Column("n_visible", lambda c, p: c.n_visible, integer=True, tolerance="exact"),
    Column("n_hidden", lambda c, p: c.n_hidden, integer=True, tolerance="exact"),
    # the hidden share after MAE's rounding int(U * (1 - r)): 0.938 at nominal 0.9 with 16 units
    Column("actual_ratio", lambda c, p: round(c.n_hidden / (c.n_visible + c.n_hidden), 6), tolerance="exact"),
    Column("r2{alt}", lambda c, p: _alt(c.r2_linear, p), levels=True, tolerance="r2"),
    Column("r2nl{alt}", lambda c, p: _alt(c.r2_nonlinear, p), levels=True, tolerance="r2"),
    Column("r2region", lambda c, p: c.r2_region.levels, levels=True, first=1, baseline=True, tolerance="r2"),
    Column("probe_acc_{alt}", lambda c, p: _nan(_alt(c.probe_acc, p)), tolerance="acc"),
    Column("r2sp", lambda c, p: c.r2_spatial.levels, levels=True, baseline=True, tolerance="r2"),
    Column("r2in", lambda c, p: c.r2_spatial.innovations, levels=True, first=1, baseline=True, tolerance="r2"),
    Column("shape_bias", lambda c, p: _shape(getattr(c.shape_bias, p), "shape_bias"), json=True, baseline=True,
           tolerance="cue"),
    Column("cue_shape", lambda c, p: _shape(getattr(c.shape_bias, p), "shape"), baseline=True, tolerance="cue"),
    Column("cue_texture", lambda c, p: _shape(getattr(c.shape_bias, p), "texture"), baseline=True, tolerance="cue"),
    Column("shape_bias_{alt}", lambda c, p: _shape(_alt(c.shape_bias, p), "shape_bias"), tolerance="cue"),
    # under the cell's own masks (synthetic/masked.py): shared, visible-only and hidden-only latents
    Column("mr2c", lambda c, p: c.masked.c, levels=True, tolerance="r2"),
    Column("mr2v", lambda c, p: c.masked.v, levels=True, tolerance="r2"),
    Column("mr2h", lambda c, p: c.masked.h, levels=True, tolerance="r2"),
    Column("c_recovery", lambda c, p: _nan(c.masked.recovery), tolerance="r2"),
    Column("c_selectivity", lambda c, p: _nan(c.masked.selectivity), tolerance="r2"),
    Column("c_excess", lambda c, p: _nan(c.masked.c_excess), json=True, summary=True, tolerance="r2"),
)
ID_COLUMNS = ("mask_ratio", "mask_unit", "seed")
INT_COLUMNS = tuple(c.name for c in CELL_COLUMNS if c.integer)


def cell_columns(n_levels: int, pooling: str) -> list[str]:
    """Every column of ``metrics.csv``, in order (``{alt}`` spelt as the other pooling: ``cls`` by default)."""
    return [name for column in CELL_COLUMNS for name in column.names(n_levels, pooling)]


def cell_row(cell: CellResult, pooling: str) -> dict[str, Any]:
    """One flat ``metrics.csv`` row of a cell (keys as in :func:`cell_columns`)."""
    return {k: v for column in CELL_COLUMNS for k, v in column.cells(cell, pooling).items()}


BASELINE_KINDS = ("random_init", "pixels", "latents")
BASELINE_COLUMNS = tuple(c for c in CELL_COLUMNS if c.baseline)


def _per_level(prefix: str, values: list[Score], first: int = 0) -> dict[str, float]:
    return {f"{prefix}_level{i}": _nan(v) for i, v in enumerate(values) if i >= first}


def baseline_columns(n_levels: int) -> list[str]:
    """Columns of ``baselines.csv``: the metrics table's names of every ``baseline`` column,
    so one reader serves both."""
    return ["baseline", "seed", *(n for c in BASELINE_COLUMNS for n in c.names(n_levels, "mean"))]


def baseline_rows(obj: BaselineResult, pooling: str) -> list[dict[str, Any]]:
    """Three rows of one seed's baselines: the random-init encoder (every ``baseline`` column,
    the table's pooling), raw pixels, and the true leaf latents (the linear ceiling: spatial
    and innovation probes only). A column a kind has no probe for is NaN."""
    pix = obj.pixels
    encoder = {k: v for c in BASELINE_COLUMNS for k, v in c.cells(obj.random_init, pooling, obj.n_levels).items()}
    spatial = {**_per_level("r2sp", pix.r2_spatial.levels), **_per_level("r2in", pix.r2_spatial.innovations, 1)}
    pixels = {
        **_per_level("r2", pix.r2_linear), **_per_level("r2nl", pix.r2_nonlinear), "probe_acc": _nan(pix.probe_acc),
        **spatial, "shape_bias": _shape(pix.shape_bias, "shape_bias"), "cue_shape": _shape(pix.shape_bias, "shape"),
        "cue_texture": _shape(pix.shape_bias, "texture"),
    }
    truth = obj.latents.r2_spatial
    latents = {**_per_level("r2sp", truth.levels), **_per_level("r2in", truth.innovations, 1)}
    names = baseline_columns(obj.n_levels)[2:]
    return [
        {"baseline": kind, "seed": obj.seed, **{n: values.get(n, float("nan")) for n in names}}
        for kind, values in (("random_init", encoder), ("pixels", pixels), ("latents", latents))
    ]
