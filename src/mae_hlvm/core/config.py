"""The one schema for ``params.yaml``.

Every step of the pipeline, the Snakefile and the test suite load parameters through
:func:`load_params`, so a bad edit stops everything with the same one-line message
before any job runs. The config is flat and typed (nanoGPT style): five sections, a
grid and the optional real-image track (``real:``). Cross-field rules (a masking unit that does not tile the image, a cell that keeps
no visible token) are checked here too, because they are properties of the params, not
of a run. So are the sizes a run would need (memory, model weights, image passes): a
params file that no machine we plan for could run stops here, not in a job an hour in.

The file itself is read strictly too (:class:`_ParamsLoader`): Snakemake and this package
read it with PyYAML (YAML 1.1), DVC with ruamel.yaml (YAML 1.2), so a repeated key or a
value the two YAML versions read differently (``010``, ``1e-3``, ``yes``) is refused
rather than letting the two tools run different experiments.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import itertools
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from yaml.reader import ReaderError

from mae_hlvm.core import limits


class ParamsError(ValueError):
    """A params.yaml problem, phrased as one line that names the key and the value (a long value cut)."""

    def __init__(self, message: str) -> None:
        super().__init__(limits.cut_long_values(message))


# ---------------------------------------------------------------- limits
# Sizes no run we plan for comes near; past them a job would hang, exhaust memory or die
# in a traceback, so ``check`` refuses the params instead, naming what to lower.

# Seeds reach numpy's legacy RandomState through scikit-learn's ``random_state`` (t-SNE,
# Nystroem), which takes only 32-bit seeds.
SEED_LIMIT = 2**32

# The synthetic dataset and the real track's converted split are held in RAM as float32.
# The limit is the largest machine this project plans for, not this machine's RAM:
# ``check`` runs where Snakemake or DVC read the params (a laptop, a cluster's login
# node), not where the jobs run, and profiles/paper/params.yaml needs 718 GiB on a 1 TiB
# node (docs/real_track.md). Read through :func:`memory_limit_bytes`, so tests can lower it.
MEMORY_LIMIT_BYTES = 2**40

# Encoder + decoder weights. ViT-H/14 has 0.63e9; AdamW training holds 16 bytes per
# weight (weights, gradients, two moments): 30 GiB at this limit before any activation.
MAX_MODEL_WEIGHTS = 2_000_000_000

# Tokens per image (image_size / vit_patch)**2. Attention costs tokens**2 per head and the
# probe and attention figures run the encoder on every token; ViT-B/16 at 224 px has 196,
# the paper profile's ViT patch 8 has 784.
MAX_TOKENS = 4096

# Epochs x train images of one run (pretraining or the real track's linear probe). The
# paper's ImageNet pretraining is 800 x 1.23M = 9.9e8; ten times that would run for
# months on one GPU, so more is a typo (an epochs count meant for a smaller split).
MAX_IMAGE_PASSES = 10**10

# Peak learning rate (base_lr * batch_size / 256). AdamW moves each weight by about the
# learning rate per step, so a peak above 1 diverges at once (MAE's peak is 6e-3).
MAX_PEAK_LR = 1.0

# Decoupled weight decay shrinks every weight by lr * weight_decay per step; above 1 it
# erases what the model learns (MAE: 0.05).
MAX_WEIGHT_DECAY = 1.0

# Generator scales. The gains are calibrated on variances, which overflow float64 near
# 1e154; any useful setting is below 100.
MAX_GENERATOR_SCALE = 1e6

# The synthetic class probe (RidgeClassifierCV, stratified ``probe.cv_folds``-fold CV on
# the train split, scored on the test split) needs examples of every class in both
# splits. Labels are drawn uniformly, so this is a per-class average; with fewer, classes
# miss from a split and the accuracy means nothing (``n_classes: 1e6`` read 0.000).
MIN_IMAGES_PER_CLASS = 10

# The real track: the learning gate's linear reference picks its ridge alpha on the last
# quarter of the train split and the linear probe's BatchNorm needs two images a batch.
MIN_REAL_TRAIN = 10
# t-SNE's perplexity is (n - 1) / 3 and must be > 0; below 5 images every accuracy is
# one of a handful of fractions.
MIN_REAL_TEST = 5
# The built-in real datasets: their class count and size are known without the data.
# 10 digit classes each; t-SNE's silhouette score needs more points than classes, so
# their test split needs 2 images per class.
BUILTIN_CLASSES = {"mnist": 10, "digits": 10}
BUILTIN_SPLITS = {"mnist": (60_000, 10_000)}  # MNIST's official train and test files
BUILTIN_TOTAL = {"digits": 1797}  # scikit-learn's digits, split by split_seed
BUILTIN_SIDE = {"mnist": 28, "digits": 8}  # native image side, for fit: pad

GIB = 2**30


def dataset_bytes(params: Params, track: str) -> int:
    """RAM the ``track``'s dataset takes as float32 ("synthetic": pixels and latents; "real")."""
    if track == "real":
        r = params.real
        return 4 * (r.n_train + r.n_test) * r.channels * r.image_size**2
    d = params.data
    latents = sum(4**level * dim for level, dim in enumerate(d.latent_dims))
    return 4 * (d.n_train + d.n_test) * (d.channels * d.image_size**2 + latents)


