"""The readouts a probe fits on an encoder's tokens: pooled, region and spatial features,
ridge R^2 per latent level (linear and Nystroem), the innovation targets and the class probe.

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

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.linalg import LinAlgWarning
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import RidgeClassifierCV, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from mae_hlvm.core.data import CueConflict, Dataset
from mae_hlvm.core.measures import shape_bias

POOLINGS = ("mean", "cls")
NYSTROEM_SEED = 0
GAMMA_ROWS = 1000  # rows used for the median heuristic: enough for a stable median
DECIMALS = 6  # every score is written rounded to this many decimals


def rounded(x: float) -> float:
    return round(float(x), DECIMALS)


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
    return {"levels": [rounded(x) for x in scores[:n]], "innovations": [None] + [rounded(x) for x in scores[n:]]}


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
    out: dict[str, Any] = {"probe_acc": rounded((predict(x_te) == labels_te).mean()), "shape_bias": None}
    if cue is not None and x_cue is not None:
        out["shape_bias"] = {k: None if v is None else rounded(v) for k, v in shape_bias(predict(x_cue), cue).items()}
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
