"""The hierarchical synthetic image generator (step ``generate``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import tiny_data, tiny_raw

from mae_hlvm.core.config import ParamsError, load_params, parse_params
from mae_hlvm.core.data import Dataset, load_dataset
from mae_hlvm.synthetic.diagnostics import cue_accuracies, leaf_innovations, level_diagnostics
from mae_hlvm.synthetic.generate import GENERATOR_VERSION, draw_functions, generate_dataset, run, sample

REPO = Path(__file__).resolve().parents[1]

def test_shapes_dtypes_and_settings() -> None:
    data = tiny_data()
    ds = generate_dataset(data)
    n = data.n_train + data.n_test
    assert ds.images.shape == (n, 3, 8, 8) and ds.images.dtype == np.float32
    assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
    assert set(np.unique(ds.labels)) == {0, 1, 2}
    assert ds.is_test.dtype == bool
    assert not ds.is_test[: data.n_train].any() and ds.is_test[data.n_train :].all()
    assert [z.shape for z in ds.latents] == [(n, 1, 1, 4), (n, 2, 2, 4), (n, 4, 4, 6)]
    assert all(z.dtype == np.float32 for z in ds.latents)
    assert np.isfinite(ds.images).all()
    # Gains normalise every level to unit variance and pixels to roughly [-1, 1].
    for z in ds.latents:
        assert 0.7 < z.std() < 1.3
    assert 0.3 < ds.images.std() < 0.5
    assert ds.settings["generator_version"] == GENERATOR_VERSION
    assert ds.settings["latent_dims"] == [4, 4, 6] and ds.settings["seed"] == 3


def test_run_is_byte_identical(tmp_path: Path) -> None:
    params = parse_params(tiny_raw())
    outs = []
    for name in ("a", "b"):
        args = argparse.Namespace(out=str(tmp_path / name / "d.npz"), figure=str(tmp_path / name / "f.png"))
        run(params, args)
        outs.append((Path(args.out).read_bytes(), Path(args.figure).read_bytes()))
    assert outs[0] == outs[1]
    assert outs[0][1].startswith(b"\x89PNG\r\n\x1a\n")
    assert not list(tmp_path.glob("*/.*.tmp"))  # no temporary leftovers
    loaded = load_dataset(tmp_path / "a" / "d.npz")
    fresh = generate_dataset(params.data)
    np.testing.assert_array_equal(loaded.images, fresh.images)
    assert len(loaded.latents) == 3 and loaded.settings == fresh.settings


def test_seed_changes_the_data() -> None:
    a, b = generate_dataset(tiny_data(seed=0)), generate_dataset(tiny_data(seed=1))
    assert not np.array_equal(a.images, b.images)


def test_n_train_changes_neither_functions_nor_test_set() -> None:
    small, large = tiny_data(n_train=50), tiny_data(n_train=90)
    f_small, f_large = draw_functions(small), draw_functions(large)
    np.testing.assert_array_equal(f_small.class_means, f_large.class_means)
    for a, b in zip(f_small.levels, f_large.levels):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.lift, b.lift)
        assert a.gain == b.gain
    np.testing.assert_array_equal(f_small.renderer.basis, f_large.renderer.basis)
    assert f_small.renderer.gain == f_large.renderer.gain
    ds_small, ds_large = generate_dataset(small).split(test=True), generate_dataset(large).split(test=True)
    np.testing.assert_array_equal(ds_small.images, ds_large.images)
    np.testing.assert_array_equal(ds_small.labels, ds_large.labels)
    for za, zb in zip(ds_small.latents, ds_large.latents):
        np.testing.assert_array_equal(za, zb)


@pytest.mark.parametrize("dims", [[4, 4, 6], [6, 4, 3]])
def test_parent_is_recovered_from_noise_free_children(dims: list[int]) -> None:
    """Exact inversion, also when a child is narrower than its parent (the four jointly determine it)."""
    data = tiny_data(latent_dims=dims)
    fns = draw_functions(data)
    ds = generate_dataset(data)
    for level in range(1, data.depth + 1):
        parent = ds.latents[level - 1].astype(np.float64)
        child = fns.child_mean(level, parent)
        np.testing.assert_allclose(fns.invert_child(level, child), parent, atol=1e-9)
        # Siblings get different maps of the same parent (position matters).
        assert not np.allclose(child[:, 0, 0], child[:, 0, 1])


def test_leaf_renders_only_its_own_block() -> None:
    data = tiny_data()
    fns = draw_functions(data)
    leaves = generate_dataset(data).latents[-1][:5].astype(np.float64)
    moved = leaves.copy()
    moved[:, 1, 2] += 1.0  # leaf (1, 2) owns rows 2..3, columns 4..5 of the 8x8 image
    diff = np.abs(fns.render(moved) - fns.render(leaves)).max(axis=(0, 1))
    inside = np.zeros((8, 8), bool)
    inside[2:4, 4:6] = True
    assert (diff[inside] > 1e-6).all()
    assert (diff[~inside] == 0).all()


def test_leaf_to_pixels_is_injective() -> None:
    """The noise-free block determines the leaf: least squares through B, then tanh^-1."""
    data = tiny_data()
    fns = draw_functions(data)
    r = fns.renderer
    leaves = generate_dataset(data).latents[-1][:20].astype(np.float64)
    block = fns.render(leaves)[:, :, :2, :2]  # leaf (0, 0): (N, C, b, b)
    flat = block.transpose(0, 2, 3, 1).reshape(len(block), -1) / r.gain
    hidden = flat @ r.basis  # orthonormal columns: exact inverse on the range
    recovered, *_ = np.linalg.lstsq(r.hidden_weight, (np.arctanh(hidden) - r.hidden_bias).T, rcond=None)
    np.testing.assert_allclose(recovered.T, leaves[:, 0, 0], atol=1e-8)


def test_classes_separable_from_root_not_from_one_pixel() -> None:
    from sklearn.linear_model import LogisticRegression

    ds = generate_dataset(tiny_data(class_separation=5.0, n_train=400, n_test=200))
    tr, te = ~ds.is_test, ds.is_test
    root = ds.latents[0].reshape(len(ds.labels), -1)
    root_acc = LogisticRegression(max_iter=1000).fit(root[tr], ds.labels[tr]).score(root[te], ds.labels[te])
    pixels = ds.images.reshape(len(ds.labels), -1)
    pixel_accs = [
        LogisticRegression(max_iter=1000).fit(pixels[tr, k : k + 1], ds.labels[tr]).score(
            pixels[te, k : k + 1], ds.labels[te]
        )
        for k in range(0, pixels.shape[1], 7)
    ]
    assert root_acc > 0.9
    assert max(pixel_accs) < root_acc - 0.2


def test_diagnostics_track_the_noise_scales() -> None:
    quiet = level_diagnostics(generate_dataset(tiny_data(noise_scales=[1.0, 0.1, 0.1], n_train=300)))
    noisy = level_diagnostics(generate_dataset(tiny_data(noise_scales=[1.0, 1.5, 1.5], n_train=300)))
    assert set(quiet) == {"parent_r2", "pixel_r2", "class_acc_root", "class_acc_pixels", "class_chance"}
    assert set(quiet["pixel_r2"]) == {"0", "1", "2"} and set(quiet["parent_r2"]) == {"1", "2"}
    for level in ("1", "2"):
        assert quiet["parent_r2"][level] > 0.9
        assert noisy["parent_r2"][level] < quiet["parent_r2"][level] - 0.3
    # With more noise per level, the root is harder to read off the pixels.
    assert noisy["pixel_r2"]["0"] < quiet["pixel_r2"]["0"]
    assert quiet["class_acc_root"] > quiet["class_chance"]


def test_leaf_too_large_for_its_block_is_one_clear_error() -> None:
    # depth 2 on 8x8 leaves 2x2x3 = 12 pixel values per leaf; 13 dimensions cannot fit.
    with pytest.raises(ParamsError, match=r"latent_dims\[2\]=13"):
        generate_dataset(tiny_data(latent_dims=[4, 4, 13]))


def test_cli_generate(tmp_path: Path) -> None:
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(tiny_raw()))
    out, fig = tmp_path / "data" / "syn.npz", tmp_path / "fig" / "ex.png"
    cmd = [sys.executable, "-m", "mae_hlvm", "generate", "--params", str(params_path), "--out", str(out)]
    done = subprocess.run([*cmd, "--figure", str(fig)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ds = load_dataset(out)
    assert ds.images.shape == (180, 3, 8, 8) and fig.stat().st_size > 0
    assert "generate done" in done.stderr

    params_path.write_text(yaml.safe_dump(tiny_raw(latent_dims=[4, 4, 13])))
    bad = tmp_path / "bad.npz"
    done = subprocess.run([*cmd[:-1], str(bad)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert "latent_dims[2]=13" in done.stderr and "Traceback" not in done.stderr
    assert not bad.exists()


# ------------------------------------------------------------------ the texture cue (Table 2)


def test_texture_shifts_only_the_leaves_and_makes_a_cue_conflict_set() -> None:
    plain = generate_dataset(tiny_data())
    textured = generate_dataset(tiny_data(texture_separation=0.8))
    assert plain.cue is None
    # the class and every level above the leaves are drawn exactly as without the cue
    assert np.array_equal(plain.labels, textured.labels)
    for lv in range(len(plain.latents) - 1):
        assert np.array_equal(plain.latents[lv], textured.latents[lv])
    assert not np.array_equal(plain.latents[-1], textured.latents[-1])
    cue = textured.cue
    n_test = int(textured.is_test.sum())
    assert cue.images.shape == (n_test, *textured.images.shape[1:]) and cue.images.dtype == np.float32
    assert (cue.shape_labels != cue.texture_labels).all()
    assert set(np.unique(cue.texture_labels)) == set(range(3))


def test_cue_conflict_images_follow_their_texture_in_the_leaves_and_their_shape_in_the_root() -> None:
    data = tiny_data(texture_separation=3.0, class_separation=5.0, n_train=600, n_test=300)
    ds = generate_dataset(data)
    fns = draw_functions(data)
    # the leaves' mean exogenous noise points at the texture class's vector, the root at the shape class's mean
    rng = np.random.default_rng(0)
    _, shape, latents, texture = sample(fns, data, 200, rng, cue_conflict=True)
    cue_ds = Dataset(np.zeros((200, 1, 1, 1)), shape, np.zeros(200, bool), [z.astype(np.float32) for z in latents])
    noise = leaf_innovations(cue_ds, fns).mean(axis=(1, 2))  # (200, d_leaf)
    nearest_texture = (noise @ fns.texture_means.T).argmax(axis=1)
    assert (nearest_texture == texture).mean() > 0.9
    root = latents[0][:, 0, 0] / fns.root_gain
    assert ((root @ fns.class_means.T).argmax(axis=1) == shape).mean() > 0.9
    assert ds.cue is not None and (texture != shape).all()


def test_the_default_texture_separation_balances_the_two_cues() -> None:
    """The quadtree profile's texture_separation is the 0.05-grid value whose texture cue is as
    informative as the root (docs/generator.md): its neighbours are further off."""
    data = load_params(REPO / "profiles" / "quadtree" / "params.yaml").data
    assert data.generator == "quadtree"
    t = data.texture_separation

    def gap(value: float) -> float:
        acc = cue_accuracies(data.model_copy(update={"texture_separation": value}))
        return abs(acc["texture"] - acc["shape"])

    assert gap(t) < min(gap(t - 0.05), gap(t + 0.05))
