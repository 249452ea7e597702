"""Probe one cell's encoder against the true latents (step ``probe``).

The encoder sees the UNmasked train and test images; its tokens (N, 1+L, D) are pooled
into whole-image features and region features, and ridge probes fitted on the train
split are scored on the test split by R^2 per latent level. The theory (block
identifiability) promises the shared latents only up to an invertible map, so a linear
probe is a lower bound; the nonlinear probe is a ridge on the standardised features plus
their Nystroem RBF map (an approximate kernel ridge that contains the linear probe).

Pooling. The default whole-image feature is the mean over patch tokens
(``probe.pooling: mean``); the CLS token is reported too. Why mean: in MAE the loss has
no target at the CLS position, so CLS is trained only indirectly, as one more token the
decoder may attend to; after short pretraining it can carry little. The MAE paper
itself (He et al. 2022, App. A.1) uses the CLS token for linear probing, adding only
that "our MAE works similarly well without this token (with average pooling)" - mean
pooling is therefore a documented equivalent there, not its recommendation. Kong et al.
probe with CLS. Reporting both lets the results show whether the choice matters.

Region probes. Global pooling can hide a latent that lives in one region (the mean
over 144 tokens dilutes a node that covers 9 of them), so for each level l >= 1 and
each node (i, j) a linear probe predicts that node's latent from the mean of the tokens
over that node's own square.

Spatial and innovation probes (what the theorem's prediction is checked against).
Pooling a whole image into one vector mixes every node together, so each level is also
probed from the *spatial* feature: the mean token over each node of level
``spatial_level`` (4 x 4 regions at depth >= 2), concatenated, (N, 16 D). It keeps where
things are while staying small enough for a ridge on a CPU. And since a level's latents
are half predictable from their parent, R^2 of the whole level cannot tell "holds this
level" from "holds its ancestors": the *innovation* probe targets each level's new
information, ``z_l`` minus its best linear prediction from its parent (fitted per node on
the train split, :func:`innovations`), with the same spatial feature.

Cross-validation. Every regression ridge picks its alpha per output dimension by
efficient leave-one-out (RidgeCV's closed-form generalised CV): one SVD per feature
matrix, deterministic, and per-output alphas make one joint fit over all levels equal
to separate fits per level (r2_ridge_blocks). On default-size features, with one
shared alpha, LOO was 2x faster than 3-fold CV at R^2 equal to 6 decimals; per-output
alphas (scikit-learn offers them with LOO only) moved a trained cell's R^2 by < 1e-4.
``probe.cv_folds`` is the (stratified, unshuffled) CV of the class probe, which selects
alpha by accuracy.

Shapes: N images, L tokens, D encoder width, g = tokens per side, d_l latent width.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.linalg import LinAlgWarning
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import RidgeClassifierCV, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mae_hlvm.core import paths, results
from mae_hlvm.core.config import Params
from mae_hlvm.core.data import CueConflict, Dataset, load_dataset
from mae_hlvm.core.gate import evaluate_gate, history_losses, linear_on_mae_masks, linear_reference, train_mean_image
from mae_hlvm.core.io import ArtifactError, file_sha256, read_json, save_npz, write_json
from mae_hlvm.core.measures import recon_seed, reconstruct, shape_bias
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.core.provenance import digest, section_dict
from mae_hlvm.synthetic.latents import latent_variables
from mae_hlvm.synthetic.masked import excess, masked_scores, mean_excess, model_tokens, probe_masks

log = logging.getLogger("mae_hlvm.synthetic.probe")

POOLINGS = ("mean", "cls")
NYSTROEM_SEED = 0
GAMMA_ROWS = 1000  # rows used for the median heuristic: enough for a stable median
DECIMALS = 6


# --------------------------------------------------------------------------- features


def pooled_features(tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Whole-image features: tokens (N, 1+L, D), CLS first -> {"cls": (N, D), "mean": (N, D)}."""
    if tokens.ndim != 3 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be (N, 1+L, D) with L >= 1, got {tokens.shape}")
    return {"cls": tokens[:, 0], "mean": tokens[:, 1:].mean(axis=1)}


