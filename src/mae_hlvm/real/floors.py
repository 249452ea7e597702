"""Table 1's floors: the same probes on raw pixels and on the untrained encoder.

:func:`table1_floors` (with each floor's shape bias when the data hold a cue-conflict
set) and :func:`floors_markdown`; the report-real step appends them to Table 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mae_hlvm.core.config import Params
from mae_hlvm.core.data import CueConflict, Dataset
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.real.probes import cue_shape_bias, extract_features, fit_linear_probe, knn_accuracy, probe_accuracy
from mae_hlvm.real.shifts import TEST_SETS, shifted_test_sets


def floor_scores(features: dict[str, dict[str, np.ndarray]], train_labels: np.ndarray, test_labels: np.ndarray,
                 n_classes: int, *, probe_epochs: int, knn_k: int, eval_seed: int, batch_size: int = 256,
                 cue: CueConflict | None = None) -> dict[str, Any]:
    """Table 1's probes on given features: {"linear": {test set: top-1}, "knn": {...}}, and
    "shape_bias" (:func:`cue_shape_bias` of the linear probe) when ``cue`` is given.

    features: {"train": {"x": (N, F)}, <test set>: {"x": (N', F)}} (one feature vector per
    image), with "cue": {"x": (M, F)}, the cue-conflict images', when ``cue`` is given.
    """
    probe = fit_linear_probe(features["train"]["x"], train_labels, n_classes, epochs=probe_epochs,
                             batch_size=batch_size, seed=eval_seed)
    tests = [name for name in features if name not in ("train", "cue")]
    out = {
        "linear": {n: round(probe_accuracy(probe, features[n]["x"], test_labels), 2) for n in tests},
        "knn": {n: round(knn_accuracy(features["train"]["x"], train_labels, features[n]["x"], test_labels, knn_k), 2)
                for n in tests},
    }
    if cue is not None:
        out["shape_bias"] = cue_shape_bias(probe, features["cue"]["x"], cue)
    return out


def table1_floors(ds: Dataset, random_model: MaskedAutoencoder, *, probe_epochs: int, knn_k: int, eval_seed: int) -> dict[str, Any]:
    """Table 1's floors under the same probes: raw pixels, and the untrained encoder (CLS).

    Returns {"raw pixels": floor_scores, "random-init encoder": floor_scores}, each with
    its shape bias when ``ds`` holds a cue-conflict set.
    """
    train = ds.split(test=False)
    test_labels = ds.split(test=True).labels
    sets = {"train": train.images, **shifted_test_sets(ds, eval_seed), **({} if ds.cue is None else {"cue": ds.cue.images})}
    pixels = {name: {"x": imgs.reshape(len(imgs), -1).astype(np.float32)} for name, imgs in sets.items()}
    encoder = {name: {"x": extract_features(random_model, imgs)["cls"]} for name, imgs in sets.items()}
    kw = {"probe_epochs": probe_epochs, "knn_k": knn_k, "eval_seed": eval_seed, "cue": ds.cue}
    return {
        "raw pixels": floor_scores(pixels, train.labels, test_labels, ds.n_classes, **kw),
        "random-init encoder": floor_scores(encoder, train.labels, test_labels, ds.n_classes, **kw),
    }


def random_init_model(params: Params, ds: Dataset, seed: int, device: Any) -> MaskedAutoencoder:
    """The real track's MAE as train-real starts it for ``seed``, never trained (masking shapes no weight)."""
    from mae_hlvm.core.model import build_model
    from mae_hlvm.real.train_real import real_train_params

    p = real_train_params(params)
    torch.manual_seed(seed)
    geometry = {"image_size": ds.image_size, "channels": ds.channels}
    return build_model(p.model.model_dump(), geometry, p.real.sweep_b_ratio, p.real.sweep_a_unit).to(device).eval()


def floors_markdown(floors: dict[str, Any]) -> str:
    """The floors as a Markdown table: one row per floor and probe, one column per test set."""
    lines = ["Floors under the same probes (clean-split training, top-1 %):", "",
             "| floor | probe | " + " | ".join(TEST_SETS) + " |", "|---|---|" + "---|" * len(TEST_SETS)]
    for name, scores in floors.items():
        for probe in ("linear", "knn"):
            lines.append(f"| {name} | {probe} | " + " | ".join(f"{scores[probe][t]:.2f}" for t in TEST_SETS) + " |")
    return "\n".join(lines) + "\n"
