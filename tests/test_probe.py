"""Known-answer tests of the probes, and the ``probe`` step end to end on a tiny cell."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_PROBE_PARAMS, tiny_probe_dataset

from mae_hlvm.core import measures
from mae_hlvm.core.config import parse_params
from mae_hlvm.core.data import Dataset, save_dataset
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.synthetic import readouts
from mae_hlvm.workflow.cli import main

ALPHAS = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
N_TR, N_TE = 1500, 500


def _latents(seed: int, n: int = N_TR + N_TE, d: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def _split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return x[:N_TR], y[:N_TR], x[N_TR:], y[N_TR:]


# ------------------------------------------------------------------ R^2 known answers


def test_features_equal_to_latents_give_r2_near_one() -> None:
    z = _latents(0)
    # an invertible linear mix, to show the probe does not need the latents' own axes
    x = z @ np.random.default_rng(1).standard_normal((4, 4))
    assert readouts.r2_linear(*_split(x, z), ALPHAS) > 0.99
    assert readouts.r2_nonlinear(*_split(x, z), ALPHAS, n_components=200) > 0.95


def test_noise_features_give_r2_near_zero() -> None:
    z = _latents(0)
    x = np.random.default_rng(2).standard_normal((len(z), 16))
    lin = readouts.r2_linear(*_split(x, z), ALPHAS)
    nonlin = readouts.r2_nonlinear(*_split(x, z), ALPHAS, n_components=200)
    assert -0.05 < lin < 0.05
    assert -0.05 < nonlin < 0.05


def test_invertible_nonlinear_map_is_recovered_by_the_nonlinear_probe_only() -> None:
    z = _latents(0, d=2)
    # a triangular map (inverse: z2 = x2 - x1**2), then a rotation: invertible, far from linear
    x = np.stack([z[:, 0], z[:, 1] + z[:, 0] ** 2], axis=1) @ np.array([[0.8, -0.6], [0.6, 0.8]])
    lin = readouts.r2_linear(*_split(x, z), ALPHAS)
    nonlin = readouts.r2_nonlinear(*_split(x, z), ALPHAS, n_components=200)
    assert nonlin > 0.98
    assert lin < 0.75


def test_r2_ridge_matches_r2_linear_on_standardised_features() -> None:
    z = _latents(3)
    x = z * np.array([100.0, 0.01, 1.0, 5.0]) + 7.0
    s_tr, s_te = readouts.standardise(x[:N_TR], x[N_TR:])
    assert np.allclose(s_tr.mean(axis=0), 0, atol=1e-9) and np.allclose(s_tr.std(axis=0), 1)
    direct = readouts.r2_ridge(s_tr, z[:N_TR], s_te, z[N_TR:], ALPHAS)
    assert direct == pytest.approx(readouts.r2_linear(*_split(x, z), ALPHAS))


def test_one_joint_fit_over_blocks_equals_separate_fits() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N_TR + N_TE, 6))
    blocks = [x[:, :2] @ rng.standard_normal((2, 3)), np.sin(x[:, 2:4]), rng.standard_normal((N_TR + N_TE, 5))]
    blocks = [b + 0.3 * rng.standard_normal(b.shape) for b in blocks]
    joint = readouts.r2_ridge_blocks(x[:N_TR], [b[:N_TR] for b in blocks], x[N_TR:], [b[N_TR:] for b in blocks], ALPHAS)
    separate = [readouts.r2_ridge(x[:N_TR], b[:N_TR], x[N_TR:], b[N_TR:], ALPHAS) for b in blocks]
    assert joint == pytest.approx(separate, abs=1e-9)
    assert joint[0] > 0.6 and joint[2] < 0.05  # the blocks really differ


def test_nonlinear_features_keep_the_standardised_features() -> None:
    x = np.random.default_rng(5).standard_normal((300, 3)) * 4 + 2
    f_tr, f_te = readouts.nonlinear_features(x[:200], x[200:], n_components=50)
    assert f_tr.shape == (200, 53) and f_te.shape == (100, 53)
    s_tr, _ = readouts.standardise(x[:200], x[200:])
    assert np.allclose(f_tr[:, :3], s_tr)


def test_median_gamma_is_the_inverse_of_twice_the_median_squared_distance() -> None:
    x = np.array([[0.0], [1.0], [3.0]])  # squared distances 1, 9, 4 -> median 4
    assert readouts.median_gamma(x) == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="identical"):
        readouts.median_gamma(np.ones((5, 3)))


def test_probes_are_deterministic() -> None:
    z = _latents(6)
    x = np.tanh(z) + 0.1 * np.random.default_rng(7).standard_normal(z.shape)
    runs = [readouts.r2_nonlinear(*_split(x, z), ALPHAS, n_components=100) for _ in range(2)]
    assert runs[0] == runs[1]


# ------------------------------------------------------------------ classes


def test_class_accuracy_separable_and_chance() -> None:
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 4, N_TR + N_TE)
    means = 3.0 * rng.standard_normal((4, 8))
    x = means[labels] + rng.standard_normal((len(labels), 8))
    assert readouts.class_accuracy(*_split(x, labels), ALPHAS, folds=3) > 0.95
    noise = rng.standard_normal((len(labels), 8))
    assert abs(readouts.class_accuracy(*_split(noise, labels), ALPHAS, folds=3) - 0.25) < 0.07


# ------------------------------------------------------------------ regions


def test_region_bounds_include_overlapping_tokens() -> None:
    assert readouts.region_bounds(4, 1) == [(0, 2), (2, 4)]
    assert readouts.region_bounds(12, 2) == [(0, 3), (3, 6), (6, 9), (9, 12)]
    # 3 tokens per side, 2 nodes: the middle token overlaps both halves
    assert readouts.region_bounds(3, 1) == [(0, 2), (1, 3)]
    with pytest.raises(ValueError, match="only 2"):
        readouts.region_bounds(2, 2)


def test_region_features_average_each_square() -> None:
    grid, d = 4, 2
    tokens = np.arange(3 * grid * grid * d, dtype=np.float64).reshape(3, grid * grid, d)
    out = readouts.region_features(tokens, grid, level=1)
    assert out.shape == (3, 2, 2, d)
    squares = tokens.reshape(3, grid, grid, d)
    assert np.allclose(out[:, 1, 0], squares[:, 2:4, 0:2].mean(axis=(1, 2)))
    assert np.allclose(readouts.region_features(tokens, grid, 0)[:, 0, 0], readouts.pooled_features(
        np.concatenate([np.zeros((3, 1, d)), tokens], axis=1))["mean"])


def _tokens_carrying_node_latents(level: int, grid: int, d_tok: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens (N, 1+g*g, D) where every token over node (i, j) is a mix of that node's latent."""
    rng = np.random.default_rng(seed)
    n_side = 2**level
    z = rng.standard_normal((N_TR + N_TE, n_side, n_side, 3))
    mix = rng.standard_normal((3, d_tok))
    per_token = np.repeat(np.repeat(z, grid // n_side, axis=1), grid // n_side, axis=2) @ mix
    per_token = per_token + 0.3 * rng.standard_normal(per_token.shape)
    tokens = np.concatenate(
        [rng.standard_normal((len(z), 1, d_tok)), per_token.reshape(len(z), grid * grid, d_tok)], axis=1
    )
    return tokens, z


def test_region_probe_recovers_a_node_latent_that_global_pooling_hides() -> None:
    grid, level = 8, 2
    tokens, z = _tokens_carrying_node_latents(level, grid, d_tok=8, seed=9)
    regions = readouts.region_features(tokens[:, 1:], grid, level)
    per_node = readouts.region_r2(regions[:N_TR], z[:N_TR], regions[N_TR:], z[N_TR:], ALPHAS)
    assert len(per_node) == 16
    assert min(per_node) > 0.9
    # the global mean dilutes 16 independent nodes into 8 numbers
    pooled = readouts.pooled_features(tokens)["mean"]
    flat = readouts.flatten_latent(z)
    assert readouts.r2_linear(pooled[:N_TR], flat[:N_TR], pooled[N_TR:], flat[N_TR:], ALPHAS) < 0.5


def test_pooled_features_take_cls_and_patch_mean() -> None:
    tokens = np.random.default_rng(10).standard_normal((5, 7, 3))
    out = readouts.pooled_features(tokens)
    assert np.array_equal(out["cls"], tokens[:, 0])
    assert np.allclose(out["mean"], tokens[:, 1:].mean(axis=1))
    with pytest.raises(ValueError):
        readouts.pooled_features(tokens[:, :1])


# ------------------------------------------------------------------ reconstruction


def _tiny_model(norm_pix_loss: bool = False, mask_unit: int = 4) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(
        image_size=8, channels=2, vit_patch=2, mask_unit=mask_unit, mask_ratio=0.5, embed_dim=16, depth=1,
        num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0,
        norm_pix_loss=norm_pix_loss,
    ).eval()


def test_reconstruct_masks_at_the_cell_ratio_and_pastes_visible_pixels() -> None:
    model = _tiny_model()
    images = np.random.default_rng(11).standard_normal((10, 2, 8, 8)).astype(np.float32)
    mean_image = np.random.default_rng(12).standard_normal((2, 8, 8)).astype(np.float32)
    mse, mean_mse, fig = measures.reconstruct(model, images, batch_size=4, seed=3, n_keep=6, mean_image=mean_image)
    assert fig["original"].shape == fig["masked"].shape == fig["reconstruction"].shape == (6, 2, 8, 8)
    assert fig["mask"].shape == (6, 8, 8) and fig["mask"].dtype == bool
    assert np.array_equal(fig["original"], images[:6])
    # 2 of 4 masking units hidden, each a 4x4 block
    assert (fig["mask"].sum(axis=(1, 2)) == 32).all()
    hidden = np.broadcast_to(fig["mask"][:, None], fig["original"].shape)
    assert (fig["masked"][hidden] == 0).all()
    assert np.array_equal(fig["masked"][~hidden], images[:6][~hidden])
    assert np.array_equal(fig["reconstruction"][~hidden], images[:6][~hidden])
    # the MSE is over hidden pixels only: recompute it from the figure arrays of all images
    _, _, every = measures.reconstruct(model, images, batch_size=4, seed=3, n_keep=10, mean_image=mean_image)
    hid = np.broadcast_to(every["mask"][:, None], images.shape)
    manual = ((every["reconstruction"] - images)[hid] ** 2).mean()
    assert mse == pytest.approx(float(manual), rel=1e-5)
    # the mean predictor on exactly the same hidden pixels
    manual_mean = ((np.broadcast_to(mean_image, images.shape) - images)[hid] ** 2).mean()
    assert mean_mse == pytest.approx(float(manual_mean), rel=1e-5)
    # same seed, same masks; another seed, other masks
    assert np.array_equal(measures.reconstruct(model, images, 4, 3, 6, mean_image)[2]["mask"], fig["mask"])
    assert not np.array_equal(measures.reconstruct(model, images, 4, 4, 6, mean_image)[2]["mask"], fig["mask"])
    # no figure arrays asked for, none made; the errors do not depend on n_keep
    assert measures.reconstruct(model, images, 4, 3, 0, mean_image) == (mse, mean_mse, {})


def test_the_mean_predictor_error_is_the_hidden_pixels_variance_when_given_their_mean() -> None:
    # images whose every pixel varies around a per-position mean: the train mean predicts
    # it, and the MSE of that prediction is the pixel variance (1 here)
    model = _tiny_model()
    rng = np.random.default_rng(13)
    centre = rng.standard_normal((2, 8, 8)).astype(np.float32)
    images = (centre + rng.standard_normal((400, 2, 8, 8))).astype(np.float32)
    _, mean_mse, _ = measures.reconstruct(model, images, 64, 5, 0, centre)
    assert mean_mse == pytest.approx(1.0, abs=0.02)


def test_pixel_prediction_undoes_the_normalised_pixel_target() -> None:
    model = _tiny_model(norm_pix_loss=True)
    imgs = torch.randn(3, 2, 8, 8) * 2 + 1
    assert torch.allclose(measures.pixel_prediction(model, imgs, model.target(imgs)), model.patchify(imgs), atol=1e-4)
    plain = _tiny_model(norm_pix_loss=False)
    pred = torch.randn(3, 16, 8)
    assert measures.pixel_prediction(plain, imgs, pred) is pred


# ------------------------------------------------------------------ the step, end to end

@pytest.fixture()
def cell(tmp_path, monkeypatch):
    """A tiny dataset, params file and a one-epoch checkpoint, in a fresh working folder."""
    from mae_hlvm.core.train import train_cell

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PROBE_PARAMS))
    save_dataset(tmp_path / "data.npz", tiny_probe_dataset())
    train_cell(parse_params(copy.deepcopy(TINY_PROBE_PARAMS)), "data.npz", 0.5, 4, 0, "models/c")
    return tmp_path


