"""The array format every dataset is converted to, synthetic or real.

One ``.npz`` holds ``images`` (N, C, H, W) float32, ``labels`` (N,) int64, ``is_test``
(N,) bool, ``settings_json`` (the producer's resolved settings) and, for synthetic data,
``latents_level0`` ... ``latents_levelL``, each (N, 2**l, 2**l, d_l) float32. The trainer
reads the image geometry from the file, so the same step trains on any dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io import ArtifactError, load_npz, save_npz


@dataclass(frozen=True)
class Dataset:
    images: np.ndarray
    labels: np.ndarray
    is_test: np.ndarray
    latents: list[np.ndarray] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1

    def split(self, test: bool) -> Dataset:
        """The train (``test=False``) or test part, same fields."""
        rows = self.is_test if test else ~self.is_test
        return Dataset(
            images=self.images[rows],
            labels=self.labels[rows],
            is_test=self.is_test[rows],
            latents=[z[rows] for z in self.latents],
            settings=self.settings,
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
    return Dataset(images, labels, is_test, latents, json.loads(str(arrays["settings_json"])))
