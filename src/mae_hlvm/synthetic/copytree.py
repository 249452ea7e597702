"""The copy-tree generator (``data.generator: copytree``, hlvm-copytree-1): a hierarchical
latent variable model that meets the premises of the paper's theorems (docs/theorem.md).

A quadtree over the ``S x S`` image, levels ``l = 0..D``; the leaves render ``b x b x C``
pixel blocks (``b = S / 2**D``). Every node of level ``l`` draws ``P_l`` own *parts*
(``data.latent_dims``): scalar latent variables, independent Gaussian noise of std
``noise_scales[l]``, the root's shifted by its class (``class_separation * m_y``). A node's
*content* is the parts it inherited followed by its own; each item of a level-``l`` node's
content is copied, whole, into ``r`` of its four children (``data.replication``), so a part
of level ``l`` reaches ``r**(D-l)`` leaves. Which children: a fixed permutation of the
node's items per level (the function stream), then item ``i`` goes to slots ``i, i+1, ...,
i+r-1 (mod 4)`` (top-left, top-right, bottom-left, bottom-right): every child gets the same
number of items, and every node of a level copies alike (stationary).

A leaf's content (its ``n_D`` items) plus ``b*b*C - n_D`` pixel-noise values (std
``pixel_noise``) is one vector of ``b*b*C`` values, rendered by one invertible nonlinear
map shared by every leaf: rotations and ``_COUPLING_LAYERS`` affine coupling layers of
strength ``data.nonlinearity`` (:class:`Renderer`). So:

- each variable is an invertible function of its parents and its own noise (a child's
  content is its copied parts and its own parts; a pixel block is the renderer of its leaf);
- every latent is a function of the image, and of any one leaf block it reaches;
- no pixel depends on another given its leaf.

Given a mask whose units are whole leaves, a part is *shared* (in the theorem's ``c``)
when it reaches a visible leaf and a hidden one (:mod:`mae_hlvm.synthetic.latents`).

Randomness: the same ``SeedSequence(seed)`` streams as the quadtree generator (functions,
train, test); the arithmetic is the quadtree generator's CPU-independent kernels, so the
bytes do not depend on the CPU kind either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mae_hlvm.core.data import Dataset
from mae_hlvm.core.errors import ParamsError
from mae_hlvm.core.sections import DataParams, content_sizes, copytree_problem
from mae_hlvm.synthetic.exact import (
    N_STREAMS,
    STREAM_FUNCTIONS,
    STREAM_TEST,
    STREAM_TRAIN,
    contract,
    expm1_nonneg,
    orthonormal,
    tanh,
    unit_gain,
    unit_rows,
)

GENERATOR_VERSION = "hlvm-copytree-1"
_COUPLING_LAYERS = 4  # design constant: changing it changes the data (bump GENERATOR_VERSION)
_CALIBRATION_SAMPLES = 2000
_PIXEL_STD = 0.4


def check_copytree(data: DataParams) -> None:
    """One ParamsError line when the copy tree cannot be built as asked (the schema refuses it too)."""
    problem = copytree_problem(data)
    if problem:
        raise ParamsError(problem)


# --------------------------------------------------------------------------- the copy structure


@dataclass(frozen=True)
class CopyTree:
    """Which parts every node holds. ``items[l]``: (4**l nodes, n_l, 3) int, each item's origin
    as (level, node index in raster order, part index); ``parts``: P_l per level."""

    items: list[np.ndarray]
    parts: list[int]
    replication: int

    @property
    def depth(self) -> int:
        return len(self.items) - 1

    def reach(self) -> list[np.ndarray]:
        """Per level l: (4**l, P_l, 4**D) bool, the leaves each part of each node reaches."""
        leaves = self.items[-1]
        n_leaves = leaves.shape[0]
        out = [np.zeros((4**lv, p, n_leaves), dtype=bool) for lv, p in enumerate(self.parts)]
        for leaf in range(n_leaves):
            for lv, node, part in leaves[leaf]:
                out[lv][node, part, leaf] = True
        return out


def _children(node: int, level: int) -> list[int]:
    """The four children (raster index at level + 1) of a node, in slot order TL, TR, BL, BR."""
    g = 2**level
    i, j = divmod(node, g)
    return [(2 * i + a) * (2 * g) + 2 * j + b for a in (0, 1) for b in (0, 1)]


def build_tree(parts: list[int], replication: int, perms: list[np.ndarray]) -> CopyTree:
    """The copy structure from the parts per level, r and one item permutation per level < D."""
    depth = len(parts) - 1
    items = [np.array([[(0, 0, p) for p in range(parts[0])]], dtype=np.int64)]
    for level in range(depth):
        n_child = 4 ** (level + 1)
        received: list[list[tuple[int, int, int]]] = [[] for _ in range(n_child)]
        for node in range(4**level):
            order = items[level][node][perms[level]]
            kids = _children(node, level)
            for i, item in enumerate(order):
                for t in range(replication):
                    received[kids[(i + t) % 4]].append(tuple(item))
        own = parts[level + 1]
        items.append(np.array([received[c] + [(level + 1, c, p) for p in range(own)] for c in range(n_child)],
                              dtype=np.int64))
    return CopyTree(items, list(parts), replication)


# --------------------------------------------------------------------------- the renderer


def _exp(x: np.ndarray) -> np.ndarray:
    """exp(x) from basic operations (CPU-independent bits, like exact.tanh)."""

    a = np.minimum(np.abs(x), 40.0)
    e = expm1_nonneg(a) + 1.0
    return np.where(x >= 0, e, 1.0 / e)


@dataclass(frozen=True)
class Renderer:
    """The leaf -> pixel-block map, shared by every leaf: ``x <- Q_k x``, then an affine coupling
    ``b <- b * exp(s(a)) + t(a)`` with ``s, t = lambda * tanh(W a + c)`` on the halves ``a, b`` of
    x, ``_COUPLING_LAYERS`` times, then a last rotation and the pixel gain. Exactly invertible.

    rotations: (K + 1, m, m) orthogonal; scale_w, shift_w: (K, m - h, h); scale_b, shift_b:
    (K, m - h); m = b*b*C values, h = m // 2; strength: lambda (data.nonlinearity).
    """

    rotations: np.ndarray
    scale_w: np.ndarray
    scale_b: np.ndarray
    shift_w: np.ndarray
    shift_b: np.ndarray
    strength: float
    gain: float

    def _st(self, k: int, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:

        s = self.strength * tanh(contract(a, self.scale_w[k]) + self.scale_b[k])
        t = self.strength * tanh(contract(a, self.shift_w[k]) + self.shift_b[k])
        return s, t

    def forward(self, v: np.ndarray) -> np.ndarray:
        """(..., m) leaf vectors -> (..., m) pixel values (before the block layout)."""

        x = np.asarray(v, dtype=np.float64)
        h = x.shape[-1] // 2
        for k in range(self.scale_w.shape[0]):
            x = contract(x, self.rotations[k])
            a, b = x[..., :h], x[..., h:]
            s, t = self._st(k, a)
            x = np.concatenate([a, b * _exp(s) + t], axis=-1)
        return self.gain * contract(x, self.rotations[-1])

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """(..., m) pixel values -> the leaf vectors that render them."""

        x = contract(np.asarray(y, dtype=np.float64) / self.gain, np.swapaxes(self.rotations[-1], -1, -2))
        h = x.shape[-1] // 2
        for k in range(self.scale_w.shape[0] - 1, -1, -1):
            a, b = x[..., :h], x[..., h:]
            s, t = self._st(k, a)
            x = contract(np.concatenate([a, (b - t) * _exp(-s)], axis=-1), np.swapaxes(self.rotations[k], -1, -2))
        return x


@dataclass(frozen=True)
class CopyTreeFunctions:
    """Every fixed function: the copy structure, the class means of the root parts, the renderer."""

    tree: CopyTree
    class_means: np.ndarray  # (K, P_0) unit rows
    renderer: Renderer
    block: int
    channels: int
    noise_dims: int  # pixel-noise values per leaf vector


def draw_functions(data: DataParams) -> CopyTreeFunctions:
    """Draw the fixed functions from the seed's function stream; calibrate the pixel gain on
    ``_CALIBRATION_SAMPLES`` draws of the same stream (independent of n_train, n_test)."""

    check_copytree(data)
    streams = np.random.SeedSequence(data.seed).spawn(N_STREAMS)
    rng = np.random.default_rng(streams[STREAM_FUNCTIONS])
    parts = list(data.latent_dims)
    sizes = content_sizes(data.depth, parts, data.replication)
    perms = [rng.permutation(sizes[level]) for level in range(data.depth)]
    tree = build_tree(parts, data.replication, perms)
    means = unit_rows(rng.standard_normal((data.n_classes, parts[0])))
    block = data.image_size // 2**data.depth
    m = block * block * data.channels
    h = m // 2
    k = _COUPLING_LAYERS
    rotations = orthonormal(rng, (k + 1, m, m))
    scale_w = rng.standard_normal((k, m - h, h)) / np.sqrt(h)
    shift_w = rng.standard_normal((k, m - h, h)) / np.sqrt(h)
    scale_b, shift_b = 0.5 * rng.standard_normal((k, m - h)), 0.5 * rng.standard_normal((k, m - h))
    renderer = Renderer(rotations, scale_w, scale_b, shift_w, shift_b, data.nonlinearity, 1.0)
    fns = CopyTreeFunctions(tree, means, renderer, block, data.channels, m - sizes[-1])
    labels = rng.integers(data.n_classes, size=_CALIBRATION_SAMPLES)
    leaves = leaf_vectors(fns, data, own_parts(fns, data, labels, rng), rng)
    gain = _PIXEL_STD * unit_gain(renderer.forward(leaves), "the rendered pixels")
    return CopyTreeFunctions(tree, means, Renderer(rotations, scale_w, scale_b, shift_w, shift_b, data.nonlinearity, gain),
                             block, data.channels, m - sizes[-1])


# --------------------------------------------------------------------------- sampling


def own_parts(fns: CopyTreeFunctions, data: DataParams, labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Every node's own parts: per level (N, 4**l, P_l); the root's ``sep * m_y + s_0 * eps``."""
    n = labels.shape[0]
    out = []
    for level, p in enumerate(fns.tree.parts):
        eps = rng.standard_normal((n, 4**level, p))
        z = data.noise_scales[level] * eps
        if level == 0:
            z = data.class_separation * fns.class_means[labels][:, None, :] + z
        out.append(z)
    return out


