"""The theorem's prediction per grid cell: which latents an MAE should recover (step ``predict``).

On the copy-tree generator, which meets the theorems' premises (docs/theorem.md), the
prediction is exact: for every mask, ``c`` is the set of parts that reach a visible leaf and
a hidden one (:mod:`mae_hlvm.synthetic.latents`); per cell we report the expected share of
each level's parts in ``c`` (and visible-only, hidden-only), ``c``'s expected size and its
mean level (:func:`predict_copytree_cell`). On the quadtree generator no latent above the
leaves is a function of the image, so the theorem's ``c`` is empty there; what follows is the
separator reading this project used before, kept for that generator and labelled as such.

Kong et al. (Theorem 1) show that for a mask ``m`` the MAE encoder recovers the
smallest set ``c`` of latents shared by the visible pixels ``x_{m^c}`` and the hidden
ones ``x_m``. In a tree-shaped model (our quadtree, docs/generator.md) that set is a
*minimum vertex separator*: the cheapest set of latent nodes whose removal leaves no
path from a visible pixel to a hidden one. Pixels hang under their leaf and cannot be
removed, so a leaf whose block holds both visible and hidden pixels is always in ``c``.

Cost of a set = the sum of its nodes' latent dimensions (``data.latent_dims``): the
amount of information the encoder must carry. Ties (two sets of equal dimension, say a
leaf and its parent of the same width) are broken **toward the root**: among the sets of
minimum dimension, the one with the smallest sum of node levels. This is a convention
of ours, stated in every output; widths that grow strictly toward the leaves make
parent-versus-child ties impossible.

The set is found exactly per mask by dynamic programming over the tree (linear in the
number of nodes), vectorised over many masks drawn exactly as the MAE draws them
(``int(U * (1 - r))`` visible units, uniformly at random). Per cell we report the
expected number of nodes of ``c`` per level, the expected share of ``c``'s dimension per
level, the mean level of ``c`` (dimension-weighted, 0 = root) and the predicted level:
the level holding the largest expected share of ``c``'s dimension.

The class as a node (``data.texture_separation`` > 0). With a texture cue the class
``y`` is a parent of every leaf as well as of the root, so the model is no longer a tree:
every path visible leaf <- y -> hidden leaf must be cut too. Either ``y`` is in ``c``
(then the rest of ``c`` is the tree's own minimum separator), or every leaf touching a
visible pixel (or every leaf touching a hidden one) is, which cuts all paths at once.
We count ``y``, one discrete variable, as dimension 1 at level 0, and take the cheaper
of the two with the same tie-break (on a tie the visible side's leaves). The level
profile (nodes and dimension per level, mean and predicted level) is that of the
quadtree's nodes; ``class_in_c`` is the share of masks whose ``c`` holds ``y``.

Shapes: M masks, S image side, D depth, level l has 2**l x 2**l nodes, b = S / 2**D the
leaf block side.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np

from mae_hlvm.core.cells import cell_id, unit_counts
from mae_hlvm.core.config import Params
from mae_hlvm.core.io import write_json
from mae_hlvm.core.masks import draw_masks
from mae_hlvm.core.provenance import params_digest

log = logging.getLogger("mae_hlvm.synthetic.predict")

N_MASKS = 2000  # masks per cell: the expected counts' Monte-Carlo error is below 0.01 node per level
MASK_SEED = 20230605  # fixed before any result: the masks of the prediction, apart from training's
TIE_BREAK = "toward the root: among minimum-dimension separators, the smallest sum of node levels"
CLASS_DIM = 1  # the class y, one discrete variable, when it is a node of the separator problem
CLASS_RULE = (
    "texture cue on: the class y (dimension 1, level 0) is a parent of every leaf; c holds y plus the tree's "
    "separator, or every leaf touching visible pixels (or hidden ones), whichever is cheaper"
)

_INF = np.iinfo(np.int64).max // 4


def leaf_states(hidden: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Per leaf block: (all visible, all hidden), each (M, 2**D, 2**D) bool, from (M, S, S)."""
    m, s, _ = hidden.shape
    g = 2**depth
    b = s // g
    blocks = hidden.reshape(m, g, b, g, b)
    return ~blocks.any(axis=(2, 4)), blocks.all(axis=(2, 4))


