"""The real-image track's params, sweeps and loaders (MNIST, digits, folder, npz)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DEFAULT_REAL
from PIL import Image

from mae_hlvm.core.cells import real_cells
from mae_hlvm.core.config import ParamsError, parse_real
from mae_hlvm.core.data import load_dataset, save_dataset
from mae_hlvm.core.io import ArtifactError, file_sha256
from mae_hlvm.real.pixels import to_unit_range
from mae_hlvm.real.realdata import prepare_real, real_model_params

TINY = {"n_train": 60, "n_test": 30, "image_size": 16, "fit": "resize", "vit_patch": 2, "mask_units": [2, 4, 8], "sweep_a_unit": 4}


def _real(**overrides):
    return parse_real({**DEFAULT_REAL, **TINY, **overrides})


# ------------------------------------------------------------------ params and sweeps


def test_recommended_defaults_are_valid_and_give_the_papers_two_sweeps() -> None:
    real = parse_real(DEFAULT_REAL)
    cells = real_cells(real)
    pairs = sorted({(r, u) for r, u, _ in cells})
    # Sweep A (5 ratios at unit 8) and Sweep B (units 4, 8, 16 at 0.75) share (0.75, 8).
    assert pairs == [(0.1, 8), (0.25, 8), (0.5, 8), (0.75, 4), (0.75, 8), (0.75, 16), (0.9, 8)]
    assert len(cells) == 7 * len(real.seeds)
    assert real_model_params({"vit_patch": 2, "embed_dim": 64}, real) == {"vit_patch": 4, "embed_dim": 64}


@pytest.mark.parametrize(
    ("sweep", "n_pairs"),
    [("A", 5), ("B", 3), ("AB", 7), ("grid", 12)],
)
def test_sweep_choice_sets_the_cells(sweep: str, n_pairs: int) -> None:
    # ratio 0.9 at 16-pixel units (4 units per image) would keep no unit visible: the full
    # grid is checked cell by cell, so it leaves 0.9 out
    ratios = [0.1, 0.25, 0.5, 0.75] + ([] if sweep == "grid" else [0.9])
    real = parse_real({**DEFAULT_REAL, "sweep": sweep, "seeds": [3], "mask_ratios": ratios})
    cells = real_cells(real)
    assert len(cells) == n_pairs
    assert len(set(cells)) == n_pairs
    assert all(seed == 3 for _, _, seed in cells)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"mask_ratios": [0.1, 1.0]}, "real.mask_ratios[1]=1.0"),
        ({"mask_units": [4, 6]}, "real.mask_units[1]=6"),
        ({"mask_units": [4, 4]}, "repeated"),
        ({"sweep_a_unit": 12}, "real.sweep_a_unit=12"),
        ({"dataset": "folder", "path": ""}, "real.path=''"),
        ({"mask_ratios": [0.99], "sweep": "A"}, "keeps 0 visible"),
        ({"bogus": 1}, "unknown key 'real.bogus'"),
        ({"channels": 2}, "real.channels=2"),
        ({"image_size": 16, "fit": "pad", "vit_patch": 2, "mask_units": [2, 4, 8], "sweep_a_unit": 4}, "fit 'pad'"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(override: dict, needle: str) -> None:
    with pytest.raises(ParamsError) as err:
        parse_real({**DEFAULT_REAL, **override})
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg


# ------------------------------------------------------------------ built-in sources


def _check_dataset(ds, n_train: int, n_test: int, size: int, channels: int) -> None:
    assert ds.images.shape == (n_train + n_test, channels, size, size)
    assert ds.images.dtype == np.float32
    assert ds.labels.dtype == np.int64
    assert int(ds.is_test.sum()) == n_test and not ds.is_test[:n_train].any()
    train = ds.images[~ds.is_test]
    # standardised per channel with train-split statistics
    np.testing.assert_allclose(train.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
    pixels = to_unit_range(ds.images, ds.settings)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert len(ds.settings["raw_sha256"]) == 64


def test_digits_are_upsampled_split_and_normalised() -> None:
    ds = prepare_real(_real(dataset="digits"))
    _check_dataset(ds, 60, 30, 16, 1)
    assert ds.settings["source"] == "digits"
    assert set(ds.labels.tolist()) <= set(range(10))
    assert len(set(ds.labels.tolist())) >= 8


def test_mnist_subset_is_padded_and_deterministic() -> None:
    real = _real(dataset="mnist", image_size=32, fit="pad", vit_patch=4, mask_units=[4, 8, 16], sweep_a_unit=8)
    ds = prepare_real(real)
    _check_dataset(ds, 60, 30, 32, 1)
    pixels = to_unit_range(ds.images, ds.settings)
    # 28 -> 32 by a 2-pixel black border, like LeNet
    np.testing.assert_allclose(pixels[:, :, :2, :], 0.0, atol=1e-6)
    np.testing.assert_allclose(pixels[:, :, :, -2:], 0.0, atol=1e-6)
    assert pixels[:, :, 2:-2, 2:-2].max() > 0.9
    again = prepare_real(real)
    np.testing.assert_array_equal(ds.images, again.images)
    np.testing.assert_array_equal(ds.labels, again.labels)
    other = prepare_real(real.model_copy(update={"split_seed": 1}))
    assert not np.array_equal(ds.labels, other.labels)
    assert other.settings["raw_sha256"] == ds.settings["raw_sha256"]


def test_mnist_can_be_resized_to_three_channels() -> None:
    ds = prepare_real(_real(dataset="mnist", channels=3))
    _check_dataset(ds, 60, 30, 16, 3)
    # grey replicated into every channel
    pixels = to_unit_range(ds.images, ds.settings)
    np.testing.assert_allclose(pixels[:, 0], pixels[:, 2], atol=1e-5)


def test_prepared_files_are_byte_identical(tmp_path) -> None:
    real = _real(dataset="digits")
    save_dataset(tmp_path / "a.npz", prepare_real(real))
    save_dataset(tmp_path / "b.npz", prepare_real(real))
    assert file_sha256(tmp_path / "a.npz") == file_sha256(tmp_path / "b.npz")
    loaded = load_dataset(tmp_path / "a.npz")
    assert loaded.settings["params"]["dataset"] == "digits"


# ------------------------------------------------------------------ a user's folder


def _make_folder(root, sizes=((20, 20), (24, 18)), per_class: int = 12) -> None:
    """Three classes of synthetic PNG/JPEG images whose brightness encodes the class."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(["cat", "dog", "eel"]):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            arr = np.clip(rng.normal(60 + 70 * k, 10, size=(h, w, 3)), 0, 255).astype(np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(arr, mode="RGB").save(folder / f"img{i:02d}{suffix}")