def region_bounds(grid: int, level: int) -> list[tuple[int, int]]:
    """Token index range [lo, hi) per node row (or column) at ``level``.

    A node covers 1/2**level of the image side, i.e. grid/2**level tokens, possibly a
    fraction; a token is used when it lies inside or overlaps the node's square.
    """
    nodes = 2**level
    if nodes > grid:
        raise ValueError(f"level {level} has {nodes} nodes per side but the token grid is only {grid}")
    return [((i * grid) // nodes, -(-((i + 1) * grid) // nodes)) for i in range(nodes)]


def region_features(patch_tokens: np.ndarray, grid: int, level: int) -> np.ndarray:
    """Mean token over each node's square: (N, g*g, D) patch tokens, no CLS -> (N, 2**l, 2**l, D)."""
    n, length, d = patch_tokens.shape
    if length != grid * grid:
        raise ValueError(f"patch_tokens has {length} tokens, expected grid*grid = {grid * grid}")
    bounds = region_bounds(grid, level)
    squares = patch_tokens.reshape(n, grid, grid, d)
    out = np.empty((n, len(bounds), len(bounds), d), dtype=patch_tokens.dtype)
    for i, (r0, r1) in enumerate(bounds):
        for j, (c0, c1) in enumerate(bounds):
            out[:, i, j] = squares[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


SPATIAL_LEVEL = 2  # the spatial feature pools tokens over the nodes of this level (4 x 4)


def spatial_level(n_levels: int) -> int:
    """The level whose nodes pool the spatial feature: SPATIAL_LEVEL, or the leaves if shallower."""
    return max(1, min(SPATIAL_LEVEL, n_levels - 1))


def innovations(train_latents: list[np.ndarray], test_latents: list[np.ndarray]) -> tuple[list, list]:
    """Each level's new information: ``z_l`` minus its least-squares prediction from its parent.

    latents: per level (N, 2**l, 2**l, d_l). The fit (with intercept) is per node, on the
    train split, applied to both splits. Returns (train, test) lists of flattened
    innovations (N, 4**l * d_l), with None at level 0 (the root has no parent).
    """
    out_tr: list[np.ndarray | None] = [None]
    out_te: list[np.ndarray | None] = [None]
    for level in range(1, len(train_latents)):
        g = 2**level
        p_tr = train_latents[level - 1].astype(np.float64).repeat(2, axis=1).repeat(2, axis=2)
        p_te = test_latents[level - 1].astype(np.float64).repeat(2, axis=1).repeat(2, axis=2)
        c_tr, c_te = train_latents[level].astype(np.float64), test_latents[level].astype(np.float64)
        r_tr, r_te = np.empty_like(c_tr), np.empty_like(c_te)
        ones_tr, ones_te = np.ones((len(c_tr), 1)), np.ones((len(c_te), 1))
        for i in range(g):
            for j in range(g):
                a_tr = np.hstack([p_tr[:, i, j], ones_tr])
                coef, *_ = np.linalg.lstsq(a_tr, c_tr[:, i, j], rcond=None)
                r_tr[:, i, j] = c_tr[:, i, j] - a_tr @ coef
                r_te[:, i, j] = c_te[:, i, j] - np.hstack([p_te[:, i, j], ones_te]) @ coef
        out_tr.append(flatten_latent(r_tr))
        out_te.append(flatten_latent(r_te))
    return out_tr, out_te


def level_scores(
    x_tr: np.ndarray, x_te: np.ndarray, train: Dataset, test: Dataset, alphas: list[float] | tuple[float, ...]
) -> dict[str, list[float | None]]:
    """Linear R^2 per level of the whole level and of its innovation, from features x (N, F).

    Returns {"levels": [R^2 of z_l], "innovations": [None, R^2 of the innovation of z_l, ...]}.
    """
    s_tr, s_te = standardise(x_tr, x_te)
    z_tr = [flatten_latent(z) for z in train.latents]
    z_te = [flatten_latent(z) for z in test.latents]
    in_tr, in_te = innovations(train.latents, test.latents)
    scores = r2_ridge_blocks(s_tr, z_tr + in_tr[1:], s_te, z_te + in_te[1:], alphas)
    n = len(z_tr)
    return {"levels": [_r(x) for x in scores[:n]], "innovations": [None] + [_r(x) for x in scores[n:]]}


def flatten_latent(z: np.ndarray) -> np.ndarray:
    """One level's latents (N, 2**l, 2**l, d_l) -> (N, 4**l * d_l)."""
    return z.reshape(z.shape[0], -1)


# --------------------------------------------------------------------------- probes


def _ridge(alphas: list[float] | tuple[float, ...]) -> RidgeCV:
    # cv=None: efficient leave-one-out in closed form; each output picks its own alpha,
    # so a joint fit over many outputs equals separate fits (see r2_ridge_blocks).
    return RidgeCV(alphas=tuple(alphas), alpha_per_target=True)


def r2_ridge(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray,
    alphas: list[float] | tuple[float, ...],
) -> float:
    """Test R^2 (variance-weighted over outputs) of RidgeCV on the given features as they are.

    x: (N, F), y: (N, K). No standardisation: the caller decides the feature map.
    """
    return r2_ridge_blocks(x_tr, [y_tr], x_te, [y_te], alphas)[0]


def r2_ridge_blocks(
    x_tr: np.ndarray, ys_tr: list[np.ndarray], x_te: np.ndarray, ys_te: list[np.ndarray],
    alphas: list[float] | tuple[float, ...],
) -> list[float]:
    """One RidgeCV fit from x (N, F) to every target block ys[b] (N, K_b) at once; R^2 per block.

    Same numbers as one :func:`r2_ridge` per block (alphas are per output), one SVD of x
    instead of one per block.
    """
    model = _ridge(alphas).fit(x_tr, np.hstack([y.reshape(len(y), -1) for y in ys_tr]))
    pred = model.predict(x_te).reshape(len(x_te), -1)
    edges = np.cumsum([0] + [y.reshape(len(y), -1).shape[1] for y in ys_te])
    return [
        float(r2_score(y.reshape(len(y), -1), pred[:, lo:hi], multioutput="variance_weighted"))
        for y, lo, hi in zip(ys_te, edges[:-1], edges[1:])
    ]


def standardise(x_tr: np.ndarray, x_te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit variance per feature, statistics from the train split: (N, F) each."""
    scaler = StandardScaler().fit(x_tr)
    return scaler.transform(x_tr), scaler.transform(x_te)


def r2_linear(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray,
    alphas: list[float] | tuple[float, ...],
) -> float:
    """Linear probe: standardise features (N, F), RidgeCV to targets (N, K); test R^2."""
    s_tr, s_te = standardise(x_tr, x_te)
    return r2_ridge(s_tr, y_tr, s_te, y_te, alphas)


def median_gamma(x: np.ndarray, max_rows: int = GAMMA_ROWS, seed: int = NYSTROEM_SEED) -> float:
    """RBF gamma = 1 / (2 * median squared distance) over a fixed subsample of rows of x (N, F)."""
    rows = np.random.default_rng(seed).permutation(x.shape[0])[:max_rows]
    sub = np.asarray(x[np.sort(rows)], dtype=np.float64)
    sq = (sub**2).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * sub @ sub.T
    med = float(np.median(d2[np.triu_indices(len(sub), k=1)]))
    if not med > 0:
        raise ValueError("all sampled feature rows are identical: the median heuristic has no scale")
    return 1.0 / (2.0 * med)


def nonlinear_features(
    x_tr: np.ndarray, x_te: np.ndarray, n_components: int, seed: int = NYSTROEM_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Standardised features next to their Nystroem RBF map: (N, F) -> (N, F + n_components).

    Keeping the linear part makes the nonlinear probe's hypothesis class contain the
    linear probe's: with a few hundred landmarks a pure RBF map under-fits 64-d features
    that are nearly linear in the latents (measured on a trained default cell, level 0:
    pure RBF 0.627 vs linear 0.675 vs both 0.678).
    """
    s_tr, s_te = standardise(x_tr, x_te)
    n_comp = min(n_components, s_tr.shape[0])
    mapper = Nystroem(kernel="rbf", gamma=median_gamma(s_tr, seed=seed), n_components=n_comp, random_state=seed)
    return np.hstack([s_tr, mapper.fit_transform(s_tr)]), np.hstack([s_te, mapper.transform(s_te)])


def r2_nonlinear(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray,
    alphas: list[float] | tuple[float, ...], n_components: int, seed: int = NYSTROEM_SEED,
) -> float:
    """Nonlinear probe: standardised + Nystroem RBF features (median-heuristic gamma) + RidgeCV; test R^2."""
    f_tr, f_te = nonlinear_features(x_tr, x_te, n_components, seed)
    return r2_ridge(f_tr, y_tr, f_te, y_te, alphas)


def class_probe(
    x_tr: np.ndarray, labels_tr: np.ndarray, alphas: list[float] | tuple[float, ...], folds: int,
) -> Callable[[np.ndarray], np.ndarray]:
    """Fit the linear class probe on train features x (N, F), labels (N,) int; return its
    ``predict(x (M, F)) -> (M,)``: standardise (train statistics), least-squares one-vs-all
    classifier (RidgeClassifierCV), alpha chosen by accuracy over stratified ``folds``-fold
    CV (unshuffled, so deterministic).

    A ridge classifier rather than logistic regression: on a trained default cell's
    features it was 10x cheaper (0.08 s vs 0.89 s CPU for LogisticRegressionCV over 4
    C values) at the same accuracy (0.487 vs 0.485).
    """
    scaler = StandardScaler().fit(x_tr)
    n_folds = min(folds, int(np.bincount(labels_tr).min()))
    cv = StratifiedKFold(n_folds) if n_folds >= 2 else None  # None: leave-one-out
    with warnings.catch_warnings():
        # LayerNorm outputs are nearly collinear, so the smallest alphas give ill-conditioned
        # solves; harmless, since CV drops an alpha that hurts.
        warnings.simplefilter("ignore", LinAlgWarning)
        clf = RidgeClassifierCV(alphas=tuple(alphas), cv=cv).fit(scaler.transform(x_tr), labels_tr)
    return lambda x: clf.predict(scaler.transform(x))


def class_accuracy(
    x_tr: np.ndarray, labels_tr: np.ndarray, x_te: np.ndarray, labels_te: np.ndarray,
    alphas: list[float] | tuple[float, ...], folds: int,
) -> float:
    """Test accuracy of :func:`class_probe` fitted on (x_tr, labels_tr)."""
    return float((class_probe(x_tr, labels_tr, alphas, folds)(x_te) == labels_te).mean())


def class_scores(
    x_tr: np.ndarray, labels_tr: np.ndarray, x_te: np.ndarray, labels_te: np.ndarray,
    alphas: list[float] | tuple[float, ...], folds: int, x_cue: np.ndarray | None, cue: CueConflict | None,
) -> dict[str, Any]:
    """{"probe_acc": test accuracy, "shape_bias": :func:`shape_bias` of the same probe on the
    cue-conflict features x_cue (M, F), or None without a cue-conflict set}."""
    predict = class_probe(x_tr, labels_tr, alphas, folds)
    out: dict[str, Any] = {"probe_acc": _r((predict(x_te) == labels_te).mean()), "shape_bias": None}
    if cue is not None and x_cue is not None:
        out["shape_bias"] = {k: None if v is None else _r(v) for k, v in shape_bias(predict(x_cue), cue).items()}
    return out


def region_r2(
    regions_tr: np.ndarray, z_tr: np.ndarray, regions_te: np.ndarray, z_te: np.ndarray,
    alphas: list[float] | tuple[float, ...],
) -> list[float]:
    """Per-node linear R^2, row-major: regions (N, n, n, D) predict node latents z (N, n, n, d)."""
    n_side = z_tr.shape[1]
    if regions_tr.shape[1:3] != z_tr.shape[1:3]:
        raise ValueError(f"region grid {regions_tr.shape[1:3]} does not match latent grid {z_tr.shape[1:3]}")
    return [
        r2_linear(regions_tr[:, i, j], z_tr[:, i, j], regions_te[:, i, j], z_te[:, i, j], alphas)
        for i in range(n_side)
        for j in range(n_side)
    ]


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


def _r(x: float) -> float:
    return round(float(x), DECIMALS)


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
        out["r2_linear"][pool] = [_r(r) for r in r2_ridge_blocks(s_tr, z_tr, s_te, z_te, alphas)]
        f_tr, f_te = nonlinear_features(x_tr, x_te, n_comp)
        out["r2_nonlinear"][pool] = [_r(r) for r in r2_ridge_blocks(f_tr, z_tr, f_te, z_te, alphas)]
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
        per_node.append([_r(s) for s in scores])
    out["r2_region"] = {
        "levels": [None] + [_r(np.mean(s)) for s in per_node[1:]],
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
        "recon_mse": _r(mse),
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


__all__ = [
    "pooled_features", "region_bounds", "region_features", "flatten_latent", "standardise",
    "SPATIAL_LEVEL", "spatial_level", "innovations", "level_scores",
    "r2_ridge", "r2_ridge_blocks", "r2_linear", "median_gamma", "nonlinear_features", "r2_nonlinear", "class_probe", "class_accuracy",
    "class_scores",
    "region_r2", "encode_features", "probe_scores",
    "cell_gate", "probe_cell", "run",
]