def _probe_argv(out: str = "out.json", recon: str = "recon.npz", data: str = "data.npz") -> list[str]:
    return ["probe", "--params", "params.yaml", "--data", data, "--checkpoint", "models/c/checkpoint.pt",
            "--out", out, "--recon", recon]


def test_probe_step_end_to_end_schema_and_determinism(cell) -> None:
    assert main(_probe_argv()) == 0
    metrics = json.loads((cell / "out.json").read_text())
    assert set(metrics) == {
        "cell", "n_visible", "n_hidden", "pooling", "n_levels", "r2_linear", "r2_nonlinear", "r2_region",
        "r2_spatial", "probe_acc", "shape_bias", "recon_mse", "gate", "masked", "config_digest",
    }
    # the masked probe: one value per level and category; no oracle table given, so no c_excess
    masked = metrics["masked"]
    assert [len(masked[k]) for k in ("c", "v", "h", "excess")] == [3, 3, 3, 3] and masked["c_excess"] is None
    assert masked["masks"] == 4 and masked["token_dims"] == 16
    assert metrics["shape_bias"] == {"mean": None, "cls": None}  # no cue-conflict set in this dataset
    spatial = metrics["r2_spatial"]
    assert spatial["pool_level"] == 2 and len(spatial["levels"]) == 3
    assert spatial["innovations"][0] is None and all(isinstance(x, float) for x in spatial["innovations"][1:])
    assert metrics["cell"] == {"cell_id": "r0.5_u4_s0", "mask_ratio": 0.5, "mask_unit": 4, "seed": 0}
    # 4 masking units of 2x2 tokens, half hidden
    assert (metrics["n_visible"], metrics["n_hidden"]) == (8, 8)
    assert metrics["pooling"] == "mean" and metrics["n_levels"] == 3
    for key in ("r2_linear", "r2_nonlinear"):
        assert set(metrics[key]) == {"mean", "cls"}
        assert all(len(v) == 3 and all(isinstance(r, float) for r in v) for v in metrics[key].values())
    assert metrics["r2_region"]["levels"][0] is None
    assert [len(v) for v in metrics["r2_region"]["per_node"]] == [0, 4, 16]
    assert metrics["r2_region"]["levels"][1] == pytest.approx(np.mean(metrics["r2_region"]["per_node"][1]), abs=1e-6)
    assert set(metrics["probe_acc"]) == {"mean", "cls"} and 0 <= metrics["probe_acc"]["mean"] <= 1
    assert metrics["recon_mse"] > 0
    assert all(len(repr(r).split(".")[-1]) <= 6 for r in metrics["r2_linear"]["mean"])
    # the learning gate: a one-epoch cell has no last-quarter drop, and did not learn
    g = metrics["gate"]
    assert g["recon_mse"] == metrics["recon_mse"] and g["mean_pred_mse"] > 0
    assert g["recon_rel"] == pytest.approx(g["recon_mse"] / g["mean_pred_mse"], abs=1e-5)
    assert g["last_quarter_drop"] is None and g["gate_pass"] is False and g["gate_reason"].startswith("not learned")
    # the linear reference at the cell's own unit (4) and ratio (0.5), train split fitted, test split scored
    from mae_hlvm.core import gate
    from mae_hlvm.core.gate import linear_reference

    ds = tiny_probe_dataset()
    linear, own_mean = linear_reference(ds.images[:90], ds.images[90:], 4, 0.5)
    # the ratio on the reference's own masks decides; on 90 train images the linear fit is no better
    # than the mean predictor there, so the fallback rule applies
    assert g["linear_rel"] == pytest.approx(linear / own_mean, abs=1e-5)
    assert g["linear_mse"] == pytest.approx(linear / own_mean * g["mean_pred_mse"], abs=1e-5)
    if linear < own_mean:
        assert g["learned_rule"] == "gain_share"
        assert g["gain_share"] == pytest.approx((1 - g["recon_rel"]) / (1 - g["linear_rel"]), abs=1e-4)
    else:
        assert g["learned_rule"] == gate.RULE_FALLBACK and g["gain_share"] is None
    assert "gate_s" in json.loads((cell / "logs/timings/probe/r0.5_u4_s0.json").read_text())

    recon = np.load(cell / "recon.npz")
    assert sorted(recon.files) == ["mask", "masked", "original", "reconstruction"]
    assert recon["original"].shape == (5, 2, 8, 8) and recon["mask"].shape == (5, 8, 8)
    timing = json.loads((cell / "logs/timings/probe/r0.5_u4_s0.json").read_text())
    assert timing["n_train"] == 90 and timing["total_s"] >= 0

    assert main(_probe_argv("again.json", "again.npz")) == 0
    assert (cell / "again.json").read_bytes() == (cell / "out.json").read_bytes()
    assert (cell / "again.npz").read_bytes() == (cell / "recon.npz").read_bytes()