def memory_limit_bytes() -> int:
    """The most RAM a dataset may take (:data:`MEMORY_LIMIT_BYTES`); a function so tests can lower it."""
    return MEMORY_LIMIT_BYTES


def _check_seed(value: int) -> None:
    if value >= SEED_LIMIT:
        raise ValueError(
            f"={value}: a seed must be below 2**32 = {SEED_LIMIT} "
            "(scikit-learn passes it to numpy's RandomState, which takes 32-bit seeds)"
        )


def _check_scale(value: float) -> None:
    if value > MAX_GENERATOR_SCALE:
        raise ValueError(
            f"={value}: must be at most {MAX_GENERATOR_SCALE:g}, far past any useful setting (below 100); "
            "near 1e154 the generator's variances overflow"
        )


def _gib(n_bytes: float) -> str:
    gib = n_bytes / GIB
    if gib < 10:
        return f"{gib:.2f} GiB"
    return f"{gib:,.1f} GiB" if gib < 1e6 else f"{gib:.3g} GiB"


def _check_memory(section: Any, n_images: int, floats_per_image: int, prefix: str, what: str) -> None:
    """Refuse a dataset of ``n_images`` x ``floats_per_image`` float32 over :func:`memory_limit_bytes`.

    The message leads with the bigger factor: the image count, or the image itself.
    """
    n_bytes = 4 * n_images * floats_per_image
    limit = memory_limit_bytes()
    if n_bytes <= limit:
        return
    if n_images >= floats_per_image:
        lead = "n_train"
    else:
        lead = "channels" if getattr(section, "channels", 0) > section.image_size else "image_size"
    raise ValueError(
        f"{lead}={getattr(section, lead)}: the dataset needs {n_images} images x {what} x 4 bytes = {_gib(n_bytes)} "
        f"of RAM (float32), over the {_gib(limit)} allowed: lower {prefix}n_train, {prefix}n_test or "
        f"{prefix}image_size"
    )


# The checks below raise ValueError messages that begin with the key as the model that
# raises them sees it ("vit_patch=8" inside real:, which _one_line prefixes with "real."),
# and name every other key in full, so the line reads the same from every section.


def _check_tokens(lead: str, full: str, image_size: int, vit_patch: int, image_key: str) -> None:
    tokens = (image_size // vit_patch) ** 2
    if tokens > MAX_TOKENS:
        raise ValueError(
            f"{lead}={vit_patch}: {image_key}={image_size} makes {tokens} tokens per image, over "
            f"{MAX_TOKENS} (attention costs tokens**2): raise {full} or lower {image_key}"
        )


def _check_passes(lead: str, full: str, epochs: int, n_train: int, n_key: str) -> None:
    passes = epochs * n_train
    if passes > MAX_IMAGE_PASSES:
        raise ValueError(
            f"{lead}={epochs}: {epochs} epochs x {n_key}={n_train} = {passes:.2g} image passes per run, over the "
            f"{MAX_IMAGE_PASSES:.0e} allowed (10x the paper's ImageNet pretraining): lower {full}"
        )


def _check_peak_lr(lead: str, full: str, base_lr: float, batch_key: str, batch_size: int) -> None:
    peak = base_lr * batch_size / 256
    if peak > MAX_PEAK_LR:
        raise ValueError(
            f"{lead}={base_lr}: the peak learning rate {full} x {batch_key} / 256 = {peak:.3g} is over "
            f"{MAX_PEAK_LR:g}, where AdamW diverges at once (MAE peaks at 6e-3): lower {full}"
        )


class _Section(BaseModel):
    # Unknown keys are typos until proven otherwise: forbid them. No float may be .inf or
    # .nan: every float here is a size, scale, rate or ratio, and a non-finite one only
    # fails later, far from its cause (``weight_decay: .inf`` ended in "loss became nan").
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DataParams(_Section):
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
            try:
                _check_scale(s)
            except ValueError as err:
                raise ValueError(f"[{i}]{err}") from None
        return v

    @field_validator("class_separation", "texture_separation", "pixel_noise")
    @classmethod
    def _scale_bounded(cls, v: float) -> float:
        _check_scale(v)
        return v

    @field_validator("seed")
    @classmethod
    def _seed_bounded(cls, v: int) -> int:
        _check_seed(v)
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
        _check_memory(
            self, n_images, self.channels * self.image_size**2 + latents, "data.",
            f"({self.channels}x{self.image_size}x{self.image_size} pixels + {latents} latent values)",
        )
        return self


# Named MAE sizes (as facebookresearch/mae's ``mae_vit_base_patch16``; the ViT patch is
# not part of the name here, because each track sets its own: model.vit_patch and
# real.vit_patch). A profile names one (``model: preset: mae_vit_base``) and
# ``python -m mae_hlvm profile`` writes its widths into params.yaml (mae_hlvm.core.profiles).
MODEL_PRESETS: dict[str, dict[str, int | float]] = {
    # this project's CPU-sized MAE: the default of both tracks
    "mae_vit_mini": {"embed_dim": 64, "depth": 3, "num_heads": 4, "decoder_embed_dim": 32, "decoder_depth": 1,
                     "decoder_num_heads": 4, "mlp_ratio": 2.0},
    # MAE's ViT-B, -L and -H encoders with its 8-block, 512-wide decoder (the paper's ViT-B)
    "mae_vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "decoder_embed_dim": 512, "decoder_depth": 8,
                     "decoder_num_heads": 16, "mlp_ratio": 4.0},
    "mae_vit_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "decoder_embed_dim": 512, "decoder_depth": 8,
                      "decoder_num_heads": 16, "mlp_ratio": 4.0},
    "mae_vit_huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "decoder_embed_dim": 512, "decoder_depth": 8,
                     "decoder_num_heads": 16, "mlp_ratio": 4.0},
}


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


