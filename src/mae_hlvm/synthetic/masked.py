"""Probes under the cell's own mask: what the encoder of the visible part holds (docs/theorem.md).

The theorems are about the encoder of the visible part ``f(x_visible)``: it holds the shared
latents ``c`` and, by block identifiability, nothing else. So every image is encoded as
training encodes it, under each of ``probe.masked_masks`` fixed masks drawn as training
draws them at the cell's ratio and unit (seed :data:`MASKED_SEED`, the same masks for every
encoder of a cell, oracles included). The readout is everything the encoder outputs for the
visible part: each visible token's features, reduced to their top ``probe.masked_token_dims``
principal components (fitted on the train images' tokens), concatenated in raster order.
A ridge (:func:`mae_hlvm.core.linear.ridge_fit_predict`, one alpha per level) maps
the readout to every latent variable (:mod:`mae_hlvm.synthetic.latents`); each variable's
test R^2 goes to its category under that mask (``c`` shared, ``v`` visible only, ``h``
hidden only) and level, averaged over the variables, then over the masks.

Summaries (fixed before any result on the copy tree):

- ``recovery``: the mean over levels of the ``c`` R^2: how much of ``c`` the encoder holds;
- ``selectivity``: the mean over levels holding both ``c`` and ``v`` variables of
  (``c`` R^2 - ``v`` R^2). Raw pixels score below 0 (a shared part has fewer visible copies
  than a visible-only one), and any encoder that loses information drifts toward 0, so it is
  not read alone;
- ``c_excess`` (:func:`excess`): per level, the ``c`` R^2 minus what an evenly lossy encoder
  keeps of ``c`` at the same ``v`` R^2 (the *frontier* of the visible pixels under
  Gaussian noise, :func:`frontier`), averaged over levels: above 0, the encoder keeps the
  shared latents in preference to the visible part's own. Claim C5 reads it.

Shapes: N images, T visible tokens, E token width, k kept components, V variables, K masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mae_hlvm.core.data import Dataset
from mae_hlvm.core.linear import ridge_fit_predict
from mae_hlvm.core.masks import draw_masks
from mae_hlvm.synthetic.latents import CATEGORIES, LatentVariables, categories

MASKED_SEED = 20231207  # fixed before any masked result: the probe's masks, apart from training's
DECIMALS = 6

# tokens(split, hidden (S, S) bool) -> (N, T, E): an encoder's features of the split's visible part
TokenFn = Callable[[Dataset, np.ndarray], np.ndarray]


def probe_masks(image_size: int, mask_unit: int, mask_ratio: float, n_masks: int) -> np.ndarray:
    """The cell's fixed probe masks (K, S, S) bool, True = hidden, drawn as training draws them."""
    return draw_masks(image_size, mask_unit, mask_ratio, n_masks, MASKED_SEED)


def visible_token_index(hidden: np.ndarray, patch: int) -> np.ndarray:
    """Raster indices of the tokens (``patch`` x ``patch`` pixels) with no hidden pixel: (T,) int64."""
    s = hidden.shape[0]
    g = s // patch
    any_hidden = hidden.reshape(g, patch, g, patch).any(axis=(1, 3)).reshape(-1)
    return np.flatnonzero(~any_hidden)


def model_tokens(model: Any, batch_size: int) -> TokenFn:
    """An MAE encoder as a :data:`TokenFn`: its visible tokens' features under the mask."""
    def tokens(split: Dataset, hidden: np.ndarray) -> np.ndarray:
        images = split.images
        keep = torch.from_numpy(visible_token_index(hidden, model.vit_patch))
        device = next(model.parameters()).device
        out = []
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
                out.append(model.encode_visible(batch, keep.to(device)).float().cpu().numpy())
        return np.concatenate(out)
    return tokens