def test_probe_fits_on_the_first_max_train_training_images(cell) -> None:
    """probe.max_train caps the probes' training split (memory and time), first images first."""
    small = copy.deepcopy(TINY_PROBE_PARAMS)
    small["probe"]["max_train"] = 40
    (cell / "small.yaml").write_text(yaml.safe_dump(small))
    argv = _probe_argv("small.json", "small.npz")
    argv[argv.index("params.yaml")] = "small.yaml"
    assert main(argv) == 0
    assert json.loads((cell / "logs/timings/probe/r0.5_u4_s0.json").read_text())["n_train"] == 40
    assert main(_probe_argv()) == 0
    assert json.loads((cell / "logs/timings/probe/r0.5_u4_s0.json").read_text())["n_train"] == 90
    # fewer images, other fits: the cap reaches the scores
    assert json.loads((cell / "small.json").read_text())["r2_linear"] != json.loads((cell / "out.json").read_text())["r2_linear"]
    ds = tiny_probe_dataset()
    head = ds.split(test=False, limit=40)
    assert np.array_equal(head.images, ds.split(test=False).images[:40]) and len(head.latents[-1]) == 40


def test_probe_step_rejects_data_without_latents(cell, capsys) -> None:
    save_dataset(cell / "real.npz", tiny_probe_dataset(with_latents=False))
    assert main(_probe_argv(data="real.npz")) == 2
    assert "has no latents_level* arrays" in capsys.readouterr().err
    assert not (cell / "out.json").exists() and not (cell / "recon.npz").exists()


