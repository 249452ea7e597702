"""The ``real:`` section of ``params.yaml``: the real-image track (docs/real_track.md).

Validation only, as every section (:mod:`mae_hlvm.core.sections`): a bad value is one
ValueError line naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mae_hlvm.core.cells import cell_pairs, check_cells
from mae_hlvm.core.limits import (
    BUILTIN_CLASSES,
    BUILTIN_SIDE,
    BUILTIN_SPLITS,
    BUILTIN_TOTAL,
    MIN_REAL_TEST,
    MIN_REAL_TRAIN,
    check_memory,
    check_passes,
    check_peak_lr,
    check_seed,
    check_tokens,
)
from mae_hlvm.core.sections import Section, at_least, distinct_nonempty, ratios_in_open_unit, seeds_bounded


class RealParams(Section):
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
        return ratios_in_open_unit(v)

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
            return seeds_bounded(at_least(v, 0))
        return at_least(v, 1)

    @field_validator("split_seed", "eval_seed")
    @classmethod
    def _seed_bounded(cls, v: int) -> int:
        check_seed(v)
        return v

    @field_validator("mask_ratios", "mask_units", "seeds")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        return distinct_nonempty(v, "repeated value")

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
        check_memory(
            self, self.n_train + self.n_test, self.channels * self.image_size**2, "real.",
            f"{self.channels}x{self.image_size}x{self.image_size} pixels",
        )
        check_tokens("vit_patch", "real.vit_patch", self.image_size, self.vit_patch, "real.image_size")
        check_passes("epochs", "real.epochs", self.epochs, self.n_train, "real.n_train")
        check_passes("probe_epochs", "real.probe_epochs", self.probe_epochs, self.n_train, "real.n_train")
        check_peak_lr("base_lr", "real.base_lr", self.base_lr, "real.batch_size", self.batch_size)
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

