"""Probe one cell's encoder against the true latents (step ``probe``).

The encoder sees the UNmasked train and test images; its tokens (N, 1+L, D) are pooled
into whole-image features and region features, and ridge probes fitted on the train
split are scored on the test split by R^2 per latent level. The theory (block
identifiability) promises the shared latents only up to an invertible map, so a linear
probe is a lower bound; the nonlinear probe is a ridge on the standardised features plus
their Nystroem RBF map (an approximate kernel ridge that contains the linear probe).

The readouts (pooling, region, spatial and innovation probes, the cross-validation):
:mod:`mae_hlvm.synthetic.readouts`.

Shapes: N images, L tokens, D encoder width, g = tokens per side, d_l latent width.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mae_hlvm.core import paths, results
from mae_hlvm.core.config import Params
from mae_hlvm.core.data import Dataset, load_dataset
from mae_hlvm.core.gate import evaluate_gate, history_losses, linear_on_mae_masks, linear_reference, train_mean_image
from mae_hlvm.core.io import ArtifactError, file_sha256, read_json, save_npz, write_json
from mae_hlvm.core.measures import recon_seed, reconstruct
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.core.provenance import digest, section_dict
from mae_hlvm.synthetic.latents import latent_variables
from mae_hlvm.synthetic.masked import excess, masked_scores, mean_excess, model_tokens, probe_masks
from mae_hlvm.synthetic.readouts import (
    POOLINGS,
    class_scores,
    flatten_latent,
    level_scores,
    nonlinear_features,
    pooled_features,
    r2_ridge_blocks,
    region_features,
    region_r2,
    rounded,
    spatial_level,
    standardise,
)

log = logging.getLogger("mae_hlvm.synthetic.probe")



# --------------------------------------------------------------------------- the model side


def encode_features(
    model: MaskedAutoencoder, images: np.ndarray, batch_size: int, n_levels: int
) -> dict[str, Any]:
    """Encode UNmasked images (N, C, S, S) batch by batch; keep only pooled features.

    Returns {"cls": (N, D), "mean": (N, D), "regions": [None, (N, 2, 2, D), ...]} so the
    full token tensor (N, 1+L, D) never has to sit in memory at once.
    """
    parts: dict[str, list[np.ndarray]] = {"cls": [], "mean": []}
    region_parts: list[list[np.ndarray]] = [[] for _ in range(n_levels)]
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            tokens = model.encode(batch).float().cpu().numpy()
            for name, feats in pooled_features(tokens).items():
                parts[name].append(feats)
            for level in range(1, n_levels):
                region_parts[level].append(region_features(tokens[:, 1:], model.grid, level))
    out: dict[str, Any] = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    out["regions"] = [None] + [np.concatenate(region_parts[level]) for level in range(1, n_levels)]
    return out


# --------------------------------------------------------------------------- the step


def _check_inputs(ds: Dataset, model: MaskedAutoencoder, data_path: str, meta: dict[str, Any]) -> None:
    """One clear error for a dataset that cannot be probed with this checkpoint."""
    if not ds.latents:
        raise ArtifactError(f"{data_path}: has no latents_level* arrays; the probe step needs synthetic data")
    if (ds.image_size, ds.channels) != (model.image_size, model.channels):
        raise ArtifactError(
            f"{data_path}: images are {ds.channels}x{ds.image_size}x{ds.image_size} but the checkpoint "
            f"expects {model.channels}x{model.image_size}x{model.image_size}"
        )
    recorded = meta.get("config", {}).get("data_sha256")
    if recorded is not None and recorded != file_sha256(data_path):
        raise ArtifactError(f"{data_path}: is not the dataset this checkpoint was trained on (sha256 differs)")
    for level, z in enumerate(ds.latents):
        if z.ndim != 4 or z.shape[1:3] != (2**level, 2**level):
            raise ArtifactError(f"{data_path}: latents_level{level} must be (N, {2**level}, {2**level}, d), got {z.shape}")
    if 2 ** (len(ds.latents) - 1) > model.grid:
        raise ArtifactError(
            f"{data_path}: {len(ds.latents)} latent levels need at least {2 ** (len(ds.latents) - 1)} "
            f"tokens per side, the model has {model.grid}"
        )


class _Clock:
    """Wall and CPU seconds per phase; CPU time stays meaningful when jobs share cores."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._wall0 = self._wall = time.perf_counter()
        self._cpu0 = self._cpu = time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.laps[f"{name}_s"] = round(wall - self._wall, 3)
        self.laps[f"{name}_cpu_s"] = round(cpu - self._cpu, 3)
        self.laps["total_s"] = round(wall - self._wall0, 3)
        self.laps["total_cpu_s"] = round(cpu - self._cpu0, 3)
        self._wall, self._cpu = wall, cpu