class TrainParams(_Section):
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
        _check_peak_lr("base_lr", "train.base_lr", self.base_lr, "train.batch_size", self.batch_size)
        return self


class ProbeParams(_Section):
    pooling: Literal["mean", "cls"]
    ridge_alphas: list[float]
    cv_folds: int = Field(ge=2)
    nystroem_components: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    n_recon_images: int = Field(gt=0)
    # the probes fit on the first max_train training images: their memory and time grow with it
    # (a probe on 100,000 images held 13.7 GB), and a linear probe needs far fewer than an MAE
    max_train: int = Field(gt=0)

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


def _seeds_bounded(v: list[int]) -> list[int]:
    for i, x in enumerate(v):
        try:
            _check_seed(x)
        except ValueError as err:
            raise ValueError(f"[{i}]{err}") from None
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
    mask_units: list[int]
    seeds: list[int]

    @field_validator("mask_ratios")
    @classmethod
    def _ratios_open_unit(cls, v: list[float]) -> list[float]:
        return _ratios_in_open_unit(v)

    @field_validator("mask_units", "seeds")
    @classmethod
    def _nonneg(cls, v: list[int], info: Any) -> list[int]:
        if info.field_name == "seeds":
            return _seeds_bounded(_at_least(v, 0))
        return _at_least(v, 1)

    @field_validator("mask_ratios", "mask_units", "seeds")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        return _distinct_nonempty(v, "repeated grid value")


class RobustnessParams(_Section):
    """The ``robustness:`` section: a fixed subset of grid cells retrained at
    ``budget_factor`` x ``train.epochs``, to see whether verdicts and the ordering of root
    R^2 over ratios survive a longer budget (:mod:`mae_hlvm.review.robustness`)."""

    enabled: bool
    budget_factor: int = Field(ge=2, le=100)
    mask_ratios: list[float]
    mask_units: list[int]
    seeds: list[int]

    @field_validator("mask_ratios", "mask_units", "seeds")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        return _distinct_nonempty(v, "repeated robustness value")


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
    # Geirhos et al.'s cue-conflict layout, <folder>/<shape>/<shape><digits>-<texture><digits>.png,
    # for the paper's Table 2 (shape bias); "" = none. Optional, so older params files stay valid.
    cue_conflict: str = ""

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
        if info.field_name == "seeds":
            return _seeds_bounded(_at_least(v, 0))
        return _at_least(v, 1)

    @field_validator("split_seed", "eval_seed")
    @classmethod
    def _seed_bounded(cls, v: int) -> int:
        _check_seed(v)
        return v

    @field_validator("mask_ratios", "mask_units", "seeds")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        return _distinct_nonempty(v, "repeated value")

    @model_validator(mode="after")
    def _consistent(self) -> RealParams:
        if self.dataset in ("folder", "npz") and not self.path:
            raise ValueError(f"path={self.path!r}: dataset {self.dataset!r} needs a path to the data")
        native = BUILTIN_SIDE.get(self.dataset)
        if self.fit == "pad" and native and self.image_size < native:
            name = "MNIST" if self.dataset == "mnist" else "digits"
            raise ValueError(
                f"image_size={self.image_size}: fit 'pad' cannot shrink {native}x{native} {name}; use fit 'resize'"
            )
        check_cells(("image_size", self.image_size), ("vit_patch", self.vit_patch), self._named_units(),
                    cell_pairs(self), f"sweep={self.sweep!r} cell")
        return self

    @model_validator(mode="after")
    def _feasible(self) -> RealParams:
        if self.n_train < MIN_REAL_TRAIN:
            raise ValueError(
                f"n_train={self.n_train}: the real track needs at least {MIN_REAL_TRAIN} train images (the learning "
                "gate's linear reference fits on three quarters and picks its alpha on the last quarter)"
            )
        n_classes = BUILTIN_CLASSES.get(self.dataset)
        min_test = max(MIN_REAL_TEST, 2 * n_classes) if n_classes else MIN_REAL_TEST
        if self.n_test < min_test:
            why = (
                f"{n_classes} classes need 2 each, as t-SNE's silhouette score needs more points than classes"
                if n_classes else "t-SNE and the accuracies need a few"
            )
            raise ValueError(f"n_test={self.n_test}: the real track needs at least {min_test} test images ({why})")
        self._fits_builtin()
        _check_memory(
            self, self.n_train + self.n_test, self.channels * self.image_size**2, "real.",
            f"{self.channels}x{self.image_size}x{self.image_size} pixels",
        )
        _check_tokens("vit_patch", "real.vit_patch", self.image_size, self.vit_patch, "real.image_size")
        _check_passes("epochs", "real.epochs", self.epochs, self.n_train, "real.n_train")
        _check_passes("probe_epochs", "real.probe_epochs", self.probe_epochs, self.n_train, "real.n_train")
        _check_peak_lr("base_lr", "real.base_lr", self.base_lr, "real.batch_size", self.batch_size)
        return self

    def _fits_builtin(self) -> None:
        """MNIST and digits have known sizes: asking for more images fails in prepare_real."""
        if self.dataset in BUILTIN_SPLITS:
            for key, n, avail, split in zip(("n_train", "n_test"), (self.n_train, self.n_test),
                                            BUILTIN_SPLITS[self.dataset], ("train", "test")):
                if n > avail:
                    raise ValueError(f"{key}={n}: MNIST's {split} split has only {avail} images: lower real.{key}")
        if self.dataset in BUILTIN_TOTAL and self.n_train + self.n_test > BUILTIN_TOTAL[self.dataset]:
            total = BUILTIN_TOTAL[self.dataset]
            raise ValueError(
                f"n_train={self.n_train}: real.n_train + real.n_test = {self.n_train + self.n_test}, but scikit-learn's "
                f"digits has only {total} images: lower real.n_train and/or real.n_test"
            )

    @model_validator(mode="after")
    def _cue_folder(self) -> RealParams:
        """A cue-conflict folder, when the track is on, must exist, be a folder and hold something."""
        if self.enabled and self.cue_conflict:
            problem = _cue_folder_problem(Path(self.cue_conflict))
            if problem:
                raise ValueError(
                    f"cue_conflict={self.cue_conflict!r}: {problem}: give a folder laid out as "
                    "<shape class>/<shape class><digits>-<texture class><digits>.png (e.g. cat/cat3-elephant1.png), "
                    'or "" for no cue-conflict set'
                )
        return self

    def _named_units(self) -> list[tuple[str, int]]:
        named = [(f"mask_units[{i}]", u) for i, u in enumerate(self.mask_units)]
        return named + [("sweep_a_unit", self.sweep_a_unit)]