def test_probe_step_rejects_a_dataset_the_checkpoint_was_not_trained_on(cell, capsys) -> None:
    other = tiny_probe_dataset()
    save_dataset(cell / "other.npz", Dataset(other.images * 2, other.labels, other.is_test, other.latents, {}))
    assert main(_probe_argv(data="other.npz")) == 2
    assert "not the dataset this checkpoint was trained on" in capsys.readouterr().err
    assert not (cell / "out.json").exists()


def test_a_cell_that_did_not_learn_makes_every_claim_not_testable(cell) -> None:
    """The one-epoch cell end to end: probe -> metrics row -> claims, which refuse to judge it."""
    from mae_hlvm.core.results import read_cell
    from mae_hlvm.review.aggregate import metrics_frame
    from mae_hlvm.review.claims import NOT_LEARNED, Evidence, judge_all

    assert main(_probe_argv()) == 0
    raw = read_cell(json.loads((cell / "out.json").read_text()), (0.5, 4, 0), 3, "out.json")
    frame = metrics_frame([raw], 3, "mean")
    assert frame.loc[0, "gate_pass"] == 0 and np.isnan(frame.loc[0, "last_quarter_drop"])
    assert frame.loc[0, "linear_mse"] == raw.gate.linear_mse
    share = raw.gate.gain_share
    assert (np.isnan(frame.loc[0, "gain_share"]) and share is None) or frame.loc[0, "gain_share"] == share
    claims = judge_all(Evidence(frame, None, None, 3), None, 2, 0)
    assert claims and all(c["verdict"] == NOT_LEARNED for c in claims)
    assert all(c["note"].startswith("1 of 1 cells did not learn") for c in claims)


