"""The real track's cue-conflict set (the paper's Table 2): prepare-real reads a folder laid
out as Geirhos et al.'s stimuli, evaluate-real measures the shape bias of the Table 1 probe,
report-real writes Table 2. Fast: tiny images from scikit-learn's digits, no Snakemake."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DEFAULT_REAL, assert_one_line_error, prepare_real_step, write_real_params
from PIL import Image
from sklearn.datasets import load_digits

from mae_hlvm.core import paths
from mae_hlvm.core.config import ParamsError, load_params, parse_real
from mae_hlvm.core.data import CueConflict, Dataset, load_dataset
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.real import evaluate, shifts, tables
from mae_hlvm.real.floors import table1_floors
from mae_hlvm.real.folders import decode_image
from mae_hlvm.real.pixels import fit_square, normalise
from mae_hlvm.real.realdata import prepare_real
from mae_hlvm.workflow import glue, pipeline

# digits at 16x16 (ViT patch 2): the smallest real params the schema accepts for digits
DIGITS = {
    "dataset": "digits", "image_size": 16, "fit": "resize", "channels": 1, "vit_patch": 2, "mask_units": [2, 4, 8],
    "sweep_a_unit": 4, "n_train": 60, "n_test": 20, "split_seed": 0,
}


def _digit_png(path: Path, index: int) -> np.ndarray:
    """Save sklearn digit ``index`` as an 8-bit grey PNG at ``path``; returns its pixels (8, 8) uint8."""
    pixels = np.round(load_digits().images[index] * 255 / 16).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def _cue_folder(root: Path, names: dict[str, int]) -> Path:
    """root/<shape>/<file name> for ``names`` = {"<shape>/<file name>": digit index}."""
    for rel, index in names.items():
        _digit_png(root / rel, index)
    return root


GOOD = {"0/01-12.png": 0, "0/02-31.png": 10, "1/11-01.png": 1, "2/21-22.png": 2, "2/23-91.png": 12}


# ----------------------------------------------------------------------------- prepare-real


def test_prepare_real_stores_the_cue_conflict_set(tmp_path, monkeypatch, capsys):
    folder = _cue_folder(tmp_path / "cue", GOOD)
    rc, out, text = prepare_real_step(tmp_path, monkeypatch, capsys, {**DIGITS, "cue_conflict": str(folder)})
    assert rc == 0, text
    ds = load_dataset(out)
    # sorted shape folders, sorted files; 2/21-22.png (shape = texture) is skipped, and the log says so
    assert ds.cue.shape_labels.tolist() == [0, 0, 1, 2]
    assert ds.cue.texture_labels.tolist() == [1, 3, 0, 9]
    assert "4 cue-conflict images; skipped 1 whose shape and texture class are the same" in text
    assert ds.cue.images.shape == (4, 1, 16, 16) and ds.cue.images.dtype == np.float32
    # the training images' loading, fit and normalisation (train-split statistics)
    real = load_params(tmp_path / "params.yaml").real
    path = folder / "2" / "23-91.png"
    fitted = fit_square(decode_image(path, path.read_bytes(), 1), real, path)
    expected = normalise(np.clip(fitted, 0, 1).transpose(2, 0, 1)[None], ds.settings)[0]
    np.testing.assert_allclose(ds.cue.images[3], expected, atol=1e-6)
    assert ds.settings["cue_conflict"]["n_images"] == 4 and ds.settings["params"]["cue_conflict"] == str(folder)


def test_without_a_cue_folder_the_dataset_is_as_before(tmp_path):
    ds = prepare_real(parse_real({**DEFAULT_REAL, **DIGITS}))
    assert ds.cue is None and "cue_conflict" not in ds.settings and "cue_conflict" not in ds.settings["params"]


def test_the_cue_folder_is_a_dep_of_prepare_real_in_both_tools(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = _cue_folder(tmp_path / "cue", GOOD)
    params = load_params(Path(pipeline.__file__).resolve().parents[3] / "params.yaml")
    params = params.model_copy(update={"real": params.real.model_copy(update={"cue_conflict": str(folder)})})
    assert os.path.normpath(str(folder)) in pipeline.dvc_input_deps("prepare_real", params)
    assert "real.cue_conflict" in pipeline.stage_param_keys("prepare_real", params)
    listing = paths.folder_listing_file("cue_conflict")
    assert listing in pipeline.smk_inputs("prepare_real", params)
    assert glue.write_folder_listing(params) is True and Path(listing).exists()
    assert glue.write_folder_listing(params) is False
    _digit_png(folder / "1" / "11-02.png", 5)  # a new image reruns prepare_real
    assert glue.write_folder_listing(params) is True


# ----------------------------------------------------------------------------- shape bias


def _model() -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(image_size=16, channels=1, vit_patch=2, mask_unit=4, mask_ratio=0.75, embed_dim=16, depth=1,
                             num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0, norm_pix_loss=False)


@pytest.fixture(scope="module")
def copies():
    """digits whose cue-conflict images are the test images: shape = their class, texture = the next class."""
    ds = prepare_real(parse_real({**DEFAULT_REAL, **DIGITS, "n_train": 150, "n_test": 60}))
    test = ds.split(test=True)
    cue = CueConflict(test.images.copy(), test.labels.copy(), (test.labels + 1) % 10)
    return Dataset(ds.images, ds.labels, ds.is_test, settings=ds.settings, cue=cue)


def test_shape_bias_of_copies_of_the_test_images_follows_the_probes_accuracy(copies):
    res = evaluate.table1_cell(_model(), copies, probe_epochs=5, knn_k=5)
    bias = res["shape_bias"]
    # the probe decides on each copy as on its test image: its shape share is its clean accuracy
    assert bias["shape"] == pytest.approx(res["linear_cls"]["clean"] / 100, abs=1e-4)
    assert bias["shape_bias"] == pytest.approx(bias["shape"] / (bias["shape"] + bias["texture"]), abs=1e-3)
    no_cue = Dataset(copies.images, copies.labels, copies.is_test, settings=copies.settings)
    assert evaluate.table1_cell(_model(), no_cue, probe_epochs=5, knn_k=5)["shape_bias"] is None
    floors = table1_floors(copies, _model(), probe_epochs=5, knn_k=5, eval_seed=0)
    # raw pixels classify digits well, so their decisions follow the shape
    assert floors["raw pixels"]["shape_bias"]["shape_bias"] > 0.9
    assert floors["raw pixels"]["shape_bias"]["shape"] == pytest.approx(floors["raw pixels"]["linear"]["clean"] / 100, abs=1e-4)


def _cell(ratio: float, seed: int, bias: float | None, unit: int = 8) -> dict:
    scores = dict.fromkeys(shifts.TEST_SETS, 50.0)
    return {"mask_ratio": ratio, "mask_unit": unit, "vit_patch": 4, "seed": seed, "sweep": "A", "linear_cls": scores,
            "linear_mean": scores, "knn_cls": scores, "shape_bias": None if bias is None else {"shape_bias": bias}}


def test_table2_is_mean_and_sd_over_seeds_beside_the_paper():
    cells = [_cell(0.1, 0, 0.2), _cell(0.1, 1, 0.4), _cell(0.75, 0, 0.5), _cell(0.75, 1, 0.7),
             _cell(0.75, 0, 0.9, unit=16)]  # not Sweep A: left out
    frame = tables.shape_bias_frame(cells, sweep_a_unit=8, sweep_b_ratio=0.75)
    assert frame["mean"].tolist() == pytest.approx([0.3, 0.6]) and frame["n_seeds"].tolist() == [2, 2]
    floors = {"raw pixels": {"shape_bias": {"shape_bias": 0.123}}, "random-init encoder": {"linear": {}}}
    md = tables.shape_bias_markdown(frame, floors, 8)
    assert "| ratio 0.1 | ratio 0.75 |" in md
    assert f"| ours (unit 8, 2 seed(s)) | 0.300 ± {math.sqrt(0.02):.3f} | 0.600 ± {math.sqrt(0.02):.3f} |" in md
    assert "| raw pixels (any ratio) | 0.123 | 0.123 |" in md and "random-init encoder" not in md
    assert "| paper, ImageNet ViT-B (Table 2) | 0.135 | 0.256 |" in md
    # no cue-conflict set: no section, so table1.md keeps its bytes
    empty = tables.shape_bias_frame([_cell(0.1, 0, None)], sweep_a_unit=8, sweep_b_ratio=0.75)
    assert tables.shape_bias_markdown(empty, floors, 8) == ""


# ----------------------------------------------------------------------------- bad input


def _a_file(t: Path) -> Path:
    (t / "a.png").write_bytes(b"x")
    return t / "a.png"


def _only_hidden(t: Path) -> Path:
    (t / "empty").mkdir()
    (t / "empty" / ".DS_Store").write_bytes(b"x")
    return t / "empty"


@pytest.mark.parametrize("make, reason", [
    (lambda t: t / "nowhere", "folder not found"),
    (_a_file, "is a file, not a folder"),
    (_only_hidden, r"the folder is empty \(hidden entries aside\)"),
])
def test_a_cue_folder_that_is_not_there_is_refused_with_the_params(tmp_path, make, reason):
    params, _ = write_real_params(tmp_path, {**DIGITS, "cue_conflict": str(make(tmp_path))})
    with pytest.raises(ParamsError, match=rf"^{params}: real\.cue_conflict='[^']+': {reason}: give a folder laid out as "):
        load_params(params)


def _corrupt(t: Path) -> Path:
    (t / "0").mkdir(parents=True)
    (t / "0" / "01-12.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return t / "0" / "01-12.png"


BAD = {
    "unparsable": ({"0/cat.png": 0}, "0/cat.png", "does not read as <shape class><digits>-<texture class><digits>"),
    "unknown texture": ({"0/01-x1.png": 0}, "0/01-x1.png", "texture part 'x1' names no class of the training data"),
    "unknown shape folder": ({"dog/dog1-11.png": 0}, "dog/dog1-11.png", "shape part 'dog1' names no class"),
    "wrong folder": ({"0/11-21.png": 1}, "0/11-21.png", "its name says shape class '1' but it lies in folder '0'"),
    "only same-class": ({"0/01-02.png": 0}, ".", "every cue-conflict image has the same shape and texture class"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_cue_file_is_one_line_and_leaves_no_output(tmp_path, monkeypatch, capsys, case):
    names, named, reason = BAD[case]
    folder = _cue_folder(tmp_path / "cue", names)
    rc, out, text = prepare_real_step(tmp_path, monkeypatch, capsys, {**DIGITS, "cue_conflict": str(folder)})
    assert_one_line_error(rc, out, text, os.path.normpath(folder / named), re.escape(reason))


def test_a_corrupt_cue_image_is_one_line_and_leaves_no_output(tmp_path, monkeypatch, capsys):
    path = _corrupt(tmp_path / "cue")
    rc, out, text = prepare_real_step(tmp_path, monkeypatch, capsys, {**DIGITS, "cue_conflict": str(tmp_path / "cue")})
    assert_one_line_error(rc, out, text, path, "unreadable image")
