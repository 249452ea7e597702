"""Images read from folders: a training folder of class subfolders (listed by the rules
below, each file decoded only when drawn) and a cue-conflict folder (the paper's Table 2).
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mae_hlvm.core.config import RealParams
from mae_hlvm.core.errors import shown as _show
from mae_hlvm.core.io import ArtifactError
from mae_hlvm.real.pixels import fit_square

log = logging.getLogger("mae_hlvm.real.realdata")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


def class_folders(root: Path) -> list[tuple[str, list[tuple[Path, int]]]]:
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


def decode_image(path: Path, data: bytes, channels: int) -> np.ndarray:
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


# ------------------------------------------------ a cue-conflict folder (Table 2)
# Geirhos et al.'s layout: <folder>/<shape>/<shape><digits>-<texture><digits>.<suffix>,
# class names those of the training data (realdata's class_names: the class folders of
# a folder dataset, "0".."9" for MNIST and digits, the label values of an .npz). The
# folder is listed by the training folder's rules (class_folders: hidden entries,
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
    for shape_folder, listed in class_folders(folder):
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
        pixels.append(fit_square(decode_image(path, data, real.channels), real, path))
    shapes = np.array([s for _, s, _ in files], dtype=np.int64)
    textures = np.array([t for _, _, t in files], dtype=np.int64)
    return np.clip(np.stack(pixels), 0.0, 1.0), shapes, textures, h.hexdigest()