def _cue_folder_problem(folder: Path) -> str | None:
    """What makes ``folder`` unusable as a cue-conflict folder before it is read; None if nothing."""
    if not folder.exists():
        return "folder not found"
    if not folder.is_dir():
        return "is a file, not a folder"
    try:
        visible = [name for name in os.listdir(folder) if not name.startswith(".")]
    except OSError as err:
        return f"cannot list this folder ({err.strerror})"
    return None if visible else "the folder is empty (hidden entries aside)"


def check_cells(image: tuple[str, int], vit: tuple[str, int], units: list[tuple[str, int]],
                cells: list[tuple[float, int]], cell_label: str) -> None:
    """Both tracks' geometry rules, one ValueError line each: the ViT patch divides the image,
    every masking unit is a multiple of the patch and divides the image, and every (ratio,
    unit) cell keeps at least one visible and one hidden masking unit. ``image`` and ``vit``
    are (key as the user wrote it, value)."""
    (size_key, size), (vit_key, patch) = image, vit
    if size % patch:
        raise ValueError(f"{vit_key}={patch}: must divide {size_key}={size}")
    for name, unit in units:
        if unit % patch:
            raise ValueError(f"{name}={unit}: a masking unit must be a multiple of {vit_key}={patch}")
        if size % unit:
            raise ValueError(f"{name}={unit}: a masking unit must divide {size_key}={size}")
    for ratio, unit in cells:
        n_vis, n_hid = unit_counts(size, unit, ratio)
        if n_vis == 0 or n_hid == 0:
            raise ValueError(
                f"{cell_label} mask_ratio={ratio}, mask_unit={unit}: keeps {n_vis} visible and {n_hid} hidden "
                f"of {(size // unit) ** 2} masking units; each needs at least one"
            )


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
    # optional likewise: absent means no budget-robustness stage
    robustness: RobustnessParams | None = None

    @model_validator(mode="before")
    @classmethod
    def _real_not_blank(cls, raw: Any) -> Any:
        # `real:` with nothing under it (keys lost to a bad indent, or deleted) would
        # silently turn the track off: absent means off, blank is a mistake.
        if isinstance(raw, dict) and "real" in raw and raw["real"] is None:
            raise ValueError(
                "real: the section is empty (null): give its keys, set real.enabled: false, or delete the "
                "'real:' line to turn the real-image track off"
            )
        return raw

    @model_validator(mode="after")
    def _cells_feasible(self) -> Params:
        grid = self.grid
        check_cells(("data.image_size", self.data.image_size), ("model.vit_patch", self.model.vit_patch),
                    [(f"grid.mask_units[{i}]", u) for i, u in enumerate(grid.mask_units)],
                    [(r, u) for u in grid.mask_units for r in grid.mask_ratios], "grid cell")
        return self

    @model_validator(mode="after")
    def _runs_feasible(self) -> Params:
        data, model, train, probe = self.data, self.model, self.train, self.probe
        size, vit = data.image_size, model.vit_patch
        # probe._check_inputs and probe.region_features: every latent node of the deepest
        # level must own at least one token, so the ViT patch must fit inside a leaf block.
        leaf = size // 2**data.depth
        if vit > leaf:
            raise ValueError(
                f"model.vit_patch={vit}: larger than a leaf's {leaf}x{leaf}-pixel block (data.image_size={size} / "
                f"2**data.depth); the probes need a token per leaf: use model.vit_patch <= {leaf}"
            )
        _check_tokens("model.vit_patch", "model.vit_patch", size, vit, "data.image_size")
        _check_weights(model, data.channels, vit, "data.channels", "model.vit_patch")
        if self.real is not None:
            _check_weights(model, self.real.channels, self.real.vit_patch, "real.channels", "real.vit_patch")
        _check_passes("train.epochs", "train.epochs", train.epochs, data.n_train, "data.n_train")
        per_class = data.n_train // data.n_classes
        if probe.cv_folds > per_class:
            raise ValueError(
                f"probe.cv_folds={probe.cv_folds}: stratified CV needs that many train images of every class, and "
                f"data.n_train={data.n_train} / data.n_classes={data.n_classes} gives {per_class} on average "
                f"(the probe would silently use fewer folds): use at most {per_class}"
            )
        if self.real is not None and train.warmup_epochs >= self.real.epochs:
            raise ValueError(
                f"train.warmup_epochs={train.warmup_epochs}: the real track shares it and must warm up for less than "
                f"real.epochs={self.real.epochs}, or its learning rate never leaves the warmup ramp: lower "
                "train.warmup_epochs or raise real.epochs"
            )
        return self

    @model_validator(mode="after")
    def _subset_of_grid(self) -> Params:
        # last, so that the grid's own problems are named first; a subset that is off names no cells
        if self.robustness is None or not self.robustness.enabled:
            return self
        for key in ("mask_ratios", "mask_units", "seeds"):
            grid = getattr(self.grid, key)
            for i, v in enumerate(getattr(self.robustness, key)):
                if v not in grid:
                    raise ValueError(
                        f"robustness.{key}[{i}]={v}: the subset must be cells of the grid; grid.{key} is {grid}"
                    )
        passes = self.train.epochs * self.robustness.budget_factor * self.data.n_train
        # (a grid budget already over the limit is train.epochs' error, named by its own check)
        if passes > MAX_IMAGE_PASSES and self.train.epochs * self.data.n_train <= MAX_IMAGE_PASSES:
            raise ValueError(
                f"robustness.budget_factor={self.robustness.budget_factor}: {passes:.3g} image passes per cell, "
                f"over {MAX_IMAGE_PASSES:.0e}: lower it or train.epochs"
            )
        return self


