"""The ``baseline`` step: the untrained encoder each cell starts from, and raw pixels, under the probes."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_PROBE_PARAMS, tiny_probe_dataset

from mae_hlvm.core import train
from mae_hlvm.core.config import parse_params
from mae_hlvm.core.data import save_dataset
from mae_hlvm.core.model import build_model
from mae_hlvm.core.provenance import section_dict
from mae_hlvm.synthetic import baseline
from mae_hlvm.workflow.cli import main

GRID = {"mask_ratios": [0.25, 0.5, 0.75], "mask_units": [2, 4], "seeds": [0, 3]}


def tiny_params(**grid):
    raw = copy.deepcopy(TINY_PROBE_PARAMS)
    raw["grid"] = {**GRID, **grid}
    return parse_params(raw)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_random_init_equals_the_weights_every_grid_cell_starts_from():
    params = tiny_params()
    geometry = {"image_size": 8, "channels": 2}
    for seed in params.grid.seeds:
        ours = baseline.random_init_model(params, 8, 2, seed).state_dict()
        for ratio, unit in itertools.product(params.grid.mask_ratios, params.grid.mask_units):
            torch.manual_seed(seed)
            cell = build_model(section_dict(params, ["model"])["model"], geometry, ratio, unit).state_dict()
            assert same_state(ours, cell), f"seed {seed}: init differs at cell ({ratio}, {unit})"
    assert not same_state(baseline.random_init_model(params, 8, 2, 0).state_dict(),
                          baseline.random_init_model(params, 8, 2, 3).state_dict())


def test_random_init_equals_what_train_cell_actually_builds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_dataset("data.npz", tiny_probe_dataset())
    params = tiny_params()
    built = []

    def spy(*args, **kwargs):
        model = build_model(*args, **kwargs)
        built.append({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(train, "build_model", spy)
    train.train_cell(params, "data.npz", 0.75, 4, 3, "models/c")
    assert same_state(built[0], baseline.random_init_model(params, 8, 2, 3).state_dict())


def test_too_few_tokens_is_a_params_error():
    # valid params never allow it; a dataset of other geometry than params.data can
    with pytest.raises(baseline.ParamsError, match="vit_patch=2 leaves fewer than 2 tokens per side of 2-px images"):
        baseline.random_init_model(tiny_params(), 2, 2, 0)


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PROBE_PARAMS))
    save_dataset(tmp_path / "data.npz", tiny_probe_dataset())
    return tmp_path


def _argv(out: str = "b.json", data: str = "data.npz", seed: int = 0) -> list[str]:
    return ["baseline", "--params", "params.yaml", "--data", data, "--seed", str(seed), "--out", out]


def test_step_schema_pixel_known_answer_and_determinism(workdir):
    assert main(_argv()) == 0
    out = json.loads((workdir / "b.json").read_text())
    assert set(out) == {"seed", "n_levels", "pooling", "random_init", "pixels", "latents", "config_digest"}
    assert out["seed"] == 0 and out["n_levels"] == 3 and out["pooling"] == "mean"
    enc = out["random_init"]
    assert set(enc) == {"r2_linear", "r2_nonlinear", "probe_acc", "shape_bias", "r2_region", "r2_spatial"}  # probe_scores' layout
    assert enc["shape_bias"] == {"mean": None, "cls": None} and out["pixels"]["shape_bias"] is None  # no cue set
    assert all(len(v) == 3 for kind in ("r2_linear", "r2_nonlinear") for v in enc[kind].values())
    assert [len(v) for v in enc["r2_region"]["per_node"]] == [0, 4, 16]
    pix = out["pixels"]
    # the quadrant intensities are the level-1 latents plus small noise; levels 0 and 2 are independent
    assert pix["r2_linear"][1] > 0.9 and pix["r2_nonlinear"][1] > 0.9
    assert pix["r2_linear"][0] < 0.2 and pix["r2_linear"][2] < 0.2
    assert 0.0 <= pix["probe_acc"] <= 1.0
    assert pix["r2_spatial"]["levels"][1] > 0.9  # the same from the spatial probe
    # the ceiling from the true leaves: level 2 is the leaves themselves
    assert out["latents"]["r2_spatial"]["levels"][2] > 0.99
    timing = json.loads((workdir / "logs/timings/baseline/s0.json").read_text())
    assert timing["n_train"] == 90 and timing["pixels_s"] >= 0
    assert main(_argv("again.json")) == 0
    assert (workdir / "again.json").read_bytes() == (workdir / "b.json").read_bytes()
    assert main(_argv("other_seed.json", seed=1)) == 0
    other = json.loads((workdir / "other_seed.json").read_text())
    assert other["pixels"] == pix, "pixels do not depend on the seed"
    assert other["random_init"] != enc, "another seed is another initialisation"


def test_step_rejects_data_without_latents(workdir, capsys):
    save_dataset(workdir / "real.npz", tiny_probe_dataset(with_latents=False))
    assert main(_argv(data="real.npz")) == 2
    assert "real.npz: has no latents_level* arrays" in capsys.readouterr().err
    assert not (workdir / "b.json").exists()


def test_pixel_scores_match_the_probe_functions_directly():
    from mae_hlvm.synthetic import readouts

    ds = tiny_probe_dataset()
    tr, te = ds.split(test=False), ds.split(test=True)
    params = tiny_params()
    got = baseline.pixel_scores(tr, te, params)
    x_tr, x_te = tr.images.reshape(90, -1).astype(np.float64), te.images.reshape(30, -1).astype(np.float64)
    want = readouts.r2_linear(x_tr, readouts.flatten_latent(tr.latents[1]), x_te, readouts.flatten_latent(te.latents[1]),
                           params.probe.ridge_alphas)
    assert got["r2_linear"][1] == pytest.approx(want, abs=1e-6)
