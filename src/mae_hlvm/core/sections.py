"""The sections of ``params.yaml``, one typed, frozen model each, with their own rules.

Validation only: a section refuses a bad value with one ValueError line naming the key,
and holds the values the steps then read. Cross-section rules and the loader are in
:mod:`mae_hlvm.core.config`; the cell geometry the rules check is
:mod:`mae_hlvm.core.cells`' (the same functions the steps compute with).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mae_hlvm.core.limits import (
    MAX_WEIGHT_DECAY,
    MIN_IMAGES_PER_CLASS,
    check_memory,
    check_peak_lr,
    check_scale,
    check_seed,
)


class Section(BaseModel):
    # Unknown keys are typos until proven otherwise: forbid them. No float may be .inf or
    # .nan: every float here is a size, scale, rate or ratio, and a non-finite one only
    # fails later, far from its cause (``weight_decay: .inf`` ended in "loss became nan").
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def content_sizes(depth: int, parts: list[int], replication: int) -> list[int]:
    """Copy tree: items in a node's content per level, n_0 = P_0, n_l = n_{l-1} r / 4 + P_l."""
    sizes = [parts[0]]
    for level in range(1, depth + 1):
        sizes.append(sizes[-1] * replication // 4 + parts[level])
    return sizes


def copytree_problem(data: DataParams) -> str | None:
    """Why the copy tree cannot be built as ``data`` asks (a message naming the key), or None."""
    parts, r = list(data.latent_dims), data.replication
    if data.texture_separation:
        return ("data.texture_separation: the copytree generator has no texture cue; set it to 0 (the quadtree "
                "generator has one)")
    sizes = content_sizes(data.depth, parts, r)
    for level in range(data.depth):
        if sizes[level] * r % 4:
            return (f"data.latent_dims[{level}]={parts[level]}: a level-{level} node holds {sizes[level]} items, each "
                    f"copied into {r} of 4 children; {sizes[level]} x {r} must divide by 4 so every child gets as many")
    block = data.image_size // 2**data.depth
    capacity = block * block * data.channels
    if sizes[-1] > capacity:
        return (f"data.latent_dims={parts}: a leaf holds {sizes[-1]} parts but renders only {block}x{block}x"
                f"{data.channels}={capacity} pixel values, too few for an invertible map; lower latent_dims or "
                "data.replication")
    return None


class DataParams(Section):
    # quadtree: hlvm-quadtree-4 (docs/generator.md); copytree: hlvm-copytree-1, the generator that
    # meets the theorems' premises (docs/theorem.md). Absent: quadtree, as params files written before it.
    generator: Literal["quadtree", "copytree"] = "quadtree"
    image_size: int = Field(gt=0)
    channels: int = Field(gt=0)
    depth: int = Field(ge=1, le=5)
    latent_dims: list[int]
    noise_scales: list[float]
    class_separation: float = Field(gt=0)
    # The texture cue (docs/generator.md): every leaf's innovation is shifted by this times
    # a unit vector of its class. 0 = no texture cue: the data of generator version 3.
    texture_separation: float = Field(default=0.0, ge=0)
    n_classes: int = Field(ge=2)
    pixel_noise: float = Field(ge=0)
    n_train: int = Field(gt=0)
    n_test: int = Field(gt=0)
    seed: int = Field(ge=0)
    # copytree only: each item of a node is copied into this many of its 4 children, and the
    # strength of the renderer's coupling layers (0 = a linear renderer)
    replication: int = Field(default=2, ge=1, le=4)
    nonlinearity: float = Field(default=0.0, ge=0, le=4)

    @field_validator("latent_dims")
    @classmethod
    def _dims_positive(cls, v: list[int]) -> list[int]:
        for i, d in enumerate(v):
            if d <= 0:
                raise ValueError(f"[{i}]={d}: every latent dimension must be > 0")
        return v

    @model_validator(mode="after")
    def _tree_invertible(self) -> DataParams:
        if len(self.latent_dims) != self.depth + 1:
            return self  # _levels_consistent names it
        if self.generator == "copytree":
            problem = copytree_problem(self)
            if problem:
                raise ValueError(problem.removeprefix("data."))
            return self
        v = self.latent_dims
        for i in range(1, len(v)):
            if 4 * v[i] < v[i - 1]:
                raise ValueError(
                    f"latent_dims[{i}]={v[i]}: a parent's four children together need at least its dimension "
                    f"({v[i - 1]}), so each child at least {-(-v[i - 1] // 4)}, for the map to be invertible"
                )
        return self

    @field_validator("noise_scales")
    @classmethod
    def _scales_nonneg(cls, v: list[float]) -> list[float]:
        for i, s in enumerate(v):
            if not s >= 0:
                raise ValueError(f"[{i}]={s}: noise scales must be >= 0")
            try:
                check_scale(s)
            except ValueError as err:
                raise ValueError(f"[{i}]{err}") from None
        return v

    @field_validator("class_separation", "texture_separation", "pixel_noise")
    @classmethod
    def _scale_bounded(cls, v: float) -> float:
        check_scale(v)
        return v

    @field_validator("seed")
    @classmethod
    def _seed_bounded(cls, v: int) -> int:
        check_seed(v)
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

    @model_validator(mode="after")
    def _feasible(self) -> DataParams:
        # The generator's leaf->pixel map must be injective (generate.py refuses it too,
        # but only when the step runs).
        block = self.image_size // 2**self.depth
        n_pixels = block * block * self.channels
        if self.latent_dims[-1] > n_pixels:
            raise ValueError(
                f"latent_dims[{self.depth}]={self.latent_dims[-1]}: a leaf block has only {block}x{block}x"
                f"{self.channels}={n_pixels} pixel values, too few to encode it injectively; "
                "lower the leaf dimension, the depth, or raise image_size"
            )
        for key, n in (("n_train", self.n_train), ("n_test", self.n_test)):
            need = MIN_IMAGES_PER_CLASS * self.n_classes
            if n < need:
                fewer = n // MIN_IMAGES_PER_CLASS
                or_fewer = f" or lower data.n_classes to at most {fewer}" if fewer >= 2 else ""
                raise ValueError(
                    f"{key}={n}: the class probe needs at least {MIN_IMAGES_PER_CLASS} images per class in each split "
                    f"on average, {need} for data.n_classes={self.n_classes}: raise data.{key} to {need}{or_fewer}"
                )
        latents = sum(4**level * d for level, d in enumerate(self.latent_dims))
        # the cue-conflict set (texture_separation > 0) holds n_test more images
        n_images = self.n_train + self.n_test * (2 if self.texture_separation > 0 else 1)
        check_memory(
            self, n_images, self.channels * self.image_size**2 + latents, "data.",
            f"({self.channels}x{self.image_size}x{self.image_size} pixels + {latents} latent values)",
        )
        return self


class ModelParams(Section):
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
        for key in ("embed_dim", "decoder_embed_dim"):
            dim = getattr(self, key)
            # model.sincos_pos_embed: sin and cos of the row and of the column, dim / 4 each
            if dim % 4:
                heads = self.num_heads if key == "embed_dim" else self.decoder_num_heads
                step = math.lcm(4, heads)  # divisible by the heads too
                below, above = dim - dim % step, dim - dim % step + step
                try_ = f"{below} or {above}" if below else str(above)
                raise ValueError(
                    f"{key}={dim}: must be divisible by 4 for the fixed 2-D sine-cosine position embedding "
                    f"(sin and cos of row and column, a quarter of the width each); try {try_}"
                )
            if int(dim * self.mlp_ratio) < 1:
                raise ValueError(
                    f"mlp_ratio={self.mlp_ratio}: gives {key}={dim} an MLP of int({dim} x {self.mlp_ratio}) = 0 hidden "
                    "units; raise model.mlp_ratio (transformers use 4)"
                )
        return self


class TrainParams(Section):
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    base_lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_epochs: float = Field(ge=0)
    betas: list[float]
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["auto", "fp32", "bf16", "bf16-weights"]
    threads: int = Field(ge=1)
    # one training job per grid cell, or per seed (all of a seed's cells in one process, and
    # all of a real sweep's cells of a seed: on a GPU they train together, on the CPU one
    # after the other; same bytes either way)
    job: Literal["cell", "seed"] = "cell"

    @field_validator("betas")
    @classmethod
    def _betas_in_unit(cls, v: list[float]) -> list[float]:
        if len(v) != 2:
            raise ValueError(f"={v}: needs exactly two values (beta1, beta2)")
        for i, b in enumerate(v):
            if not 0 <= b < 1:
                raise ValueError(f"[{i}]={b}: Adam betas must be in [0, 1)")
        return v

    @field_validator("weight_decay")
    @classmethod
    def _decay_bounded(cls, v: float) -> float:
        if v > MAX_WEIGHT_DECAY:
            raise ValueError(
                f"={v}: must be at most {MAX_WEIGHT_DECAY:g}; AdamW shrinks every weight by lr x weight_decay "
                "per step and more erases what the model learns (MAE: 0.05)"
            )
        return v

    @field_validator("threads")
    @classmethod
    def _threads_bounded(cls, v: int) -> int:
        if v > 1024:
            raise ValueError(f"={v}: must be at most 1024 CPU threads per job: use the cores of one machine or fewer")
        return v

    @model_validator(mode="after")
    def _schedule(self) -> TrainParams:
        # lr_at: linear warmup over warmup_epochs, then cosine decay to the end. A warmup
        # as long as the run never reaches the peak and never decays.
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs}: must be below train.epochs={self.epochs}, or the learning rate "
                "never leaves its warmup ramp (it stays near 0): lower train.warmup_epochs"
            )
        # A batch_size above n_train is allowed: train_cell trains on min(batch_size, n_train).
        check_peak_lr("base_lr", "train.base_lr", self.base_lr, "train.batch_size", self.batch_size)
        return self