def _children_sum(x: np.ndarray) -> np.ndarray:
    """Sum over each node's 2 x 2 children: (M, 2g, 2g) -> (M, g, g)."""
    m, g2, _ = x.shape
    return x.reshape(m, g2 // 2, 2, g2 // 2, 2).sum(axis=(2, 4))


def separators(hidden: np.ndarray, latent_dims: list[int]) -> np.ndarray:
    """The minimum separator of every mask: (M, S, S) hidden masks -> list per level of
    (M, 2**l, 2**l) bool, True = the node is in ``c``.

    Dynamic programme, leaves up. For a node v: ``cut[v]`` is the cheapest cost inside v's
    subtree when v is removed; ``vis[v]`` (``hid[v]``) when v stays and the part connected
    to v holds no hidden (no visible) pixel. Costs are integers ``dim * K + level`` so the
    tie-break toward the root is part of the minimum (K exceeds any sum of levels). Only
    a leaf's vis/hid can be infinite; ``cut`` is always finite, so every sum over children
    of ``min(cut, .)`` is finite too.
    """
    depth = len(latent_dims) - 1
    m = hidden.shape[0]
    all_vis, all_hid = leaf_states(hidden, depth)
    _, weight = _order_key(latent_dims)

    g = 2**depth
    cut = np.full((m, g, g), weight[depth], dtype=np.int64)
    vis = np.where(all_vis, 0, _INF).astype(np.int64)
    hid = np.where(all_hid, 0, _INF).astype(np.int64)
    tables = [(cut, vis, hid)]
    for level in range(depth - 1, -1, -1):
        best_any = np.minimum(cut, np.minimum(vis, hid))
        cut, vis, hid = (
            _children_sum(best_any) + weight[level],
            _children_sum(np.minimum(cut, vis)),
            _children_sum(np.minimum(cut, hid)),
        )
        tables.append((cut, vis, hid))
    tables.reverse()  # tables[l] = (cut, vis, hid) at level l

    # Top down: each node is told by its parent which of its states are allowed.
    # mode 0 = any (parent removed or root), 1 = must not reach hidden, 2 = must not reach visible.
    in_c: list[np.ndarray] = []
    mode = np.zeros((m, 1, 1), dtype=np.int8)
    for level in range(depth + 1):
        cut, vis, hid = tables[level]
        opt_vis = np.where(mode == 2, _INF, vis)
        opt_hid = np.where(mode == 1, _INF, hid)
        # prefer removing the node on exact ties (equal dimension and equal level sum)
        take_cut = (cut <= opt_vis) & (cut <= opt_hid)
        take_vis = ~take_cut & (opt_vis <= opt_hid)
        in_c.append(take_cut)
        child_mode = np.where(take_cut, 0, np.where(take_vis, 1, 2)).astype(np.int8)
        mode = child_mode.repeat(2, axis=1).repeat(2, axis=2)
    return in_c


def _order_key(latent_dims: list[int]) -> tuple[int, list[int]]:
    """(K, weight per level): a node of level l costs ``d_l * K + l``; K exceeds any sum of levels."""
    depth = len(latent_dims) - 1
    k = sum(4**lv for lv in range(depth + 1)) * depth + 1
    return k, [d * k + lv for lv, d in enumerate(latent_dims)]


def with_class_node(hidden: np.ndarray, latent_dims: list[int], in_c: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The minimum separator when the class y is also a parent of every leaf (module docstring).

    in_c: the tree's separators (:func:`separators`). Returns (the tree nodes of c per
    level, (M,) bool whether y is in c).
    """
    depth = len(latent_dims) - 1
    k, weight = _order_key(latent_dims)
    all_vis, all_hid = leaf_states(hidden, depth)
    tree_cost = sum(c.reshape(c.shape[0], -1).sum(axis=1).astype(np.int64) * weight[lv] for lv, c in enumerate(in_c))
    with_y = CLASS_DIM * k + tree_cost  # y sits at level 0: it adds nothing to the level sum
    touch_vis, touch_hid = ~all_hid, ~all_vis  # leaves with a visible (hidden) pixel
    n_vis = touch_vis.reshape(len(hidden), -1).sum(axis=1)
    n_hid = touch_hid.reshape(len(hidden), -1).sum(axis=1)
    without_y = np.minimum(n_vis, n_hid).astype(np.int64) * weight[depth]
    class_in = with_y <= without_y
    leaves = np.where((n_vis <= n_hid)[:, None, None], touch_vis, touch_hid)
    out = [np.where(class_in[:, None, None], c, False) for c in in_c[:-1]]
    out.append(np.where(class_in[:, None, None], in_c[-1], leaves))
    return out, class_in


def summarise(in_c: list[np.ndarray], latent_dims: list[int]) -> dict[str, Any]:
    """Per-level summary of separators [(M, 2**l, 2**l) bool]: see the module docstring."""
    counts = np.stack([c.reshape(c.shape[0], -1).sum(axis=1) for c in in_c], axis=1).astype(np.float64)  # (M, D+1)
    dims = counts * np.asarray(latent_dims, dtype=np.float64)
    total = dims.sum(axis=1)
    levels = np.arange(len(latent_dims), dtype=np.float64)
    mean_level = (dims @ levels) / total
    share = dims.mean(axis=0) / total.mean()
    return {
        "nodes_per_level": [round(float(x), 4) for x in counts.mean(axis=0)],
        "dim_share_per_level": [round(float(x), 4) for x in share],
        "separator_dim": round(float(total.mean()), 4),
        "mean_level": round(float(mean_level.mean()), 4),
        "predicted_level": int(np.argmax(share)),
    }


def predict_cell(
    image_size: int, latent_dims: list[int], mask_unit: int, mask_ratio: float,
    n_masks: int = N_MASKS, seed: int = MASK_SEED, class_node: bool = False,
) -> dict[str, Any]:
    """The theorem's prediction for one (ratio, unit) cell, with the mask's actual ratio.

    class_node: the class is a parent of every leaf too (the generator's texture cue).
    """
    n_visible, n_hidden = unit_counts(image_size, mask_unit, mask_ratio)
    hidden = draw_masks(image_size, mask_unit, mask_ratio, n_masks, seed)
    in_c = separators(hidden, latent_dims)
    class_in = np.zeros(n_masks, dtype=bool)
    if class_node:
        in_c, class_in = with_class_node(hidden, latent_dims, in_c)
    summary = summarise(in_c, latent_dims)
    summary["separator_dim"] = round(summary["separator_dim"] + CLASS_DIM * float(class_in.mean()), 4)
    return {
        "mask_ratio": mask_ratio,
        "mask_unit": mask_unit,
        "n_visible_units": n_visible,
        "n_hidden_units": n_hidden,
        "actual_ratio": round(n_hidden / (n_visible + n_hidden), 6),
        **summary,
        "class_in_c": round(float(class_in.mean()), 4),
    }


PREMISES_MET = ("met: each variable is an invertible function of its parents and its own noise, every latent a "
                "function of the image (docs/theorem.md); c = the parts reaching a visible and a hidden leaf")
PREMISES_NOT_MET = ("not met: noise enters every node and no latent above the leaves is a function of the image "
                    "(docs/theorem.md); the separator below is a reading, not the theorem's c")


def predict_copytree_cell(data: Any, mask_unit: int, mask_ratio: float, n_masks: int = N_MASKS,
                          seed: int = MASK_SEED) -> dict[str, Any]:
    """The exact c of the copy tree for one (ratio, unit) cell, over ``n_masks`` masks drawn as
    training draws them: shares per level of the parts in c, visible only and hidden only; c's
    expected size (parts) and mean level (0 = root)."""
    from mae_hlvm.synthetic.latents import categories, category_shares, latent_variables

    n_visible, n_hidden = unit_counts(data.image_size, mask_unit, mask_ratio)
    variables = latent_variables(data)
    cats = categories(variables, draw_masks(data.image_size, mask_unit, mask_ratio, n_masks, seed), data.depth)
    shares = category_shares(variables, cats)
    in_c = cats == 0
    size = in_c.sum(axis=1)
    levels = (in_c * variables.level[None]).sum(axis=1) / np.maximum(size, 1)
    return {
        "mask_ratio": mask_ratio, "mask_unit": mask_unit, "n_visible_units": n_visible, "n_hidden_units": n_hidden,
        "actual_ratio": round(n_hidden / (n_visible + n_hidden), 6),
        "c_share_per_level": shares["c"], "v_share_per_level": shares["v"], "h_share_per_level": shares["h"],
        "c_size": round(float(size.mean()), 4),
        "mean_level": round(float(levels[size > 0].mean()) if (size > 0).any() else float("nan"), 4),
        "predicted_level": int(np.argmax(shares["c"])),
    }


def cell_key(mask_ratio: float, mask_unit: int) -> str:
    """A (ratio, unit) cell's key, the cell id without its seed: ``r0.75_u4``."""
    return cell_id(mask_ratio, mask_unit, None)


def predict_grid(params: Params, reads: tuple[str, ...]) -> dict[str, Any]:
    """The prediction for every (ratio, unit) of the grid (seeds share it); ``reads``: the stage's params keys."""
    data = params.data
    if data.generator == "copytree":
        cells = [predict_copytree_cell(data, unit, ratio) for unit in params.grid.mask_units for ratio in params.grid.mask_ratios]
        return {
            "generator": "copytree", "premises": PREMISES_MET,
            "rule": "c = the parts that reach a visible leaf and a hidden one (exact, unique; docs/theorem.md)",
            "n_masks": N_MASKS, "mask_seed": MASK_SEED, "latent_dims": list(data.latent_dims),
            "replication": data.replication,
            "cells": {cell_key(c["mask_ratio"], c["mask_unit"]): c for c in cells},
            "params_digest": params_digest(params, reads),
        }
    class_node = data.texture_separation > 0
    cells = [
        predict_cell(data.image_size, data.latent_dims, unit, ratio, class_node=class_node)
        for unit in params.grid.mask_units
        for ratio in params.grid.mask_ratios
    ]
    return {
        "generator": "quadtree", "premises": PREMISES_NOT_MET,
        "rule": "minimum-dimension vertex separator between visible and hidden pixels in the generator's tree",
        "class_node": CLASS_RULE if class_node else "none: no texture cue, the class is the root's parent only",
        "tie_break": TIE_BREAK,
        "n_masks": N_MASKS,
        "mask_seed": MASK_SEED,
        "latent_dims": list(data.latent_dims),
        "cells": {cell_key(c["mask_ratio"], c["mask_unit"]): c for c in cells},
        "params_digest": params_digest(params, reads),
    }


def render_markdown(pred: dict[str, Any]) -> str:
    """The prediction table as Markdown (docs/theorem.md and docs/generator.md quote it)."""
    levels = len(pred["latent_dims"])
    cells = sorted(pred["cells"].values(), key=lambda c: (c["mask_unit"], c["mask_ratio"]))
    if pred.get("generator") == "copytree":
        head = " | ".join(f"L{lv} in c" for lv in range(levels))
        lines = [f"| unit | ratio | actual ratio | {head} | parts in c | mean level of c |", "|" + "---|" * (levels + 5)]
        for c in cells:
            shares = " | ".join(f"{x:.2f}" for x in c["c_share_per_level"])
            lines.append(f"| {c['mask_unit']} | {c['mask_ratio']:g} | {c['actual_ratio']:.3f} | {shares} | "
                         f"{c['c_size']:.1f} | {c['mean_level']:.2f} |")
        return "\n".join(lines) + "\n"
    head = " | ".join(f"nodes L{lv}" for lv in range(levels))
    lines = [
        f"| unit | ratio | actual ratio | {head} | class y in c | separator dim | mean level | predicted level |",
        "|" + "---|" * (levels + 7),
    ]
    for c in cells:
        nodes = " | ".join(f"{x:.2f}" for x in c["nodes_per_level"])
        lines.append(
            f"| {c['mask_unit']} | {c['mask_ratio']:g} | {c['actual_ratio']:.3f} | {nodes} | "
            f"{c.get('class_in_c', 0.0):.2f} | {c['separator_dim']:.1f} | {c['mean_level']:.2f} | {c['predicted_level']} |"
        )
    return "\n".join(lines) + "\n"


def run(params: Params, args: argparse.Namespace) -> None:
    pred = predict_grid(params, args.reads)
    write_json(args.out, pred)
    levels = sorted({c["predicted_level"] for c in pred["cells"].values()})
    log.info("predicted levels over the grid: %s\n%s", levels, render_markdown(pred))
