"""Bad user data for the real track (issue 12, "Hard edges"): every case ends in one line.

Each case builds a tiny folder (``real.dataset: folder``) or ``.npz`` (``real.dataset:
npz``) in ``tmp_path`` and runs the ``prepare-real`` step in-process
(``cli.main(["prepare-real", ...])``). A bad case must return 2 with exactly one
``error:`` line that starts with the file or folder at fault and says what is wrong, no
traceback, no Pillow warning, and no output file. The permission cases (chmod 000) need
a process that file modes bind: as root (CI) they run the step in a subprocess started by
util-linux ``setpriv`` without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, and fail (never
skip) where neither is possible. The last tests pin the decisions on
inputs that are accepted (label gaps renumbered, an image whose suffix lies, stray
non-image files, mixed sizes and modes, 16-bit PNGs, links into a DVC cache).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, prepare_real_step, write_real_params
from PIL import Image

from mae_hlvm.core.data import load_dataset

REPO = Path(__file__).resolve().parents[1]

# 16x16 images, ViT patch 2: the smallest geometry the real section accepts quickly.
CLASSES = ("a", "b", "c")
PER_CLASS = 6  # 3 x 6 = 18 = n_train + n_test: every image is drawn, so every one is decoded


def _permissions_bind(tmp: Path) -> bool:
    """False where chmod 000 does not stop this process reading (root, as CI may run)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return True
    probe = tmp / "probe"  # root without CAP_DAC_OVERRIDE is bound like anyone else
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o644)
        probe.unlink()
    return False


# Root without these two capabilities is bound by file modes like anyone else.
SETPRIV = Path("/usr/bin/setpriv")
DROP_CAPS = "-dac_override,-dac_read_search"


def _unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run by setpriv without the capabilities that bypass file modes (and unable to regain them)."""
    return [str(SETPRIV), f"--inh-caps={DROP_CAPS}", f"--bounding-set={DROP_CAPS}", *argv]


@functools.cache
def _setpriv_problem() -> str | None:
    """None where a setpriv'd child of this process is refused a chmod 000 file; else what went wrong."""
    if not SETPRIV.exists():
        return f"{SETPRIV} (util-linux) is not installed"
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        probe.write_bytes(b"x")
        probe.chmod(0)
        try:
            run = subprocess.run(_unprivileged([sys.executable, "-c", f"open({str(probe)!r}).read()"]),
                                 capture_output=True, text=True, timeout=60)
        finally:
            probe.chmod(0o644)
    if run.returncode == 0:
        return f"{SETPRIV} ran, but its child could still read a chmod 000 file"
    if "PermissionError" not in run.stderr:
        return f"{SETPRIV} could not drop the capabilities: {' '.join(run.stderr.split())[-300:]}"
    return None


def _need_unprivileged_runner() -> None:
    """As root: fail, loudly, unless setpriv gives a process that chmod 000 stops."""
    problem = _setpriv_problem()
    if problem:
        pytest.fail(
            "this permission check needs a process that chmod 000 stops: run the tests as a non-root user, or as "
            f"root with util-linux setpriv able to drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH ({problem})"
        )


# ----------------------------------------------------------------------------- builders