class ProbeParams(Section):
    pooling: Literal["mean", "cls"]
    ridge_alphas: list[float]
    cv_folds: int = Field(ge=2)
    nystroem_components: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    n_recon_images: int = Field(gt=0)
    # the probes fit on the first max_train training images: their memory and time grow with it
    # (a probe on 100,000 images held 13.7 GB), and a linear probe needs far fewer than an MAE
    max_train: int = Field(gt=0)
    # the masked probe (synthetic/masked.py): fixed masks per cell, and each visible token's
    # features kept on this many principal components. Absent: 4 and 16.
    masked_masks: int = Field(default=4, ge=1, le=64)
    masked_token_dims: int = Field(default=16, ge=1, le=1024)

    @field_validator("ridge_alphas")
    @classmethod
    def _alphas_positive(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("must list at least one alpha")
        for i, a in enumerate(v):
            if not a > 0:
                raise ValueError(f"[{i}]={a}: ridge alphas must be > 0")
        return v


def ratios_in_open_unit(v: list[float]) -> list[float]:
    for i, r in enumerate(v):
        if not 0 < r < 1:
            raise ValueError(f"[{i}]={r}: a masking ratio must be in (0, 1)")
    return v


def at_least(v: list[int], low: int) -> list[int]:
    for i, x in enumerate(v):
        if x < low:
            raise ValueError(f"[{i}]={x}: must be >= {low}")
    return v


def seeds_bounded(v: list[int]) -> list[int]:
    for i, x in enumerate(v):
        try:
            check_seed(x)
        except ValueError as err:
            raise ValueError(f"[{i}]{err}") from None
    return v


def distinct_nonempty(v: list[Any], repeated: str) -> list[Any]:
    if not v:
        raise ValueError("must list at least one value")
    for i, x in enumerate(v):
        if x in v[:i]:
            raise ValueError(f"[{i}]={x}: {repeated}")
    return v


class GridParams(Section):
    mask_ratios: list[float]
    mask_units: list[int]
    seeds: list[int]

    @field_validator("mask_ratios")
    @classmethod
    def _ratios_open_unit(cls, v: list[float]) -> list[float]:
        return ratios_in_open_unit(v)

    @field_validator("mask_units", "seeds")
    @classmethod
    def _nonneg(cls, v: list[int], info: Any) -> list[int]:
        if info.field_name == "seeds":
            return seeds_bounded(at_least(v, 0))
        return at_least(v, 1)

    @field_validator("mask_ratios", "mask_units", "seeds")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        return distinct_nonempty(v, "repeated grid value")


class StabilityParams(Section):
    """The ``stability:`` section: the stability set, cells trained a second time at
    ``budget_factor`` x the image passes (epochs x factor; the same batch, peak lr and
    warmup; the cosine over the whole longer run), at seed ``seed``. A claim counts only
    when its effect keeps its sign at both budgets (:mod:`mae_hlvm.review.claims`).

    ``mask_ratios`` x ``mask_units``: the synthetic grid's cells in the set (the GPU and
    paper profiles: the whole grid); ``real``: every cell of the real track's sweeps too.
    """

    enabled: bool
    budget_factor: int = Field(ge=2, le=100)
    seed: int = Field(ge=0)
    mask_ratios: list[float]
    mask_units: list[int]
    real: bool

    @field_validator("mask_ratios", "mask_units")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        return distinct_nonempty(v, "repeated stability value")
