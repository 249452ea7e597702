"""Step ``generate``: draw images from a known hierarchical latent variable model.

The model is a quadtree of latent vectors laid over the image (docs/generator.md):
level 0 is one root node for the whole image, level ``l`` has ``2**l x 2**l`` nodes,
and each leaf (level ``D``) renders one ``b x b`` block of pixels, ``b = S / 2**D``.

- Root: a class ``y`` (uniform over K) and ``z_0 = sep * m_y + s_0 * eps``.
- Texture (``texture_separation`` = t > 0): the class also shifts the exogenous noise
  of every leaf, ``eps_k + t * v_y`` with ``v_y`` a unit vector per class, the same at
  every leaf: a class-specific local statistic, the synthetic analogue of texture. The
  class is then a parent of every leaf as well as of the root.
- Children of a parent ``z`` at absolute position (l-1, i, j):
  ``h = z + 0.5 * tanh(W z + b)`` (W orthogonal, so the map is a contraction-perturbed
  identity and invertible), then child k of the four is ``c_l * (Q_k h + s_l * eps_k)``;
  the four lifts stacked, ``[Q_1; ..; Q_4] = 2 O`` with O orthonormal columns, so the
  four noise-free children together determine the parent even when one child is
  narrower than its parent (``4 d_l >= d_{l-1}``). ``c_l`` is a fixed per-level gain
  that gives every level unit average variance.
- Leaf to pixels: ``pixels = g * B tanh(A z + a) + pixel_noise * eps`` with B an
  orthonormal mix of low-frequency 2-D cosine patterns (smooth, injective).

Randomness comes from independent child streams of ``SeedSequence(seed)``: the fixed
functions, the train samples, the test samples, the texture vectors and the
cue-conflict samples. So changing ``n_train`` changes neither the functions nor the
test set, and ``texture_separation: 0`` gives version 3's arrays bit for bit.

Cue conflict (the paper's Table 2, shape bias): with t > 0 the file also holds
``n_test`` cue-conflict images, drawn with the root and every level above the leaves
from one class (the *shape* class) and the leaves' texture shift from another (the
*texture* class, uniform over the other K - 1).

The bytes of the dataset do not depend on the kind of CPU (docs/reproducibility.md):
every float64 operation between the random draws and the float32 arrays is an IEEE-754
basic operation (+, -, *, /, sqrt), correctly rounded on every CPU, applied in an order
fixed by the code. No BLAS or LAPACK call (their kernels, blocking and use of FMA follow
the CPU: OpenBLAS's Haswell, SkylakeX and Sandybridge kernels give different last bits)
and no transcendental ufunc (numpy's tanh, exp and cos take different code paths on
AVX-512, AVX2 and older CPUs, and glibc's on CPUs with and without FMA): ``tanh``, the QR
factorisation, the matrix products and the DCT cosines are evaluated in :mod:`mae_hlvm.synthetic.exact`.
Sums over many elements use numpy's pairwise summation, whose order depends on the
array's length and layout only. ``bench/cpu_kinds.py`` checks this under emulated CPU kinds.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mae_hlvm.core.config import DataParams, Params, ParamsError
from mae_hlvm.core.data import CueConflict, Dataset, save_dataset
from mae_hlvm.core.io import atomic_path
from mae_hlvm.synthetic.exact import (
    N_STREAMS,
    STREAM_CUE,
    STREAM_FUNCTIONS,
    STREAM_TEST,
    STREAM_TEXTURE,
    STREAM_TRAIN,
    contract,
    cos_pi_ratio,
    matmul,
    orthonormal,
    tanh,
    unit_gain,
    unit_rows,
)

log = logging.getLogger("mae_hlvm.synthetic.generate")

# Version 3 draws the same model with the same random numbers as version 2; only the
# floating-point evaluation changed (CPU-independent bytes), which moves a few float32
# values by one unit in the last place. Version 4 adds the texture cue and the
# cue-conflict set; with texture_separation 0 its arrays are version 3's.
GENERATOR_VERSION = "hlvm-quadtree-4"

# Fixed design constants; changing any of them changes the data, so bump GENERATOR_VERSION.
_RESIDUAL_GAIN = 0.5  # Lipschitz constant of the residual branch: < 1 keeps the map invertible
_CALIBRATION_SAMPLES = 2000  # samples used once to fix the per-level and pixel gains
_PIXEL_STD = 0.4  # target per-pixel std: images then lie roughly in [-1, 1]
_RENDER_INPUT_GAIN = 1.5  # pre-activation std of the leaf renderer, about 1: mildly nonlinear


@dataclass(frozen=True)
class LevelMap:
    """The fixed parent->child maps of one level ``l >= 1``; ``g = 2**l`` nodes per side.

    weight: (g/2, g/2, d_parent, d_parent) orthogonal W per parent node
    bias:   (g/2, g/2, d_parent)
    lift:   (g, g, d_child, d_parent) Q_k per child node; the four children of one parent
            stacked give ``2 O`` with O (4 d_child, d_parent) orthonormal columns
    gain:   scalar c_l that normalises the level to unit average variance
    noise:  s_l, the exogenous noise scale before the gain
    """

    weight: np.ndarray
    bias: np.ndarray
    lift: np.ndarray
    gain: float
    noise: float


@dataclass(frozen=True)
class Renderer:
    """The fixed leaf->pixel map shared by every leaf block of ``block x block x C`` pixels.

    hidden_weight: (m, d_leaf), hidden_bias: (m,), basis: (block*block*C, m) orthonormal
    columns of smooth patterns, laid out as (block_row, block_col, channel); gain: scalar.
    """

    hidden_weight: np.ndarray
    hidden_bias: np.ndarray
    basis: np.ndarray
    gain: float
    block: int
    channels: int


@dataclass(frozen=True)
class HierarchyFunctions:
    """Every fixed function of the generator: drawn once from the seed's function stream."""

    class_means: np.ndarray  # (K, d_0), unit-norm rows
    root_gain: float
    levels: list[LevelMap]  # levels[l - 1] maps level l-1 to level l
    renderer: Renderer
    texture_means: np.ndarray  # (K, d_leaf), unit-norm rows: v_y, the leaf noise shift per class
    texture_separation: float = 0.0  # t: 0 = no texture cue

    def leaf_noise(self, eps: np.ndarray, texture: np.ndarray) -> np.ndarray:
        """The leaves' exogenous noise before its scale: eps (N, G, G, d_leaf) + t * v_texture.

        texture: (N,) the texture class per sample. With t = 0, eps itself (same bits).
        """
        if self.texture_separation == 0:
            return eps
        return eps + (self.texture_separation * self.texture_means[texture])[:, None, None, :]

    def child_mean(self, level: int, parent: np.ndarray) -> np.ndarray:
        """Noise-free children of level ``level`` from parents (N, g/2, g/2, d_p) -> (N, g, g, d_c)."""
        lm = self.levels[level - 1]
        return lm.gain * _lift(lm, _upsample(_residual(lm, parent)))

    def invert_child(self, level: int, child: np.ndarray, iterations: int = 100) -> np.ndarray:
        """Recover parents (N, g/2, g/2, d_p) from noise-free children (N, g, g, d_c).

        The four lifts of a parent stack to ``2 O`` with O orthonormal columns, so
        ``h = (sum_k Q_k^T child_k) / 4`` undoes them exactly; the residual map
        ``h = z + 0.5 tanh(W z + b)`` is undone by the fixed-point iteration
        ``z <- h - 0.5 tanh(W z + b)``, a contraction with rate 0.5.
        """
        lm = self.levels[level - 1]
        per_child = contract(child / lm.gain, np.swapaxes(lm.lift, -1, -2))  # (N, g, g, d_p)
        n, g, _, d_p = per_child.shape
        h = per_child.reshape(n, g // 2, 2, g // 2, 2, d_p).sum(axis=(2, 4)) / 4.0
        z = h.copy()
        for _ in range(iterations):
            z = h - _RESIDUAL_GAIN * tanh(contract(z, lm.weight) + lm.bias)
        return z

    def render(self, leaves: np.ndarray) -> np.ndarray:
        """Noise-free images (N, C, S, S) from leaf latents (N, G, G, d_leaf)."""
        r = self.renderer
        n, g = leaves.shape[0], leaves.shape[1]
        hidden = tanh(contract(leaves, r.hidden_weight) + r.hidden_bias)  # (N, G, G, m)
        blocks = r.gain * contract(hidden, r.basis)  # (N, G, G, b*b*C)
        blocks = blocks.reshape(n, g, g, r.block, r.block, r.channels)
        return blocks.transpose(0, 5, 1, 3, 2, 4).reshape(n, r.channels, g * r.block, g * r.block)


# --------------------------------------------------------------------------- maps


def _upsample(parent: np.ndarray) -> np.ndarray:
    """(N, g, g, d) -> (N, 2g, 2g, d): every child node sees its own parent's vector."""
    return parent.repeat(2, axis=1).repeat(2, axis=2)


def _residual(lm: LevelMap, z: np.ndarray) -> np.ndarray:
    """h = z + 0.5 tanh(W z + b) per node; z (N, g, g, d_p) -> (N, g, g, d_p)."""
    return z + _RESIDUAL_GAIN * tanh(contract(z, lm.weight) + lm.bias)


def _lift(lm: LevelMap, h: np.ndarray) -> np.ndarray:
    """Q h per node; (N, g, g, d_p) -> (N, g, g, d_c)."""
    return contract(h, lm.lift)


def _cosine_basis(block: int, channels: int) -> np.ndarray:
    """Orthonormal 2-D DCT-II patterns x channel, lowest frequency first: (b*b*C, b*b*C).

    Row index is (block_row, block_col, channel) flattened; column k is the k-th smoothest
    pattern, ordered by total frequency u + v, then u, then channel.
    """
    x = np.arange(block)
    freq = np.arange(block)
    # cos(pi (x + 0.5) f / b) = cos(pi (2x + 1) f / (2b)), with the integer ratio reduced exactly
    dct = cos_pi_ratio((2 * x[:, None] + 1) * freq[None, :], 2 * block)  # (b, b): pixel x freq
    dct /= np.sqrt((dct * dct).sum(axis=0, keepdims=True))
    order = sorted(
        ((u, v, c) for u in range(block) for v in range(block) for c in range(channels)),
        key=lambda t: (t[0] + t[1], t[0], t[2]),
    )
    eye = np.eye(channels)
    cols = [(dct[:, u, None, None] * dct[None, :, v, None] * eye[c]).ravel() for u, v, c in order]
    return np.stack(cols, axis=1)


# --------------------------------------------------------------------------- functions


def _check_renderable(data: DataParams) -> tuple[int, int]:
    """(block side b, hidden units m); the leaf->pixel map must be injective."""
    block = data.image_size // 2**data.depth
    n_pixels = block * block * data.channels
    d_leaf = data.latent_dims[-1]
    if d_leaf > n_pixels:
        raise ParamsError(
            f"data.latent_dims[{data.depth}]={d_leaf}: a leaf block has only {block}x{block}x"
            f"{data.channels}={n_pixels} pixel values, too few to encode it injectively; "
            "lower the leaf dimension, the depth, or raise image_size"
        )
    return block, min(n_pixels, 2 * d_leaf)


def _draw_level(rng: np.random.Generator, level: int, d_parent: int, d_child: int, noise: float) -> LevelMap:
    """Raw (gain 1) maps of one level, the same at every node of the level (stationary).

    One W and b for every parent, and one (4 d_child, d_parent) orthonormal frame split
    into the four child slots in raster order (top-left, top-right, bottom-left,
    bottom-right), tiled over the level: siblings differ, positions do not.
    """
    half = 2 ** (level - 1)
    weight = np.broadcast_to(orthonormal(rng, (d_parent, d_parent)), (half, half, d_parent, d_parent))
    bias = np.broadcast_to(0.5 * rng.standard_normal(d_parent), (half, half, d_parent))
    frame = 2.0 * orthonormal(rng, (4 * d_child, d_parent))
    slots = frame.reshape(2, 2, d_child, d_parent)
    lift = np.tile(slots, (half, half, 1, 1))  # (g, g, d_child, d_parent): node (i, j) gets slot (i % 2, j % 2)
    return LevelMap(weight.copy(), bias.copy(), lift, 1.0, noise)


def _draw_renderer(rng: np.random.Generator, data: DataParams) -> Renderer:
    block, hidden = _check_renderable(data)
    d_leaf = data.latent_dims[-1]
    hidden_weight = _RENDER_INPUT_GAIN * orthonormal(rng, (hidden, d_leaf))
    hidden_bias = 0.5 * rng.standard_normal(hidden)
    # A random rotation of exactly the m smoothest patterns: as smooth as possible, full rank.
    mix = orthonormal(rng, (hidden, hidden))
    basis = matmul(_cosine_basis(block, data.channels)[:, :hidden], mix)
    return Renderer(hidden_weight, hidden_bias, basis, 1.0, block, data.channels)


def draw_functions(data: DataParams) -> HierarchyFunctions:
    """Draw every fixed function from the seed's function stream and calibrate the gains.

    The gains are fixed once on ``_CALIBRATION_SAMPLES`` draws from the same stream, so
    they do not depend on n_train or n_test.
    """
    streams = np.random.SeedSequence(data.seed).spawn(N_STREAMS)
    rng = np.random.default_rng(streams[STREAM_FUNCTIONS])
    d = data.latent_dims
    means = unit_rows(rng.standard_normal((data.n_classes, d[0])))
    # From a stream of their own, so that t = 0 leaves every other function as in version 3.
    texture = unit_rows(np.random.default_rng(streams[STREAM_TEXTURE]).standard_normal((data.n_classes, d[-1])))
    raw_levels = [
        _draw_level(rng, level, d[level - 1], d[level], data.noise_scales[level])
        for level in range(1, data.depth + 1)
    ]
    renderer = _draw_renderer(rng, data)

    labels = rng.integers(data.n_classes, size=_CALIBRATION_SAMPLES)
    root_raw = _root_raw(data, means, labels, rng)
    root_gain = unit_gain(root_raw, "the root latent")
    z = root_gain * root_raw
    levels = []
    partial = HierarchyFunctions(means, root_gain, levels, renderer, texture, data.texture_separation)
    for raw in raw_levels:
        eps = rng.standard_normal((z.shape[0], 2 * z.shape[1], 2 * z.shape[2], raw.lift.shape[2]))
        if len(levels) + 1 == data.depth:  # the leaves carry the texture shift
            eps = partial.leaf_noise(eps, labels)
        child = _lift(raw, _upsample(_residual(raw, z))) + raw.noise * eps
        gain = unit_gain(child, f"level {len(levels) + 1}")
        levels.append(LevelMap(raw.weight, raw.bias, raw.lift, gain, raw.noise))
        z = gain * child
    pixel_gain = _PIXEL_STD * unit_gain(partial.render(z), "the rendered pixels")
    renderer = Renderer(
        renderer.hidden_weight, renderer.hidden_bias, renderer.basis, pixel_gain, renderer.block, renderer.channels
    )
    return HierarchyFunctions(means, root_gain, levels, renderer, texture, data.texture_separation)


def _root_raw(data: DataParams, means: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """z_0 before the gain: (N, 1, 1, d_0) = sep * m_y + s_0 * eps."""
    eps = rng.standard_normal((labels.shape[0], means.shape[1]))
    z0 = data.class_separation * means[labels] + data.noise_scales[0] * eps
    return z0[:, None, None, :]


# --------------------------------------------------------------------------- sampling


def sample(
    fns: HierarchyFunctions, data: DataParams, n: int, rng: np.random.Generator, cue_conflict: bool = False
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """Draw n samples: images (N, C, S, S), labels (N,), latents [(N, 2**l, 2**l, d_l)],
    texture classes (N,).

    The labels are the classes of the root (the shape class). The texture class equals
    it, except with ``cue_conflict``: then it is drawn uniformly from the other K - 1.
    """
    labels = rng.integers(data.n_classes, size=n)
    texture = labels
    if cue_conflict:
        texture = (labels + rng.integers(1, data.n_classes, size=n)) % data.n_classes
    z = fns.root_gain * _root_raw(data, fns.class_means, labels, rng)
    latents = [z]
    for level, lm in enumerate(fns.levels, start=1):
        mean = fns.child_mean(level, z)
        eps = rng.standard_normal(mean.shape)
        if level == data.depth:
            eps = fns.leaf_noise(eps, texture)
        z = mean + lm.gain * lm.noise * eps
        latents.append(z)
    clean = fns.render(z)
    images = clean + data.pixel_noise * rng.standard_normal(clean.shape)
    return images, labels, latents, texture


def generate_dataset(data: DataParams) -> Dataset:
    """The synthetic dataset of ``data``: n_train train rows, then n_test test rows (the copy tree's
    when ``data.generator`` says so: :mod:`mae_hlvm.synthetic.copytree`)."""
    if data.generator == "copytree":
        from mae_hlvm.synthetic.copytree import generate_dataset as copytree_dataset

        return copytree_dataset(data)
    fns = draw_functions(data)
    streams = np.random.SeedSequence(data.seed).spawn(N_STREAMS)
    parts = [
        sample(fns, data, n, np.random.default_rng(streams[stream]))
        for n, stream in ((data.n_train, STREAM_TRAIN), (data.n_test, STREAM_TEST))
    ]
    images = np.concatenate([p[0] for p in parts]).astype(np.float32)
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    latents = [np.concatenate([p[2][lv] for p in parts]).astype(np.float32) for lv in range(data.depth + 1)]
    is_test = np.arange(len(labels)) >= data.n_train
    settings = {**data.model_dump(mode="json"), "generator_version": GENERATOR_VERSION}
    cue = None
    if data.texture_separation > 0:
        cue_images, shape, _, texture = sample(
            fns, data, data.n_test, np.random.default_rng(streams[STREAM_CUE]), cue_conflict=True
        )
        cue = CueConflict(cue_images.astype(np.float32), shape.astype(np.int64), texture.astype(np.int64))
    return Dataset(images=images, labels=labels, is_test=is_test, latents=latents, settings=settings, cue=cue)


# --------------------------------------------------------------------------- figure


def _to_rgb(images: np.ndarray) -> np.ndarray:
    """(N, C, S, S) -> (N, S, S, 3) in [0, 1]: first three channels, grey for C = 1.

    The 1st..99th percentile range maps to [0, 1] (clipped) so rare extremes do not wash
    out the contrast.
    """
    lo, hi = (float(v) for v in np.percentile(images, [1, 99]))
    scaled = np.clip((images - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(images)
    if scaled.shape[1] == 1:
        scaled = np.repeat(scaled, 3, axis=1)
    elif scaled.shape[1] == 2:
        scaled = np.concatenate([scaled, np.zeros_like(scaled[:, :1])], axis=1)
    return scaled[:, :3].transpose(0, 2, 3, 1)


def write_figure(path: str | Path, ds: Dataset, per_class: int = 8) -> None:
    """A PNG grid, one row per class, of its first ``per_class`` images; byte-stable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = range(ds.n_classes)
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(per_class * 0.8, len(classes) * 0.8), squeeze=False
    )
    rgb = _to_rgb(ds.images)
    for k in classes:
        rows = np.flatnonzero(ds.labels == k)[:per_class]
        for col, ax in enumerate(axes[k]):
            ax.set_axis_off()
            if col < len(rows):
                ax.imshow(rgb[rows[col]], interpolation="nearest")
        axes[k][0].text(-0.1, 0.5, f"y={k}", transform=axes[k][0].transAxes, ha="right", va="center", fontsize=7)
    fig.suptitle("synthetic images: one row per class", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


# --------------------------------------------------------------------------- step


def run(params: Params, args: argparse.Namespace) -> None:
    """Generate the dataset of ``params.data`` to ``args.out``; optional example figure."""
    start = time.perf_counter()
    data = params.data
    log.info(
        "generating %d train + %d test images, %dx%dx%d, depth %d, latent dims %s",
        data.n_train, data.n_test, data.channels, data.image_size, data.image_size, data.depth, data.latent_dims,
    )
    ds = generate_dataset(data)
    log.info(
        "drew %d images in %.2f s (pixel mean %.3f, std %.3f, range [%.2f, %.2f])",
        len(ds.images), time.perf_counter() - start, ds.images.mean(), ds.images.std(),
        ds.images.min(), ds.images.max(),
    )
    save_dataset(args.out, ds)
    log.info("wrote %s", args.out)
    if getattr(args, "figure", None):
        write_figure(args.figure, ds)
        log.info("wrote %s", args.figure)
    log.info("generate done in %.2f s", time.perf_counter() - start)