def model_weights(model: ModelParams, channels: int, vit_patch: int) -> int:
    """Weights of the MAE (encoder and decoder, as model.MaskedAutoencoder builds it), biases included."""
    return sum(_weight_terms(model, channels, vit_patch).values())


def _weight_terms(model: ModelParams, channels: int, vit_patch: int) -> dict[str, int]:
    def blocks(dim: int, depth: int) -> int:
        hidden = int(dim * model.mlp_ratio)
        attention = 4 * dim * dim + 4 * dim  # qkv and proj
        mlp = 2 * dim * hidden + hidden + dim
        return depth * (attention + mlp + 4 * dim)  # + two LayerNorms

    d, dd, patch = model.embed_dim, model.decoder_embed_dim, vit_patch * vit_patch * channels
    return {
        "encoder": blocks(d, model.depth) + 4 * d + d * dd + dd,  # cls, norm, decoder_embed
        "decoder": blocks(dd, model.decoder_depth) + 3 * dd,  # mask token, norm
        "patches": patch * (d + dd) + patch,  # patch embedding and prediction
    }


def _check_weights(model: ModelParams, channels: int, vit_patch: int, channels_key: str, vit_key: str) -> None:
    terms = _weight_terms(model, channels, vit_patch)
    n = sum(terms.values())
    if n <= MAX_MODEL_WEIGHTS:
        return
    # lead with the key that made the biggest part of the model too big
    biggest = max(terms, key=terms.__getitem__)
    if biggest == "patches":
        lead = (vit_key, vit_patch) if vit_patch * vit_patch >= channels else (channels_key, channels)
    elif model.mlp_ratio > 16:
        lead = ("model.mlp_ratio", model.mlp_ratio)
    else:
        dim, depth = ("embed_dim", "depth") if biggest == "encoder" else ("decoder_embed_dim", "decoder_depth")
        key = dim if getattr(model, dim) >= getattr(model, depth) else depth
        lead = (f"model.{key}", getattr(model, key))
    raise ValueError(
        f"{lead[0]}={lead[1]}: the MAE (model.embed_dim={model.embed_dim}, model.depth={model.depth}, "
        f"model.decoder_embed_dim={model.decoder_embed_dim}, model.decoder_depth={model.decoder_depth}, "
        f"model.mlp_ratio={model.mlp_ratio}, {vit_key}={vit_patch}, {channels_key}={channels}) has {n:.3g} weights, "
        f"over {MAX_MODEL_WEIGHTS:.0e} ({_gib(16 * n)} to train with AdamW): make it smaller"
    )


def robustness_enabled(params: Params) -> bool:
    """Whether the budget-robustness stage runs: a ``robustness:`` section with ``enabled: true``."""
    return params.robustness is not None and params.robustness.enabled


