"""Known answers and determinism of the real-track evaluations (Table 1, Figs. 5-8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from figure_checks import stamp_collisions
from helpers import DEFAULT_REAL, real_cell_result

from mae_hlvm.core.config import parse_real
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.real import attention, evaluate, probes, recon_figure, report, shifts, tables, tsne
from mae_hlvm.real.floors import floors_markdown, table1_floors
from mae_hlvm.real.pixels import to_unit_range
from mae_hlvm.real.realdata import prepare_real
from mae_hlvm.real.stamp import stamp_figure

TINY_MODEL = dict(
    embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0
)


@pytest.fixture(scope="module")
def digits():
    """sklearn digits at 16x16: 150 train, 60 test images."""
    real = parse_real({
        **DEFAULT_REAL, "dataset": "digits", "image_size": 16, "fit": "resize", "n_train": 150, "n_test": 60,
        "vit_patch": 2, "mask_units": [2, 4, 8], "sweep_a_unit": 4,
    })
    return prepare_real(real)


def _model(ratio: float, unit: int, seed: int = 0, norm_pix_loss: bool = False) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    return MaskedAutoencoder(
        image_size=16, channels=1, vit_patch=2, mask_unit=unit, mask_ratio=ratio, norm_pix_loss=norm_pix_loss, **TINY_MODEL
    )


@pytest.fixture(scope="module")
def models():
    return [("r0.1 u4", _model(0.1, 4)), ("r0.75 u4", _model(0.75, 4, seed=1)), ("r0.75 u8", _model(0.75, 8, seed=2))]


def _same_bytes(paths_a, paths_b) -> None:
    assert len(paths_a) == len(paths_b) > 0
    for a, b in zip(paths_a, paths_b):
        assert a.read_bytes() == b.read_bytes(), a.name


# ------------------------------------------------------------------ probes


def _clusters(n: int, d: int, n_classes: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d)) * 5
    labels = rng.integers(0, n_classes, size=n)
    return centres[labels] * spread + rng.standard_normal((n, d)), labels


def test_linear_probe_separates_separable_features_and_not_noise() -> None:
    x, y = _clusters(1200, 16, 10, 1.0, seed=0)
    probe = probes.fit_linear_probe(x[:900], y[:900], 10, epochs=20, seed=0)
    assert probes.probe_accuracy(probe, x[900:], y[900:]) > 95
    noise = np.random.default_rng(1).standard_normal((1200, 16))
    probe = probes.fit_linear_probe(noise[:900], y[:900], 10, epochs=20, seed=0)
    assert probes.probe_accuracy(probe, noise[900:], y[900:]) < 20  # chance is 10 %


def test_linear_probe_is_deterministic() -> None:
    x, y = _clusters(300, 8, 3, 0.2, seed=2)
    a = probes.fit_linear_probe(x, y, 3, epochs=3, seed=5)
    b = probes.fit_linear_probe(x, y, 3, epochs=3, seed=5)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_knn_accuracy_known_answers() -> None:
    x, y = _clusters(600, 8, 5, 1.0, seed=3)
    assert probes.knn_accuracy(x[:400], y[:400], x[400:], y[400:], k=20) > 95
    noise = np.random.default_rng(4).standard_normal((600, 8))
    assert probes.knn_accuracy(noise[:400], y[:400], noise[400:], y[400:], k=20) < 35  # chance is 20 %


# ------------------------------------------------------------------ shifted test sets


def test_shifts_change_images_but_keep_shapes(digits) -> None:
    sets = shifts.shifted_test_sets(digits, seed=0)
    assert list(sets) == list(shifts.TEST_SETS)
    clean = sets["clean"]
    np.testing.assert_allclose(clean, digits.split(test=True).images, atol=1e-5)
    for name, imgs in sets.items():
        assert imgs.shape == clean.shape and imgs.dtype == np.float32
        pixels = to_unit_range(imgs, digits.settings)
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        if name != "clean":
            assert np.abs(imgs - clean).mean() > 0.05, name
    np.testing.assert_allclose(
        to_unit_range(sets["inversion"], digits.settings), 1 - to_unit_range(clean, digits.settings), atol=1e-5
    )
    again = shifts.shifted_test_sets(digits, seed=0)
    other = shifts.shifted_test_sets(digits, seed=1)
    for name in shifts.TEST_SETS:
        np.testing.assert_array_equal(sets[name], again[name])
    assert not np.array_equal(sets["noise"], other["noise"])
    assert not np.array_equal(sets["rotation"], other["rotation"])


def test_every_shift_stands_in_for_one_paper_column() -> None:
    assert sorted(shifts.STAND_IN_FOR.values()) == sorted(shifts.PAPER_COLUMNS)
    assert set(shifts.SHIFT_DESCRIPTIONS) == set(shifts.TEST_SETS)


# ------------------------------------------------------------------ Table 1


def test_table1_cell_reports_every_test_set(digits, models) -> None:
    res = evaluate.table1_cell(models[0][1], digits, cell_seed=7, probe_epochs=2, knn_k=5)
    assert (res["mask_ratio"], res["mask_unit"], res["vit_patch"], res["seed"]) == (0.1, 4, 2, 7)
    assert (res["n_train"], res["n_test"]) == (150, 60)
    for key in ("linear_cls", "linear_mean", "knn_cls", "knn_mean"):
        assert list(res[key]) == list(shifts.TEST_SETS)
        assert all(0 <= v <= 100 for v in res[key].values())
    json.dumps(res)  # JSON-ready
    assert res == evaluate.table1_cell(models[0][1], digits, cell_seed=7, probe_epochs=2, knn_k=5)


def _fake_result(ratio: float, unit: int, seed: int, clean: float) -> dict:
    scores = {name: clean - i for i, name in enumerate(shifts.TEST_SETS)}
    return {
        "mask_ratio": ratio, "mask_unit": unit, "vit_patch": 4, "seed": seed,
        "linear_cls": scores, "linear_mean": scores, "knn_cls": scores, "knn_mean": scores,
    }


def test_table1_render_puts_ours_beside_the_paper(tmp_path) -> None:
    # Our clean accuracy ordered like the paper's IN1K over ratios (rho = 1), reversed
    # over units (rho = -1); two seeds each, 1 point apart.
    paper_a = {0.1: 47.45, 0.25: 53.58, 0.5: 60.07, 0.75: 67.41, 0.9: 62.97}
    results = [_fake_result(r, 8, s, v / 2 + s) for r, v in paper_a.items() for s in (0, 1)]
    results += [_fake_result(0.75, u, s, 45 - 1.5 * u + s) for u in (4, 16) for s in (0, 1)]
    table = tables.table1_render(results, tmp_path, sweep_a_unit=8, sweep_b_ratio=0.75)
    assert list(table.sweep) == ["A"] * 5 + ["B"] * 3
    row = table[(table.sweep == "A") & (table.mask_ratio == 0.75)].iloc[0]
    assert row["paper IN1K"] == 67.41 and row["paper IN-Sketch"] == 15.51
    assert row["ours clean"] == pytest.approx(67.41 / 2 + 0.5)
    assert row["ours clean sd"] == pytest.approx(np.std([0, 1], ddof=1))
    # Sweep B matched by unit / ViT patch: 4/4, 8/4, 16/4 -> the paper's 8/8, 16/8, 32/8
    assert list(table[table.sweep == "B"]["paper IN1K"]) == [62.57, 68.96, 73.31]
    rank = json.loads((tmp_path / "table1_rank.json").read_text())["spearman"]
    assert rank["sweep_A"]["ours clean ~ paper IN1K"] == 1.0
    assert rank["sweep_B"]["ours clean ~ paper IN1K"] == -1.0
    csv = pd.read_csv(tmp_path / "table1.csv")
    assert "paper IN1K" in csv.columns and "ours clean" in csv.columns
    md = (tmp_path / "table1.md").read_text()
    assert "67.41" in md and "paper IN-v2" in md and "ours noise (≈IN-v2)" in md and "stand-ins" in md
    assert "rho = 1.00" in md
    tex = (tmp_path / "table1.tex").read_text()
    assert r"\begin{tabular}" in tex and "73.31" in tex and r"$\pm$" in tex


def test_table1_render_is_byte_identical(tmp_path) -> None:
    results = [_fake_result(r, 8, 0, 50 + 10 * r) for r in (0.1, 0.5, 0.9)]
    for d in ("a", "b"):
        tables.table1_render(results, tmp_path / d, sweep_a_unit=8, sweep_b_ratio=0.75)
    names = ("table1.csv", "table1.md", "table1.tex", "table1_rank.json")
    _same_bytes([tmp_path / "a" / n for n in names], [tmp_path / "b" / n for n in names])


# ------------------------------------------------------------------ Fig. 5


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_unmasked_reconstruction_keeps_the_image_shape(digits, norm_pix_loss: bool) -> None:
    model = _model(0.75, 4, norm_pix_loss=norm_pix_loss)
    imgs = torch.from_numpy(digits.images[:5])
    recon = evaluate.reconstruct_unmasked(model, imgs)
    assert recon.shape == imgs.shape
    assert torch.isfinite(recon).all()


def test_reconstruction_metrics_know_a_perfect_decoder(digits) -> None:
    model = _model(0.75, 4)
    # A decoder that returns its input patches exactly: replace it with an identity.
    model.forward_decoder = lambda latent, ids_restore: model.patchify(current[0])
    current = [torch.from_numpy(digits.split(test=True).images[:20])]
    res = evaluate.recon_quality_cell(model, digits, n_images=20, batch_size=20)
    assert res["ssim"] == pytest.approx(1.0) and res["mse"] == 0.0 and res["psnr"] == 100.0
    assert res["fsim"] is None and "FSIM" in res["fsim_note"]


def test_recon_quality_and_its_figure(digits, models, tmp_path) -> None:
    rows = [evaluate.recon_quality_cell(m, digits, n_images=30) for _, m in models]
    for r in rows:
        assert -1 <= r["ssim"] <= 1 and r["mse"] > 0 and r["neg_mse"] == -r["mse"]
    df = pd.DataFrame(rows + [{**rows[0], "seed": 1, "ssim": rows[0]["ssim"] + 0.01}])
    a = recon_figure.plot_recon_quality(df, tmp_path / "a" / "fig5", sweep_a_unit=4, sweep_b_ratio=0.75)
    b = recon_figure.plot_recon_quality(df, tmp_path / "b" / "fig5", sweep_a_unit=4, sweep_b_ratio=0.75)
    assert [p.name for p in a] == ["fig5.png", "fig5.pdf"]
    _same_bytes(a, b)


# ------------------------------------------------------------------ Figs. 6/7 and 8


def test_attention_maps_are_distributions_over_tokens(digits, models) -> None:
    model = models[0][1]
    cls_map, token_map = attention.attention_maps(model, digits.images[:3], attention.centre_token(model))
    assert cls_map.shape == token_map.shape == (3, 8, 8)
    assert (cls_map >= 0).all() and (cls_map.sum(axis=(1, 2)) <= 1 + 1e-5).all()
    assert attention.centre_token(model) == 4 * 8 + 4
    assert 0 <= attention.foreground_mass(model, digits, n_images=10) <= 1


def test_attention_grid_writes_both_figures_deterministically(digits, models, tmp_path) -> None:
    out_a = attention.attention_grid(models, digits, tmp_path / "a", n_images=4)
    attention.attention_grid(models, digits, tmp_path / "b", n_images=4)
    labels = digits.split(test=True).labels[out_a["test_indices"]]
    assert len(set(labels.tolist())) == 4  # one image per class first
    assert set(out_a["cells"]) == {label for label, _ in models}
    names = ["fig6_cls_attention.png", "fig6_cls_attention.pdf", "fig7_token_attention.png", "fig7_token_attention.pdf"]
    _same_bytes([tmp_path / "a" / n for n in names], [tmp_path / "b" / n for n in names])


def test_tsne_figure_is_deterministic(digits, models, tmp_path) -> None:
    out_a = tsne.tsne_figure(models[:2], digits, tmp_path / "a" / "fig8", n_points=50)
    out_b = tsne.tsne_figure(models[:2], digits, tmp_path / "b" / "fig8", n_points=50)
    assert out_a["cells"] == out_b["cells"]
    assert out_a["n_points"] == 50
    _same_bytes([tmp_path / "a" / "fig8.png", tmp_path / "a" / "fig8.pdf"], [tmp_path / "b" / "fig8.png", tmp_path / "b" / "fig8.pdf"])


# ------------------------------------------------------------------ the learning gate


def test_gate_cell_compares_the_mae_with_the_mean_and_linear_predictors_on_its_own_masking(digits, models) -> None:
    from mae_hlvm.core import measures
    from mae_hlvm.core.gate import linear_reference, train_mean_image

    model = models[1][1]  # ratio 0.75, unit 4, untrained
    history = [{"epoch": e, "loss": 1.0, "lr": 0.0} for e in range(4)]
    g = evaluate.gate_cell(model, digits, history, cell_seed=3)
    # the probe step's computation, same masks (the probe's stream for seed 3)
    mse, mean_mse, _ = measures.reconstruct(
        model, digits.split(test=True).images, 256, measures.recon_seed(3), 0, train_mean_image(digits.split(test=False).images)
    )
    assert (g["recon_mse"], g["mean_pred_mse"]) == (round(mse, 6), round(mean_mse, 6))
    # the linear reference at the model's own unit (4) and ratio (0.75), train fitted, test scored
    # expressed on the MAE's masks: its own linear / mean-predictor ratio times the MAE masks' mean error
    linear, own_mean = linear_reference(digits.split(test=False).images, digits.split(test=True).images, 4, 0.75)
    assert g["linear_mse"] == round(linear / own_mean * mean_mse, 6) and g["linear_mse"] < g["mean_pred_mse"], "digits are predictable"
    assert g["linear_rel"] == pytest.approx(linear / own_mean, abs=1e-5)
    assert g["learned_rule"] == "gain_share" and g["gain_share"] < 0.5
    assert not g["learned"] and not g["gate_pass"], "an untrained MAE gets no share of the gain"
    assert "plateau" not in g and g["last_quarter_drop"] is not None
    assert g["gate_reason"].startswith("not learned (gain share ")
    assert evaluate.gate_cell(model, digits, history, cell_seed=3) == g
    json.dumps(g)


def test_evaluate_step_writes_the_gate_of_a_one_epoch_cell(tiny_workdir, caplog) -> None:
    import logging
    from types import SimpleNamespace

    from mae_hlvm.core.config import load_params
    from mae_hlvm.core.train import train_cell

    tiny_workdir(
        60, 40,
        data=dict(image_size=8, depth=1, latent_dims=[4, 4], noise_scales=[1.0, 1.0]),
        model=dict(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8, decoder_num_heads=2),
        train=dict(epochs=1, batch_size=20, device="cpu", threads=1),
        grid=dict(mask_units=[2, 4], mask_ratios=[0.5]),
        real=dict(probe_epochs=2, knn_k=3),
    )
    params = load_params("params.yaml")
    train_cell(params, "data.npz", 0.5, 4, 0, "models/c")
    args = SimpleNamespace(checkpoint="models/c/checkpoint.pt", data="data.npz", sweep="A", out="cell.json")
    with caplog.at_level(logging.INFO, logger="mae_hlvm.real.evaluate"):
        evaluate.run_evaluate(params, args)
    # a long silent step says what it does, for which cell, and how long each part took
    lines = [r.getMessage() for r in caplog.records if r.name == "mae_hlvm.real.evaluate"]
    assert len(lines) == 6 and all(line.startswith("A/r0.5_u4_s0: ") for line in lines), lines
    assert sum(": done in 0m" in line for line in lines) == 3 and "learning gate" in lines[-1], lines
    g = json.loads(Path("cell.json").read_text())["gate"]
    # one epoch: no last-quarter drop to read, and the gate reads learning only
    assert g["last_quarter_drop"] is None and g["gate_pass"] == g["learned"] and "plateau" not in g
    assert g["recon_rel"] == pytest.approx(g["recon_mse"] / g["mean_pred_mse"], abs=1e-5)
    assert g["linear_mse"] is not None and g["linear_rel"] == pytest.approx(g["linear_mse"] / g["mean_pred_mse"], abs=1e-5)
    first = Path("cell.json").read_bytes()
    evaluate.run_evaluate(params, args)
    assert Path("cell.json").read_bytes() == first, "deterministic"


def test_table1_shows_how_many_seeds_pass_the_gate(tmp_path) -> None:
    results = [
        {**_fake_result(r, 8, s, 50 + 10 * r), "gate_pass": not (r == 0.9 and s == 1)} for r in (0.1, 0.5, 0.9) for s in (0, 1)
    ]
    table = tables.table1_render(results, tmp_path, sweep_a_unit=8, sweep_b_ratio=0.75)
    assert table.gate_pass.tolist() == [2, 2, 1]
    assert pd.read_csv(tmp_path / "table1.csv")["gate_pass"].tolist() == [2, 2, 1]
    md = (tmp_path / "table1.md").read_text()
    assert "| seeds | gate |" in md and "| 2 | 1/2 |" in md and "learning gate" in md
    # results without a gate (made before it existed) show a dash, not a made-up count
    tables.table1_render([_fake_result(0.5, 8, 0, 50.0)], tmp_path / "old", sweep_a_unit=8, sweep_b_ratio=0.75)
    assert "| 1 | – |" in (tmp_path / "old" / "table1.md").read_text()


def test_real_gate_line_names_failing_cells_by_sweep() -> None:
    ok = {"gate_pass": True, "gate_reason": "ok"}
    bad = {"gate_pass": False, "gate_reason": "too few epochs to judge"}
    results = [{"sweep": "A", "cell_id": "r0.1_u8_s0", "gate": ok}, {"sweep": "B", "cell_id": "r0.75_u16_s1", "gate": bad}]
    assert report.real_gate_line(results) == (
        "Learning gate, real track: 1 of 2 cells pass; failing: B/r0.75_u16_s1 (too few epochs to judge)."
    )


def test_report_refuses_a_cell_json_without_the_gate(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    from mae_hlvm.core.cells import cell_id, real_sweep_cells
    from mae_hlvm.core.config import load_params
    from mae_hlvm.core.io import ArtifactError, write_json

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    sweep, cells = next(iter(real_sweep_cells(params.real).items()))
    path = tmp_path / sweep / f"{cell_id(*cells[0])}.json"
    before_gate = real_cell_result(sweep, *cells[0])
    del before_gate["gate"]
    write_json(path, before_gate)
    args = SimpleNamespace(cells_dir=tmp_path, out_dir=tmp_path / "out", data="none.npz", models_dir="none")
    with pytest.raises(ArtifactError, match=r"lacks key 'gate'.*; rerun evaluate-real"):
        report.run_report(params, args)
    assert not (tmp_path / "out").exists()


def test_table1_floors_probe_raw_pixels_and_the_untrained_encoder(digits, models) -> None:
    floors = table1_floors(digits, models[0][1], probe_epochs=5, knn_k=5, eval_seed=0)
    assert set(floors) == {"raw pixels", "random-init encoder"}
    for scores in floors.values():
        assert set(scores) == {"linear", "knn"} and set(scores["linear"]) == set(shifts.TEST_SETS)
    # digits are easy from raw pixels: far above chance (10 %) under both probes
    assert floors["raw pixels"]["linear"]["clean"] > 50 and floors["raw pixels"]["knn"]["clean"] > 50
    assert table1_floors(digits, models[0][1], probe_epochs=5, knn_k=5, eval_seed=0) == floors
    md = floors_markdown(floors)
    assert md.count("| raw pixels |") == 2 and "| random-init encoder | knn |" in md


# ------------------------------------------------------------------ figure conventions: stamp, bands, axes

LONG_STAMP = "params 0123456789abcdef | code " + "f" * 40 + "+dirty"


def _recon_frame() -> pd.DataFrame:
    """Fig. 5 rows with known numbers: Sweep A (unit 4) over three ratios, Sweep B (ratio 0.75) over units 2, 4, 8."""
    rows = []
    for ratio, unit in [(0.1, 4), (0.5, 4), (0.75, 4), (0.75, 2), (0.75, 8)]:
        for seed in (0, 1):
            ssim = 0.30 + 0.1 * ratio + 0.02 * seed
            mse = 0.02 + 0.01 * unit / 8 + 0.004 * seed
            rows.append({"mask_ratio": ratio, "mask_unit": unit, "seed": seed, "ssim": ssim,
                         "psnr": -10 * np.log10(mse), "mse": mse, "neg_mse": -mse})
    return pd.DataFrame(rows)


def _real_figures(n_images: int, n_cells: int) -> dict:
    """Every real-track figure drawn from made-up inputs: {name: Figure}."""
    rng = np.random.default_rng(0)
    pixels = rng.random((n_images, 1, 16, 16))
    labels = [f"r0.{i + 1} u4" for i in range(n_cells)]
    maps = [rng.random((n_images, 8, 8)) / 64 for _ in labels]
    fig6, fig7 = attention.attention_figures(labels, pixels, maps, [m[:, ::-1] for m in maps], (8, 8, 2))
    classes = rng.integers(0, 10, size=60)
    panels = [(label, rng.normal(size=(60, 2)), -0.1) for label in labels]
    return {
        "fig5_recon_quality": recon_figure.recon_quality_figure(_recon_frame(), sweep_a_unit=4, sweep_b_ratio=0.75),
        "fig6_cls_attention": fig6,
        "fig7_token_attention": fig7,
        "fig8_tsne": tsne.tsne_plot(panels, classes, [str(k) for k in range(10)], 10, "cls"),
    }


@pytest.mark.parametrize(("n_images", "n_cells"), [(6, 7), (1, 1), (3, 5)], ids=["paper-grid", "narrow", "ragged"])
@pytest.mark.parametrize("label", ["params 0123456789abcdef | code abc123", LONG_STAMP], ids=["short", "long"])
def test_real_figures_keep_the_stamp_off_panels_labels_and_titles(n_images, n_cells, label) -> None:
    from mae_hlvm.workflow.pipeline import REAL_FIGURE_NAMES

    built = _real_figures(n_images, n_cells)
    assert sorted(built) == sorted(REAL_FIGURE_NAMES)
    for name, fig in built.items():
        height = fig.get_size_inches()[1]
        stamp_figure(fig, label)
        assert fig.get_size_inches()[1] > height, "the footer is added below, panels keep their size"
        assert stamp_collisions(fig) == [], name
        stamp = next(t for t in fig.texts if t.get_gid() == "provenance-stamp")
        assert stamp.get_text().replace("\n", " | ") == label


def test_the_overlap_check_sees_an_overlap() -> None:
    fig = _real_figures(2, 2)["fig8_tsne"]
    stamp_figure(fig, LONG_STAMP)
    stamp = next(t for t in fig.texts if t.get_gid() == "provenance-stamp")
    fig.text(*stamp.get_position(), "in the way", ha="right", va="center")
    assert stamp_collisions(fig) == ["text 'in the way'"]


def test_stamp_figure_refuses_what_it_cannot_lay_out() -> None:
    from matplotlib.figure import Figure

    with pytest.raises(ValueError, match="constrained"):
        stamp_figure(Figure(), "x")
    fig = Figure(layout="constrained")
    fig.subplots().plot([0, 1], label="a")
    fig.legend(loc="outside lower center")
    with pytest.raises(ValueError, match="legend in an axes"):
        stamp_figure(fig, "x")


def test_fig5_band_is_the_min_max_over_seeds_on_axes_that_include_zero() -> None:
    from matplotlib.collections import PolyCollection

    df = _recon_frame()
    fig = recon_figure.recon_quality_figure(df, sweep_a_unit=4, sweep_b_ratio=0.75)
    axes = np.asarray(fig.axes).reshape(2, 3)
    sweep_a = df[df.mask_unit == 4]
    for col, (metric, _) in enumerate(recon_figure.RECON_METRICS):
        ax = axes[0, col]
        band = next(c for c in ax.collections if isinstance(c, PolyCollection))
        ys = band.get_paths()[0].vertices[:, 1]
        assert min(ys) == pytest.approx(sweep_a[metric].min()) and max(ys) == pytest.approx(sweep_a[metric].max()), metric
        low, high = ax.get_ylim()
        assert low <= 0 <= high, metric
        assert "widest seed range" in ax.get_title()
    assert axes[0, 0].get_ylim() == (0.0, 1.0), "SSIM on its fixed 0-1 axis"
    assert "band: min-max over seeds" in fig.get_suptitle()
    # the notes give the effect against the seed spread: SSIM means span 0.065 (0.1 -> 0.75), seeds differ by 0.02
    assert "means span 0.065; widest seed range 0.02" in axes[0, 0].get_title()


def test_recon_axis_limits_include_each_metrics_zero() -> None:
    assert recon_figure.recon_axis_limits("ssim", [0.2, 0.4]) == (0.0, 1.0)
    assert recon_figure.recon_axis_limits("ssim", [-0.02, 0.4]) == (-0.1, 1.0)
    assert recon_figure.recon_axis_limits("psnr", [9.1, 12.3]) == (0.0, 15.0)
    assert recon_figure.recon_axis_limits("neg_mse", [-0.21, -0.1]) == (pytest.approx(-0.25), 0.0)


def test_attention_panels_are_coloured_from_zero_to_their_own_maximum() -> None:
    built = _real_figures(2, 2)
    for name in ("fig6_cls_attention", "fig7_token_attention"):
        fig = built[name]
        for ax in fig.axes[2:]:  # the rows under the inputs
            image = ax.get_images()[0]
            assert image.norm.vmin == 0.0 and image.norm.vmax == pytest.approx(float(image.get_array().max()))
        assert "each panel's own maximum" in fig.get_suptitle()


def test_stamped_figures_are_byte_identical(tmp_path) -> None:
    a = recon_figure.plot_recon_quality(_recon_frame(), tmp_path / "a" / "fig5", sweep_a_unit=4, sweep_b_ratio=0.75, stamp=LONG_STAMP)
    b = recon_figure.plot_recon_quality(_recon_frame(), tmp_path / "b" / "fig5", sweep_a_unit=4, sweep_b_ratio=0.75, stamp=LONG_STAMP)
    unstamped = recon_figure.plot_recon_quality(_recon_frame(), tmp_path / "c" / "fig5", sweep_a_unit=4, sweep_b_ratio=0.75)
    assert a[0].read_bytes() != unstamped[0].read_bytes(), "the stamp must reach the figure"
    _same_bytes(a, b)
    assert b"CreationDate" not in a[1].read_bytes() and b"Producer" not in a[1].read_bytes()
