"""Frozen features of a trained MAE and the probes Table 1 puts on them.

:func:`extract_features` (CLS and mean-pooled tokens of UNmasked images), MAE's linear
probe (:func:`fit_linear_probe`, :func:`probe_accuracy`), the k-NN vote
(:func:`knn_accuracy`) and the probe's shape bias on cue-conflict images
(:func:`cue_shape_bias`): used per cell by evaluate-real and for the floors by report-real.
Shapes: N images, C channels, S image side, D encoder width.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mae_hlvm.core.data import CueConflict
from mae_hlvm.core.measures import shape_bias
from mae_hlvm.core.model import MaskedAutoencoder


@torch.no_grad()
def extract_features(model: MaskedAutoencoder, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Frozen features of UNmasked images (N, C, S, S): {"cls": (N, D), "mean": (N, D)}.

    "mean" averages the patch tokens (CLS excluded).
    """
    model.eval()
    device = next(model.parameters()).device
    cls_parts, mean_parts = [], []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
        tokens = model.encode(batch).float().cpu()
        cls_parts.append(tokens[:, 0])
        mean_parts.append(tokens[:, 1:].mean(dim=1))
    return {"cls": torch.cat(cls_parts).numpy(), "mean": torch.cat(mean_parts).numpy()}


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Sequential:
    """MAE's linear probe: BatchNorm1d(affine=False) then Linear, trained with Adam.

    features (N, D), labels (N,) in 0..n_classes-1. Returns the probe in eval mode
    (BatchNorm uses its running statistics, as at test time in MAE).
    """
    x = torch.from_numpy(np.asarray(features, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(x.shape[1], n_classes)
    nn.init.normal_(head.weight, std=0.01, generator=gen)  # MAE initialises the head this way
    nn.init.zeros_(head.bias)
    probe = nn.Sequential(nn.BatchNorm1d(x.shape[1], affine=False, eps=1e-6), head)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    probe.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            if len(rows) < 2:  # BatchNorm needs two samples to estimate a variance
                continue
            loss = nn.functional.cross_entropy(probe(x[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe.eval()


@torch.no_grad()
def probe_accuracy(probe: nn.Module, features: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent of a probe on features (N, D), labels (N,)."""
    logits = probe(torch.from_numpy(np.asarray(features, dtype=np.float32)))
    return float((logits.argmax(dim=1).numpy() == labels).mean() * 100)


@torch.no_grad()
def probe_decisions(probe: nn.Module, features: np.ndarray) -> np.ndarray:
    """A probe's class decisions (N,) int64 on features (N, D)."""
    return probe(torch.from_numpy(np.asarray(features, dtype=np.float32))).argmax(dim=1).numpy()


def cue_shape_bias(probe: nn.Module, features: np.ndarray, cue: CueConflict) -> dict[str, float | None]:
    """The paper's Table 2 measure (:func:`mae_hlvm.core.measures.shape_bias`) of ``probe`` on the
    cue-conflict images' features (M, D): {"shape_bias", "shape", "texture"}, rounded to 1e-4."""
    return {k: None if v is None else round(v, 4) for k, v in shape_bias(probe_decisions(probe, features), cue).items()}


def knn_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 20
) -> float:
    """Top-1 accuracy in percent of a k-nearest-neighbour vote under cosine distance."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), metric="cosine", algorithm="brute", n_jobs=1)
    knn.fit(train_x, train_y)
    return float((knn.predict(test_x) == test_y).mean() * 100)