def real_enabled(params: Params) -> bool:
    """Whether the real-image track runs: a ``real:`` section with ``enabled: true``."""
    return params.real is not None and params.real.enabled


def require_real(params: Params) -> RealParams:
    """The ``real:`` section, or one line saying the track is off (for the real track's steps)."""
    if params.real is None:
        raise ParamsError("params.yaml: no 'real:' section (the real-image track is off)")
    return params.real


def unit_counts(image_size: int, mask_unit: int, mask_ratio: float) -> tuple[int, int]:
    """(visible, hidden) masking units of one cell, with MAE's rounding ``int(L * (1 - r))``."""
    n_units = (image_size // mask_unit) ** 2
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


# Keys renamed since a release (README, "Changelog"): an old params file gets the new name, not
# just "unknown key". The masking unit had two names, patch_size and mask_unit (issue 14).
RENAMED_KEYS = {
    "grid.patch_sizes": "grid.mask_units",
    "robustness.patch_sizes": "robustness.mask_units",
}


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
    if first["type"] == "finite_number":
        return f"{source}: {key}={value!r}: must be a finite number (.inf and .nan are not allowed): write a number"
    if first["type"] == "int_type" and isinstance(value, float):
        whole = f"write {int(value)}" if value.is_integer() else "write a whole number"
        return f"{source}: {key}={value!r}: {msg}; {whole} (no decimal point or exponent)"
    if first["type"] == "model_type" and value is None:
        return f"{source}: {key}: the section is empty (null): give its keys, indented under '{key}:'"
    if value is None:
        return f"{source}: {key}: no value (null): {msg}"
    return f"{source}: {key}={_short(value)}: {msg}"


def _short(value: Any, limit: int = 80) -> str:
    """repr of a value for a one-line message, cut in the middle when long (a 400-digit number)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 4 :]} ({len(text)} characters)"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; raise :class:`ParamsError` with one line."""
    if raw is None:
        raise ParamsError(f"{source}: the file is empty: it needs the sections data, model, train, probe and grid")
    if not isinstance(raw, dict):
        kind = {list: "a list", str: "a single text value"}.get(type(raw), f"a single {type(raw).__name__} value")
        raise ParamsError(
            f"{source}: expected a mapping of sections (data:, model:, train:, probe:, grid:), got {kind}"
        )
    if isinstance(raw.get("model"), dict) and "preset" in raw["model"]:
        raise ParamsError(
            f"{source}: model.preset: a preset is for profiles; params.yaml holds the widths themselves, so that both "
            "tools read the same values: write it with `python -m mae_hlvm profile <name>` from a profile naming the "
            "preset (profiles/paper/params.yaml does)"
        )
    if "extends" in raw:
        raise ParamsError(
            f"{source}: extends: is for profiles (profiles/<name>/params.yaml); DVC reads params.yaml as it stands, so it "
            "must be complete: write it with `python -m mae_hlvm profile <name>`"
        )
    for old, new in RENAMED_KEYS.items():
        section, _, leaf = old.partition(".")
        if isinstance(raw.get(section), dict) and leaf in raw[section]:
            raise ParamsError(f"{source}: {old} is now called {new} (the masking unit has one name): rename the key")
    limits.check_lists(raw, source)  # sizes first: validating 10,000 values takes seconds
    limits.check_cells(raw, source)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_one_line(err, raw, source)) from None


def in_profiles_dir(path: Path) -> bool:
    """Whether ``path`` is a profile, ``profiles/<name>/params.yaml`` (mae_hlvm.core.profiles)."""
    return path.name == "params.yaml" and path.resolve().parent.parent.name == "profiles"


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; every failure is one :class:`ParamsError` line.

    The Snakefile, ``python -m mae_hlvm check`` and every step call this one function.
    """
    path = Path(path)
    source = _shown(path)
    raw = read_params_yaml(_read_text(path, source), source)
    if in_profiles_dir(path):
        from mae_hlvm.core.profiles import load_profile  # a profile: its values over the default's

        raw = load_profile(path)
    return parse_params(raw, source)


def _shown(path: Any) -> str:
    """A path for a one-line message: control characters (a newline in a name) escaped."""
    text = str(path)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _read_text(path: Path, source: str) -> str:
    """The file as text: it must exist, be a file and be UTF-8 (YAML's encoding, and DVC's)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ParamsError(f"{source}: file not found: give the path of a params.yaml with --params") from None
    except IsADirectoryError:
        raise ParamsError(f"{source}: is a directory, not a params file: give the path of a params.yaml") from None
    except OSError as err:
        raise ParamsError(f"{source}: cannot be read ({err.strerror or err.__class__.__name__})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ParamsError(
            f"{source}: not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}): save the file as UTF-8, "
            "the encoding YAML and both tools read"
        ) from None