def test_folder_loads_every_class_in_sorted_order(tmp_path) -> None:
    _make_folder(tmp_path / "imgs")
    real = _real(dataset="folder", path=str(tmp_path / "imgs"), channels=3, n_train=24, n_test=12)
    ds = prepare_real(real)
    _check_dataset(ds, 24, 12, 16, 3)
    assert ds.settings["class_names"] == ["cat", "dog", "eel"]
    # brightness rises with the class index, so the labels line up with the pixels
    brightness = to_unit_range(ds.images, ds.settings).mean(axis=(1, 2, 3))
    means = [brightness[ds.labels == k].mean() for k in range(3)]
    assert means[0] < means[1] < means[2]
    save_dataset(tmp_path / "a.npz", ds)
    save_dataset(tmp_path / "b.npz", prepare_real(real))
    assert file_sha256(tmp_path / "a.npz") == file_sha256(tmp_path / "b.npz")


def test_folder_hash_changes_when_an_image_changes(tmp_path) -> None:
    _make_folder(tmp_path / "imgs")
    real = _real(dataset="folder", path=str(tmp_path / "imgs"), channels=1, n_train=30, n_test=6)
    before = prepare_real(real).settings["raw_sha256"]
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "dog" / "img01.png")
    assert prepare_real(real).settings["raw_sha256"] != before


def test_folder_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="image folder not found"):
        prepare_real(_real(dataset="folder", path=str(tmp_path / "nowhere")))
    (tmp_path / "flat").mkdir()
    with pytest.raises(ArtifactError, match="no class subfolders"):
        prepare_real(_real(dataset="folder", path=str(tmp_path / "flat")))
    _make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "fox").mkdir()
    with pytest.raises(ArtifactError, match=r"fox: class folder holds no images"):
        prepare_real(_real(dataset="folder", path=str(tmp_path / "imgs")))
    (tmp_path / "imgs" / "fox" / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(ArtifactError, match=r"broken.png: unreadable image"):
        prepare_real(_real(dataset="folder", path=str(tmp_path / "imgs"), n_train=30, n_test=7))
    with pytest.raises(ParamsError, match="has only 37 images"):
        prepare_real(_real(dataset="folder", path=str(tmp_path / "imgs"), n_train=30, n_test=30))


# ------------------------------------------------------------------ a user's .npz


def _write_npz(path, **arrays) -> None:
    np.savez(path, **arrays)


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
def test_npz_layouts_and_labels_are_accepted(tmp_path, layout: str) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 12, 12), dtype=np.uint8)
    if layout == "NHWC":
        images = images[..., None]
    elif layout == "NCHW":
        images = images[:, None]
    labels = np.repeat([7, -1, 42, 5, 3], 10)
    _write_npz(tmp_path / "d.npz", images=images, labels=labels)
    ds = prepare_real(_real(dataset="npz", path=str(tmp_path / "d.npz"), n_train=30, n_test=20))
    _check_dataset(ds, 30, 20, 16, 1)
    # arbitrary labels are renumbered 0..K-1 in sorted order, the originals kept as names
    assert ds.settings["class_names"] == ["-1", "3", "5", "7", "42"]
    assert sorted(set(ds.labels.tolist())) == [0, 1, 2, 3, 4]


def test_npz_errors_name_the_problem(tmp_path) -> None:
    imgs = np.zeros((20, 8, 8), dtype=np.uint8)
    _write_npz(tmp_path / "nolabels.npz", images=imgs)
    with pytest.raises(ArtifactError, match=r"lacks arrays \['labels'\]"):
        prepare_real(_real(dataset="npz", path=str(tmp_path / "nolabels.npz"), n_train=10, n_test=5))
    _write_npz(tmp_path / "badlabels.npz", images=imgs, labels=np.zeros(19))
    with pytest.raises(ArtifactError, match="'labels' must be"):
        prepare_real(_real(dataset="npz", path=str(tmp_path / "badlabels.npz"), n_train=10, n_test=5))
    _write_npz(tmp_path / "range.npz", images=np.full((20, 8, 8), 3.0), labels=np.zeros(20))
    with pytest.raises(ArtifactError, match=r"in \[0, 1\]"):
        prepare_real(_real(dataset="npz", path=str(tmp_path / "range.npz"), n_train=10, n_test=5))
    with pytest.raises(ArtifactError, match="missing"):
        prepare_real(_real(dataset="npz", path=str(tmp_path / "absent.npz"), n_train=10, n_test=5))
