"""The aggregate and figures steps on a fake grid with known numbers (seconds, CPU)."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from figure_checks import stamp_collisions

from mae_hlvm.core import gate, paths, results
from mae_hlvm.core.cells import cell_id
from mae_hlvm.core.config import parse_params
from mae_hlvm.core.io import ArtifactError, save_npz, write_json
from mae_hlvm.review import aggregate, figure_files, figures
from mae_hlvm.workflow.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
RATIOS = [0.25, 0.5, 0.75]
PATCHES = [2, 4]
SEEDS = [0, 1]
PEAK = {2: 0.5, 4: 0.75}  # where the fake root R^2 peaks, per masking unit
N_IMAGES, SIZE = 3, 24


def make_params(ratios=RATIOS, patches=PATCHES, seeds=SEEDS):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.pop("stability", None)  # its set names cells of the shipped grid, which these tests replace
    # Pin what the fake cells assume (3 latent levels, 24-px images) whatever params.yaml says.
    raw["data"].update(generator="quadtree", image_size=SIZE, depth=2, latent_dims=[8, 8, 8], noise_scales=[1.0, 0.7, 0.7])
    raw["model"]["vit_patch"] = 2
    raw["probe"]["pooling"] = "mean"
    raw["grid"] = {"mask_ratios": list(ratios), "mask_units": list(patches), "seeds": list(seeds)}
    raw["probe"]["n_recon_images"] = N_IMAGES
    return parse_params(raw), raw


def root_r2(ratio: float, patch: int, seed: int) -> float:
    return 0.9 - abs(ratio - PEAK[patch]) + 0.001 * seed


def fake_cell(ratio: float, patch: int, seed: int) -> dict:
    """A probe JSON whose every number is a known function of the cell (3 levels)."""
    root = root_r2(ratio, patch, seed)
    lin = [root, 0.5 + 0.1 * ratio, 0.3 + 0.01 * patch]
    return {
        "cell": {"cell_id": cell_id(ratio, patch, seed), "mask_ratio": ratio, "mask_unit": patch, "seed": seed},
        "n_visible": 10,
        "n_hidden": 26,
        "pooling": "mean",
        "n_levels": 3,
        "r2_linear": {"mean": lin, "cls": [v - 0.2 for v in lin]},
        "r2_nonlinear": {"mean": [v + 0.05 for v in lin], "cls": [v - 0.1 for v in lin]},
        "r2_region": {"levels": [None, 0.4 + ratio / 10, 0.2 + patch / 100], "per_node": [[], [0.4] * 4, [0.2] * 16]},
        "probe_acc": {"mean": 0.5 + ratio / 4, "cls": 0.4},
        "shape_bias": {"mean": {"shape_bias": 0.2 + ratio / 4, "shape": 0.1, "texture": 0.3}, "cls": None},
        "r2_spatial": {"pool_level": 2, "levels": [v + 0.1 for v in lin], "innovations": [None, 0.2 + ratio / 10, 0.1 * patch]},
        "recon_mse": 0.01 * patch + ratio,
        "gate": fake_gate(ratio, patch, seed),
        "masked": {"c": [0.9, 0.6, None], "v": [0.8, 0.5, 0.3], "h": [0.0, 0.0, 0.0], "recovery": 0.75,
                   "selectivity": 0.1, "excess": [0.05 + ratio / 10, 0.02, None], "c_excess": 0.035 + ratio / 20,
                   "masks": 4, "token_dims": 16},
        "config_digest": "0123456789abcdef",
    }


FALLBACK_CELL = (0.25, 4, 0)  # its linear predictor does not beat the mean predictor: no gain share


def fake_gate(ratio: float, patch: int, seed: int) -> dict:
    """The probe's gate object: every cell passes except (0.75, 4, 1), which did not learn (gain share 0.4).

    recon_rel 0.9 and linear_rel 0.85 (gain share 2/3), except FALLBACK_CELL: linear_rel 1,
    gain share null, learned by the fallback rule (recon_rel < 1).
    """
    recon = 0.01 * patch + ratio
    mean_pred = recon / 0.9
    fallback = (ratio, patch, seed) == FALLBACK_CELL
    learned = (ratio, patch, seed) != (0.75, 4, 1)
    return {
        "recon_mse": recon, "mean_pred_mse": round(mean_pred, 6),
        "linear_mse": round(mean_pred * (1.0 if fallback else 0.85), 6),
        "recon_rel": 0.9, "linear_rel": 1.0 if fallback else 0.85, "gain_share": None if fallback else (0.666667 if learned else 0.4),
        "learned": learned, "learned_rule": gate.RULE_FALLBACK if fallback else gate.RULE_SHARE,
        "last_quarter_drop": 0.001 if learned else 0.05, "gate_pass": learned,
        "gate_reason": "ok" if learned else "not learned (gain share 0.40 < 0.5 of the linear predictor's)",
        "rules": dict(gate.RULES),
    }


def write_fake_cell(ratio: float, patch: int, seed: int) -> None:
    name = cell_id(ratio, patch, seed)
    write_json(paths.probe_json(name), fake_cell(ratio, patch, seed))
    rng = np.random.default_rng(seed * 100 + patch)
    original = rng.random((N_IMAGES, 3, SIZE, SIZE), dtype=np.float32)
    mask = rng.random((N_IMAGES, SIZE, SIZE)) < ratio  # bool, True = hidden, as the probe writes it
    save_npz(
        paths.recon_npz(name),
        original=original,
        masked=original * (1 - mask[:, None]),
        reconstruction=np.clip(original + 0.1 * ratio, 0, 1),
        mask=mask,
    )
    lines = ["epoch,loss,lr"] + [f"{e},{1.0 / (e + 1) + ratio / 10 + seed / 100:.6f},0.0001" for e in range(4)]
    Path(paths.train_log(name)).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.train_log(name)).write_text("\n".join(lines) + "\n")


def fake_baseline(seed: int) -> dict:
    """A baseline JSON (baseline step) with known numbers: random-init root 0.2 + seed/100, pixels 0.6."""
    enc = [0.2 + seed / 100, 0.3, 0.4]
    return {
        "seed": seed,
        "n_levels": 3,
        "pooling": "mean",
        "random_init": {
            "r2_linear": {"mean": enc, "cls": [v - 0.1 for v in enc]},
            "r2_nonlinear": {"mean": [v + 0.05 for v in enc], "cls": enc},
            "r2_region": {"levels": [None, 0.25, 0.35], "per_node": [[], [0.25] * 4, [0.35] * 16]},
            "probe_acc": {"mean": 0.3 + seed / 100, "cls": 0.2},
            "shape_bias": {"mean": {"shape_bias": 0.5, "shape": 0.2, "texture": 0.2}, "cls": None},
            "r2_spatial": {"pool_level": 2, "levels": enc, "innovations": [None, 0.1, 0.2]},
        },
        "pixels": {"r2_linear": [0.6, 0.7, 0.8], "r2_nonlinear": [0.65, 0.75, 0.85], "probe_acc": 0.5,
                   "shape_bias": {"shape_bias": None, "shape": 0.0, "texture": 0.0},
                   "r2_spatial": {"pool_level": 2, "levels": [0.6, 0.7, 0.8], "innovations": [None, 0.5, 0.6]}},
        "latents": {"r2_spatial": {"pool_level": 2, "levels": [0.7, 0.8, 1.0], "innovations": [None, 0.6, 1.0]}},
        "config_digest": "0123456789abcdef",
    }


@pytest.fixture
def grid(tmp_path, monkeypatch):
    """A complete fake grid in tmp_path (the working directory); returns (params, raw dict)."""
    monkeypatch.chdir(tmp_path)
    params, raw = make_params()
    for ratio in RATIOS:
        for patch in PATCHES:
            for seed in SEEDS:
                write_fake_cell(ratio, patch, seed)
    for seed in SEEDS:
        write_json(paths.baseline_json(seed), fake_baseline(seed))
    for ratio in RATIOS:
        for patch in PATCHES:
            write_json(paths.oracle_json(cell_id(ratio, patch, 0).rsplit("_s", 1)[0]), fake_oracles(ratio, patch))
    return params, raw


def fake_oracles(ratio: float, patch: int) -> dict:
    """An oracle table (oracles step) of one (ratio, unit) cell: two encoders, a flat frontier."""
    enc = {"recovery": 0.9, "c_excess": 0.5, "level": 1.0, "c": [0.9, 0.8, None], "v": [0.1, 0.1, 0.1],
           "h": [0.0, 0.0, 0.0]}
    return {"generator": "quadtree", "mask_ratio": ratio, "mask_unit": patch,
            "frontier": [[[0.0, 0.0], [1.0, 1.0]]] * 2 + [None],
            "encoders": {"c": enc, "pixels": {**enc, "c_excess": 0.0}}}


def agg_args(tmp: str = "") -> argparse.Namespace:
    return argparse.Namespace(
        out_csv=f"results/{tmp}metrics.csv", out_json=f"results/{tmp}metrics.json",
        out_baselines=f"results/{tmp}baselines.csv",
    )


def read_rows(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


# --------------------------------------------------------------------------- aggregate


def test_csv_has_the_columns_in_order_and_the_known_values(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    header, rows = read_rows(paths.METRICS_CSV)
    assert header == [
        "mask_ratio", "mask_unit", "seed",
        "r2_level0", "r2_level1", "r2_level2", "r2nl_level0", "r2nl_level1", "r2nl_level2",
        "probe_acc", "recon_mse", "mean_pred_mse", "linear_mse", "recon_rel", "gain_share", "last_quarter_drop", "gate_pass",
        "n_visible", "n_hidden", "actual_ratio",
        "r2cls_level0", "r2cls_level1", "r2cls_level2", "r2nlcls_level0", "r2nlcls_level1", "r2nlcls_level2",
        "r2region_level1", "r2region_level2", "probe_acc_cls",
        "r2sp_level0", "r2sp_level1", "r2sp_level2", "r2in_level1", "r2in_level2",
        "shape_bias", "cue_shape", "cue_texture", "shape_bias_cls",
        "mr2c_level0", "mr2c_level1", "mr2c_level2", "mr2v_level0", "mr2v_level1", "mr2v_level2",
        "mr2h_level0", "mr2h_level1", "mr2h_level2", "c_recovery", "c_selectivity", "c_excess",
    ]
    order = [(float(r["mask_ratio"]), int(r["mask_unit"]), int(r["seed"])) for r in rows]
    assert order == [(r, p, s) for p in PATCHES for r in RATIOS for s in SEEDS]
    row = rows[order.index((0.75, 4, 1))]
    assert row["r2_level0"] == "%.6f" % root_r2(0.75, 4, 1)
    assert row["r2nl_level2"] == "%.6f" % (0.3 + 0.04 + 0.05)
    assert row["r2cls_level0"] == "%.6f" % (root_r2(0.75, 4, 1) - 0.2)
    assert row["r2region_level1"] == "%.6f" % (0.4 + 0.075)
    assert row["probe_acc"] == "%.6f" % (0.5 + 0.75 / 4)
    assert row["probe_acc_cls"] == "0.400000"
    assert (row["shape_bias"], row["cue_shape"], row["cue_texture"]) == ("%.6f" % (0.2 + 0.75 / 4), "0.100000", "0.300000")
    assert row["shape_bias_cls"] == "nan", "null: no shape bias"
    assert row["recon_mse"] == "%.6f" % (0.04 + 0.75)
    assert (row["n_visible"], row["n_hidden"], row["actual_ratio"]) == ("10", "26", "%.6f" % (26 / 36))
    assert row["r2sp_level0"] == "%.6f" % (root_r2(0.75, 4, 1) + 0.1) and row["r2in_level2"] == "0.400000"
    assert row["recon_rel"] == "0.900000" and row["mean_pred_mse"] == "%.6f" % ((0.04 + 0.75) / 0.9)
    assert row["linear_mse"] == "%.6f" % round((0.04 + 0.75) / 0.9 * 0.85, 6) and row["gain_share"] == "0.400000"
    fallback = rows[order.index(FALLBACK_CELL)]
    assert fallback["gain_share"] == "nan" and fallback["linear_mse"] == fallback["mean_pred_mse"], "no share: NaN"
    assert (row["last_quarter_drop"], row["gate_pass"]) == ("0.050000", "0"), "the drop a number, the gate 0/1"
    assert {(r["last_quarter_drop"], r["gate_pass"]) for i, r in enumerate(rows)
            if i != order.index((0.75, 4, 1))} == {("0.001000", "1")}


def test_load_metrics_round_trips_the_csv(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    frame = aggregate.load_metrics(paths.METRICS_CSV)
    assert len(frame) == len(RATIOS) * len(PATCHES) * len(SEEDS)
    assert str(frame["mask_unit"].dtype) == "int64" and str(frame["seed"].dtype) == "int64"
    assert str(frame["gate_pass"].dtype) == "int64" and frame["gate_pass"].sum() == len(frame) - 1
    assert frame["gain_share"].isna().sum() == 1 and str(frame["gain_share"].dtype) == "float64"
    got = frame.set_index(["mask_ratio", "mask_unit", "seed"]).loc[(0.5, 2, 0), "r2_level0"]
    assert got == pytest.approx(root_r2(0.5, 2, 0), abs=1e-6)


def test_json_summary_names_the_peak_ratio_per_mask_unit(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    metrics = json.loads(Path(paths.METRICS_JSON).read_text())
    assert set(metrics) == {cell_id(r, p, s) for r in RATIOS for p in PATCHES for s in SEEDS} | {"summary", "baselines", "gate"}
    cell = metrics[cell_id(0.25, 2, 1)]
    assert cell["r2_level0"] == round(root_r2(0.25, 2, 1), 6)
    assert set(cell) == {"r2_level0", "r2_level1", "r2_level2", "r2nl_level0", "r2nl_level1", "r2nl_level2",
                         "probe_acc", "recon_mse", "mean_pred_mse", "linear_mse", "recon_rel", "gain_share",
                         "shape_bias", "last_quarter_drop", "gate_pass", "c_excess"}
    assert (cell["recon_rel"], cell["gain_share"], cell["last_quarter_drop"], cell["gate_pass"]) == (0.9, 0.666667, 0.001, 1)
    assert metrics[cell_id(*FALLBACK_CELL)]["gain_share"] is None, "no share: null"
    assert metrics[cell_id(0.75, 4, 1)]["gate_pass"] == 0
    assert metrics["gate"] == {"n_cells": len(RATIOS) * len(PATCHES) * len(SEEDS), "n_pass": len(RATIOS) * len(PATCHES) * len(SEEDS) - 1}
    summary = metrics["summary"]
    assert summary["u2"]["peak_mask_ratio"] == 0.5
    assert summary["u4"]["peak_mask_ratio"] == 0.75
    mean = (root_r2(0.25, 4, 0) + root_r2(0.25, 4, 1)) / 2
    assert summary["u4"]["r2_level0_mean"]["r0.25"] == pytest.approx(mean, abs=1e-6)


def test_outputs_are_byte_identical_across_runs(grid):
    params, _ = grid
    aggregate.run(params, agg_args("a_"))
    aggregate.run(params, agg_args("b_"))
    for name in ("metrics.csv", "metrics.json", "baselines.csv"):
        assert Path(f"results/a_{name}").read_bytes() == Path(f"results/b_{name}").read_bytes()


def test_a_removed_grid_value_leaves_a_stale_file_that_is_not_read(grid, tmp_path):
    _, raw = grid
    # Ratio 0.9 was part of an earlier grid: its file is still there, and is garbage.
    Path(paths.probe_json(cell_id(0.9, 2, 0))).write_text("{not json")
    raw["grid"]["mask_ratios"] = [0.25, 0.5]  # and 0.75 was removed just now
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert cli_main(["aggregate", "--params", "params.yaml"]) == 0
    _, rows = read_rows(paths.METRICS_CSV)
    assert sorted({float(r["mask_ratio"]) for r in rows}) == [0.25, 0.5]
    assert len(rows) == 2 * len(PATCHES) * len(SEEDS)
    summary = json.loads(Path(paths.METRICS_JSON).read_text())["summary"]
    assert summary["u4"]["peak_mask_ratio"] == 0.5  # 0.75 no longer competes


def test_a_missing_cell_file_is_one_error_naming_it(grid):
    params, _ = grid
    missing = paths.probe_json(cell_id(0.5, 4, 1))
    Path(missing).unlink()
    with pytest.raises(ArtifactError, match=missing.replace(".", r"\.")):
        aggregate.run(params, agg_args())
    assert not Path(paths.METRICS_CSV).exists() and not Path(paths.METRICS_JSON).exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("recon_mse"), "lacks key 'recon_mse'"),
        (lambda c: c["r2_linear"].update(mean=[0.1, 0.2]), "r2_linear.mean needs 3 values"),
        (lambda c: c["cell"].update(seed=7), "describes cell"),
        (lambda c: c["probe_acc"].update(mean="high"), "is not a number"),
        (lambda c: c.update(n_levels=4), "n_levels=4"),
        (lambda c: c.pop("gate"), "lacks key 'gate'"),
        (lambda c: c["gate"].pop("recon_rel"), "lacks key 'gate.recon_rel'"),
        (lambda c: c["gate"].update(gate_pass=1), "gate.gate_pass=1 is not true or false"),
        (lambda c: c["gate"].update(learned=False), "gate.gate_pass=True contradicts"),
        (lambda c: c["gate"].update(mean_pred_mse="low"), "gate.mean_pred_mse='low' is not a number"),
        (lambda c: c["gate"].pop("linear_mse"), "lacks key 'gate.linear_mse'"),
        (lambda c: c["gate"].update(gain_share="half"), "gate.gain_share='half' is not a number"),
    ],
)
def test_a_malformed_cell_file_is_one_error_naming_it(grid, edit, message):
    params, _ = grid
    path = paths.probe_json(cell_id(0.25, 2, 0))
    cell = json.loads(Path(path).read_text())
    edit(cell)
    write_json(path, cell)
    with pytest.raises(ArtifactError) as err:
        aggregate.read_cells(params)
    assert path in str(err.value) and message in str(err.value)


def test_a_corrupt_cell_file_is_one_error_naming_it(grid):
    params, _ = grid
    path = paths.probe_json(cell_id(0.75, 2, 1))
    Path(path).write_text('{"cell": {"mask_')
    with pytest.raises(ArtifactError, match=f"{path.replace('.', '[.]')}: corrupt"):
        aggregate.read_cells(params)


def test_nan_r2_is_written_as_nan_in_csv_and_null_in_json(grid):
    params, _ = grid
    path = paths.probe_json(cell_id(0.5, 2, 0))
    cell = json.loads(Path(path).read_text())
    cell["r2_linear"]["mean"][0] = math.nan
    write_json(path, cell)
    aggregate.run(params, agg_args())
    frame = aggregate.load_metrics(paths.METRICS_CSV)
    assert frame["r2_level0"].isna().sum() == 1
    metrics = json.loads(Path(paths.METRICS_JSON).read_text())
    assert metrics[cell_id(0.5, 2, 0)]["r2_level0"] is None
    # The seed-mean at 0.5 is NaN, so p2's peak moves to the best remaining ratio.
    assert metrics["summary"]["u2"]["r2_level0_mean"]["r0.5"] is None
    assert metrics["summary"]["u2"]["peak_mask_ratio"] == 0.25
    figures.run(params, fig_args("figs"))  # a NaN cell is drawn (blank in the heatmap), not a crash
    assert Path("figs/root_r2_heatmap.pdf").stat().st_size > 1000


def test_timings_are_collected_when_present_and_skipped_when_absent(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    assert not Path(paths.TIMINGS_CSV).exists()
    write_json(paths.timing("train", cell_id(0.5, 2, 0)), {"seconds": 12.5, "images_per_s": 320.0, "device": "cpu"})
    write_json(paths.timing("probe", cell_id(0.5, 2, 0)), {"seconds": 3.0})
    write_json(paths.timing("probe", cell_id(0.75, 4, 1)), {"seconds": 4.0})
    aggregate.run(params, agg_args())
    header, rows = read_rows(paths.TIMINGS_CSV)
    assert header == ["cell_id", "mask_ratio", "mask_unit", "seed",
                      "probe_seconds", "train_images_per_s", "train_seconds"]
    assert [r["cell_id"] for r in rows] == [cell_id(0.5, 2, 0), cell_id(0.75, 4, 1)]
    assert float(rows[0]["train_images_per_s"]) == 320.0 and rows[1]["train_seconds"] == "nan"


# --------------------------------------------------------------------------- baselines


def test_baselines_csv_rows_and_json_means(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    header, rows = read_rows(paths.BASELINES_CSV)
    assert header == results.baseline_columns(3)
    assert [(r["baseline"], r["seed"]) for r in rows] == [
        ("random_init", "0"), ("random_init", "1"), ("pixels", "0"), ("pixels", "1"), ("latents", "0"), ("latents", "1"),
    ]
    assert rows[4]["r2_level0"] == "nan" and rows[4]["r2in_level2"] == "1.000000", "the ceiling has spatial probes only"
    assert rows[1]["r2_level0"] == "0.210000" and rows[1]["r2nl_level0"] == "0.260000"
    assert rows[2]["r2region_level1"] == "nan", "raw pixels have no region probe"
    assert rows[0]["shape_bias"] == "0.500000" and rows[2]["shape_bias"] == "nan" and rows[2]["cue_shape"] == "0.000000"
    means = json.loads(Path(paths.METRICS_JSON).read_text())["baselines"]
    assert means["random_init"]["r2_level0"] == pytest.approx(0.205) and means["random_init"]["probe_acc"] == pytest.approx(0.305)
    assert means["pixels"]["r2nl_level2"] == pytest.approx(0.85) and means["pixels"]["r2region_level1"] is None
    assert means["n_seeds"] == 2
    frame = aggregate.load_baselines(paths.BASELINES_CSV)
    assert set(frame["baseline"]) == {"random_init", "pixels", "latents"}
    assert means["latents"]["r2sp_level2"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b.update(seed=5), "describes seed 5"),
        (lambda b: b["pixels"].pop("probe_acc"), "lacks key 'pixels.probe_acc'"),
        (lambda b: b["random_init"]["r2_linear"].update(mean=[0.1]), "random_init.r2_linear.mean needs 3 values"),
        (lambda b: b.update(n_levels=2), "n_levels=2"),
    ],
)
def test_a_malformed_baseline_file_is_one_error_naming_it(grid, edit, message):
    params, _ = grid
    path = paths.baseline_json(1)
    obj = fake_baseline(1)
    edit(obj)
    write_json(path, obj)
    with pytest.raises(ArtifactError) as err:
        aggregate.run(params, agg_args())
    assert path in str(err.value) and message in str(err.value)
    assert not Path(paths.METRICS_JSON).exists() and not Path(paths.BASELINES_CSV).exists()


def test_a_missing_baseline_file_stops_aggregate(grid):
    params, _ = grid
    Path(paths.baseline_json(0)).unlink()
    with pytest.raises(ArtifactError, match=r"results/baselines/s0\.json: missing"):
        aggregate.run(params, agg_args())


# --------------------------------------------------------------------------- figures


def fake_prediction() -> dict:
    """A prediction JSON (predict step) for the fake grid: mean level falls with the ratio."""
    from mae_hlvm.synthetic.predict import cell_key

    return {"generator": "copytree",
            "cells": {cell_key(r, p): {"c_share_per_level": [1 - abs(r - 0.5), 0.5 * (p == 2), 0.0]}
                      for r in RATIOS for p in PATCHES}}


def fig_args(out_dir: str) -> argparse.Namespace:
    write_json("data/prediction.json", fake_prediction())
    return argparse.Namespace(
        metrics=paths.METRICS_CSV, baselines=paths.BASELINES_CSV, prediction="data/prediction.json", out_dir=out_dir
    )


def test_figures_are_png_and_pdf_and_byte_identical_across_runs(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    figures.run(params, fig_args("figs_a"))
    figures.run(params, fig_args("figs_b"))
    expected = sorted(f"{n}.{ext}" for n in figures.FIGURE_NAMES for ext in ("png", "pdf"))
    assert sorted(p.name for p in Path("figs_a").iterdir()) == expected
    for name in expected:
        a, b = Path("figs_a", name).read_bytes(), Path("figs_b", name).read_bytes()
        assert a.startswith(b"\x89PNG" if name.endswith("png") else b"%PDF")
        assert len(a) > 1000
        assert a == b, f"{name} differs between two runs"
        if name.endswith("pdf"):
            assert b"CreationDate" not in a and b"Producer" not in a


def test_the_stamp_names_the_params_digest_and_code_revision(grid, monkeypatch):
    params, _ = grid
    monkeypatch.setattr(figure_files, "code_revision", lambda: "abc123")
    label = figure_files.provenance_label(params)
    assert label.endswith("code abc123")
    other, _ = make_params(seeds=[0])
    assert label != figure_files.provenance_label(other)  # a params change changes the stamp


def test_figures_refuse_a_metrics_table_of_another_grid(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    smaller, _ = make_params(seeds=[0])
    with pytest.raises(ArtifactError, match="do not match params.grid"):
        figures.run(smaller, fig_args("figs"))
    assert not Path("figs").exists()


def test_figures_name_a_missing_reconstruction_file(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    missing = paths.recon_npz(cell_id(0.5, 4, 0))
    Path(missing).unlink()
    with pytest.raises(ArtifactError, match=missing.replace(".", "[.]")):
        figures.run(params, fig_args("figs"))


def test_r2_figure_draws_each_baseline_per_level_in_its_colour(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    frame = aggregate.load_metrics(paths.METRICS_CSV)
    base = aggregate.load_baselines(paths.BASELINES_CSV)
    fig = figures.plot_r2_vs_ratio(frame, "x", base)
    try:
        palette = figures.level_palette(["level 0", "level 1", "level 2"])
        for row, prefix in ((0, "r2"), (1, "r2nl")):
            want = figures.baseline_levels(base, prefix)
            for ax in fig.axes[row * len(PATCHES) : (row + 1) * len(PATCHES)]:
                flat = [ln for ln in ax.get_lines() if len(set(ln.get_ydata())) == 1 and len(ln.get_ydata()) == 2]
                got = {(ln.get_linestyle(), round(float(ln.get_ydata()[0]), 6), tuple(ln.get_color())) for ln in flat}
                expected = {
                    (style, round(want[kind][lvl], 6), tuple(palette[lvl]))
                    for kind, style in (("random_init", "--"), ("pixels", ":"))
                    for lvl in palette
                }
                assert got == expected
        labels = [t.get_text() for t in fig.axes[len(PATCHES) - 1].get_legend().get_texts()]
        assert labels[-2:] == ["random-init encoder", "raw pixels"] and "level 0 (root)" in labels
    finally:
        figures.plt.close(fig)


def test_figures_refuse_baselines_of_other_seeds(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    frame = aggregate.load_baselines(paths.BASELINES_CSV)
    frame[frame["seed"] == 0].to_csv(paths.BASELINES_CSV, index=False)
    with pytest.raises(ArtifactError, match=r"has seeds \[0\], params.grid.seeds is \[0, 1\]"):
        figures.run(params, fig_args("figs"))


def test_load_metrics_names_a_missing_table(tmp_path):
    with pytest.raises(ArtifactError, match="nope.csv: missing"):
        aggregate.load_metrics(tmp_path / "nope.csv")


def test_load_metrics_refuses_a_table_without_the_gate(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    frame = aggregate.load_metrics(paths.METRICS_CSV)
    frame.drop(columns=["gate_pass"]).to_csv(paths.METRICS_CSV, index=False)
    with pytest.raises(ArtifactError, match=r"lacks columns \['gate_pass'\]; rerun the aggregate step"):
        aggregate.load_metrics(paths.METRICS_CSV)


# --------------------------------------------------------------------------- stamp, bands, axes, names

LONG_LABEL = "params 0123456789abcdef | code " + "f" * 40 + "+dirty"


def built_figures(params, label: str, prefix: str = "") -> dict:
    """{figure name: builder} over the tables ``aggregate.run(params, agg_args(prefix))`` wrote."""
    args = agg_args(prefix)
    frame = aggregate.load_metrics(args.out_csv)
    base = aggregate.load_baselines(args.out_baselines)
    builders = figures.figure_builders(params, frame, label, base, fake_prediction())
    assert list(builders) == list(figures.FIGURE_NAMES)
    return builders


@pytest.mark.parametrize("patches", [PATCHES, [2]], ids=["two-units", "one-unit-narrow"])
@pytest.mark.parametrize("label", ["params 0123456789abcdef | code abc123", LONG_LABEL], ids=["short", "long"])
def test_the_stamp_overlaps_no_panel_label_title_or_legend(grid, patches, label):
    params, _ = make_params(patches=patches)
    aggregate.run(params, agg_args("s_"))
    with figures.figure_style():
        for name, build in built_figures(params, label, "s_").items():
            fig = build()
            try:
                assert stamp_collisions(fig) == [], name
                stamp = next(t for t in fig.texts if t.get_gid() == "provenance-stamp")
                assert stamp.get_text().replace("\n", " | ") == label, name
            finally:
                figures.plt.close(fig)


def test_the_overlap_check_sees_an_overlap(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    with figures.figure_style():
        fig = built_figures(params, LONG_LABEL)["loss_curves"]()
    try:
        stamp = next(t for t in fig.texts if t.get_gid() == "provenance-stamp")
        fig.text(*stamp.get_position(), "in the way", ha="right", va="center")
        assert stamp_collisions(fig) == ["text 'in the way'"]
    finally:
        figures.plt.close(fig)


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def test_every_figure_names_the_root_and_the_leaves(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    with figures.figure_style():
        built = {name: build() for name, build in built_figures(params, "x").items()}
    try:
        for name, fig in built.items():
            for text in _texts(fig):  # "level 0" never appears bare
                assert "level 0" not in text.replace("level 0 (root)", ""), (name, text)
        for name in ("r2_vs_ratio", "spatial_r2"):
            legend = [t.get_text() for t in built[name].axes[len(PATCHES) - 1].get_legend().get_texts()]
            assert legend[:3] == ["level 0 (root)", "level 1", "level 2 (leaves)"], name
        region = [t.get_text() for t in built["region_r2"].axes[len(PATCHES) - 1].get_legend().get_texts()]
        assert region == ["level 1", "level 2 (leaves)"]
        assert "level 0 (root)" in built["root_r2_heatmap"].axes[0].get_title()
        labels = [t.get_text() for t in built["theorem_levels"].axes[0].get_legend().get_texts()]
        assert labels[:3] == ["level 0 (root), unit 2", "level 1, unit 2", "level 2 (leaves), unit 2"]
    finally:
        for fig in built.values():
            figures.plt.close(fig)


def test_bands_are_min_max_over_seeds_and_said_so(grid):
    from matplotlib.collections import PolyCollection

    params, _ = grid
    aggregate.run(params, agg_args())
    frame = aggregate.load_metrics(paths.METRICS_CSV)
    with figures.figure_style():
        built = {name: build() for name, build in built_figures(params, "x").items()}
    try:
        # root R^2 at unit 2: seeds differ by 0.001 (root_r2); the band spans exactly min..max
        ax = built["r2_vs_ratio"].axes[0]
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        part = frame[frame.mask_unit == 2].groupby("mask_ratio")["r2_level0"]
        ys = bands[0].get_paths()[0].vertices[:, 1]
        assert min(ys) == pytest.approx(part.min().min()) and max(ys) == pytest.approx(part.max().max())
        for name, fig in built.items():
            said = " ".join(_texts(fig))
            if name != "reconstructions":  # one seed, no spread to show
                assert "min-max over seeds" in said or "min\u2013max over seeds" in said, name
        cells = [t.get_text() for t in built["root_r2_heatmap"].axes[0].texts]
        low, high = root_r2(0.5, 2, 0), root_r2(0.5, 2, 1)
        assert f"{(low + high) / 2:.2f}\n{low:.2f}\u2013{high:.2f}" in cells
    finally:
        for fig in built.values():
            figures.plt.close(fig)


def test_axes_show_the_scale_of_the_effect(grid):
    params, _ = grid
    aggregate.run(params, agg_args())
    with figures.figure_style():
        built = {name: build() for name, build in built_figures(params, "x").items()}
    try:
        for name in ("r2_vs_ratio", "spatial_r2", "region_r2"):
            for ax in built[name].axes:
                low, high = ax.get_ylim()
                assert low <= 0 and 1 <= high < 1.05, (name, ax.get_ylim())
        for ax in built["loss_curves"].axes:
            assert ax.get_ylim()[0] == 0
        heat = built["root_r2_heatmap"].axes[0].collections[0]
        assert (heat.norm.vmin, heat.norm.vmax) == (0.0, 1.0)
        left, right = built["theorem_levels"].axes[:2]
        assert left.get_ylim() == (-0.05, 1.05) and right.get_ylim()[0] <= -0.1 and right.get_ylim()[1] >= 0.1
    finally:
        for fig in built.values():
            figures.plt.close(fig)


def test_r2_limits_extend_below_zero_only_when_needed():
    assert figures.r2_limits([0.2, 0.9, float("nan")]) == (0.0, 1.0)
    assert figures.r2_limits([-0.04, 0.5]) == (-0.1, 1.0)
    assert figures.r2_limits([-7.0, 0.5]) == (-1.0, 1.0)
    assert figures.level_label("level 0", 3) == "level 0 (root)" and figures.level_label("level 3", 3) == "level 3 (leaves)"
    assert figures.level_label("level 2", 3) == "level 2" and figures.level_index("level 3 (leaves)") == 3