def test_innovations_remove_what_the_parent_predicts() -> None:
    """A child that is an exact linear function of its parent has zero innovation; noise stays."""
    from mae_hlvm.synthetic.readouts import innovations

    rng = np.random.default_rng(0)
    root = rng.standard_normal((200, 1, 1, 3))
    exact = np.einsum("nijp,cp->nijc", root.repeat(2, axis=1).repeat(2, axis=2), rng.standard_normal((2, 3))) + 1.0
    noise = rng.standard_normal((200, 2, 2, 2))
    in_tr, in_te = innovations([root[:150], exact[:150]], [root[150:], exact[150:]])
    assert in_tr[0] is None and in_te[0] is None
    assert np.abs(in_tr[1]).max() < 1e-9 and np.abs(in_te[1]).max() < 1e-9
    in_tr, _ = innovations([root[:150], exact[:150] + noise[:150]], [root[150:], exact[150:] + noise[150:]])
    assert 0.8 < in_tr[1].var() / noise.var() <= 1.0  # least squares removes only what the parent explains


# ------------------------------------------------------------------ shape bias (the paper's Table 2)


def test_shape_bias_by_hand() -> None:
    from mae_hlvm.core.data import CueConflict

    cue = CueConflict(np.zeros((4, 1, 2, 2), np.float32), np.array([0, 1, 1, 0]), np.array([1, 0, 2, 1]))
    # decisions: shape, shape, texture, neither
    got = measures.shape_bias(np.array([0, 1, 2, 2]), cue)
    assert got == {"shape_bias": pytest.approx(2 / 3), "shape": 0.5, "texture": 0.25}
    assert measures.shape_bias(np.array([2, 2, 0, 2]), cue)["shape_bias"] is None


