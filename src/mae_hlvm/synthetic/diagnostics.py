"""How distinguishable the generator's levels are, measured on its data (train fit, test
score): each level from its parent, each level from the pixels, the class from the root,
from the pixels and from each cue. docs/generator.md quotes them; the generate step runs
none of them, so they are no code dep of the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mae_hlvm.core.config import DataParams
from mae_hlvm.core.data import Dataset
from mae_hlvm.core.linear import ridge_fit_predict
from mae_hlvm.synthetic.generate import HierarchyFunctions, _upsample, draw_functions, generate_dataset


def _r2(truth: np.ndarray, pred: np.ndarray) -> float:
    """Variance-weighted R^2 over all output columns: 1 - SSE / SST."""
    sse = float(((truth - pred) ** 2).sum())
    sst = float(((truth - truth.mean(axis=0)) ** 2).sum())
    return 1.0 - sse / sst


def _linear_fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray) -> np.ndarray:
    """Least squares with intercept, fitted on train, applied to test."""
    ones_tr, ones_te = np.ones((len(x_tr), 1)), np.ones((len(x_te), 1))
    coef, *_ = np.linalg.lstsq(np.hstack([x_tr, ones_tr]), y_tr, rcond=None)
    return np.hstack([x_te, ones_te]) @ coef


def parent_r2(ds: Dataset, level: int) -> float:
    """Test R^2 of level ``level`` predicted linearly from its parent, one fit per node.

    High means the level adds little new information; ``1 - R^2`` is roughly the share of
    the level's variance that is its own exogenous noise (or nonlinearity).
    """
    tr, te = ~ds.is_test, ds.is_test
    parent = _upsample(ds.latents[level - 1].astype(np.float64))
    child = ds.latents[level].astype(np.float64)
    g = child.shape[1]
    truth, pred = [], []
    for i in range(g):
        for j in range(g):
            p, c = parent[:, i, j], child[:, i, j]
            pred.append(_linear_fit_predict(p[tr], c[tr], p[te]))
            truth.append(c[te])
    return _r2(np.hstack(truth), np.hstack(pred))


def pixel_r2(ds: Dataset) -> dict[str, float]:
    """Test R^2 of every level's latents (N, g*g*d) from the raw pixels (N, C*S*S), by ridge."""
    x = ds.images.reshape(len(ds.images), -1).astype(np.float64)
    ys = [z.reshape(len(x), -1).astype(np.float64) for z in ds.latents]
    tr, te = ~ds.is_test, ds.is_test
    preds = ridge_fit_predict(x[tr], [y[tr] for y in ys], x[te])
    return {str(level): _r2(y[te], pred) for level, (y, pred) in enumerate(zip(ys, preds))}


def class_accuracy(x: np.ndarray, ds: Dataset) -> float:
    """Test accuracy of linear discriminant analysis (shrinkage) from features x (N, ...).

    LDA is the Bayes classifier for the root latent (Gaussian classes, shared covariance)
    and, unlike an iterative logistic fit, stays fast on thousands of pixels.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x = x.reshape(len(x), -1).astype(np.float64)
    tr, te = ~ds.is_test, ds.is_test
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x[tr], ds.labels[tr])
    return float(lda.score(x[te], ds.labels[te]))


def leaf_innovations(ds: Dataset, fns: HierarchyFunctions) -> np.ndarray:
    """Each leaf's exogenous part, z_D minus its noise-free mean from its parent, in units of
    the leaf noise (``eps + t * v_texture``): (N, G, G, d_leaf) float64."""
    depth = len(ds.latents) - 1
    lm = fns.levels[depth - 1]
    mean = fns.child_mean(depth, ds.latents[depth - 1].astype(np.float64))
    return (ds.latents[depth].astype(np.float64) - mean) / (lm.gain * lm.noise)


def cue_accuracies(data: DataParams) -> dict[str, float]:
    """How much class information each cue carries in the generator (train fit, test score).

    shape: LDA accuracy of y from the root z_0 (what levels 0..D-1 carry);
    texture: LDA accuracy of y from the leaves' exogenous noise averaged over the leaves
    (its sufficient statistic: the shift t * v_y is the same at every leaf, the noise iid).
    The default ``texture_separation`` balances the two (docs/generator.md).
    """
    from threadpoolctl import threadpool_limits

    ds = generate_dataset(data)
    texture = leaf_innovations(ds, draw_functions(data)).mean(axis=(1, 2))
    with threadpool_limits(limits=1, user_api="blas"):
        return {"shape": class_accuracy(ds.latents[0], ds), "texture": class_accuracy(texture, ds)}


def level_diagnostics(ds: Dataset) -> dict[str, Any]:
    """How distinguishable the levels are, measured on the data (train fit, test score).

    Returns {"parent_r2": {l: R^2 of z_l from z_{l-1}} for l >= 1,
             "pixel_r2": {l: ridge R^2 of z_l from all pixels} for every l,
             "class_acc_root": LDA accuracy of y from z_0,
             "class_acc_pixels": LDA accuracy of y from all pixels,
             "class_chance": 1 / K}.
    """
    from threadpoolctl import threadpool_limits

    depth = len(ds.latents) - 1
    # One BLAS thread: multi-threaded eigh is many times slower when jobs share the cores.
    with threadpool_limits(limits=1, user_api="blas"):
        return {
            "parent_r2": {str(lv): parent_r2(ds, lv) for lv in range(1, depth + 1)},
            "pixel_r2": pixel_r2(ds),
            "class_acc_root": class_accuracy(ds.latents[0], ds),
            "class_acc_pixels": class_accuracy(ds.images, ds),
            "class_chance": 1.0 / ds.n_classes,
        }