def _pixels(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _folder(root: Path, classes: dict[str, int] | None = None, size: tuple[int, int] = (12, 12)) -> Path:
    """root/<class>/imgNN.png, grey, ``classes`` = {name: count} (default 3 x 6)."""
    for k, (name, count) in enumerate((classes or dict.fromkeys(CLASSES, PER_CLASS)).items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(_pixels(100 * k + i, size)).save(root / name / f"img{i:02d}.png")
    return root


def _npz(path: Path, classes: list | None = None, **arrays) -> Path:
    """An .npz of 18 random 12x12 uint8 images, 6 per class of ``classes`` (default 0, 1, 2);
    ``arrays`` replace (None: drop) or add arrays."""
    content = {"images": _pixels(0, (18, 12, 12)), "labels": np.repeat(classes or [0, 1, 2], 6), **arrays}
    np.savez(path, **{k: v for k, v in content.items() if v is not None})
    return path


def _seed_where(n_total: int, n_train: int, n_test: int, wanted: Callable[[set, set], bool]) -> int:
    """The first split_seed whose draw (realdata._subset_rows) satisfies ``wanted(train, test)``."""
    for seed in range(10_000):
        order = np.random.default_rng(seed).permutation(n_total)
        if wanted(set(order[n_test : n_test + n_train].tolist()), set(order[:n_test].tolist())):
            return seed
    raise AssertionError("no such seed")


def _png_then(path: Path, tail: Callable[[bytes], bytes]) -> None:
    Image.fromarray(_pixels(7, (12, 12))).save(path)
    path.write_bytes(tail(path.read_bytes()))


# ----------------------------------------------------------------------------- running the step


def _prepare_unprivileged(tmp_path: Path, real: dict) -> tuple[int, Path, str]:
    """:func:`prepare_real_step` in a subprocess that file modes bind (root without the DAC capabilities)."""
    params, out = write_real_params(tmp_path, real)
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"}
    # this checkout's code, whether or not the package is installed editable
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    argv = [sys.executable, "-m", "mae_hlvm", "prepare-real", "--params", str(params), "--out", str(out)]
    run = subprocess.run(_unprivileged(argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return run.returncode, out, run.stdout + run.stderr


# ----------------------------------------------------------------------------- bad folders
# Each builder gets tmp_path and returns (real overrides, the path the message must name,
# a regex of the reason).


def _missing(t: Path):
    return {"path": str(t / "nowhere")}, t / "nowhere", "image folder not found"


def _file_not_folder(t: Path):
    npz = _npz(t / "data.npz")
    return {"path": str(npz)}, npz, r"is a file, not a folder .*real.dataset: npz"


def _empty(t: Path):
    (t / "d").mkdir()
    return {}, t / "d", r"no class subfolders \(it is empty\)"


def _flat(t: Path):
    (t / "d").mkdir()
    Image.fromarray(_pixels(0, (12, 12))).save(t / "d" / "x.png")
    return {}, t / "d", r"no class subfolders \(it holds 1 file\(s\), e.g. 'x.png'\)"


def _only_hidden(t: Path):
    _folder(t / "d")
    for name in CLASSES:
        (t / "d" / name).rename(t / "d" / f".{name}")
    return {}, t / "d", r"no class subfolders \(it holds only hidden entries\)"


def _one_class(t: Path):
    _folder(t / "d", {"cats": 18})
    return {}, t / "d", r"only one class folder, 'cats'; the probes need at least 2 classes"


def _class_is_a_file(t: Path):
    _folder(t / "d", {"a": 9, "b": 9})
    (t / "d" / "c.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # a class left packed
    return {}, t / "d" / "c.zip", "a file among the class folders"


def _class_without_images(t: Path):
    _folder(t / "d")
    (t / "d" / "z").mkdir()
    (t / "d" / "z" / "notes.txt").write_text("todo")
    return {}, t / "d" / "z", r"class folder holds no images .*1 other file\(s\) ignored, e.g. 'notes.txt'"


def _too_few_images(t: Path):
    _folder(t / "d")
    return {"n_train": 15, "n_test": 6}, t / "d", r"has only 18 images, fewer than real.n_train \+ real.n_test = 15 \+ 6 = 21: lower"


def _class_only_in_test(t: Path):
    # class b has a single image (row 10 of 20); a seed that draws it into the test split
    _folder(t / "d", {"a": 10, "b": 1, "c": 9})
    seed = _seed_where(20, 12, 6, lambda train, test: 10 in test and min(train) < 10 < max(train))
    real = {"n_train": 12, "n_test": 6, "split_seed": seed}
    return real, t / "d", r"class 'b' has 1 of the 6 test images but none of the 12 train images.*raise real.n_train"


def _train_one_class(t: Path):
    _folder(t / "d", {"a": 30, "b": 5})
    seed = _seed_where(35, 10, 5, lambda train, test: max(train) < 30 and max(test) >= 30)
    real = {"n_train": 10, "n_test": 5, "split_seed": seed}
    return real, t / "d", r"the 10 train images drawn \(real.split_seed=\d+\) all belong to class 'a'.*raise real.n_train"


def _test_one_class(t: Path):
    _folder(t / "d", {"a": 30, "b": 10})
    seed = _seed_where(40, 10, 5, lambda train, test: max(test) < 30 and max(train) >= 30)
    real = {"n_train": 10, "n_test": 5, "split_seed": seed}
    return real, t / "d", r"the 5 test images drawn .* all belong to class 'a'.*raise real.n_test"


def _bad_file(make: Callable[[Path], None], reason: str):
    """Replace a/img00.png (always drawn) with ``make``'s file."""
    def build(t: Path):
        _folder(t / "d")
        target = t / "d" / "a" / "img00.png"
        target.unlink()
        make(target)
        return {}, target, reason
    return build


def _rgba(path: Path) -> None:
    arr = np.dstack([_pixels(1, (12, 12, 3)), np.full((12, 12), 255, np.uint8)])
    arr[:4, :4, 3] = 0
    Image.fromarray(arr, mode="RGBA").save(path)


def _palette_transparent(path: Path) -> None:
    img = Image.frombytes("P", (12, 12), (_pixels(2, (12, 12)) % 4).tobytes())
    img.putpalette([0, 0, 0, 80, 80, 80, 160, 160, 160, 255, 255, 255])
    img.save(path, transparency=0)  # index 0 transparent


def _int32_tiff(path: Path) -> None:
    tiff = path.with_suffix(".tif")
    Image.fromarray(np.arange(144, dtype=np.int32).reshape(12, 12) * 1000).save(tiff)
    tiff.rename(path)  # a TIFF under .png: Pillow reads by content


def _bigger_image(path: Path) -> None:
    Image.fromarray(_pixels(3, (40, 30))).save(path)


def _bomb(limit: int):
    def build(t: Path, monkeypatch):
        _folder(t / "d")
        target = t / "d" / "b" / "img03.png"
        Image.fromarray(_pixels(4, (40, 40))).save(target)  # 1600 pixels, the others 144
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        return {}, target, r"1,600 pixels, over Pillow's decompression-bomb limit of .*: downscale it or remove it"
    return build


def _link_out(t: Path):
    _folder(t / "d")
    Image.fromarray(_pixels(5, (12, 12))).save(t / "elsewhere.png")
    link = t / "d" / "a" / "img00.png"
    link.unlink()
    link.symlink_to(t / "elsewhere.png")
    return {}, link, r"symlink to .*elsewhere.png, outside .*: copy the file into the folder"


def _link_loop(t: Path):
    _folder(t / "d")
    (t / "d" / "a" / "x.png").symlink_to("y.png")
    (t / "d" / "a" / "y.png").symlink_to("x.png")
    return {}, t / "d" / "a" / "x.png", "symlink loop"


def _link_broken(t: Path):
    _folder(t / "d")
    (t / "d" / "a" / "gone.png").symlink_to(t / "gone-for-good.png")
    return {}, t / "d" / "a" / "gone.png", r"broken symlink \(to .*gone-for-good.png, which does not exist\)"


def _linked_class(t: Path):
    _folder(t / "d", {"a": 9, "b": 9})
    _folder(t / "other", {"c": 6})
    (t / "d" / "c").symlink_to(t / "other" / "c")
    return {}, t / "d" / "c", r"symlinked folder \(to .*other/c\)"


def _linked_subfolder_loop(t: Path):
    _folder(t / "d")
    (t / "d" / "a" / "again").symlink_to(t / "d" / "a")
    return {}, t / "d" / "a" / "again", "symlinked folder"


def _unreadable_by_access(t: Path, monkeypatch):
    """chmod 000 as root still reads: simulate the denial where the listing asks for it."""
    _folder(t / "d")
    locked = t / "d" / "b" / "img02.png"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    return {}, locked, r"cannot read \(permission denied\)"


def _unreadable_chmod(t: Path):
    _folder(t / "d")
    locked = t / "d" / "b" / "img02.png"
    locked.chmod(0)
    return {}, locked, r"cannot read \(permission denied\)"


def _unlistable_class(t: Path):
    _folder(t / "d")
    (t / "d" / "c").chmod(0)
    return {}, t / "d" / "c", r"cannot list this folder \(Permission denied\)"


FOLDER_CASES = {
    "missing path": _missing,
    "a file given as the folder": _file_not_folder,
    "empty folder": _empty,
    "images without class folders": _flat,
    "only hidden folders": _only_hidden,
    "one class": _one_class,
    "a class folder that is a file": _class_is_a_file,
    "class folder without images": _class_without_images,
    "n_train + n_test above the images": _too_few_images,
    "a class drawn only into the test split": _class_only_in_test,
    "a train split of one class": _train_one_class,
    "a test split of one class": _test_one_class,
    "truncated png": _bad_file(lambda p: _png_then(p, lambda b: b[: len(b) // 2]), r"unreadable image \(image file is truncated"),
    "zero-byte png": _bad_file(lambda p: p.write_bytes(b""), r"empty file \(0 bytes\): replace or remove it"),
    "text file named .png": _bad_file(lambda p: p.write_text("hello"), r"unreadable image \(not in any format Pillow knows"),
    "png with garbage after the header": _bad_file(lambda p: _png_then(p, lambda b: b[:40] + bytes(200)), "unreadable image"),
    "transparent RGBA": _bad_file(_rgba, r"16 of 144 pixels are transparent.*flatten it"),
    "palette with a transparent colour": _bad_file(_palette_transparent, r"pixels are transparent"),
    "32-bit integer TIFF": _bad_file(_int32_tiff, r"32-bit integer pixels \(Pillow mode I\) have no known full scale"),
    "fit pad with a larger image": (_bad_file(_bigger_image, r"a 30x40 image is larger than real.image_size=16.*real.fit: resize"), {"fit": "pad"}),
    "decompression bomb (warning)": _bomb(1000),
    "decompression bomb (error)": _bomb(700),
    "symlink out of the folder": _link_out,
    "symlink loop": _link_loop,
    "broken symlink": _link_broken,
    "symlinked class folder": _linked_class,
    "symlinked subfolder looping back": _linked_subfolder_loop,
    "unreadable file (simulated)": _unreadable_by_access,
    "unreadable file (chmod 000)": _unreadable_chmod,
    "unlistable class folder (chmod 000)": _unlistable_class,
}
NEEDS_NON_ROOT = {"unreadable file (chmod 000)", "unlistable class folder (chmod 000)"}


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_bad_folder_is_one_line(case, tmp_path, monkeypatch, capsys):
    # as root, chmod 000 does not stop this process: run the step where it does
    unprivileged = case in NEEDS_NON_ROOT and not _permissions_bind(tmp_path)
    if unprivileged:
        _need_unprivileged_runner()
    build = FOLDER_CASES[case]
    extra = {}
    if isinstance(build, tuple):
        build, extra = build
    takes_monkeypatch = build.__code__.co_argcount == 2
    real, named, reason = build(tmp_path, monkeypatch) if takes_monkeypatch else build(tmp_path)
    try:
        real = {"dataset": "folder", "path": str(tmp_path / "d"), **extra, **real}
        rc, out, text = _prepare_unprivileged(tmp_path, real) if unprivileged else prepare_real_step(tmp_path, monkeypatch, capsys, real)
    finally:
        for p in tmp_path.rglob("*"):  # let pytest clean up what the case locked
            if not p.is_symlink():
                p.chmod(0o755)
    assert_one_line_error(rc, out, text, named, reason)


# ----------------------------------------------------------------------------- bad .npz files


def _npz_case(reason: str, classes: list | None = None, **arrays):
    def build(t: Path):
        return _npz(t / "d.npz", classes, **arrays), reason
    return build


def _raw_file(content: bytes, reason: str):
    def build(t: Path):
        (t / "d.npz").write_bytes(content)
        return t / "d.npz", reason
    return build


def _npy(t: Path):
    np.save(t / "d.npy", _pixels(0, (18, 12, 12)))
    (t / "d.npy").rename(t / "d.npz")
    return t / "d.npz", r"a single .npy array, not an .npz archive.*numpy.savez"


def _truncated_npz(t: Path):
    _npz(t / "d.npz")
    data = (t / "d.npz").read_bytes()
    (t / "d.npz").write_bytes(data[: len(data) // 2])
    return t / "d.npz", r"not an .npz archive \(empty, truncated or another format\)"


def _corrupt_member(t: Path):
    _npz(t / "d.npz")
    with zipfile.ZipFile(t / "d.npz", "w") as zf:  # a zip whose images member is not an array
        zf.writestr("images.npy", b"\x93NUMPY garbage")
        zf.writestr("labels.npy", b"")
    return t / "d.npz", r"corrupt or truncated \(\w+\)"


def _npz_is_folder(t: Path):
    (t / "d.npz").mkdir()
    return t / "d.npz", r"is a folder, not an .npz file .*real.dataset: folder"


def _npz_missing(t: Path):
    return t / "d.npz", r"missing \(no such file"


def _object_array(name: str):
    def build(t: Path):
        values = np.empty(18, dtype=object)
        for i in range(18):
            values[i] = np.zeros((12, 12)) if name == "images" else "x"
        _npz(t / "d.npz", **{name: values})
        return t / "d.npz", rf"'{name}' holds Python objects \(dtype object\).*never done"
    return build


def _npz_unreadable(t: Path):
    _npz(t / "d.npz").chmod(0)
    return t / "d.npz", r"cannot read \(Permission denied\)"


N = 18
NPZ_CASES = {
    "missing file": _npz_missing,
    "a folder given as the npz": _npz_is_folder,
    ".npy given as the npz": _npy,
    "empty file": _raw_file(b"", r"not an .npz archive"),
    "text file": _raw_file(b"images,labels\n1,2\n", r"not an .npz archive"),
    "truncated npz": _truncated_npz,
    "zip with corrupt members": _corrupt_member,
    "arrays under other names": _npz_case(r"lacks arrays \['images', 'labels'\] \(it holds 'x_train', 'y_train'\)",
                                          images=None, labels=None, x_train=_pixels(0, (N, 12, 12)), y_train=np.zeros(N)),
    "no labels": _npz_case(r"lacks arrays \['labels'\]", labels=None),
    "object images": _object_array("images"),
    "object labels": _object_array("labels"),
    "flat 2-D images": _npz_case(r"'images' must be .*got \(18, 144\): reshape flat rows", images=_pixels(0, (N, 144))),
    "5-D images": _npz_case(r"'images' must be .*got \(18, 1, 12, 12, 1\)", images=_pixels(0, (N, 1, 12, 12, 1))),
    "RGBA channels last": _npz_case(r"has 4 channels \(RGBA\?\)", images=_pixels(0, (N, 12, 12, 4))),
    "RGBA channels first": _npz_case(r"has 4 channels \(RGBA\?\)", images=_pixels(0, (N, 4, 12, 12))),
    "no pixels": _npz_case(r"holds no pixels: save the images themselves", images=_pixels(0, (N, 0, 12))),
    "NaN pixels": _npz_case(r"'images' hold 1 NaN or infinite", images=np.where(np.arange(N * 144).reshape(N, 12, 12) == 5, np.nan, 0.5)),
    "inf pixels": _npz_case(r"NaN or infinite", images=np.full((N, 12, 12), np.inf, dtype=np.float32)),
    "float 0..255": _npz_case(r"float 'images' range over \[0, 255\]; they must lie in \[0, 1\]: 0..255 data\? divide by 255",
                              images=np.tile(np.linspace(0, 255, 144, dtype=np.float32).reshape(12, 12), (N, 1, 1))),
    "negative floats": _npz_case(r"range over \[-0.5, 0.5\]; they must lie in \[0, 1\]: rescale them", images=np.linspace(-0.5, 0.5, N * 144).reshape(N, 12, 12)),
    "16-bit integers": _npz_case(r"integer 'images' range over 0..4095, outside 0..255", images=np.linspace(0, 4095, N * 144).astype(np.uint16).reshape(N, 12, 12)),
    "negative integers": _npz_case(r"range over -1..0", images=-np.ones((N, 12, 12), dtype=np.int16) * (np.arange(N)[:, None, None] % 2)),
    "bool images": _npz_case(r"must be uint8 \(0..255\) or float in \[0, 1\], got dtype bool", images=np.ones((N, 12, 12), dtype=bool)),
    "complex images": _npz_case(r"got dtype complex128", images=np.ones((N, 12, 12), dtype=complex)),
    "fractional labels": _npz_case(r"labels\[3\] = 0.5 \(1 such\)", labels=np.where(np.arange(N) == 3, 0.5, np.repeat([0.0, 1, 2], 6))),
    "NaN labels": _npz_case(r"labels\[0\] = nan", labels=np.r_[np.nan, np.repeat([0.0, 1, 2], 6)[1:]]),
    "complex labels": _npz_case(r"'labels' must be integers or strings, got dtype complex128", labels=np.repeat([0, 1, 2], 6).astype(complex)),
    "labels (N, 1)": _npz_case(r"'labels' must be \(N,\) = \(18,\) .*got \(18, 1\): flatten them", labels=np.repeat([0, 1, 2], 6)[:, None]),
    "one-hot labels": _npz_case(r"got \(18, 3\): one-hot\? take labels.argmax", labels=np.eye(3)[np.repeat([0, 1, 2], 6)]),
    "fewer labels than images": _npz_case(r"'labels' must be \(N,\) = \(18,\) like 'images', got \(17,\): save one label per image", labels=np.repeat([0, 1, 2], 6)[:17]),
    "one class": _npz_case(r"only one label, '3'; the probes need at least 2 classes", classes=[3, 3, 3]),
    "fit pad with larger images": (_npz_case(r"a 24x24 image is larger than real.image_size=16", images=_pixels(0, (N, 24, 24))), {"fit": "pad"}),
    "n_train + n_test above the images": (_npz_case(r"has only 18 images, fewer than .* = 21: lower"), {"n_train": 15}),
    "unreadable (chmod 000)": _npz_unreadable,
}
NPZ_NEEDS_NON_ROOT = {"unreadable (chmod 000)"}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_bad_npz_is_one_line(case, tmp_path, monkeypatch, capsys):
    unprivileged = case in NPZ_NEEDS_NON_ROOT and not _permissions_bind(tmp_path)
    if unprivileged:
        _need_unprivileged_runner()
    build = NPZ_CASES[case]
    extra = {}
    if isinstance(build, tuple):
        build, extra = build
    named, reason = build(tmp_path)
    try:
        real = {"dataset": "npz", "path": str(tmp_path / "d.npz"), **extra}
        rc, out, text = _prepare_unprivileged(tmp_path, real) if unprivileged else prepare_real_step(tmp_path, monkeypatch, capsys, real)
    finally:
        if (tmp_path / "d.npz").is_file():
            (tmp_path / "d.npz").chmod(0o644)
    assert_one_line_error(rc, out, text, named, reason)


def test_npz_object_arrays_are_never_unpickled(tmp_path, monkeypatch, capsys):
    """allow_pickle stays False: an object array that would run code when unpickled is refused unread."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    values = np.empty(N, dtype=object)
    values[:] = [Payload()] * N
    _npz(tmp_path / "d.npz", labels=values)
    rc, out, text = prepare_real_step(tmp_path, monkeypatch, capsys, {"dataset": "npz", "path": str(tmp_path / "d.npz")})
    assert_one_line_error(rc, out, text, tmp_path / "d.npz", "holds Python objects")
    assert not marker.exists()


# ----------------------------------------------------------------------------- accepted inputs


def _accepted(tmp_path, monkeypatch, capsys, real: dict):
    rc, out, text = prepare_real_step(tmp_path, monkeypatch, capsys, real)
    assert rc == 0, text
    assert "Traceback" not in text and "error:" not in text
    return load_dataset(out), text


def test_the_tiny_folder_and_npz_are_accepted(tmp_path, monkeypatch, capsys):
    """The baseline every bad case above departs from."""
    ds, _ = _accepted(tmp_path, monkeypatch, capsys, {"dataset": "folder", "path": str(_folder(tmp_path / "d"))})
    assert ds.images.shape == (18, 1, 16, 16) and ds.settings["class_names"] == list(CLASSES)
    (tmp_path / "out" / "real.npz").unlink()
    ds, _ = _accepted(tmp_path, monkeypatch, capsys, {"dataset": "npz", "path": str(_npz(tmp_path / "d.npz"))})
    assert ds.images.shape == (18, 1, 16, 16)


@pytest.mark.parametrize(
    ("labels", "names"),
    [
        ([0, 7, 7], ["0", "7"]),  # gaps are renumbered 0..K-1, the originals kept as names
        ([2.0, 0.0, 1.0], ["0", "1", "2"]),  # integral floats are integers
        (["dog", "cat", "eel"], ["cat", "dog", "eel"]),  # strings are class names
        ([b"dog", b"cat", b"eel"], ["cat", "dog", "eel"]),
        ([-3, 10, 10**9], ["-3", "10", "1000000000"]),
    ],
)
def test_npz_labels_are_renumbered(labels, names, tmp_path, monkeypatch, capsys):
    ds, _ = _accepted(tmp_path, monkeypatch, capsys, {"dataset": "npz", "path": str(_npz(tmp_path / "d.npz", labels))})
    assert ds.settings["class_names"] == names
    assert sorted(set(ds.labels.tolist())) == list(range(len(names)))


def test_npz_integer_pixels_of_any_width_in_0_255(tmp_path, monkeypatch, capsys):
    images = _pixels(0, (N, 3, 12, 12)).astype(np.int64)  # channels first, int64
    ds, _ = _accepted(tmp_path, monkeypatch, capsys, {"dataset": "npz", "path": str(_npz(tmp_path / "d.npz", images=images)), "channels": 3})
    assert ds.images.shape == (N, 3, 16, 16)


def test_folder_extras_are_ignored_and_counted(tmp_path, monkeypatch, capsys):
    """Hidden files and folders are skipped; non-image suffixes skipped and counted in the log;
    a .png holding a JPEG is read by its content."""
    root = _folder(tmp_path / "d")
    (root / "a" / "notes.txt").write_text("x")
    (root / "b" / "Thumbs.db").write_bytes(b"\0" * 10)
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "c" / "._img00.png").write_bytes(b"AppleDouble")  # macOS resource fork, not an image
    (root / "c" / ".ipynb_checkpoints").mkdir()
    (root / "c" / ".ipynb_checkpoints" / "bad.png").write_bytes(b"")
    (root / "a" / "img00.png").unlink()
    Image.fromarray(_pixels(9, (12, 12))).save(root / "a" / "img00.png", format="JPEG")
    ds, text = _accepted(tmp_path, monkeypatch, capsys, {"dataset": "folder", "path": str(root)})
    assert ds.images.shape[0] == 18
    assert re.search(r"ignored 2 file\(s\) without an image suffix \('a/notes.txt', 'b/Thumbs.db'\)", text), text


def test_folder_mixed_sizes_and_modes_are_fitted(tmp_path, monkeypatch, capsys):
    """Sizes: centre crop, then fit per image. Modes: grey, RGB, palette, opaque RGBA, 1-bit
    and CMYK are converted to real.channels; 16-bit grey is scaled by 65535, not clipped."""
    root = _folder(tmp_path / "d")
    a = root / "a"
    Image.fromarray(_pixels(1, (30, 20, 3))).save(a / "img00.png")
    Image.fromarray(_pixels(2, (5, 9))).convert("P").save(a / "img01.png")
    Image.fromarray(np.dstack([_pixels(3, (12, 12, 3)), np.full((12, 12), 255, np.uint8)])).save(a / "img02.png")
    Image.fromarray(_pixels(4, (12, 12))).convert("1").save(a / "img03.png")
    Image.fromarray(_pixels(5, (12, 12, 3))).convert("CMYK").save(a / "img04.jpg")
    (a / "img04.png").unlink()
    Image.fromarray(np.full((12, 12), 32768, dtype=np.uint16)).save(a / "img05.png")  # 16-bit, half scale
    for channels in (1, 3):
        out = tmp_path / "out" / "real.npz"
        out.unlink(missing_ok=True)
        ds, _ = _accepted(tmp_path, monkeypatch, capsys, {"dataset": "folder", "path": str(root), "channels": channels})
        assert ds.images.shape == (18, channels, 16, 16)
    # the 16-bit image, a uniform 32768/65535, comes back as a uniform 0.5 (clipping would give 1.0)
    from mae_hlvm.real.pixels import to_unit_range

    pixels = to_unit_range(ds.images, ds.settings)
    uniform = [i for i in range(18) if np.ptp(pixels[i]) < 1e-6]
    assert len(uniform) == 1
    np.testing.assert_allclose(pixels[uniform[0]], 32768 / 65535, atol=1e-5)


def test_symlinks_inside_the_folder_or_into_a_dvc_cache_are_followed(tmp_path, monkeypatch, capsys):
    """`dvc config cache.type symlink` turns every file into a link into .dvc/cache."""
    root = _folder(tmp_path / "d")
    cache = tmp_path / ".dvc" / "cache" / "files" / "md5" / "ab"
    cache.mkdir(parents=True)
    (root / "a" / "img00.png").rename(cache / "cdef")
    (root / "a" / "img00.png").symlink_to(cache / "cdef")
    (root / "b" / "img00.png").unlink()
    (root / "b" / "img00.png").symlink_to("../c/img00.png")
    ds, _ = _accepted(tmp_path, monkeypatch, capsys, {"dataset": "folder", "path": str(root)})
    assert ds.images.shape[0] == 18
