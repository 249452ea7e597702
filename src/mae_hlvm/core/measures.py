"""What both tracks measure of a trained MAE, the same way.

- Its reconstruction of hidden patches under the cell's own masks, and the per-position-mean
  predictor's on the same patches (:func:`reconstruct`): the learning gate's inputs
  (:mod:`mae_hlvm.core.gate`), in the synthetic ``probe`` and the real ``evaluate-real`` step.
- The shape bias of class decisions on cue-conflict images (:func:`shape_bias`, the paper's
  Table 2), of the synthetic class probe and of the real track's linear probe.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from mae_hlvm.core.data import CueConflict
from mae_hlvm.core.model import MaskedAutoencoder


def shape_bias(predicted: np.ndarray, cue: CueConflict) -> dict[str, float | None]:
    """The paper's Table 2 measure on cue-conflict images (Geirhos et al.): of the decisions
    that follow one of the two cues, the share that follow the shape.

    predicted: (M,) class decisions on ``cue.images``. Returns {"shape_bias": share or None
    when no decision follows either cue, "shape": share of all decisions = shape class,
    "texture": share = texture class}.
    """
    shape = float((predicted == cue.shape_labels).mean())
    texture = float((predicted == cue.texture_labels).mean())
    return {"shape_bias": shape / (shape + texture) if shape + texture > 0 else None, "shape": shape, "texture": texture}


def recon_seed(seed: int) -> int:
    """Seed of the probe's own mask stream, derived from the cell seed, apart from training's."""
    h = hashlib.sha256(f"{seed}:probe:recon".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def pixel_prediction(model: MaskedAutoencoder, imgs: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Decoder output (N, L, P) in pixel space (N, L, P).

    With norm_pix_loss the decoder predicts per-patch normalised pixels; undo that with
    each target patch's own mean and variance (as MAE's visualisation does - these
    statistics come from the hidden patch, so this isolates the structure error).
    """
    if not model.norm_pix_loss:
        return pred
    target = model.patchify(imgs)
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return pred * (var + 1e-6) ** 0.5 + mean


def hidden_sq_errors(
    pix: torch.Tensor, target: torch.Tensor, mean_patches: torch.Tensor, mask: torch.Tensor
) -> tuple[float, float, int]:
    """Summed squared errors on hidden tokens of the MAE and of the mean predictor, and the count.

    pix, target: (N, L, P) pixel predictions and true patches; mean_patches: (1, L, P) the
    patchified train-mean image; mask: (N, L), 1 = hidden. Returns (MAE sum, mean-predictor
    sum, number of hidden pixel values), summed in float64.
    """
    mae = ((pix - target) ** 2).sum(dim=-1)  # (N, L)
    mean = ((mean_patches - target) ** 2).sum(dim=-1)
    return (
        float((mae * mask).sum(dtype=torch.float64)),
        float((mean * mask).sum(dtype=torch.float64)),
        int(mask.sum()) * target.shape[-1],
    )


def reconstruct(
    model: MaskedAutoencoder, images: np.ndarray, batch_size: int, seed: int, n_keep: int, mean_image: np.ndarray
) -> tuple[float, float, dict[str, np.ndarray]]:
    """Mask at the cell's own ratio (mask stream from ``seed``) and reconstruct images (N, C, S, S).

    Returns (MSE of the MAE's pixels on hidden patches over all N images, MSE of the
    per-position-mean predictor ``mean_image`` (C, S, S) on the same hidden patches under
    the same masks (:func:`hidden_sq_errors`, for :mod:`mae_hlvm.core.gate`), figure arrays for the first ``n_keep`` images:
    original/masked/reconstruction (n, C, S, S) float32 and mask (n, S, S) bool, True =
    hidden; no arrays when ``n_keep`` is 0). Runs on the model's device; masks are drawn
    on the CPU, so they do not depend on it.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    mean_patches = model.patchify(torch.from_numpy(np.ascontiguousarray(mean_image, dtype=np.float32))[None].to(device))
    sq_err, mean_sq_err, n_values = 0.0, 0.0, 0
    kept: dict[str, list[np.ndarray]] = {"original": [], "masked": [], "reconstruction": [], "mask": []}
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            imgs = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            _, pred, mask = model(imgs, generator=generator)
            pix = pixel_prediction(model, imgs, pred.float())
            mae, mean, count = hidden_sq_errors(pix, model.patchify(imgs), mean_patches, mask)
            sq_err, mean_sq_err, n_values = sq_err + mae, mean_sq_err + mean, n_values + count
            take = max(0, min(n_keep - start, imgs.shape[0]))
            if take:
                arrays = _figure_arrays(model, imgs[:take].cpu(), pix[:take].cpu(), mask[:take].cpu())
                for name, arr in arrays.items():
                    kept[name].append(arr)
    figures = {name: np.concatenate(chunks) for name, chunks in kept.items() if chunks}
    return sq_err / n_values, mean_sq_err / n_values, figures


def _figure_arrays(
    model: MaskedAutoencoder, imgs: torch.Tensor, pix: torch.Tensor, mask: torch.Tensor
) -> dict[str, np.ndarray]:
    """imgs (n, C, S, S), pixel predictions (n, L, P), token mask (n, L) -> figure arrays."""
    pixel_mask = model.unpatchify(mask[:, :, None].expand(pix.shape).contiguous())  # (n, C, S, S)
    recon = model.unpatchify(pix)
    return {
        "original": imgs.numpy().astype(np.float32),
        "masked": (imgs * (1 - pixel_mask)).numpy().astype(np.float32),
        "reconstruction": (imgs * (1 - pixel_mask) + recon * pixel_mask).numpy().astype(np.float32),
        "mask": pixel_mask[:, 0].numpy() > 0.5,
    }