def readout(tokens_tr: np.ndarray, tokens_te: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each token's features on their top-``k`` principal components (train tokens, pooled), all
    tokens concatenated: (N, T, E) -> (N, T * min(k, E)), float64."""
    tr = tokens_tr.astype(np.float64)
    te = tokens_te.astype(np.float64)
    e = tr.shape[-1]
    if e > k:
        flat = tr.reshape(-1, e)
        mean = flat.mean(axis=0)
        cov = (flat - mean).T @ (flat - mean) / len(flat)
        _, vecs = np.linalg.eigh(cov)
        basis = vecs[:, ::-1][:, :k]
        basis = basis * np.where(basis[np.abs(basis).argmax(axis=0), np.arange(k)] < 0, -1.0, 1.0)  # a fixed sign
        tr, te = (tr - mean) @ basis, (te - mean) @ basis
    return tr.reshape(len(tr), -1), te.reshape(len(te), -1)


def variable_r2(x_tr: np.ndarray, x_te: np.ndarray, y_tr: np.ndarray, y_te: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Test R^2 of every variable (V,) from the readout, one ridge (and alpha) per level."""
    out = np.empty(y_tr.shape[1])
    groups = [np.flatnonzero(levels == lv) for lv in np.unique(levels)]
    preds = ridge_fit_predict(x_tr, [y_tr[:, g] for g in groups], x_te)
    for g, pred in zip(groups, preds):
        truth = y_te[:, g]
        sst = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
        out[g] = 1.0 - ((truth - pred) ** 2).sum(axis=0) / np.where(sst > 0, sst, np.nan)
    return out


def summarise(r2: np.ndarray, cats: np.ndarray, levels: np.ndarray, n_levels: int) -> dict[str, Any]:
    """(K, V) R^2 and categories -> per category a list over levels (None where empty), recovery, selectivity."""
    out: dict[str, Any] = {}
    for k, name in enumerate(CATEGORIES):
        per_level = []
        for lv in range(n_levels):
            means = [float(np.nanmean(r2[m, (cats[m] == k) & (levels == lv)])) for m in range(len(r2))
                     if ((cats[m] == k) & (levels == lv)).any()]
            per_level.append(None if not means else round(float(np.mean(means)), DECIMALS))
        out[name] = per_level
    c = [x for x in out["c"] if x is not None]
    both = [cv - vv for cv, vv in zip(out["c"], out["v"]) if cv is not None and vv is not None]
    out["recovery"] = round(float(np.mean(c)), DECIMALS) if c else None
    out["selectivity"] = round(float(np.mean(both)), DECIMALS) if both else None
    return out


def masked_scores(tokens: TokenFn, train: Dataset, test: Dataset, variables: LatentVariables, masks: np.ndarray,
                  token_dims: int) -> dict[str, Any]:
    """The masked probe of one encoder (module docstring): per category and level, recovery,
    selectivity, and the masks and token width it was read with."""
    depth = len(train.latents) - 1
    y_tr, y_te = variables.values(train.latents), variables.values(test.latents)
    cats = categories(variables, masks, depth)  # (K, V)
    r2 = np.stack([
        variable_r2(*readout(tokens(train, hidden), tokens(test, hidden), token_dims),
                    y_tr, y_te, variables.level)
        for hidden in masks
    ])
    return {**summarise(r2, cats, variables.level, variables.n_levels), "masks": int(len(masks)),
            "token_dims": int(token_dims)}


# --------------------------------------------------------------------------- the frontier of even loss


def frontier(series: list[dict[str, Any]]) -> list[list[list[float]] | None]:
    """Per level, the (v, c) R^2 points of evenly lossy encoders (the visible pixels at several
    signal-to-noise ratios, ``series``: their masked scores), with (0, 0) and (1, 1), sorted by
    v and made non-decreasing in c; None where a level lacks c or v variables."""
    out: list[list[list[float]] | None] = []
    for level in range(len(series[0]["c"])):
        pts = [(max(0.0, s["v"][level]), max(0.0, s["c"][level])) for s in series
               if s["c"][level] is not None and s["v"][level] is not None]
        if not pts:
            out.append(None)
            continue
        pts = sorted([(0.0, 0.0), *pts, (1.0, 1.0)])
        cs = np.maximum.accumulate([c for _, c in pts])
        out.append([[round(v, DECIMALS), round(float(c), DECIMALS)] for (v, _), c in zip(pts, cs)])
    return out


def excess(scores: dict[str, Any], front: list[list[list[float]] | None]) -> list[float | None]:
    """Per level, ``c`` R^2 minus the frontier's ``c`` at the encoder's ``v`` R^2 (None: undefined)."""
    out: list[float | None] = []
    for level, pts in enumerate(front):
        c, v = scores["c"][level], scores["v"][level]
        if pts is None or c is None or v is None:
            out.append(None)
            continue
        vs, cs = zip(*pts)
        out.append(round(float(c - np.interp(max(0.0, v), vs, cs)), DECIMALS))
    return out


def mean_excess(per_level: list[float | None]) -> float | None:
    """``c_excess``: the mean over the levels where it is defined."""
    vals = [x for x in per_level if x is not None]
    return round(float(np.mean(vals)), DECIMALS) if vals else None


# --------------------------------------------------------------------------- oracle encoders


def leaf_of_tokens(image_size: int, patch: int, depth: int) -> np.ndarray:
    """The leaf (raster index) each token (raster index) lies in: (L_tokens,) int."""
    g_tok, g_leaf = image_size // patch, 2**depth
    ti, tj = np.divmod(np.arange(g_tok * g_tok), g_tok)
    per = g_tok // g_leaf
    return (ti // per) * g_leaf + tj // per


def slot_table(variables: LatentVariables) -> np.ndarray:
    """(L, W) variable index of each leaf's W slots (-1 = empty): the variables reaching it, in order."""
    n_leaves = variables.reach.shape[1]
    lists = [np.flatnonzero(variables.reach[:, leaf]) for leaf in range(n_leaves)]
    width = max(len(x) for x in lists)
    table = np.full((n_leaves, width), -1, dtype=np.int64)
    for leaf, idx in enumerate(lists):
        table[leaf, : len(idx)] = idx
    return table


def oracle_tokens(variables: LatentVariables, patch: int, keep: Callable[[np.ndarray], np.ndarray]) -> TokenFn:
    """A latent oracle as a :data:`TokenFn`: each visible token carries the values of its leaf's
    variables that ``keep(hidden) -> (V,) bool`` selects (zeros in the other slots)."""
    table = slot_table(variables)

    def tokens(split: Dataset, hidden: np.ndarray) -> np.ndarray:
        token_leaf = leaf_of_tokens(split.image_size, patch, len(split.latents) - 1)
        visible = visible_token_index(hidden, patch)
        slots = table[token_leaf[visible]]  # (T, W)
        filled = np.where(slots >= 0, slots, 0)
        mask = (slots >= 0) & keep(hidden)[filled]
        return np.where(mask[None], variables.values(split.latents)[:, filled], 0.0)  # (N, T, W)
    return tokens


def pixel_tokens(patch: int, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> TokenFn:
    """Raw pixels as a :data:`TokenFn`: each visible token's ``patch x patch x C`` values, optionally
    transformed per token (``transform``: (N, T, P) -> (N, T, P'), a lossy encoder)."""
    def tokens(split: Dataset, hidden: np.ndarray) -> np.ndarray:
        images = split.images
        n, c, s, _ = images.shape
        g = s // patch
        blocks = images.reshape(n, c, g, patch, g, patch).transpose(0, 2, 4, 3, 5, 1).reshape(n, g * g, -1)
        out = blocks[:, visible_token_index(hidden, patch)].astype(np.float64)
        return out if transform is None else transform(out)
    return tokens
