"""The generator's latent variables, where they reach, and what a mask makes of them.

A *variable* is one scalar latent of the generator: an own part of a copy-tree node, or one
coordinate of a quadtree node. Its *reach* is the set of leaf blocks whose pixels depend on
it. Under a mask, a variable is

- ``c`` (shared): it reaches a visible leaf and a hidden one;
- ``v`` (visible only): it reaches visible leaves only;
- ``h`` (hidden only): it reaches hidden leaves only

(a leaf with visible and hidden pixels counts as both). On the copy tree ``c`` is exactly
the theorem's set of shared latents (docs/theorem.md); on the quadtree the same split by
reach is reported, but no latent above the leaves is a function of the image there, so it
is not the theorem's ``c``.

Shapes: V variables, L leaves (4**D, raster order), M masks, S image side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mae_hlvm.core.config import DataParams

CATEGORIES = ("c", "v", "h")


@dataclass(frozen=True)
class LatentVariables:
    """level (V,) int; reach (V, L) bool; source (V, 3) int: (level, node raster index,
    coordinate) of the variable in ``ds.latents[level]`` reshaped (N, nodes, dims)."""

    level: np.ndarray
    reach: np.ndarray
    source: np.ndarray

    @property
    def n_levels(self) -> int:
        return int(self.level.max()) + 1

    def values(self, latents: list[np.ndarray]) -> np.ndarray:
        """Every variable's value per image: (N, V) float64, from ds.latents [(N, g, g, d_l)]."""
        flat = [z.reshape(z.shape[0], -1, z.shape[-1]) for z in latents]
        out = np.empty((flat[0].shape[0], len(self.level)))
        for lv, z in enumerate(flat):
            pick = self.source[:, 0] == lv
            out[:, pick] = z[:, self.source[pick, 1], self.source[pick, 2]]
        return out


def _subtree_reach(level: int, depth: int) -> np.ndarray:
    """(4**level, 4**depth) bool: the leaves under each node of ``level`` (raster order)."""
    g, gl = 2**depth, 2**level
    side = g // gl
    leaf_i, leaf_j = np.divmod(np.arange(g * g), g)
    node_of_leaf = (leaf_i // side) * gl + leaf_j // side
    return node_of_leaf[None, :] == np.arange(gl * gl)[:, None]


def latent_variables(data: DataParams) -> LatentVariables:
    """The variables of ``data``'s generator: own parts (copy tree) or node coordinates (quadtree)."""
    levels, reach, source = [], [], []
    if data.generator == "copytree":
        from mae_hlvm.synthetic.copytree import draw_functions

        per_level = draw_functions(data).tree.reach()  # (4**l, P_l, L) per level
        for lv, r in enumerate(per_level):
            nodes, parts, n_leaves = r.shape
            levels.append(np.full(nodes * parts, lv))
            reach.append(r.reshape(nodes * parts, n_leaves))
            node, part = np.divmod(np.arange(nodes * parts), parts)
            source.append(np.stack([np.full(nodes * parts, lv), node, part], axis=1))
    else:
        for lv, d in enumerate(data.latent_dims):
            sub = _subtree_reach(lv, data.depth)  # (nodes, L)
            nodes = sub.shape[0]
            levels.append(np.full(nodes * d, lv))
            reach.append(np.repeat(sub, d, axis=0))
            node, coord = np.divmod(np.arange(nodes * d), d)
            source.append(np.stack([np.full(nodes * d, lv), node, coord], axis=1))
    return LatentVariables(np.concatenate(levels), np.concatenate(reach), np.concatenate(source).astype(np.int64))


def leaf_touch(hidden: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Hidden-pixel masks (M, S, S) -> (touches a visible pixel, touches a hidden one), each (M, L)."""
    m, s, _ = hidden.shape
    g = 2**depth
    b = s // g
    blocks = hidden.reshape(m, g, b, g, b)
    return (~blocks).any(axis=(2, 4)).reshape(m, g * g), blocks.any(axis=(2, 4)).reshape(m, g * g)


def categories(variables: LatentVariables, hidden: np.ndarray, depth: int) -> np.ndarray:
    """Each variable's category under each mask: (M, V) int, an index into :data:`CATEGORIES`."""
    vis, hid = leaf_touch(hidden, depth)
    reach = variables.reach.astype(np.int64)
    n_vis = vis.astype(np.int64) @ reach.T  # (M, V) visible leaves reached
    n_hid = hid.astype(np.int64) @ reach.T
    return np.where((n_vis > 0) & (n_hid > 0), 0, np.where(n_hid == 0, 1, 2))


def category_shares(variables: LatentVariables, cats: np.ndarray) -> dict[str, list[float]]:
    """Per category, the expected share of each level's variables in it over the masks:
    {"c": [level 0, ...], "v": [...], "h": [...]}."""
    out = {}
    for k, name in enumerate(CATEGORIES):
        hit = (cats == k).mean(axis=0)  # (V,) share of masks
        out[name] = [round(float(hit[variables.level == lv].mean()), 4) for lv in range(variables.n_levels)]
    return out