def leaf_contents(fns: CopyTreeFunctions, own: list[np.ndarray]) -> np.ndarray:
    """Every leaf's content, its items gathered from the own parts: (N, 4**D, n_D)."""
    leaves = fns.tree.items[-1]  # (L, n_D, 3)
    n = own[0].shape[0]
    out = np.empty((n, leaves.shape[0], leaves.shape[1]))
    for level in range(len(own)):
        hit = leaves[..., 0] == level
        out[:, hit] = own[level][:, leaves[..., 1][hit], leaves[..., 2][hit]]
    return out


def leaf_vectors(fns: CopyTreeFunctions, data: DataParams, own: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Leaf content plus its pixel-noise values: (N, 4**D, b*b*C), the renderer's input."""
    content = leaf_contents(fns, own)
    noise = data.pixel_noise * rng.standard_normal(content.shape[:2] + (fns.noise_dims,))
    return np.concatenate([content, noise], axis=-1)


def render(fns: CopyTreeFunctions, vectors: np.ndarray) -> np.ndarray:
    """Images (N, C, S, S) from leaf vectors (N, 4**D, b*b*C); a block is laid out (row, col, channel)."""
    n, n_leaves, _ = vectors.shape
    g, b, c = int(round(n_leaves**0.5)), fns.block, fns.channels
    blocks = fns.renderer.forward(vectors).reshape(n, g, g, b, b, c)
    return blocks.transpose(0, 5, 1, 3, 2, 4).reshape(n, c, g * b, g * b)


def image_blocks(images: np.ndarray, block: int) -> np.ndarray:
    """The inverse layout of :func:`render`: (N, C, S, S) -> (N, leaves, b*b*C)."""
    n, c, s, _ = images.shape
    g = s // block
    return images.reshape(n, c, g, block, g, block).transpose(0, 2, 4, 3, 5, 1).reshape(n, g * g, block * block * c)


def sample(fns: CopyTreeFunctions, data: DataParams, n: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """n samples: images (N, C, S, S), labels (N,), own parts per level (N, 2**l, 2**l, P_l)."""
    labels = rng.integers(data.n_classes, size=n)
    own = own_parts(fns, data, labels, rng)
    images = render(fns, leaf_vectors(fns, data, own, rng))
    latents = [z.reshape(n, 2**lv, 2**lv, z.shape[-1]) for lv, z in enumerate(own)]
    return images, labels, latents


def generate_dataset(data: DataParams) -> Dataset:
    """The copy-tree dataset of ``data``: n_train train rows, then n_test test rows. The latents
    are every node's own parts (``latents_level<l>``: (N, 2**l, 2**l, P_l))."""

    fns = draw_functions(data)
    streams = np.random.SeedSequence(data.seed).spawn(N_STREAMS)
    parts = [sample(fns, data, n, np.random.default_rng(streams[s]))
             for n, s in ((data.n_train, STREAM_TRAIN), (data.n_test, STREAM_TEST))]
    images = np.concatenate([p[0] for p in parts]).astype(np.float32)
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    latents = [np.concatenate([p[2][lv] for p in parts]).astype(np.float32) for lv in range(data.depth + 1)]
    is_test = np.arange(len(labels)) >= data.n_train
    settings = {**data.model_dump(mode="json"), "generator_version": GENERATOR_VERSION}
    return Dataset(images=images, labels=labels, is_test=is_test, latents=latents, settings=settings)
