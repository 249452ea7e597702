"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mae_hlvm.core.data import Dataset, save_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_workdir(tmp_path, monkeypatch):
    """Factory: make ``tmp_path`` the working directory, with a tiny ``params.yaml`` (the
    repository's, with per-section overrides) and ``data.npz``: ``n`` random 3x8x8 images
    in 3 classes, the first ``n_train`` of them the train split, one 1x1x4 latent level.
    Returns ``tmp_path``."""

    def make(n: int, n_train: int, **sections: dict) -> Path:
        monkeypatch.chdir(tmp_path)
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        if "stability" not in sections:
            raw.pop("stability", None)  # its set names cells of the shipped grid, which tests replace
        # the toy data below are no copy tree: the quadtree's params describe them
        raw["data"]["generator"] = "quadtree"
        for section, values in sections.items():
            raw[section].update(values)
        Path("params.yaml").write_text(yaml.safe_dump(raw))
        rng = np.random.default_rng(0)
        save_dataset("data.npz", Dataset(
            rng.standard_normal((n, 3, 8, 8)).astype(np.float32), rng.integers(0, 3, n), np.arange(n) >= n_train,
            [rng.standard_normal((n, 1, 1, 4)).astype(np.float32)], {"kind": "test"},
        ))
        return tmp_path

    return make


@pytest.fixture
def tiny_training(tiny_workdir):
    """Factory: :func:`tiny_workdir` (80 images, 64 train) with a tiny model and 3-epoch
    recipe over masking units 2, 4 and ratios 0.25, 0.5; ``**sections`` override keys."""

    def make(**sections: dict) -> Path:
        base = dict(
            data=dict(image_size=8, depth=1, latent_dims=[4, 4], noise_scales=[1.0, 0.5]),
            model=dict(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8, decoder_num_heads=2),
            train=dict(epochs=3, batch_size=16, base_lr=1e-3),
            grid=dict(mask_units=[2, 4], mask_ratios=[0.25, 0.5]),
        )
        for section, values in sections.items():
            base.setdefault(section, {}).update(values)
        return tiny_workdir(80, 64, **base)

    return make
