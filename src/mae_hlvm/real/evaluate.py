"""The paper's evaluations on real images, over trained :class:`MaskedAutoencoder` cells.

Each evaluation has a per-cell function returning JSON-ready numbers and a renderer that
writes its artifact atomically with deterministic bytes (same inputs -> same files):

- Table 1: :func:`table1_cell` (linear probe and k-NN, clean and shifted test sets) and
  :func:`table1_render` (CSV, Markdown, LaTeX beside the paper's numbers).
- Table 2, when the data hold a cue-conflict set: :func:`cue_shape_bias` (the clean
  Table 1 probe's shape bias, per cell and per floor) and :func:`shape_bias_markdown`.
- Fig. 5: :func:`recon_quality_cell` (SSIM / PSNR / MSE of UNmasked reconstructions)
  and :func:`plot_recon_quality` (drawn by :func:`recon_quality_figure`).
- Figs. 6/7: :func:`attention_grid` (last-layer CLS attention, and one token's; drawn by
  :func:`attention_figures`).
- Fig. 8: :func:`tsne_figure` (drawn by :func:`tsne_plot`).
- The learning gate (:mod:`mae_hlvm.core.gate`): :func:`gate_cell`, the same rules as the
  synthetic probe step's, on the test split with the cell's own masking.

Figures follow the synthetic track's conventions (:mod:`mae_hlvm.review.figures`): seed spread as
the min-max band over seeds, axes that include each metric's zero, and the params/code
stamp in a footer strip reserved below the panels (:func:`stamp_figure`).

The shifted test sets are local stand-ins for ImageNet-v2/ObjectNet/R/A/Sketch, built
from the clean test split with fixed seeds (:func:`shifted_test_sets`).
Shapes: N images, C channels, S image side, L tokens, g = S / vit_patch tokens per side,
D encoder width.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits
from torch import nn

from mae_hlvm.core import progress
from mae_hlvm.core.config import Params
from mae_hlvm.core.data import CueConflict, Dataset
from mae_hlvm.core.gate import (
    evaluate_gate,
    gate_line,
    history_losses,
    linear_on_mae_masks,
    linear_reference,
    train_mean_image,
)
from mae_hlvm.core.io import ArtifactError, atomic_path, write_json, write_text
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.core.paper import PAPER_SHAPE_BIAS
from mae_hlvm.core.results import RealCellResult, check, read_real_cell
from mae_hlvm.real.realdata import class_names, normalise, to_unit_range
from mae_hlvm.synthetic.probe import shape_bias

log = logging.getLogger("mae_hlvm.real.evaluate")

# ------------------------------------------------------------------ the paper's Table 1

PAPER_COLUMNS = ("IN1K", "IN-v2", "ObjectNet", "IN-R", "IN-A", "IN-Sketch")
# (sweep, mask_ratio, masking unit, ViT patch, top-1 % per PAPER_COLUMNS), Kong et al. 2023.
PAPER_TABLE1 = (
    ("A", 0.1, 16, 16, (47.45, 34.72, 9.42, 14.63, 2.00, 7.25)),
    ("A", 0.25, 16, 16, (53.58, 40.34, 11.54, 18.68, 2.49, 10.27)),
    ("A", 0.5, 16, 16, (60.07, 46.71, 13.94, 22.44, 2.89, 12.58)),
    ("A", 0.75, 16, 16, (67.41, 54.23, 18.24, 25.20, 3.76, 15.51)),
    ("A", 0.9, 16, 16, (62.97, 49.52, 15.87, 19.11, 2.76, 10.46)),
    ("B", 0.75, 8, 8, (62.57, 49.17, 13.44, 19.42, 3.73, 10.73)),
    ("B", 0.75, 16, 8, (68.96, 55.94, 13.73, 24.23, 6.29, 18.81)),
    ("B", 0.75, 32, 8, (73.31, 61.35, 19.03, 27.84, 12.69, 28.30)),
)

# Our test sets, in the order of PAPER_COLUMNS, and the paper column each stands in for.
TEST_SETS = ("clean", "noise", "rotation", "inversion", "contrast", "blur")
STAND_IN_FOR = dict(zip(TEST_SETS, PAPER_COLUMNS))
SHIFT_DESCRIPTIONS = {
    "clean": "the clean test split",
    "noise": "additive Gaussian noise, sigma 0.3 of the pixel range, clipped to [0, 1]",
    "rotation": "rotation by a random angle of 15 to 45 degrees either way, black fill",
    "inversion": "pixel inversion 1 - x",
    "contrast": "contrast cut to 0.3x around each image's mean",
    "blur": "Gaussian blur, sigma 1.5 pixels per 32 pixels of image side",
}
FSIM_NOTE = (
    "FSIM not computed: neither scikit-image nor another maintained package in this "
    "environment provides it"
)

# ------------------------------------------------------------------ shifted test sets


def _rotate_each(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate every image (N, C, S, S) by its own angle, bilinear, zero fill."""
    from scipy.ndimage import rotate

    magnitude = rng.uniform(15.0, 45.0, size=len(pixels))
    sign = rng.choice([-1.0, 1.0], size=len(pixels))
    out = np.empty_like(pixels)
    for i, (img, angle) in enumerate(zip(pixels, magnitude * sign)):
        out[i] = rotate(img, angle, axes=(1, 2), reshape=False, order=1, mode="constant", cval=0.0)
    return out