def read_params_yaml(text: str, source: str = "params.yaml") -> Any:
    """Parse params text as Snakemake does (PyYAML, YAML 1.1), refusing what DVC would read otherwise.

    Returns the plain data (dicts, lists, scalars); every failure is one ParamsError line.
    """
    limits.check_text(text, source)  # size, aliases and list lengths, before the slow checks below
    loader = None
    try:
        loader = _ParamsLoader(text, source)  # PyYAML refuses unprintable characters here
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(f"{err.problem or ''} ({err.context or ''})".removesuffix(" ()").split())
        raise ParamsError(f"{source}: not valid YAML{where}: {problem}: fix the syntax there") from None
    except ReaderError as err:
        line = text[: err.position].count("\n") + 1
        raise ParamsError(
            f"{source}: not valid YAML at line {line}: the control character U+{err.character:04X} is not allowed "
            "in YAML: delete it"
        ) from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise ParamsError(f"{source}: not valid YAML: nested too deeply") from None
    except ParamsError:  # the loader's own one-line refusals (a ValueError too)
        raise
    except ValueError as err:  # PyYAML resolves `0x_` or `0b_` as an int, then cannot convert it
        raise ParamsError(
            f"{source}: not valid YAML: a value looks like a number but is not one ({err}): fix it, or quote it if you "
            "mean text"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


# ---------------------------------------------------------------- YAML 1.1 and 1.2
# PyYAML implements YAML 1.1; ruamel.yaml (DVC) implements YAML 1.2, whose core schema
# resolves plain scalars differently. A plain scalar is refused when PyYAML's reading
# differs from DVC's (ruamel.yaml itself, loaded as DVC loads params.yaml) or from the
# YAML 1.2 core schema (the rules below; ruamel is laxer than the spec in places, e.g. it
# reads 1_000 as 1000 and -_0 as 0). Measured differences (tests/test_bad_params.py):
#   010 -> 8 (1.1 octal) vs 10;  08 -> '08' vs 8;  0o17 -> '0o17' vs 15;  0b101 -> 5 vs text;
#   1_000 -> 1000 vs text (core);  1:30 -> 90 (base 60) vs text;  yes/no/on/off -> booleans
#   vs text;  1e-3, 1.0e3, +.5 -> text vs numbers (1.1 floats need a dot and a signed exponent).
# y/n/Y/N are booleans in the YAML 1.1 spec, but PyYAML reads them as text, as 1.2 does.
_Y12_NULL = re.compile(r"(?:null|Null|NULL|~|)\Z")
_Y12_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_Y12_INT = re.compile(r"[-+]?[0-9]+\Z")
_Y12_OCT = re.compile(r"0o[0-7]+\Z")
_Y12_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_Y12_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_Y12_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)\Z")
_Y12_NAN = re.compile(r"\.(?:nan|NaN|NAN)\Z")
_TAG = "tag:yaml.org,2002:"
_UNREADABLE = object()  # ruamel.yaml refuses the scalar


def yaml12_value(text: str) -> Any:
    """A plain scalar as the YAML 1.2 core schema reads it."""
    if _Y12_NULL.match(text):
        return None
    if text in _Y12_BOOL:
        return _Y12_BOOL[text]
    if _Y12_INT.match(text):
        return int(text)
    if _Y12_OCT.match(text):
        return int(text[2:], 8)
    if _Y12_HEX.match(text):
        return int(text[2:], 16)
    if _Y12_FLOAT.match(text):
        return float(text)
    if _Y12_INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _Y12_NAN.match(text):
        return math.nan
    return text


@functools.lru_cache(maxsize=1)
def _dvc_yaml() -> Any:
    """ruamel.yaml as ``dvc.utils.serialize.parse_yaml`` builds it; None where DVC is not installed."""
    try:
        from ruamel.yaml import YAML
    except ImportError:
        return None
    return YAML(typ="safe")


def dvc_value(text: str) -> Any:
    """A plain scalar as DVC reads it (a ``k: text`` document through ruamel.yaml).

    :data:`_UNREADABLE` when ruamel refuses it; the core schema's reading when ruamel is
    not installed.
    """
    loader = _dvc_yaml()
    if loader is None:
        return yaml12_value(text)
    try:
        return loader.load(f"k: {text}\n")["k"]
    except Exception:  # ruamel raises its own error types, not YAMLError
        return _UNREADABLE


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    return repr(value)


