"""Baselines for reading the probes (step ``baseline``, one job per seed of ``grid.seeds``).

At CPU scale a trained MAE may hold little more than its initialisation does, so a
cell's R^2 only means something beside two floors measured with the SAME probes
(:mod:`mae_hlvm.synthetic.probe`'s functions, nothing re-implemented):

* the random-init encoder: the very MAE that ``train.train_cell`` starts from for this
  seed, never trained; default and CLS pooling, nonlinear and region probes, as a cell;
* raw pixels: the flattened image (N, C*S*S) under the linear ridge, the Nystroem
  nonlinear probe and the class probe, and the level / innovation probes of the spatial
  feature (pixels keep every position already). Pixels do not depend on the seed; each
  seed's file repeats them so that one file is one complete baseline.
* the true leaf latents (N, 4**D * d_D), under the level / innovation probes: the
  ceiling of what a linear probe can read from anything computed from the image, since
  the pixels are a noisy function of the leaves.

The model is built at a fixed valid cell (masking unit = ViT patch, ratio 0.5) rather
than at a grid cell: masking settings shape no parameter, so after
``torch.manual_seed(seed)`` the weights equal train_cell's initialisation at every grid
cell (tests/test_baseline.py checks it), and grid edits need not rerun the baselines.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mae_hlvm.core import paths, results
from mae_hlvm.core.config import Params, ParamsError
from mae_hlvm.core.data import Dataset, load_dataset
from mae_hlvm.core.io import ArtifactError, file_sha256, write_json
from mae_hlvm.core.model import MaskedAutoencoder, build_model
from mae_hlvm.core.provenance import digest, section_dict
from mae_hlvm.synthetic.probe import _check_inputs, _Clock, encode_features, probe_scores
from mae_hlvm.synthetic.readouts import (
    class_scores,
    flatten_latent,
    level_scores,
    nonlinear_features,
    r2_ridge_blocks,
    rounded,
    standardise,
)

log = logging.getLogger("mae_hlvm.synthetic.baseline")

BASELINE_MASK_RATIO = 0.5
KINDS = ("random_init", "pixels", "latents")


def random_init_model(params: Params, image_size: int, channels: int, seed: int) -> MaskedAutoencoder:
    """The MAE train_cell starts from for ``seed`` (same seeding, same construction), in eval mode."""
    vit = params.model.vit_patch
    if image_size // vit < 2:
        raise ParamsError(
            f"params.yaml: model.vit_patch={vit} leaves fewer than 2 tokens per side of {image_size}-px images"
        )
    torch.manual_seed(seed)
    model_cfg = section_dict(params, ["model"])["model"]
    geometry = {"image_size": image_size, "channels": channels}
    return build_model(model_cfg, geometry, BASELINE_MASK_RATIO, vit).eval()


def pixel_scores(train: Dataset, test: Dataset, params: Params) -> dict[str, Any]:
    """Probes on the flattened raw pixels (N, C*S*S) with the probe step's recipes.

    Returns {"r2_linear": [R^2 per level], "r2_nonlinear": [R^2 per level], "probe_acc": float,
    "shape_bias": :func:`mae_hlvm.synthetic.probe.shape_bias` or None without a cue-conflict set,
    "r2_spatial": :func:`mae_hlvm.synthetic.probe.level_scores` of the pixels}.
    """
    alphas, n_comp, folds = params.probe.ridge_alphas, params.probe.nystroem_components, params.probe.cv_folds
    x_tr = train.images.reshape(len(train.images), -1).astype(np.float64)
    x_te = test.images.reshape(len(test.images), -1).astype(np.float64)
    z_tr = [flatten_latent(z) for z in train.latents]
    z_te = [flatten_latent(z) for z in test.latents]
    x_cue = None if train.cue is None else train.cue.images.reshape(len(train.cue.images), -1).astype(np.float64)
    s_tr, s_te = standardise(x_tr, x_te)
    f_tr, f_te = nonlinear_features(x_tr, x_te, n_comp)
    return {
        "r2_linear": [rounded(r) for r in r2_ridge_blocks(s_tr, z_tr, s_te, z_te, alphas)],
        "r2_nonlinear": [rounded(r) for r in r2_ridge_blocks(f_tr, z_tr, f_te, z_te, alphas)],
        **class_scores(x_tr, train.labels, x_te, test.labels, alphas, folds, x_cue, train.cue),
        "r2_spatial": level_scores(x_tr, x_te, train, test, alphas),
    }


def leaf_states(ds: Dataset, params: Params) -> np.ndarray:
    """Every leaf's whole state, flattened (N, 4**D * w): the quadtree's leaf latents, or the copy
    tree's leaf contents (every part a leaf holds, its ancestors' copies included)."""
    if params.data.generator != "copytree":
        return flatten_latent(ds.latents[-1])
    from mae_hlvm.synthetic.latents import latent_variables
    from mae_hlvm.synthetic.masked import slot_table

    variables = latent_variables(params.data)
    table = slot_table(variables)  # (L, W): the copy tree fills every slot
    return variables.values(ds.latents)[:, table].reshape(len(ds.images), -1)


def latent_ceiling(train: Dataset, test: Dataset, params: Params) -> dict[str, Any]:
    """The level / innovation probes on the true leaf states (:func:`leaf_states`): the linear ceiling."""
    leaves_tr, leaves_te = leaf_states(train, params), leaf_states(test, params)
    return {"r2_spatial": level_scores(leaves_tr, leaves_te, train, test, params.probe.ridge_alphas)}


def baseline_scores(params: Params, data_path: str, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(baseline JSON object, timings) of one seed: the random-init encoder and raw pixels.

    ``random_init`` has the probe JSON's layout (r2_linear / r2_nonlinear / probe_acc per
    pooling, r2_region); ``pixels`` one list per probe kind.
    """
    threads = params.train.threads
    torch.set_num_threads(threads)
    ds = load_dataset(data_path)
    if not ds.latents:
        raise ArtifactError(f"{data_path}: has no latents_level* arrays; the baseline step needs synthetic data")
    model = random_init_model(params, ds.image_size, ds.channels, seed)
    _check_inputs(ds, model, data_path, {})
    train, test = ds.split(test=False, limit=params.probe.max_train), ds.split(test=True)
    n_levels = len(ds.latents)
    clock = _Clock()
    feats_tr = encode_features(model, train.images, params.probe.batch_size, n_levels)
    feats_te = encode_features(model, test.images, params.probe.batch_size, n_levels)
    feats_cue = None if ds.cue is None else encode_features(model, ds.cue.images, params.probe.batch_size, n_levels)
    clock.lap("encode")
    with threadpool_limits(limits=threads):  # Snakemake runs jobs side by side
        encoder = probe_scores(feats_tr, feats_te, train, test, params, feats_cue)
        clock.lap("fit")
        pixels = pixel_scores(train, test, params)
        clock.lap("pixels")
        latents = latent_ceiling(train, test, params)
    out = {
        "seed": int(seed),
        "n_levels": n_levels,
        "pooling": params.probe.pooling,
        "random_init": encoder,
        "pixels": pixels,
        "latents": latents,
        "config_digest": digest({
            "probe": section_dict(params, ["probe"])["probe"],
            "model": section_dict(params, ["model"])["model"],
            "data_sha256": file_sha256(data_path),
        }),
    }
    return out, {**clock.laps, "n_train": int(train.images.shape[0]), "threads": threads}


def run(params: Params, args: argparse.Namespace) -> None:
    """Write ``args.out`` (JSON) for seed ``args.seed``; its timing goes beside the logs."""
    scores, timings = baseline_scores(params, args.data, args.seed)
    results.check(results.BaselineResult, scores, args.out)  # the layout aggregate reads, before anything is written
    write_json(paths.timing("baseline", f"s{args.seed}"), timings)
    write_json(args.out, scores)  # last: a crash before leaves no output
    pool = params.probe.pooling
    log.info(
        "baseline seed %d: random-init R2 (%s) %s acc %.3f | pixels R2 %s acc %.3f | encode %.1fs fit %.1fs pixels %.1fs",
        args.seed, pool, scores["random_init"]["r2_linear"][pool], scores["random_init"]["probe_acc"][pool],
        scores["pixels"]["r2_linear"], scores["pixels"]["probe_acc"],
        timings["encode_s"], timings["fit_s"], timings["pixels_s"],
    )
