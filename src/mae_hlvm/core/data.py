"""The array format every dataset is converted to, synthetic or real.

One ``.npz`` holds ``images`` (N, C, H, W) float32, ``labels`` (N,) int64, ``is_test``
(N,) bool, ``settings_json`` (the producer's resolved settings) and, for synthetic data,
``latents_level0`` ... ``latents_levelL``, each (N, 2**l, 2**l, d_l) float32, and, when
the generator has a texture cue, the cue-conflict set: ``cue_images`` (M, C, H, W)
float32, ``cue_shape_labels`` and ``cue_texture_labels`` (M,) int64. The trainer reads
the image geometry from the file, so the same step trains on any dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mae_hlvm.core.io import ArtifactError, load_npz, save_npz


@dataclass(frozen=True)
class CueConflict:
    """Images whose shape says one class and whose texture another (the paper's Table 2).

    images (M, C, H, W) float32; shape_labels, texture_labels (M,) int64, never equal.
    """

    images: np.ndarray
    shape_labels: np.ndarray
    texture_labels: np.ndarray


@dataclass(frozen=True)
class Dataset:
    images: np.ndarray
    labels: np.ndarray
    is_test: np.ndarray
    latents: list[np.ndarray] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    cue: CueConflict | None = None  # held apart from both splits

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1

    def split(self, test: bool, limit: int | None = None) -> Dataset:
        """The train (``test=False``) or test part, same fields; its first ``limit`` images if given."""
        rows = np.flatnonzero(self.is_test if test else ~self.is_test)[:limit]
        return Dataset(
            images=self.images[rows],
            labels=self.labels[rows],
            is_test=self.is_test[rows],
            latents=[z[rows] for z in self.latents],
            settings=self.settings,
            cue=self.cue,
        )


def save_dataset(path: str | Path, ds: Dataset) -> None:
    arrays = {
        "images": np.ascontiguousarray(ds.images, dtype=np.float32),
        "labels": np.asarray(ds.labels, dtype=np.int64),
        "is_test": np.asarray(ds.is_test, dtype=bool),
        "settings_json": np.array(json.dumps(ds.settings, sort_keys=True)),
    }
    for level, z in enumerate(ds.latents):
        arrays[f"latents_level{level}"] = np.ascontiguousarray(z, dtype=np.float32)
    if ds.cue is not None:
        arrays["cue_images"] = np.ascontiguousarray(ds.cue.images, dtype=np.float32)
        arrays["cue_shape_labels"] = np.asarray(ds.cue.shape_labels, dtype=np.int64)
        arrays["cue_texture_labels"] = np.asarray(ds.cue.texture_labels, dtype=np.int64)
    save_npz(path, **arrays)


def load_dataset(path: str | Path) -> Dataset:
    """Read and sanity-check a dataset file; any defect is one :class:`ArtifactError`."""
    arrays = load_npz(path, required=("images", "labels", "is_test", "settings_json"))
    images, labels, is_test = arrays["images"], arrays["labels"], arrays["is_test"]
    n = images.shape[0] if images.ndim == 4 else -1
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ArtifactError(f"{path}: images must be (N, C, S, S), got {images.shape}")
    if labels.shape != (n,) or is_test.shape != (n,):
        raise ArtifactError(f"{path}: labels/is_test do not match {n} images")
    if not np.isfinite(images).all():
        raise ArtifactError(f"{path}: images contain NaN or inf")
    if is_test.all() or not is_test.any():
        raise ArtifactError(f"{path}: needs both train and test images")
    latents = []
    while f"latents_level{len(latents)}" in arrays:
        z = arrays[f"latents_level{len(latents)}"]
        if z.shape[0] != n:
            raise ArtifactError(f"{path}: latents_level{len(latents)} has {z.shape[0]} rows for {n} images")
        latents.append(z)
    return Dataset(images, labels, is_test, latents, json.loads(str(arrays["settings_json"])), _load_cue(arrays, images, path))


def _load_cue(arrays: dict[str, np.ndarray], images: np.ndarray, path: str | Path) -> CueConflict | None:
    """The cue-conflict set of a dataset file, checked; None when the file has none."""
    keys = ("cue_images", "cue_shape_labels", "cue_texture_labels")
    present = [k for k in keys if k in arrays]
    if not present:
        return None
    if len(present) < len(keys):
        raise ArtifactError(f"{path}: has {present} but not all of {list(keys)}; regenerate it")
    cue, shape, texture = (arrays[k] for k in keys)
    m = cue.shape[0]
    if cue.ndim != 4 or cue.shape[1:] != images.shape[1:] or shape.shape != (m,) or texture.shape != (m,):
        raise ArtifactError(f"{path}: cue-conflict arrays {cue.shape}, {shape.shape}, {texture.shape} do not match images {images.shape[1:]}")
    if not np.isfinite(cue).all():
        raise ArtifactError(f"{path}: cue_images contain NaN or inf")
    if (shape == texture).any():
        raise ArtifactError(f"{path}: a cue-conflict image has the same shape and texture class; regenerate it")
    return CueConflict(cue, shape, texture)