def _float_text(text: str, value: float) -> str:
    """``text`` rewritten so that YAML 1.1 and 1.2 both read ``value``: 1e-3 -> 1.0e-3."""
    mantissa, _, exponent = text.lower().replace("_", "").partition("e")
    negative = mantissa.startswith("-")
    whole, _, frac = mantissa.lstrip("+-").partition(".")
    candidate = f"{'-' if negative else ''}{whole or '0'}.{frac or '0'}"
    if exponent:
        candidate += f"e{exponent if exponent[0] in '+-' else '+' + exponent}"
    if _same(yaml.safe_load(candidate), value) and _same(yaml12_value(candidate), value):
        return candidate
    return yaml.safe_dump(value).split("\n")[0]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _advice(text: str, v11: Any, v12: Any) -> str:
    """What to write instead of a plain scalar YAML 1.1 reads as ``v11`` and YAML 1.2 as ``v12``."""
    digits = text.lstrip("+-")
    number = v11 if _is_number(v11) else v12 if _is_number(v12) else None
    if "_" in text and number is not None:
        return f"write {number!r} without underscores (YAML 1.1 and 1.2 read digit separators differently)"
    if digits.startswith(("0b", "0B")) and number is not None:
        return f"write {number} (0b binary numbers are YAML 1.1 only)"
    if ":" in text and _is_number(v11):
        return f"write {v11!r}, or quote '{text}' for text (base-60 numbers like 1:30 are YAML 1.1 only)"
    if isinstance(v11, bool):
        return f"write {_describe(v11)} (yes/no/on/off are booleans in YAML 1.1 only)"
    if isinstance(v11, (datetime.date, datetime.datetime)):
        return f"quote it ('{text}'): dates are not part of YAML 1.2"
    if isinstance(v12, int) and not isinstance(v12, bool) and digits[:1] == "0" and digits[1:2].isdigit():
        if _is_number(v11):
            return f"write {v12} or {v11} without a leading zero"
        return f"write {v12} without the leading zero"
    if isinstance(v12, int) and digits.startswith("0o"):
        return f"write {v12} (0o octal numbers are YAML 1.2 only)"
    if isinstance(v12, float) and isinstance(v11, str):
        whole = f", or {int(v12)} for a whole number" if v12.is_integer() and abs(v12) < 1e16 else ""
        return f"write {_float_text(text, v12)}{whole} (YAML 1.1, which Snakemake uses, reads {text} as text)"
    if number is not None:
        return f"write {number!r}"
    return f"quote it ('{text}') if you mean text"


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader (Snakemake's reading of params.yaml) that refuses, in document
    order, what DVC's YAML 1.2 reading would not match: a repeated key (Snakemake keeps the
    last value, DVC refuses the file), a plain scalar the YAML versions read differently,
    an explicit tag, a merge key."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source

    def construct_document(self, node: yaml.Node) -> Any:
        self._check(node, "", set())
        return super().construct_document(node)

    def _fail(self, node: yaml.Node, where: str, problem: str) -> None:
        raise ParamsError(f"{self.source}: {where or 'the document'} (line {node.start_mark.line + 1}): {problem}")

    def _check(self, node: yaml.Node, where: str, seen: set[int]) -> None:
        if id(node) in seen:  # an alias: checked where its anchor is
            return
        seen.add(id(node))
        self._check_tag(node, where)
        if isinstance(node, yaml.ScalarNode):
            if node.style is None:
                self._check_plain(node, where)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check(item, f"{where}[{i}]", seen)
        else:
            first_line: dict[Any, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else f"<{key.tag.removeprefix(_TAG)}>"
                path = f"{where}.{name}" if where else str(name)
                self._check(key, path, seen)
                if isinstance(key, yaml.ScalarNode):
                    k = self.construct_object(key)
                    if k in first_line:
                        self._fail(
                            key, path,
                            f"repeated key, first set at line {first_line[k]}: Snakemake would silently take the "
                            "last value and DVC refuses the file; keep one",
                        )
                    first_line[k] = key.start_mark.line + 1
                self._check(value, path, seen)

    def _check_tag(self, node: yaml.Node, where: str) -> None:
        if isinstance(node, yaml.ScalarNode):
            implicit = (True, False) if node.style is None else (False, True)
            expected = self.resolve(yaml.ScalarNode, node.value, implicit)
        else:
            expected = self.DEFAULT_SEQUENCE_TAG if isinstance(node, yaml.SequenceNode) else self.DEFAULT_MAPPING_TAG
        if node.tag in (_TAG + "merge", _TAG + "value"):
            self._fail(
                node, where,
                f"`{node.value}` is a YAML 1.1 special key ({node.tag.removeprefix(_TAG)}) that YAML 1.2 reads as "
                "text: write the keys out",
            )
        if node.tag != expected:
            tag = node.tag.replace(_TAG, "!!")
            self._fail(
                node, where,
                f"the YAML tag {tag} is not allowed (YAML 1.1 and 1.2 read tagged values differently): "
                "write the plain value",
            )

    def _check_plain(self, node: yaml.ScalarNode, where: str) -> None:
        v11 = self.construct_object(node)
        text = node.value
        dvc = dvc_value(text)
        if not _same(v11, dvc):
            who, v12 = "DVC (YAML 1.2)", dvc
        else:
            who, v12 = "YAML 1.2", yaml12_value(text)
            if _same(v11, v12):
                return
        if v12 is _UNREADABLE:  # ruamel fails on a few, e.g. -_ (an int with no digits)
            reading, v12 = f"{who} cannot read it", yaml12_value(text)
        else:
            reading = f"as {_describe(v12)} by {who}"
        self._fail(
            node, where,
            f"`{text}` is read as {_describe(v11)} by Snakemake (YAML 1.1) and {reading}: {_advice(text, v11, v12)}",
        )


def section_dict(params: Params, sections: list[str]) -> dict[str, Any]:
    """The named sections as plain JSON-ready data (the part of the config a step reads)."""
    return {name: getattr(params, name).model_dump(mode="json") for name in sections}


def digest(obj: Any) -> str:
    """A stable short hash of JSON-ready data: identifies a resolved config."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cell_id(mask_ratio: float, mask_unit: int, seed: int) -> str:
    """The name of one grid cell in every path: ``r0.75_p4_s0``.

    ``repr`` of a Python float is what DVC's ``${item...}`` interpolation prints too, so
    both tools spell the same path.
    """
    if not math.isfinite(mask_ratio):
        raise ParamsError(f"mask_ratio={mask_ratio}: not a finite number")
    return f"r{float(mask_ratio)!r}_p{int(mask_unit)}_s{int(seed)}"