def shift_pixels(pixels: np.ndarray, shift: str, seed: int = 0) -> np.ndarray:
    """Apply one named shift to pixels (N, C, S, S) in [0, 1]; same shape, in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    # One stream per shift, so adding a shift never changes the others.
    rng = np.random.default_rng([seed, TEST_SETS.index(shift)])
    if shift == "clean":
        out = pixels.copy()
    elif shift == "noise":
        out = pixels + rng.normal(0.0, 0.3, size=pixels.shape)
    elif shift == "rotation":
        out = _rotate_each(pixels, rng)
    elif shift == "inversion":
        out = 1.0 - pixels
    elif shift == "contrast":
        mean = pixels.mean(axis=(1, 2, 3), keepdims=True)
        out = mean + 0.3 * (pixels - mean)
    elif shift == "blur":
        sigma = 1.5 * pixels.shape[-1] / 32
        out = gaussian_filter(pixels, sigma=(0, 0, sigma, sigma), mode="constant")
    else:
        raise ValueError(f"shift={shift!r}: not one of {TEST_SETS}")
    return np.clip(out, 0.0, 1.0)


def shifted_test_sets(ds: Dataset, seed: int = 0) -> dict[str, np.ndarray]:
    """Every test set of :data:`TEST_SETS` as model inputs (N_test, C, S, S) float32."""
    test = ds.split(test=True)
    pixels = np.clip(to_unit_range(test.images, ds.settings), 0.0, 1.0)
    return {name: normalise(shift_pixels(pixels, name, seed), ds.settings) for name in TEST_SETS}


# ------------------------------------------------------------------ features and probes


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
    """The paper's Table 2 measure (:func:`mae_hlvm.synthetic.probe.shape_bias`) of ``probe`` on the
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


# ------------------------------------------------------------------ the learning gate

GATE_BATCH = 256


def gate_cell(model: MaskedAutoencoder, ds: Dataset, history: Any, *, cell_seed: int = 0) -> dict[str, Any]:
    """The learning gate (:mod:`mae_hlvm.core.gate`) of one real cell, as JSON-ready data.

    Hidden-patch MSE of the MAE vs the per-position mean of the train images, on every
    test image, masked at the cell's own ratio and unit with the probe step's fixed mask
    stream (:func:`mae_hlvm.synthetic.probe.recon_seed` of the cell seed), in model-input space;
    the linear reference (:func:`mae_hlvm.core.gate.linear_reference`) at the model's
    ``mask_unit`` and ``mask_ratio`` on the same splits, with as many BLAS threads as
    torch uses (``train.threads`` in the step); plus the plateau rule on ``history``
    (the checkpoint's per-epoch losses).
    """
    from mae_hlvm.synthetic.probe import recon_seed, reconstruct

    losses = history_losses(history)
    train, test = ds.split(test=False).images, ds.split(test=True).images
    model.eval()
    mse, mean_mse, _ = reconstruct(model, test, GATE_BATCH, recon_seed(cell_seed), 0, train_mean_image(train))
    with threadpool_limits(limits=torch.get_num_threads()):
        linear_mse = linear_on_mae_masks(linear_reference(train, test, model.mask_unit, model.mask_ratio), mean_mse)
    return evaluate_gate(mse, mean_mse, linear_mse, losses)


# ------------------------------------------------------------------ Table 1 rendering


def _paper_row(sweep: str, ratio: float, unit: int, vit_patch: int) -> tuple[float, ...] | None:
    """The paper's numbers for our cell: Sweep A by ratio, Sweep B by unit / ViT patch."""
    for p_sweep, p_ratio, p_unit, p_vit, values in PAPER_TABLE1:
        if p_sweep != sweep:
            continue
        if sweep == "A" and math.isclose(p_ratio, ratio):
            return values
        if sweep == "B" and p_unit * vit_patch == unit * p_vit:
            return values
    return None


def sweep_part(df: pd.DataFrame, sweep: str, *, sweep_a_unit: int, sweep_b_ratio: float) -> pd.DataFrame:
    """The rows of ``df`` on Sweep A (unit ``sweep_a_unit``) or B (ratio ``sweep_b_ratio``).

    Rows tagged with the sweep they were trained for (column ``sweep_tag``: A, B, or G
    for the full grid) only count for their own sweep, so the cell both sweeps share is
    not counted twice; untagged and grid rows count wherever they lie.
    """
    on = df.mask_unit == sweep_a_unit if sweep == "A" else np.isclose(df.mask_ratio, sweep_b_ratio)
    if "sweep_tag" in df:
        tag = df.sweep_tag
        on &= tag.isna() | tag.isin([sweep, "G"])
    return df[on]


