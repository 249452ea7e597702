"""One real cell's numbers: the ``evaluate-real`` step (:func:`run_evaluate`).

Each returns JSON-ready numbers; the ``report-real`` step (:mod:`mae_hlvm.real.report`)
renders them over every cell:

- Table 1: :func:`table1_cell` (linear probe and k-NN, clean and shifted test sets,
  :mod:`mae_hlvm.real.shifts`, :mod:`mae_hlvm.real.probes`), with the CLS probe's shape
  bias when the data hold a cue-conflict set.
- Fig. 5: :func:`recon_quality_cell` (SSIM / PSNR / MSE of UNmasked reconstructions).
- The learning gate (:mod:`mae_hlvm.core.gate`): :func:`gate_cell`, the same rules as the
  synthetic probe step's, on the test split with the cell's own masking.

Shapes: N images, C channels, S image side.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mae_hlvm.core import progress
from mae_hlvm.core.config import Params
from mae_hlvm.core.data import Dataset
from mae_hlvm.core.gate import (
    evaluate_gate,
    history_losses,
    linear_on_mae_masks,
    linear_reference,
    train_mean_image,
)
from mae_hlvm.core.io import ArtifactError, write_json
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.core.results import RealCellResult, check
from mae_hlvm.real.device import step_device
from mae_hlvm.real.pixels import to_unit_range
from mae_hlvm.real.probes import cue_shape_bias, extract_features, fit_linear_probe, knn_accuracy, probe_accuracy
from mae_hlvm.real.shifts import SHIFT_DESCRIPTIONS, shifted_test_sets

log = logging.getLogger("mae_hlvm.real.evaluate")


FSIM_NOTE = (
    "FSIM not computed: neither scikit-image nor another maintained package in this "
    "environment provides it"
)


# ------------------------------------------------------------------ Table 1: one cell


def _cell_header(model: MaskedAutoencoder, seed: int) -> dict[str, Any]:
    return {
        "mask_ratio": float(model.mask_ratio),
        "mask_unit": int(model.mask_unit),
        "vit_patch": int(model.vit_patch),
        "seed": int(seed),
    }


def table1_cell(
    model: MaskedAutoencoder,
    ds: Dataset,
    *,
    cell_seed: int = 0,
    probe_epochs: int = 30,
    knn_k: int = 20,
    eval_seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """One cell's Table 1 metrics (top-1 %, rounded to 0.01) as JSON-ready data.

    Keys: the cell (mask_ratio, mask_unit, vit_patch, seed), n_train, n_test, and
    ``linear_cls``, ``linear_mean``, ``knn_cls``, ``knn_mean``, each {test set: top-1}
    for every name in :data:`TEST_SETS`, and ``shape_bias``: :func:`cue_shape_bias` of the
    CLS probe on ``ds.cue`` (None without a cue-conflict set). The probe is trained on the
    clean train split.
    """
    train = ds.split(test=False)
    test_labels = ds.split(test=True).labels
    train_feats = extract_features(model, train.images, batch_size)
    test_feats = {name: extract_features(model, imgs, batch_size) for name, imgs in shifted_test_sets(ds, eval_seed).items()}
    out = {**_cell_header(model, cell_seed), "n_train": len(train.labels), "n_test": len(test_labels)}
    for pooling in ("cls", "mean"):
        probe = fit_linear_probe(
            train_feats[pooling], train.labels, ds.n_classes, epochs=probe_epochs, batch_size=batch_size, seed=eval_seed
        )
        out[f"linear_{pooling}"] = {
            name: round(probe_accuracy(probe, feats[pooling], test_labels), 2) for name, feats in test_feats.items()
        }
        out[f"knn_{pooling}"] = {
            name: round(knn_accuracy(train_feats[pooling], train.labels, feats[pooling], test_labels, knn_k), 2)
            for name, feats in test_feats.items()
        }
        if pooling == "cls":
            out["shape_bias"] = None if ds.cue is None else cue_shape_bias(
                probe, extract_features(model, ds.cue.images, batch_size)["cls"], ds.cue
            )
    out["shifts"] = SHIFT_DESCRIPTIONS
    return out


# ------------------------------------------------------------------ Fig. 5: reconstruction


@torch.no_grad()
def reconstruct_unmasked(model: MaskedAutoencoder, imgs: torch.Tensor) -> torch.Tensor:
    """A mask-ratio-0 pass: encode every token, decode every token. (N, C, S, S) -> same.

    With a normalised-pixel loss the decoder predicts per-patch standardised pixels;
    they are mapped back with each input patch's own mean and std, as MAE's demo does.
    """
    model.eval()
    latent = model.encode(imgs)
    n, n_tokens = imgs.shape[0], model.grid**2
    ids_restore = torch.arange(n_tokens, device=imgs.device).expand(n, n_tokens)
    pred = model.forward_decoder(latent, ids_restore)
    if model.norm_pix_loss:
        patches = model.patchify(imgs)
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    return model.unpatchify(pred)


def _ssim_window(side: int) -> int:
    """scikit-image's default 7x7 window, shrunk (odd, >= 3) for tiny images."""
    return max(3, min(7, side if side % 2 else side - 1))


