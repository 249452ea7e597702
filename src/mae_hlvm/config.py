"""The one schema for ``params.yaml``.

Every step of the pipeline, the Snakefile and the test suite load parameters through
:func:`load_params`, so a bad edit stops everything with the same one-line message
before any job runs. The config is flat and typed (nanoGPT style): five sections, a
grid and the optional real-image track (``real:``). Cross-field rules (a masking unit that does not tile the image, a cell that keeps
no visible token) are checked here too, because they are properties of the params, not
of a run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ParamsError(ValueError):
    """A params.yaml problem, phrased as one line that names the key and the value."""


class _Section(BaseModel):
    # Unknown keys are typos until proven otherwise: forbid them.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataParams(_Section):
    image_size: int = Field(gt=0)
    channels: int = Field(gt=0)
    depth: int = Field(ge=1, le=5)
    latent_dims: list[int]
    noise_scales: list[float]
    class_separation: float = Field(gt=0)
    n_classes: int = Field(ge=2)
    pixel_noise: float = Field(ge=0)
    n_train: int = Field(gt=0)
    n_test: int = Field(gt=0)
    seed: int = Field(ge=0)

    @field_validator("latent_dims")
    @classmethod
    def _dims_positive(cls, v: list[int]) -> list[int]:
        for i, d in enumerate(v):
            if d <= 0:
                raise ValueError(f"[{i}]={d}: every latent dimension must be > 0")
        for i in range(1, len(v)):
            if 4 * v[i] < v[i - 1]:
                raise ValueError(
                    f"[{i}]={v[i]}: a parent's four children together need at least its dimension "
                    f"({v[i - 1]}), so each child at least {-(-v[i - 1] // 4)}, for the map to be invertible"
                )
        return v

    @field_validator("noise_scales")
    @classmethod
    def _scales_nonneg(cls, v: list[float]) -> list[float]:
        for i, s in enumerate(v):
            if not s >= 0:
                raise ValueError(f"[{i}]={s}: noise scales must be >= 0")
        return v

    @model_validator(mode="after")
    def _levels_consistent(self) -> DataParams:
        levels = self.depth + 1
        if len(self.latent_dims) != levels:
            raise ValueError(
                f"latent_dims={self.latent_dims}: needs depth + 1 = {levels} entries (one per level)"
            )
        if len(self.noise_scales) != levels:
            raise ValueError(
                f"noise_scales={self.noise_scales}: needs depth + 1 = {levels} entries (one per level)"
            )
        if self.image_size % (2**self.depth):
            raise ValueError(
                f"image_size={self.image_size}: must be divisible by 2**depth = {2**self.depth} "
                "so that every leaf owns a square block of pixels"
            )
        return self


class ModelParams(_Section):
    vit_patch: int = Field(gt=0)
    embed_dim: int = Field(gt=0)
    depth: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    decoder_embed_dim: int = Field(gt=0)
    decoder_depth: int = Field(gt=0)
    decoder_num_heads: int = Field(gt=0)
    mlp_ratio: float = Field(gt=0)
    norm_pix_loss: bool

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelParams:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim}: must be divisible by num_heads={self.num_heads}")
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError(
                f"decoder_embed_dim={self.decoder_embed_dim}: must be divisible by "
                f"decoder_num_heads={self.decoder_num_heads}"
            )
        return self


class TrainParams(_Section):
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    base_lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_epochs: float = Field(ge=0)
    betas: list[float]
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["auto", "fp32", "bf16"]
    threads: int = Field(ge=1)

    @field_validator("betas")
    @classmethod
    def _betas_in_unit(cls, v: list[float]) -> list[float]:
        if len(v) != 2:
            raise ValueError(f"={v}: needs exactly two values (beta1, beta2)")
        for i, b in enumerate(v):
            if not 0 <= b < 1:
                raise ValueError(f"[{i}]={b}: Adam betas must be in [0, 1)")
        return v


class ProbeParams(_Section):
    pooling: Literal["mean", "cls"]
    ridge_alphas: list[float]
    cv_folds: int = Field(ge=2)
    nystroem_components: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    n_recon_images: int = Field(gt=0)

    @field_validator("ridge_alphas")
    @classmethod
    def _alphas_positive(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("must list at least one alpha")
        for i, a in enumerate(v):
            if not a > 0:
                raise ValueError(f"[{i}]={a}: ridge alphas must be > 0")
        return v


def _ratios_in_open_unit(v: list[float]) -> list[float]:
    for i, r in enumerate(v):
        if not 0 < r < 1:
            raise ValueError(f"[{i}]={r}: a masking ratio must be in (0, 1)")
    return v


def _at_least(v: list[int], low: int) -> list[int]:
    for i, x in enumerate(v):
        if x < low:
            raise ValueError(f"[{i}]={x}: must be >= {low}")
    return v


def _distinct_nonempty(v: list[Any], repeated: str) -> list[Any]:
    if not v:
        raise ValueError("must list at least one value")
    for i, x in enumerate(v):
        if x in v[:i]:
            raise ValueError(f"[{i}]={x}: {repeated}")
    return v


class GridParams(_Section):
    mask_ratios: list[float]
    patch_sizes: list[int]
    seeds: list[int]

    @field_validator("mask_ratios")
    @classmethod
    def _ratios_open_unit(cls, v: list[float]) -> list[float]:
        return _ratios_in_open_unit(v)

    @field_validator("patch_sizes", "seeds")
    @classmethod
    def _nonneg(cls, v: list[int], info: Any) -> list[int]:
        return _at_least(v, 1 if info.field_name == "patch_sizes" else 0)

    @field_validator("mask_ratios", "patch_sizes", "seeds")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        return _distinct_nonempty(v, "repeated grid value")


class RealParams(_Section):
    """The ``real:`` section of params.yaml (the real-image track, docs/real_track.md).

    Absent or ``enabled: false``: the track is off in both tools.
    """

    enabled: bool
    dataset: Literal["mnist", "digits", "folder", "npz"]
    path: str  # folder or .npz for the user's own data; ignored (may be "") for mnist/digits
    image_size: int = Field(gt=0)
    channels: Literal[1, 3]
    fit: Literal["pad", "resize"]
    n_train: int = Field(gt=0)
    n_test: int = Field(gt=0)
    split_seed: int = Field(ge=0)
    vit_patch: int = Field(gt=0)  # replaces model.vit_patch for this track; other widths are shared
    sweep: Literal["A", "B", "AB", "grid"]
    mask_ratios: list[float]
    mask_units: list[int]
    sweep_a_unit: int = Field(gt=0)
    sweep_b_ratio: float
    seeds: list[int]
    epochs: int = Field(gt=0)  # replaces train.epochs for this track
    base_lr: float = Field(gt=0)  # replaces train.base_lr (scaled by batch_size / 256)
    batch_size: int = Field(gt=0)  # replaces train.batch_size; the rest of train: is shared
    probe_epochs: int = Field(gt=0)
    knn_k: int = Field(gt=0)
    n_eval_images: int = Field(gt=0)  # test images shown in the attention grids
    tsne_points: int = Field(ge=10, le=1000)
    eval_seed: int = Field(ge=0)  # seeds the shifted test sets, the probe and t-SNE

    @field_validator("mask_ratios")
    @classmethod
    def _ratios_open_unit(cls, v: list[float]) -> list[float]:
        return _ratios_in_open_unit(v)

    @field_validator("sweep_b_ratio")
    @classmethod
    def _ratio_open_unit(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError("a masking ratio must be in (0, 1)")
        return v

    @field_validator("mask_units", "seeds")
    @classmethod
    def _nonneg(cls, v: list[int], info: Any) -> list[int]:
        return _at_least(v, 1 if info.field_name == "mask_units" else 0)

    @field_validator("mask_ratios", "mask_units", "seeds")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        return _distinct_nonempty(v, "repeated value")

    @model_validator(mode="after")
    def _consistent(self) -> RealParams:
        if self.dataset in ("folder", "npz") and not self.path:
            raise ValueError(f"path={self.path!r}: dataset {self.dataset!r} needs a path to the data")
        if self.fit == "pad" and self.dataset == "mnist" and self.image_size < 28:
            raise ValueError(f"image_size={self.image_size}: fit 'pad' cannot shrink 28x28 MNIST; use fit 'resize'")
        size, vit = self.image_size, self.vit_patch
        if size % vit:
            raise ValueError(f"vit_patch={vit}: must divide image_size={size}")
        for name, unit in self._named_units():
            if unit % vit:
                raise ValueError(f"{name}={unit}: a masking unit must be a multiple of vit_patch={vit}")
            if size % unit:
                raise ValueError(f"{name}={unit}: a masking unit must divide image_size={size}")
        for ratio, unit in cell_pairs(self):
            n_vis, n_hid = unit_counts(size, unit, ratio)
            if n_vis == 0 or n_hid == 0:
                raise ValueError(
                    f"sweep={self.sweep!r} cell mask_ratio={ratio}, mask_unit={unit}: keeps {n_vis} visible and {n_hid} hidden "
                    f"of {(size // unit) ** 2} masking units; each needs at least one"
                )
        return self

    def _named_units(self) -> list[tuple[str, int]]:
        named = [(f"mask_units[{i}]", u) for i, u in enumerate(self.mask_units)]
        return named + [("sweep_a_unit", self.sweep_a_unit)]


def cell_pairs(real: RealParams) -> list[tuple[float, int]]:
    """(mask_ratio, mask_unit) of every cell of the chosen sweep, in a fixed order.

    A: every ratio at ``sweep_a_unit``; B: every unit at ``sweep_b_ratio``; AB: A then
    the B cells A lacks (the paper's two sweeps); grid: every ratio x every unit.
    """
    sweep_a = [(r, real.sweep_a_unit) for r in real.mask_ratios]
    sweep_b = [(real.sweep_b_ratio, u) for u in real.mask_units]
    if real.sweep == "A":
        return sweep_a
    if real.sweep == "B":
        return sweep_b
    if real.sweep == "AB":
        return sweep_a + [c for c in sweep_b if c not in sweep_a]
    return list(itertools.product(real.mask_ratios, real.mask_units))


def real_cells(real: RealParams) -> list[tuple[float, int, int]]:
    """(mask_ratio, mask_unit, seed) of every real-track training run."""
    return [(r, u, s) for r, u in cell_pairs(real) for s in real.seeds]



# Sweep letters as pipeline stages see them: a sweep = one product of params lists, so
# DVC's ``matrix:`` can express it (A: ratios x seeds, B: units x seeds, G: the full grid).
SWEEPS_OF = {"A": ("A",), "B": ("B",), "AB": ("A", "B"), "grid": ("G",)}


def real_sweeps(real: RealParams) -> tuple[str, ...]:
    """The sweep letters ``real.sweep`` trains: AB -> (A, B); grid -> (G,)."""
    return SWEEPS_OF[real.sweep]


def real_sweep_cells(real: RealParams) -> dict[str, list[tuple[float, int, int]]]:
    """{sweep letter: [(mask_ratio, mask_unit, seed), ...]} in DVC's matrix order.

    Unlike :func:`real_cells`, the cell both sweeps share is listed (and trained) once
    per sweep: DVC's matrix is a plain product and cannot leave one item out.
    """
    out: dict[str, list[tuple[float, int, int]]] = {}
    for sweep in real_sweeps(real):
        if sweep == "A":
            out[sweep] = [(r, real.sweep_a_unit, s) for r, s in itertools.product(real.mask_ratios, real.seeds)]
        elif sweep == "B":
            out[sweep] = [(real.sweep_b_ratio, u, s) for u, s in itertools.product(real.mask_units, real.seeds)]
        else:
            out[sweep] = list(itertools.product(real.mask_ratios, real.mask_units, real.seeds))
    return out


class Params(_Section):
    data: DataParams
    model: ModelParams
    train: TrainParams
    probe: ProbeParams
    grid: GridParams
    # optional so that params files written before the real track stay valid (track off)
    real: RealParams | None = None

    @model_validator(mode="after")
    def _cells_feasible(self) -> Params:
        size, vit = self.data.image_size, self.model.vit_patch
        if size % vit:
            raise ValueError(f"model.vit_patch={vit}: must divide data.image_size={size}")
        for i, p in enumerate(self.grid.patch_sizes):
            if p % vit:
                raise ValueError(f"grid.patch_sizes[{i}]={p}: must be a multiple of model.vit_patch={vit}")
            if size % p:
                raise ValueError(f"grid.patch_sizes[{i}]={p}: must divide data.image_size={size}")
        for p in self.grid.patch_sizes:
            for r in self.grid.mask_ratios:
                n_vis, n_hid = unit_counts(size, p, r)
                if n_vis == 0 or n_hid == 0:
                    raise ValueError(
                        f"grid cell mask_ratio={r}, patch_size={p}: keeps {n_vis} visible and "
                        f"{n_hid} hidden of {(size // p) ** 2} masking units; each needs at least one"
                    )
        return self


def real_enabled(params: Params) -> bool:
    """Whether the real-image track runs: a ``real:`` section with ``enabled: true``."""
    return params.real is not None and params.real.enabled


def unit_counts(image_size: int, patch_size: int, mask_ratio: float) -> tuple[int, int]:
    """(visible, hidden) masking units of one cell, with MAE's rounding ``int(L * (1 - r))``."""
    n_units = (image_size // patch_size) ** 2
    n_visible = int(n_units * (1 - mask_ratio))
    return n_visible, n_units - n_visible


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _lookup(raw: Any, loc: tuple[Any, ...]) -> Any:
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _one_line(err: ValidationError, raw: Any, source: str) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = _location(loc)
    value = _lookup(raw, loc)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {key!r}"
    if first["type"] == "missing":
        return f"{source}: missing key {key!r}"
    if first["type"] == "value_error":
        # Our validators name the offending entry themselves; add the path to it.
        if msg.startswith(("[", "=")):
            return f"{source}: {key}{msg}"
        if not loc:
            return f"{source}: {msg}"
        if isinstance(value, dict):
            return f"{source}: {key}.{msg}"
    return f"{source}: {key}={value!r}: {msg}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; raise :class:`ParamsError` with one line."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_one_line(err, raw, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; every failure is one :class:`ParamsError` line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}") from None
    return parse_params(raw, str(path))


def section_dict(params: Params, sections: list[str]) -> dict[str, Any]:
    """The named sections as plain JSON-ready data (the part of the config a step reads)."""
    return {name: getattr(params, name).model_dump(mode="json") for name in sections}


def digest(obj: Any) -> str:
    """A stable short hash of JSON-ready data: identifies a resolved config."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cell_id(mask_ratio: float, patch_size: int, seed: int) -> str:
    """The name of one grid cell in every path: ``r0.75_p4_s0``.

    ``repr`` of a Python float is what DVC's ``${item...}`` interpolation prints too, so
    both tools spell the same path.
    """
    if not math.isfinite(mask_ratio):
        raise ParamsError(f"mask_ratio={mask_ratio}: not a finite number")
    return f"r{float(mask_ratio)!r}_p{int(patch_size)}_s{int(seed)}"
