"""The shifted test sets of Table 1, and the paper's columns they stand in for.

The shifted test sets are local stand-ins for ImageNet-v2/ObjectNet/R/A/Sketch, built
from the clean test split with fixed seeds (:func:`shifted_test_sets`).
Shapes: N images, C channels, S image side.
"""

from __future__ import annotations

import numpy as np

from mae_hlvm.core.data import Dataset
from mae_hlvm.real.pixels import normalise, to_unit_range

PAPER_COLUMNS = ("IN1K", "IN-v2", "ObjectNet", "IN-R", "IN-A", "IN-Sketch")

# Our test sets, in the order of PAPER_COLUMNS, and the paper column each stands in for.
TEST_SETS = ("clean", "noise", "rotation", "inversion", "contrast", "blur")
STAND_IN_FOR = dict(zip(TEST_SETS, PAPER_COLUMNS))
SHIFT_DESCRIPTIONS = {
    "clean": "the clean test split",
    "noise": "additive Gaussian noise, sigma 0.3 of the pixel range, clipped to [0, 1]",
    "rotation": "rotation by a random angle of 15 to 45 degrees either way, black fill",
    "inversion": "pixel inversion 1 - x",
    "contrast": "contrast cut to 0.3x around each image's mean",
    "blur": "Gaussian blur, sigma 1.5 pixels per 32 pixels of image side",
}


def _rotate_each(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate every image (N, C, S, S) by its own angle, bilinear, zero fill."""
    from scipy.ndimage import rotate

    magnitude = rng.uniform(15.0, 45.0, size=len(pixels))
    sign = rng.choice([-1.0, 1.0], size=len(pixels))
    out = np.empty_like(pixels)
    for i, (img, angle) in enumerate(zip(pixels, magnitude * sign)):
        out[i] = rotate(img, angle, axes=(1, 2), reshape=False, order=1, mode="constant", cval=0.0)
    return out


def shift_pixels(pixels: np.ndarray, shift: str, seed: int = 0) -> np.ndarray:
    """Apply one named shift to pixels (N, C, S, S) in [0, 1]; same shape, in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    # One stream per shift, so adding a shift never changes the others.
    rng = np.random.default_rng([seed, TEST_SETS.index(shift)])
    if shift == "clean":
        out = pixels.copy()
    elif shift == "noise":
        out = pixels + rng.normal(0.0, 0.3, size=pixels.shape)
    elif shift == "rotation":
        out = _rotate_each(pixels, rng)
    elif shift == "inversion":
        out = 1.0 - pixels
    elif shift == "contrast":
        mean = pixels.mean(axis=(1, 2, 3), keepdims=True)
        out = mean + 0.3 * (pixels - mean)
    elif shift == "blur":
        sigma = 1.5 * pixels.shape[-1] / 32
        out = gaussian_filter(pixels, sigma=(0, 0, sigma, sigma), mode="constant")
    else:
        raise ValueError(f"shift={shift!r}: not one of {TEST_SETS}")
    return np.clip(out, 0.0, 1.0)


def shifted_test_sets(ds: Dataset, seed: int = 0) -> dict[str, np.ndarray]:
    """Every test set of :data:`TEST_SETS` as model inputs (N_test, C, S, S) float32."""
    test = ds.split(test=True)
    pixels = np.clip(to_unit_range(test.images, ds.settings), 0.0, 1.0)
    return {name: normalise(shift_pixels(pixels, name, seed), ds.settings) for name in TEST_SETS}