def recon_quality_cell(
    model: MaskedAutoencoder, ds: Dataset, *, n_images: int = 256, cell_seed: int = 0, batch_size: int = 256
) -> dict[str, Any]:
    """Mean SSIM, PSNR (dB), MSE and -MSE of UNmasked reconstructions of test images.

    Uses the first ``n_images`` test images, compared in pixel space: [0, 1] for real
    data (reconstructions clipped), the clean images' own range otherwise.
    """
    from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

    test = ds.split(test=True)
    images = test.images[:n_images]
    device = next(model.parameters()).device
    recon = np.concatenate([
        reconstruct_unmasked(model, torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(device)).float().cpu().numpy()
        for s in range(0, len(images), batch_size)
    ])
    truth, recon = to_unit_range(images, ds.settings), to_unit_range(recon, ds.settings)
    if "normalisation" in ds.settings:
        data_range = 1.0
        truth, recon = np.clip(truth, 0, 1), np.clip(recon, 0, 1)
    else:
        data_range = float(truth.max() - truth.min())
    win = _ssim_window(ds.image_size)
    ssim, psnr, mse = [], [], []
    for t, r in zip(truth.transpose(0, 2, 3, 1), recon.transpose(0, 2, 3, 1)):  # (S, S, C) each
        ssim.append(structural_similarity(t, r, data_range=data_range, channel_axis=-1, win_size=win))
        mse.append(mean_squared_error(t, r))
        # A perfect reconstruction has infinite PSNR; cap at 100 dB so means stay finite.
        psnr.append(min(100.0, peak_signal_noise_ratio(t, r, data_range=data_range)) if mse[-1] > 0 else 100.0)
    mean_mse = float(np.mean(mse))
    return {
        **_cell_header(model, cell_seed),
        "n_images": len(images),
        "ssim": round(float(np.mean(ssim)), 6),
        "psnr": round(float(np.mean(psnr)), 6),
        "mse": round(mean_mse, 8),
        "neg_mse": round(-mean_mse, 8),
        "fsim": None,
        "fsim_note": FSIM_NOTE,
    }


# ------------------------------------------------------------------ the learning gate

GATE_BATCH = 256


def gate_cell(model: MaskedAutoencoder, ds: Dataset, history: Any, *, cell_seed: int = 0) -> dict[str, Any]:
    """The learning gate (:mod:`mae_hlvm.core.gate`) of one real cell, as JSON-ready data.

    Hidden-patch MSE of the MAE vs the per-position mean of the train images, on every
    test image, masked at the cell's own ratio and unit with the probe step's fixed mask
    stream (:func:`mae_hlvm.core.measures.recon_seed` of the cell seed), in model-input space;
    the linear reference (:func:`mae_hlvm.core.gate.linear_reference`) at the model's
    ``mask_unit`` and ``mask_ratio`` on the same splits, with as many BLAS threads as
    torch uses (``train.threads`` in the step); plus the last quarter's loss drop (a diagnostic) on ``history``
    (the checkpoint's per-epoch losses).
    """
    from mae_hlvm.core.measures import recon_seed, reconstruct

    losses = history_losses(history)
    train, test = ds.split(test=False).images, ds.split(test=True).images
    model.eval()
    mse, mean_mse, _ = reconstruct(model, test, GATE_BATCH, recon_seed(cell_seed), 0, train_mean_image(train))
    with threadpool_limits(limits=torch.get_num_threads()):
        linear_mse = linear_on_mae_masks(linear_reference(train, test, model.mask_unit, model.mask_ratio), mean_mse)
    return evaluate_gate(mse, mean_mse, linear_mse, losses)


# ------------------------------------------------------------------ the pipeline step
# Each step reads its params inside its own function: tests/test_real_track.py checks them
# against mae_hlvm.workflow.pipeline.STAGE_PARAMS.


def run_evaluate(params: Params, args: Any) -> None:
    """One cell: Table 1 numbers and Fig. 5 reconstruction quality -> ``args.out`` (JSON)."""
    from mae_hlvm.core.data import load_dataset
    from mae_hlvm.core.train import load_checkpoint

    real = params.real
    device = step_device(params)
    model, meta = load_checkpoint(args.checkpoint, device)
    ds = load_dataset(args.data)
    seed = int(meta["cell"]["seed"])
    cell = f"{args.sweep}/{meta['cell']['cell_id']}"
    with progress.part(log, f"{cell}: Table 1 (features of {len(ds.images):,} images, linear probe and k-NN on 6 test sets)"):
        table1 = table1_cell(
            model, ds, cell_seed=seed, probe_epochs=real.probe_epochs, knn_k=real.knn_k, eval_seed=real.eval_seed
        )
    with progress.part(log, f"{cell}: reconstruction quality (Fig. 5)"):
        recon = recon_quality_cell(model, ds, cell_seed=seed)
    with progress.part(log, f"{cell}: learning gate (hidden-patch error, linear reference)"):
        try:
            gate = gate_cell(model, ds, meta.get("history"), cell_seed=seed)
        except ValueError as err:
            raise ArtifactError(f"{args.checkpoint}: {err}; retrain the cell") from None
    result = {
        "sweep": args.sweep,
        "cell_id": meta["cell"]["cell_id"],
        "checkpoint_weights_sha256": meta["weights_sha256"],
        "gate": gate,
        "table1": {**table1, "sweep": args.sweep},
        "recon_quality": {**recon, "sweep": args.sweep},
    }
    check(RealCellResult, result, args.out)  # the layout report-real and claims read, before it is written
    write_json(args.out, result)