def _cells_frame(cell_results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per trained cell: its keys and our top-1 numbers."""
    rows = []
    for res in cell_results:
        row = {k: res[k] for k in ("mask_ratio", "mask_unit", "vit_patch", "seed")}
        row["sweep_tag"] = res.get("sweep")
        row["gate_pass"] = res.get("gate_pass")  # None: the result carries no gate
        row.update({f"ours {name}": res["linear_cls"][name] for name in TEST_SETS})
        row["ours clean mean-pool"] = res["linear_mean"]["clean"]
        row["ours clean k-NN"] = res["knn_cls"]["clean"]
        bias = (res.get("shape_bias") or {}).get("shape_bias")  # None: no cue-conflict set, or no decision follows a cue
        row["shape_bias"] = float("nan") if bias is None else bias
        rows.append(row)
    return pd.DataFrame(rows)


OURS_COLUMNS = tuple(f"ours {name}" for name in TEST_SETS) + ("ours clean mean-pool", "ours clean k-NN")


def table1_frame(cell_results: Sequence[dict[str, Any]], *, sweep_a_unit: int, sweep_b_ratio: float) -> pd.DataFrame:
    """Sweep A and Sweep B rows: our mean and sd over seeds beside the paper's values."""
    cells = _cells_frame(cell_results)
    rows = []
    for sweep in ("A", "B"):
        part = sweep_part(cells, sweep, sweep_a_unit=sweep_a_unit, sweep_b_ratio=sweep_b_ratio)
        for (ratio, unit, vit), group in part.groupby(["mask_ratio", "mask_unit", "vit_patch"], sort=True):
            row: dict[str, Any] = {"sweep": sweep, "mask_ratio": ratio, "mask_unit": unit, "vit_patch": vit, "n_seeds": len(group)}
            known = group["gate_pass"].notna().all()
            row["gate_pass"] = int(group["gate_pass"].astype(bool).sum()) if known else pd.NA
            for col in OURS_COLUMNS:
                row[col] = float(group[col].mean())
                row[f"{col} sd"] = float(group[col].std(ddof=1)) if len(group) > 1 else float("nan")
            paper = _paper_row(sweep, float(ratio), int(unit), int(vit))
            for name, value in zip(PAPER_COLUMNS, paper or (float("nan"),) * len(PAPER_COLUMNS)):
                row[f"paper {name}"] = value
            rows.append(row)
    table = pd.DataFrame(rows)
    if "gate_pass" in table:
        table["gate_pass"] = table["gate_pass"].astype("Int64")  # seeds passing; empty where unknown
    return table


def rank_correlations(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Spearman's rho between our column and the paper column it stands in for, per sweep.

    Sweep A runs across masking ratios, Sweep B across masking units; NaN where fewer
    than three rows have paper values or a column is constant.
    """
    from scipy.stats import spearmanr

    out: dict[str, dict[str, float]] = {}
    for sweep in ("A", "B"):
        part = table[(table.sweep == sweep) & table["paper IN1K"].notna()]
        out[f"sweep_{sweep}"] = {}
        for name in TEST_SETS:
            key = f"ours {name} ~ paper {STAND_IN_FOR[name]}"
            ours, paper = part[f"ours {name}"].to_numpy(), part[f"paper {STAND_IN_FOR[name]}"].to_numpy()
            if len(part) < 3 or np.ptp(ours) == 0 or np.ptp(paper) == 0:
                out[f"sweep_{sweep}"][key] = float("nan")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[f"sweep_{sweep}"][key] = round(float(spearmanr(ours, paper).statistic), 4)
    return out


def _fmt(value: float, sd: float | None = None, pm: str = " ± ") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.2f}"
    if sd is not None and not math.isnan(sd):
        text += f"{pm}{sd:.2f}"
    return text


def _display_columns() -> list[tuple[str, str]]:
    """(header, source column) for the Markdown and LaTeX tables."""
    ours = [(f"ours {n}" + ("" if n == "clean" else f" (≈{STAND_IN_FOR[n]})"), f"ours {n}") for n in TEST_SETS]
    ours += [("ours clean mean-pool", "ours clean mean-pool"), ("ours clean k-NN", "ours clean k-NN")]
    paper = [(f"paper {n}", f"paper {n}") for n in PAPER_COLUMNS]
    return ours + paper


def _display_rows(table: pd.DataFrame, pm: str) -> list[list[str]]:
    rows = []
    for _, r in table.iterrows():
        gate = "–" if pd.isna(r.gate_pass) else f"{int(r.gate_pass)}/{int(r.n_seeds)}"
        cells = [str(r.sweep), f"{r.mask_ratio:g}", str(int(r.mask_unit)), str(int(r.vit_patch)), str(int(r.n_seeds)), gate]
        for _, col in _display_columns():
            sd = r.get(f"{col} sd") if col.startswith("ours") else None
            cells.append(_fmt(r[col], sd, pm))
        rows.append(cells)
    return rows


_KEY_HEADERS = ["sweep", "ratio", "unit", "ViT patch", "seeds", "gate"]

TABLE1_NOTE = (
    "Columns 'ours ...' are this project's runs (linear probe on the frozen CLS token, top-1 %, "
    "mean ± sd over seeds; mean-pool and k-NN on the clean split as extra columns). "
    "Our shifted test sets are local stand-ins built from the clean test split, NOT the "
    "paper's ImageNet variants; '≈X' names the paper column each one stands in for. "
    "Columns 'paper ...' are copied from Table 1 of Kong et al. (CVPR 2023), ImageNet-1K "
    "with ViT-B; paper Sweep A uses ViT patch 16, Sweep B ViT patch 8, matched to ours by "
    "masking unit / ViT patch. 'gate': seeds whose MAE passes the learning gate "
    "(src/mae_hlvm/core/gate.py: on hidden pixels it achieves at least half of a linear predictor's gain over "
    "the per-position-mean predictor, and its loss has plateaued) of the seeds shown."
)


def _markdown(table: pd.DataFrame, rank: dict[str, dict[str, float]]) -> str:
    headers = _KEY_HEADERS + [h for h, _ in _display_columns()]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in _display_rows(table, " ± ")]
    lines += ["", TABLE1_NOTE, "", "Spearman rank correlation, ours vs the paper column it stands in for:", ""]
    for sweep, pairs in rank.items():
        across = "masking ratios" if sweep == "sweep_A" else "masking units"
        for pair, rho in pairs.items():
            lines.append(f"- {sweep} (across {across}): {pair}: rho = {_fmt(rho)}")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for old, new in (("\\", r"\textbackslash{}"), ("%", r"\%"), ("_", r"\_"), ("&", r"\&"), ("#", r"\#"), ("≈", r"$\approx$"), ("±", r"$\pm$"), ("–", "--")):
        text = text.replace(old, new)
    return text


def _latex(table: pd.DataFrame, rank: dict[str, dict[str, float]]) -> str:
    headers = _KEY_HEADERS + [h for h, _ in _display_columns()]
    n_ours = len(OURS_COLUMNS)
    lines = [
        "% " + TABLE1_NOTE,
        r"\begin{tabular}{" + "l" * len(_KEY_HEADERS) + "|" + "r" * n_ours + "|" + "r" * len(PAPER_COLUMNS) + "}",
        r"\hline",
        " & ".join(_latex_escape(h) for h in headers) + r" \\",
        r"\hline",
    ]
    lines += [" & ".join(_latex_escape(c) for c in r) + r" \\" for r in _display_rows(table, " ± ")]
    lines += [r"\hline", r"\end{tabular}"]
    for sweep, pairs in rank.items():
        for pair, rho in pairs.items():
            lines.append(f"% Spearman {sweep}: {pair}: rho = {_fmt(rho)}")
    return "\n".join(lines) + "\n"


def table1_render(
    cell_results: Sequence[dict[str, Any]], out_dir: str | Path, *, sweep_a_unit: int, sweep_b_ratio: float
) -> pd.DataFrame:
    """Write table1.csv, table1.md, table1.tex and table1_rank.json under ``out_dir``.

    cell_results: :func:`table1_cell` outputs (any number of seeds per cell), each
    optionally with ``sweep`` (A, B or G) naming the sweep it was trained for and
    ``gate_pass`` (bool, :func:`gate_cell`), counted per row in the ``gate_pass`` column.
    Returns the table (one row per sweep cell, ours and the paper's columns).
    """
    if not cell_results:
        raise ValueError("table1_render: no cell results given")
    out_dir = Path(out_dir)
    table = table1_frame(cell_results, sweep_a_unit=sweep_a_unit, sweep_b_ratio=sweep_b_ratio)
    rank = rank_correlations(table)
    write_text(out_dir / "table1.csv", table.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    write_text(out_dir / "table1.md", _markdown(table, rank))
    write_text(out_dir / "table1.tex", _latex(table, rank))
    write_json(out_dir / "table1_rank.json", {"spearman": rank, "note": TABLE1_NOTE})
    return table


# ------------------------------------------------------------------ Table 2: shape bias

TABLE2_NOTE = (
    "Shape bias (Geirhos et al.) of the clean Table 1 linear probe (frozen CLS token) on the cue-conflict images "
    "of real.cue_conflict: of its decisions that follow either cue, the share that follow the shape class; "
    "mean ± sd over seeds, Sweep A. Floors: the same probe on raw pixels and on the untrained encoder (first seed). "
    "Paper: Table 2 of Kong et al. (CVPR 2023), ImageNet-1K with ViT-B."
)


def shape_bias_frame(cell_results: Sequence[dict[str, Any]], *, sweep_a_unit: int, sweep_b_ratio: float) -> pd.DataFrame:
    """Sweep A's shape bias per masking ratio over seeds: columns mask_ratio, mean, sd, n_seeds.

    cell_results: :func:`table1_cell` outputs (optionally tagged with ``sweep``); empty
    when no Sweep A cell has a shape bias (no cue-conflict set).
    """
    cells = sweep_part(_cells_frame(cell_results), "A", sweep_a_unit=sweep_a_unit, sweep_b_ratio=sweep_b_ratio)
    cells = cells[cells["shape_bias"].notna()]
    stats = cells.groupby("mask_ratio", sort=True)["shape_bias"].agg(["mean", "std", "count"]).reset_index()
    return stats.rename(columns={"std": "sd", "count": "n_seeds"})


def _three(value: float | None) -> str:
    """A shape bias to 3 decimals, as the paper prints it; "–" for none."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def shape_bias_markdown(frame: pd.DataFrame, floors: dict[str, Any], sweep_a_unit: int) -> str:
    """Table 2 as Markdown: ours per ratio (mean ± sd), the floors, the paper's row; "" for an empty ``frame``.

    floors: :func:`table1_floors` output; a floor without "shape_bias" is left out.
    """
    if frame.empty:
        return ""
    ratios = frame["mask_ratio"].tolist()
    ours = [_three(m) + ("" if math.isnan(sd) else f" ± {sd:.3f}") for m, sd in zip(frame["mean"], frame["sd"])]
    lines = [
        "## Table 2: shape bias on cue-conflict images", "", TABLE2_NOTE, "",
        "| | " + " | ".join(f"ratio {r:g}" for r in ratios) + " |", "|---|" + "---|" * len(ratios),
        f"| ours (unit {sweep_a_unit}, {int(frame['n_seeds'].max())} seed(s)) | " + " | ".join(ours) + " |",
    ]
    for name, scores in floors.items():
        if "shape_bias" in scores:
            lines.append(f"| {name} (any ratio) | " + " | ".join([_three(scores["shape_bias"]["shape_bias"])] * len(ratios)) + " |")
    lines.append("| paper, ImageNet ViT-B (Table 2) | " + " | ".join(_three(PAPER_SHAPE_BIAS.get(r)) for r in ratios) + " |")
    return "\n".join(lines) + "\n"


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


STAMP_FONTSIZE = 6  # points; the same footer as mae_hlvm.review.figures.stamp (not imported: the
STAMP_LINE_IN = 0.12  # evaluate-real stage would then depend on the synthetic figures' code)
STAMP_PAD_IN = 0.08


def stamp_figure(fig: Figure, label: str) -> None:
    """Add a footer strip below a constrained-layout figure and write ``label`` in it.

    The figure grows by the strip (panels keep their size) and the layout engine keeps
    every panel, label, legend and the suptitle above it, so the stamp overlaps none.
    The label is split after its ``|`` when one line would be wider than the figure.
    """
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.textpath import TextPath

    engine = fig.get_layout_engine()
    if not isinstance(engine, ConstrainedLayoutEngine):
        raise ValueError("stamp_figure: the figure must use layout='constrained'")
    if fig.legends:  # constrained layout anchors them to the figure's edge, i.e. into the footer
        raise ValueError("stamp_figure: put the legend in an axes, not on the figure")
    width, height = fig.get_size_inches()
    wide = TextPath((0, 0), label, size=STAMP_FONTSIZE).get_extents().width / 72
    text = label.replace(" | ", "\n") if wide > width - 2 * STAMP_PAD_IN and " | " in label else label
    footer = STAMP_LINE_IN * (text.count("\n") + 1) + 2 * STAMP_PAD_IN
    fig.set_figheight(height + footer)
    bottom = footer / (height + footer)
    engine.set(rect=(0, bottom, 1, 1 - bottom))
    fig.text(1 - STAMP_PAD_IN / width, bottom / 2, text, ha="right", va="center", ma="right",
             fontsize=STAMP_FONTSIZE, color="0.4", gid="provenance-stamp")


def save_figure(fig: Figure, out_stem: str | Path, stamp: str | None = None) -> list[Path]:
    """Write ``out_stem``.png and .pdf atomically, with no timestamps or versions inside.

    ``stamp``: the params digest and code revision (:func:`real_stamp`) the report puts on
    every figure and table, so a reviewer can match an artifact to the revision that made it.
    """
    out_stem = Path(out_stem)
    if stamp:
        stamp_figure(fig, stamp)
    written = []
    for fmt, metadata in (
        ("png", {"Software": None}),
        ("pdf", {"Creator": None, "Producer": None, "CreationDate": None}),
    ):
        path = out_stem.with_name(f"{out_stem.name}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, metadata=metadata, dpi=150)
        written.append(path)
    return written


RECON_METRICS = (("ssim", "SSIM (higher: structure)"), ("psnr", "PSNR dB (higher: pixels)"), ("neg_mse", "-MSE (higher: pixels)"))


SPREAD = ("pi", 100)  # min-max band over seeds, as in every synthetic figure; exact, no random numbers


def recon_axis_limits(metric: str, values: Any) -> tuple[float, float]:
    """Fig. 5's y range: each metric's zero included, so a 0.001 change reads as one.

    SSIM: 0 to 1 (down to the next 0.1, at most -1, when a value is negative); PSNR: 0 dB
    to the next 5 dB above the largest value; -MSE: the next 0.05 below the lowest to 0.
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if metric == "ssim":
        low = 0.0 if finite.size == 0 else min(0.0, math.floor(float(finite.min()) * 10) / 10)
        return max(low, -1.0), 1.0
    if metric == "psnr":
        top = 0.0 if finite.size == 0 else float(finite.max())
        return 0.0, max(5.0, math.ceil(top / 5) * 5)
    low = 0.0 if finite.size == 0 else float(finite.min())
    return min(-0.05, math.floor(low / 0.05) * 0.05), 0.0


def spread_note(part: pd.DataFrame, x: str, metric: str) -> str:
    """'means span A; widest seed range B': the effect against the seed spread, for a panel title."""
    groups = part.groupby(x)[metric]
    means = groups.mean()
    ranges = groups.max() - groups.min()
    return f"means span {float(means.max() - means.min()):.3g}; widest seed range {float(ranges.max()):.3g}"


def recon_quality_figure(df: pd.DataFrame, *, sweep_a_unit: int, sweep_b_ratio: float) -> Figure:
    """Fig. 5: SSIM, PSNR, -MSE against masking ratio (top) and masking unit (bottom).

    df: one row per cell and seed with mask_ratio, mask_unit, ssim, psnr, neg_mse
    (:func:`recon_quality_cell` outputs), optionally ``sweep_tag`` (:func:`sweep_part`).
    Line: mean over seeds; band: min-max over seeds; y axes include the metric's zero
    (:func:`recon_axis_limits`) and each panel's title compares the span of the means
    with the widest seed range (:func:`spread_note`).
    """
    import seaborn as sns

    fig = Figure(figsize=(11, 7.0), layout="constrained")
    axes = fig.subplots(2, len(RECON_METRICS))
    where = {"sweep_a_unit": sweep_a_unit, "sweep_b_ratio": sweep_b_ratio}
    sweeps = (
        ("mask_ratio", sweep_part(df, "A", **where), f"Sweep A: masking unit {sweep_a_unit}"),
        ("mask_unit", sweep_part(df, "B", **where), f"Sweep B: masking ratio {sweep_b_ratio:g}"),
    )
    for row, (x, part, title) in enumerate(sweeps):
        for col, (metric, label) in enumerate(RECON_METRICS):
            ax = axes[row, col]
            if part.empty:
                ax.text(0.5, 0.5, "no cells", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(title, fontsize=8)
            else:
                sns.lineplot(data=part, x=x, y=metric, marker="o", errorbar=SPREAD, ax=ax)
                ax.set_xticks(sorted(part[x].unique()))
                ax.set_title(f"{title}\n{spread_note(part, x, metric)}", fontsize=8)
            ax.set_ylim(*recon_axis_limits(metric, part[metric] if not part.empty else []))
            ax.set_xlabel("masking ratio" if x == "mask_ratio" else "masking unit (pixels)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    fig.suptitle("Reconstruction of UNmasked test images (Fig. 5 analogue)\n"
                 "line: mean over seeds, band: min-max over seeds; every y axis includes the metric's zero", fontsize=10)
    return fig


def plot_recon_quality(
    df: pd.DataFrame, out_stem: str | Path, *, sweep_a_unit: int, sweep_b_ratio: float, stamp: str | None = None
) -> list[Path]:
    """Fig. 5 (:func:`recon_quality_figure`) written as PNG + PDF."""
    return save_figure(recon_quality_figure(df, sweep_a_unit=sweep_a_unit, sweep_b_ratio=sweep_b_ratio), out_stem, stamp)


# ------------------------------------------------------------------ Figs. 6/7: attention


def pick_test_images(ds: Dataset, n: int) -> np.ndarray:
    """Indices into the test split: the first image of each class, then the next ones."""
    labels = ds.split(test=True).labels
    chosen = [int(np.flatnonzero(labels == k)[0]) for k in np.unique(labels)][:n]
    rest = [i for i in range(len(labels)) if i not in chosen]
    return np.array(chosen + rest[: n - len(chosen)], dtype=np.int64)


def centre_token(model: MaskedAutoencoder) -> int:
    """Index (into the L patch tokens) of the token covering the image centre."""
    row = (model.image_size // 2) // model.vit_patch
    return row * model.grid + row


@torch.no_grad()
def attention_maps(model: MaskedAutoencoder, images: np.ndarray, token: int) -> tuple[np.ndarray, np.ndarray]:
    """Last-layer attention averaged over heads on UNmasked images (N, C, S, S).

    Returns (CLS -> patches, token -> patches), each (N, g, g), rows summing to at most 1
    (the rest of the mass goes to the CLS token).
    """
    model.eval()
    device = next(model.parameters()).device
    attn = model.last_attention(torch.from_numpy(np.ascontiguousarray(images)).to(device)).float().mean(dim=1).cpu()
    g = model.grid
    cls_map = attn[:, 0, 1:].reshape(-1, g, g).numpy()
    token_map = attn[:, 1 + token, 1:].reshape(-1, g, g).numpy()
    return cls_map, token_map


def foreground_mass(model: MaskedAutoencoder, ds: Dataset, n_images: int = 256) -> float:
    """Share of CLS attention on foreground tokens (mean pixel above the image mean).

    A number behind the paper's "object-centric" reading of Fig. 6, on the first
    ``n_images`` test images; attention to the CLS token itself is left out.
    """
    images = ds.split(test=True).images[:n_images]
    cls_map, _ = attention_maps(model, images, 0)
    pixels = to_unit_range(images, ds.settings).mean(axis=1)  # (N, S, S)
    p, g = model.vit_patch, model.grid
    token_mean = pixels.reshape(len(images), g, p, g, p).mean(axis=(2, 4))
    foreground = token_mean > pixels.mean(axis=(1, 2))[:, None, None]
    share = (cls_map * foreground).sum(axis=(1, 2)) / cls_map.sum(axis=(1, 2))
    return float(share.mean())


def _show_image(ax: Any, pixels: np.ndarray) -> None:
    """pixels (C, S, S) in [0, 1]."""
    if pixels.shape[0] == 1:
        ax.imshow(pixels[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(pixels.transpose(1, 2, 0), interpolation="nearest")


ATTENTION_TITLES = (
    "Last-layer attention of the CLS token to the patch tokens,\nmean over heads (Fig. 6 analogue)\n"
    "colour: 0 (black) to each panel's own maximum; first seed only, no band",
    "Last-layer attention of the centre token (red box) to the patch tokens,\nmean over heads (Fig. 7 analogue)\n"
    "colour: 0 (black) to each panel's own maximum; first seed only, no band\n"
    "compare Fig. 6: the caption says why the two look alike",
)


def _attention_figure(
    labels: Sequence[str], pixels: np.ndarray, maps: list[np.ndarray], title: str, token_box: tuple[int, int, int] | None
) -> Figure:
    """Rows: the inputs, then one row of maps (N, g, g) per cell, each panel coloured 0 to its maximum."""
    from matplotlib.patches import Rectangle

    n_rows, n_cols = 1 + len(maps), len(pixels)
    # at least 5.2 in wide, so the three-line title fits over a single image
    fig = Figure(figsize=(max(1.3 * n_cols + 1.2, 5.2), 1.3 * n_rows + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    for col in range(n_cols):
        _show_image(axes[0, col], np.clip(pixels[col], 0, 1))
        if token_box is not None:
            top, left, side = token_box
            axes[0, col].add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, edgecolor="red", linewidth=1))
        for row, cell_maps in enumerate(maps, start=1):
            top = float(cell_maps[col].max())
            axes[row, col].imshow(cell_maps[col], cmap="inferno", interpolation="nearest", vmin=0.0,
                                  vmax=top if top > 0 else 1.0)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=8)
    for row, label in enumerate(labels, start=1):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=8)
    return fig


def attention_figures(
    labels: Sequence[str], pixels: np.ndarray, cls_maps: list[np.ndarray], token_maps: list[np.ndarray],
    token_box: tuple[int, int, int],
) -> tuple[Figure, Figure]:
    """Figs. 6 and 7: (CLS maps, centre-token maps), each one row of (N, g, g) maps per cell under the inputs."""
    return (
        _attention_figure(labels, pixels, cls_maps, ATTENTION_TITLES[0], None),
        _attention_figure(labels, pixels, token_maps, ATTENTION_TITLES[1], token_box),
    )


def attention_grid(
    models: Sequence[tuple[str, MaskedAutoencoder]], ds: Dataset, out_dir: str | Path, *, n_images: int = 6,
    stamp: str | None = None,
) -> dict[str, Any]:
    """Figs. 6 and 7: fig6_cls_attention and fig7_token_attention (PNG + PDF) in ``out_dir``.

    models: (row label, model) per cell, all on the same test images. The token of
    Fig. 7 is the one covering the image centre. Returns the test indices, the token and
    each cell's :func:`foreground_mass`.
    """
    if not models:
        raise ValueError("attention_grid: no models given")
    out_dir = Path(out_dir)
    picks = pick_test_images(ds, n_images)
    images = ds.split(test=True).images[picks]
    pixels = to_unit_range(images, ds.settings)
    cls_maps, token_maps, summary = [], [], {}
    for label, model in models:
        cls_map, token_map = attention_maps(model, images, centre_token(model))
        cls_maps.append(cls_map)
        token_maps.append(token_map)
        summary[label] = {"cls_foreground_mass": round(foreground_mass(model, ds), 6)}
    first = models[0][1]
    token = centre_token(first)
    p = first.vit_patch
    box = ((token // first.grid) * p, (token % first.grid) * p, p)
    labels = [label for label, _ in models]
    fig6, fig7 = attention_figures(labels, pixels, cls_maps, token_maps, box)
    written = save_figure(fig6, out_dir / "fig6_cls_attention", stamp)
    written += save_figure(fig7, out_dir / "fig7_token_attention", stamp)
    return {
        "test_indices": picks.tolist(),
        "token_pixel_box": list(box),
        "cells": summary,
        "files": [str(w) for w in written],
    }


# ------------------------------------------------------------------ Fig. 8: t-SNE


def tsne_figure(
    models: Sequence[tuple[str, MaskedAutoencoder]],
    ds: Dataset,
    out_stem: str | Path,
    *,
    n_points: int = 500,
    pooling: str = "cls",
    seed: int = 0,
    stamp: str | None = None,
) -> dict[str, Any]:
    """Fig. 8: t-SNE of test features per cell, coloured by class (PNG + PDF).

    Uses ``n_points`` test images drawn by ``seed`` (the same for every cell). Returns per
    cell the silhouette score of the classes in the 2-D embedding (higher: more separable).
    """
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    if not models:
        raise ValueError("tsne_figure: no models given")
    test = ds.split(test=True)
    n = min(n_points, len(test.labels))
    rows = np.sort(np.random.default_rng(seed).permutation(len(test.labels))[:n])
    labels = test.labels[rows]
    summary, panels = {}, []
    for label, model in models:
        feats = extract_features(model, test.images[rows])[pooling].astype(np.float64)
        perplexity = min(30.0, (n - 1) / 3)
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(feats)
        score = float(silhouette_score(emb, labels)) if len(np.unique(labels)) > 1 else float("nan")
        summary[label] = {"silhouette": round(score, 6)}
        panels.append((label, emb, score))
    fig = tsne_plot(panels, labels, class_names(ds), ds.n_classes, pooling)
    written = save_figure(fig, out_stem, stamp)
    return {"n_points": n, "pooling": pooling, "cells": summary, "files": [str(w) for w in written]}


def tsne_plot(
    panels: Sequence[tuple[str, np.ndarray, float]], labels: np.ndarray, names: Sequence[str], n_classes: int, pooling: str
) -> Figure:
    """Fig. 8's drawing: one panel per (cell label, embedding (n, 2), silhouette), points coloured by ``labels``."""
    n_cols = min(4, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    # at least 6.4 in wide, so the title and a ten-class legend fit over a single panel
    fig = Figure(figsize=(max(3.2 * n_cols, 6.4), 3.2 * n_rows + 0.6), layout="constrained")
    # the class legend gets its own row, so the layout keeps it above the stamp's footer
    grid = fig.add_gridspec(n_rows + 1, n_cols, height_ratios=[1.0] * n_rows + [0.1])
    axes = np.array([fig.add_subplot(grid[r, c]) for r in range(n_rows) for c in range(n_cols)])
    legend_ax = fig.add_subplot(grid[n_rows, :])
    legend_ax.set_axis_off()
    cmap = "tab10" if n_classes <= 10 else "tab20"
    for ax, (label, emb, score) in zip(axes, panels):
        scatter = ax.scatter(emb[:, 0], emb[:, 1], c=labels, cmap=cmap, vmin=0, vmax=max(9, n_classes - 1), s=5)
        ax.set_title(f"{label}\nsilhouette {score:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    handles, _ = scatter.legend_elements(num=None)
    present = [names[k] for k in np.unique(labels)]
    legend_ax.legend(handles[: len(present)], present, loc="center", ncol=min(10, len(present)), fontsize=8, title="class",
                     title_fontsize=8)
    fig.suptitle(f"t-SNE of test features ({pooling} token), coloured by class (Fig. 8 analogue)\n"
                 "first seed only, no band; t-SNE axes have no units", fontsize=10)
    return fig


# ------------------------------------------------------------------ pipeline steps
# ``evaluate-real`` (one cell) and ``report-real`` (every cell). Each reads its params
# inside its own function: tests/test_real_track.py checks them against
# mae_hlvm.workflow.pipeline.STAGE_PARAMS.


def _step_device(params: Params) -> str:
    """CPU threads from ``train.threads``; CUDA when ``train.device`` asks for it or ``auto`` finds it."""
    torch.set_num_threads(params.train.threads)
    want = params.train.device
    return "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"


def run_evaluate(params: Params, args: Any) -> None:
    """One cell: Table 1 numbers and Fig. 5 reconstruction quality -> ``args.out`` (JSON)."""
    from mae_hlvm.core.data import load_dataset
    from mae_hlvm.core.train import load_checkpoint

    real = params.real
    device = _step_device(params)
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
    with progress.part(log, f"{cell}: learning gate (hidden-patch error, linear reference, plateau)"):
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


def figure_cells(sweep_cells: dict[str, list[tuple[float, int, int]]], seed: int) -> list[tuple[str, float, int]]:
    """(sweep, ratio, unit) of the cells shown in Figs. 6 to 8: one seed, each (ratio, unit) once.

    A cell both sweeps train is byte-identical in both (same params, same seed), so it is
    shown once, from the first sweep listing it.
    """
    out, seen = [], set()
    for sweep, cells in sweep_cells.items():
        for ratio, unit, s in cells:
            if s == seed and (ratio, unit) not in seen:
                seen.add((ratio, unit))
                out.append((sweep, ratio, unit))
    return out


def run_report(params: Params, args: Any) -> None:
    """Table 1 and Figs. 5 to 8 over every current cell of the real track."""
    from mae_hlvm.core.config import cell_id, real_sweep_cells
    from mae_hlvm.core.io import read_json

    real = params.real
    device = _step_device(params)
    where = {"sweep_a_unit": real.sweep_a_unit, "sweep_b_ratio": real.sweep_b_ratio}
    sweep_cells = real_sweep_cells(real)
    # only the cells of the current params: files of cells dropped from params.yaml are ignored
    results = []
    for sweep, cells in sweep_cells.items():
        for r, u, s in cells:
            path = Path(args.cells_dir) / sweep / f"{cell_id(r, u, s)}.json"
            res = read_json(path)
            read_real_cell(res, str(path))  # the layout evaluate-real writes (mae_hlvm.core.results)
            results.append(res)
    out_dir, fig_dir = Path(args.out_dir), Path(args.out_dir) / "figures"
    _render_report(params, args, results, sweep_cells, where, out_dir, fig_dir, device, real_stamp(params))


def real_gate_line(results: Sequence[dict[str, Any]]) -> str:
    """:func:`mae_hlvm.core.gate.gate_line` over the real cells' JSONs (each with ``sweep``, ``cell_id``, ``gate``)."""
    failing = [
        (f"{res['sweep']}/{res['cell_id']}", res["gate"]["gate_reason"]) for res in results if not res["gate"]["gate_pass"]
    ]
    return gate_line("real track", len(results), failing)


def real_stamp(params: Params) -> str:
    """``params <digest> | code <revision>`` over every section the real track reads."""
    from mae_hlvm.core.config import digest, section_dict
    from mae_hlvm.core.provenance import code_revision

    sections = section_dict(params, ["model", "train", "real"])
    return f"params {digest(sections)} | code {code_revision()}"


def _render_report(params: Params, args: Any, results: list, sweep_cells: dict, where: dict,
                   out_dir: Path, fig_dir: Path, device: Any, stamp: str) -> None:
    """Table 1 (+ its floors and Table 2) and Figs. 5 to 8, each stamped with ``stamp``."""
    from mae_hlvm.core import paths
    from mae_hlvm.core.config import cell_id
    from mae_hlvm.core.data import load_dataset
    from mae_hlvm.core.io import ArtifactError, write_text
    from mae_hlvm.core.train import load_checkpoint

    real = params.real
    table1_render([{**res["table1"], "gate_pass": res["gate"]["gate_pass"]} for res in results], out_dir, **where)
    gate = real_gate_line(results)
    ds = load_dataset(args.data)
    with progress.part(log, "Table 1 floors (raw pixels and the untrained encoder, probed as the cells)"):
        floors = table1_floors(
            ds, random_init_model(params, ds, real.seeds[0], device),
            probe_epochs=real.probe_epochs, knn_k=real.knn_k, eval_seed=real.eval_seed,
        )
    table2 = shape_bias_markdown(shape_bias_frame([res["table1"] for res in results], **where), floors, real.sweep_a_unit)
    for name, comment in (("table1.md", "{floors}\n{table2}{gate}\n\n_Stamp: {stamp}._"),
                          ("table1.tex", "% {gate}\n% stamp: {stamp}")):
        path = out_dir / name
        text = comment.format(floors=floors_markdown(floors), table2=table2 and table2 + "\n", gate=gate, stamp=stamp)
        write_text(path, path.read_text().rstrip("\n") + "\n\n" + text + "\n")
    recon = pd.DataFrame([res["recon_quality"] for res in results]).rename(columns={"sweep": "sweep_tag"})
    plot_recon_quality(recon, fig_dir / "fig5_recon_quality", **where, stamp=stamp)

    evaluated = {(res["sweep"], res["cell_id"]): res["checkpoint_weights_sha256"] for res in results}
    models = []
    for sweep, ratio, unit in figure_cells(sweep_cells, real.seeds[0]):
        cell = cell_id(ratio, unit, real.seeds[0])
        model, meta = load_checkpoint(Path(args.models_dir) / sweep / cell / "checkpoint.pt", device)
        # the cell JSONs are this step's recorded deps: only the weights they evaluated may be shown
        if meta["weights_sha256"] != evaluated[(sweep, cell)]:
            raise ArtifactError(f"{args.models_dir}/{sweep}/{cell}: checkpoint differs from the one its cell JSON evaluated; rerun evaluate-real")
        models.append((f"r{ratio:g} u{unit}", model))
    with progress.part(log, f"Figs. 6 and 7 (attention maps of {len(models)} cells)"):
        attention = attention_grid(models, ds, fig_dir, n_images=real.n_eval_images, stamp=stamp)
    with progress.part(log, f"Fig. 8 (t-SNE of {real.tsne_points} test images per cell, {len(models)} cells)"):
        tsne = tsne_figure(models, ds, fig_dir / "fig8_tsne", n_points=real.tsne_points, seed=real.eval_seed, stamp=stamp)
    write_json(out_dir / Path(paths.REAL_FIGURES_JSON).name, {
        "seed_shown": real.seeds[0],
        "attention": {k: v for k, v in attention.items() if k != "files"},
        "tsne": {k: v for k, v in tsne.items() if k != "files"},
    })
