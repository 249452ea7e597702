"""The pixel pipeline every real source goes through, and its inverse.

Each image is centre-cropped to a square, then padded (``fit: pad``, zero = black border,
as LeNet pads MNIST 28 -> 32) or resized bilinearly with anti-aliasing (``fit: resize``)
to ``image_size``; grey is replicated to 3 channels, RGB turned into luminance for 1
channel (:func:`fit_square`). Every channel is then standardised with the TRAIN split's
mean and standard deviation (:func:`normalise`), kept in the dataset's settings so that
evaluations can map back to [0, 1] pixels (:func:`to_unit_range`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mae_hlvm.core.config import ParamsError, RealParams
from mae_hlvm.core.errors import shown as _show


def _match_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) -> (H, W, channels): grey replicated, RGB to luminance (ITU-R 601)."""
    if img.shape[-1] == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=-1)
    return (img[..., :3] @ np.array([0.299, 0.587, 0.114]))[..., None]


def pad_cannot_shrink(what: str, width: int, height: int, size: int) -> str:
    return (
        f"{what}: a {width}x{height} image is larger than real.image_size={size}, and real.fit 'pad' only pads "
        "(shrinking some images and padding others would mix scales): set real.fit: resize or a larger real.image_size"
    )


def fit_square(img: np.ndarray, real: RealParams, source: Any = "an image") -> np.ndarray:
    """One image in [0, 1], (H, W, C) -> (image_size, image_size, channels) float64.

    Images of any size are centre-cropped to a square; ``fit: resize`` rescales every
    one, ``fit: pad`` pads smaller ones and refuses a larger one (``source`` names it).
    """
    from skimage.transform import resize

    img = _match_channels(np.asarray(img, dtype=np.float64), real.channels)
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top : top + side, left : left + side]
    size = real.image_size
    if side == size:
        return img
    if real.fit == "pad":
        if side > size:
            raise ParamsError(pad_cannot_shrink(_show(source), w, h, size))
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