def probe_scores(
    feats_tr: dict[str, Any], feats_te: dict[str, Any], train: Dataset, test: Dataset, params: Params,
    feats_cue: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every R^2 and accuracy of one cell from its encoded features (see module docstring);
    the shape bias too when ``feats_cue`` holds the cue-conflict images' features."""
    alphas, n_comp, folds = params.probe.ridge_alphas, params.probe.nystroem_components, params.probe.cv_folds
    z_tr = [flatten_latent(z) for z in train.latents]
    z_te = [flatten_latent(z) for z in test.latents]
    out: dict[str, Any] = {"r2_linear": {}, "r2_nonlinear": {}, "probe_acc": {}, "shape_bias": {}}
    for pool in POOLINGS:
        x_tr, x_te = feats_tr[pool], feats_te[pool]
        s_tr, s_te = standardise(x_tr, x_te)
        out["r2_linear"][pool] = [rounded(r) for r in r2_ridge_blocks(s_tr, z_tr, s_te, z_te, alphas)]
        f_tr, f_te = nonlinear_features(x_tr, x_te, n_comp)
        out["r2_nonlinear"][pool] = [rounded(r) for r in r2_ridge_blocks(f_tr, z_tr, f_te, z_te, alphas)]
        classes = class_scores(
            x_tr, train.labels, x_te, test.labels, alphas, folds,
            None if feats_cue is None else feats_cue[pool], train.cue,
        )
        out["probe_acc"][pool], out["shape_bias"][pool] = classes["probe_acc"], classes["shape_bias"]
    per_node: list[list[float]] = [[]]
    for level in range(1, len(train.latents)):
        scores = region_r2(
            feats_tr["regions"][level], train.latents[level], feats_te["regions"][level], test.latents[level], alphas
        )
        per_node.append([rounded(s) for s in scores])
    out["r2_region"] = {
        "levels": [None] + [rounded(np.mean(s)) for s in per_node[1:]],
        "per_node": per_node,
    }
    level = spatial_level(len(train.latents))
    spatial_tr = feats_tr["regions"][level].reshape(len(train.images), -1)
    spatial_te = feats_te["regions"][level].reshape(len(test.images), -1)
    out["r2_spatial"] = {"pool_level": level, **level_scores(spatial_tr, spatial_te, train, test, alphas)}
    return out


def cell_gate(
    recon_mse: float, mean_pred_mse: float, linear_mse: float, meta: dict[str, Any], checkpoint_path: str
) -> dict[str, Any]:
    """The learning gate (:mod:`mae_hlvm.core.gate`) of one cell from its errors (the MAE's, the mean
    predictor's, the linear reference's) and its checkpoint's loss curve."""
    try:
        losses = history_losses(meta.get("history"))
    except ValueError as err:
        raise ArtifactError(f"{checkpoint_path}: {err}; retrain the cell") from None
    return evaluate_gate(recon_mse, mean_pred_mse, linear_mse, losses)


def masked_cell(params: Params, model: MaskedAutoencoder, train: Dataset, test: Dataset, cell: dict[str, Any],
                oracle_path: str | None) -> dict[str, Any]:
    """The cell's probes under its own masks (:mod:`mae_hlvm.synthetic.masked`), and its ``c_excess``
    against the frontier of even loss in its (ratio, unit) cell's oracle table (``oracle_path``)."""
    masks = probe_masks(train.image_size, int(cell["mask_unit"]), float(cell["mask_ratio"]), params.probe.masked_masks)
    scores = masked_scores(model_tokens(model, params.probe.batch_size), train, test, latent_variables(params.data),
                           masks, params.probe.masked_token_dims)
    front = None
    if oracle_path is not None:
        table = read_json(oracle_path)
        if (table.get("mask_ratio"), table.get("mask_unit")) != (float(cell["mask_ratio"]), int(cell["mask_unit"])):
            raise ArtifactError(f"{oracle_path}: is the oracle table of another cell; rerun the oracles step")
        front = table["frontier"]
    per_level = excess(scores, front) if front is not None else [None] * len(scores["c"])
    return {**scores, "excess": per_level, "c_excess": mean_excess(per_level)}


def probe_cell(params: Params, data_path: str, checkpoint_path: str, oracle_path: str | None = None
               ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Probe one cell: (metrics JSON object, reconstruction arrays, timings)."""
    from mae_hlvm.core.train import load_checkpoint  # the train step owns the checkpoint format

    threads = params.train.threads
    torch.set_num_threads(threads)
    model, meta = load_checkpoint(checkpoint_path)
    ds = load_dataset(data_path)
    _check_inputs(ds, model, data_path, meta)
    train, test = ds.split(test=False, limit=params.probe.max_train), ds.split(test=True)
    cell = meta["cell"]
    batch = params.probe.batch_size
    n_levels = len(ds.latents)

    clock = _Clock()
    feats_tr = encode_features(model, train.images, batch, n_levels)
    feats_te = encode_features(model, test.images, batch, n_levels)
    feats_cue = None if ds.cue is None else encode_features(model, ds.cue.images, batch, n_levels)
    clock.lap("encode")
    with threadpool_limits(limits=threads):  # Snakemake runs probes side by side
        scores = probe_scores(feats_tr, feats_te, train, test, params, feats_cue)
    clock.lap("fit")
    n_keep = min(params.probe.n_recon_images, test.images.shape[0])
    mse, mean_mse, figures = reconstruct(
        model, test.images, batch, recon_seed(int(cell["seed"])), n_keep, train_mean_image(train.images)
    )
    clock.lap("recon")
    with threadpool_limits(limits=threads):  # one ridge fit per reference mask: BLAS-bound
        linear = linear_reference(train.images, test.images, int(cell["mask_unit"]), float(cell["mask_ratio"]))
    linear_mse = linear_on_mae_masks(linear, mean_mse)
    gate = cell_gate(mse, mean_mse, linear_mse, meta, checkpoint_path)
    clock.lap("gate")
    with threadpool_limits(limits=threads):
        masked = masked_cell(params, model, train, test, cell, oracle_path)
    clock.lap("masked")

    metrics = {
        "cell": {k: cell[k] for k in ("cell_id", "mask_ratio", "mask_unit", "seed")},
        "n_visible": int(meta["n_visible"]),
        "n_hidden": int(meta["n_hidden"]),
        "pooling": params.probe.pooling,
        "n_levels": n_levels,
        **scores,
        "recon_mse": rounded(mse),
        "gate": gate,
        "masked": masked,
        "config_digest": digest({"probe": section_dict(params, ["probe"])["probe"], "checkpoint": meta["config"]}),
    }
    timings = {
        **clock.laps,
        "n_train": int(train.images.shape[0]),
        "n_test": int(test.images.shape[0]),
        "threads": threads,
    }
    return metrics, figures, timings


def run(params: Params, args: argparse.Namespace) -> None:
    metrics, figures, timings = probe_cell(params, args.data, args.checkpoint, getattr(args, "oracle", None))
    results.check(results.CellResult, metrics, args.out)  # the layout aggregate reads, before anything is written
    cell = metrics["cell"]["cell_id"]
    # Write the small, untracked timing first and the JSON output last: a crash in between
    # leaves no output that a workflow tool could take for finished.
    write_json(paths.timing("probe", cell), timings)
    save_npz(args.recon, **figures)
    write_json(args.out, metrics)
    log.info(
        "cell %s: R2 linear(mean) %s, region %s, acc %.3f, recon mse %.4f | encode %.1fs fit %.1fs recon %.1fs"
        " (CPU %.1fs); gate: %s",
        cell, metrics["r2_linear"]["mean"], metrics["r2_region"]["levels"], metrics["probe_acc"]["mean"],
        metrics["recon_mse"], timings["encode_s"], timings["fit_s"], timings["recon_s"], timings["total_cpu_s"],
        metrics["gate"]["gate_reason"],
    )