@pytest.mark.parametrize(("cue_feature", "expected"), [("shape", 1.0), ("texture", 0.0)])
def test_shape_bias_follows_the_cue_the_features_carry(cue_feature: str, expected: float) -> None:
    """Features that encode only one cue's class: the probe, fitted on ordinary images
    (both cues agree), follows that cue on every cue-conflict image."""
    from mae_hlvm.core.data import CueConflict

    rng = np.random.default_rng(0)
    k, n, m = 4, 200, 100
    labels_tr, labels_te = np.arange(n) % k, np.arange(m) % k
    shape = np.arange(m) % k
    texture = (shape + 1 + np.arange(m) % (k - 1)) % k
    cue = CueConflict(np.zeros((m, 1, 2, 2), np.float32), shape, texture)

    def feats(labels: np.ndarray) -> np.ndarray:
        return np.eye(k)[labels] + 0.1 * rng.standard_normal((len(labels), k))

    scores = readouts.class_scores(
        feats(labels_tr), labels_tr, feats(labels_te), labels_te, [0.1, 1.0], 3,
        feats(shape if cue_feature == "shape" else texture), cue,
    )
    assert scores["probe_acc"] == 1.0
    assert scores["shape_bias"]["shape_bias"] == expected
    assert scores["shape_bias"]["shape"] + scores["shape_bias"]["texture"] == 1.0
