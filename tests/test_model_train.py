"""The MAE model and its trainer: shapes, masking by units, loss, determinism, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mae_hlvm.core.config import load_params
from mae_hlvm.core.io import ArtifactError
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.core.schedule import lr_at
from mae_hlvm.core.train import load_checkpoint, resume_state_path, train_cell


def tiny_model(mask_unit: int = 4, mask_ratio: float = 0.75, norm_pix_loss: bool = False) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(
        image_size=8, channels=2, vit_patch=2, mask_unit=mask_unit, mask_ratio=mask_ratio, embed_dim=16,
        depth=1, num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0,
        norm_pix_loss=norm_pix_loss,
    )


def test_patchify_roundtrip_and_layout():
    m = tiny_model()
    imgs = torch.randn(3, 2, 8, 8)
    tokens = m.patchify(imgs)
    assert tokens.shape == (3, 16, 2 * 2 * 2)
    assert torch.equal(m.unpatchify(tokens), imgs)
    # token 1 is the patch at rows 0-1, columns 2-3
    assert torch.equal(tokens[0, 1].reshape(2, 2, 2).permute(2, 0, 1), imgs[0, :, 0:2, 2:4])


def test_masking_hides_whole_units_with_exact_counts():
    m = tiny_model(mask_unit=4, mask_ratio=0.5)  # 4 units of 2x2 tokens; keep int(4*0.5)=2
    x = torch.randn(5, 16, 16)
    visible, mask, ids_restore = m.random_masking(x, torch.Generator().manual_seed(1))
    assert visible.shape == (5, 8, 16) and m.n_visible == 8 and m.n_hidden == 8
    assert torch.all(mask.sum(1) == 8)
    grid = mask.reshape(5, 4, 4)
    for u in range(2):
        for v in range(2):
            block = grid[:, 2 * u : 2 * u + 2, 2 * v : 2 * v + 2].reshape(5, 4)
            assert torch.all(block == block[:, :1]), "a masking unit was split"
    # visible tokens are exactly the unmasked ones, restorable to raster order
    kept = torch.gather(x, 1, torch.argsort(ids_restore, 1)[:, :8, None].expand(-1, -1, 16))
    assert torch.equal(kept, visible)
    shuffled = torch.gather(x, 1, torch.argsort(ids_restore, 1)[..., None].expand(-1, -1, 16))
    assert torch.equal(torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, 16)), x)


def test_masks_differ_per_sample_and_follow_generator():
    m = tiny_model(mask_unit=2, mask_ratio=0.75)
    x = torch.randn(4, 16, 16)
    _, a, _ = m.random_masking(x, torch.Generator().manual_seed(3))
    _, b, _ = m.random_masking(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_loss_counts_hidden_patches_only():
    m = tiny_model(mask_unit=2, mask_ratio=0.5)
    imgs = torch.randn(2, 2, 8, 8)
    target = m.patchify(imgs)
    mask = torch.zeros(2, 16)
    mask[:, :8] = 1
    pred = target.clone()
    pred[:, 8:] += 100.0  # errors on visible patches must not count
    assert m.forward_loss(imgs, pred, mask).item() == pytest.approx(0.0, abs=1e-6)
    pred[:, :8] += 1.0
    assert m.forward_loss(imgs, pred, mask).item() == pytest.approx(1.0, rel=1e-5)


def test_norm_pix_target_is_per_patch_standardised():
    m = tiny_model(norm_pix_loss=True)
    t = m.target(torch.randn(2, 2, 8, 8) * 5 + 3)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(t.var(-1), torch.ones(2, 16), atol=1e-3)


def test_forward_shapes_and_unmasked_features():
    m = tiny_model()
    loss, pred, mask = m(torch.randn(3, 2, 8, 8))
    assert loss.ndim == 0 and pred.shape == (3, 16, 8) and mask.shape == (3, 16)
    assert m.encode(torch.randn(3, 2, 8, 8)).shape == (3, 17, 16)
    attn = m.last_attention(torch.randn(3, 2, 8, 8))
    assert attn.shape == (3, 2, 17, 17)
    assert torch.allclose(attn.sum(-1), torch.ones(3, 2, 17), atol=1e-5)


@pytest.mark.parametrize("ratio, unit", [(0.9, 8), (0.1, 8)])
def test_cell_without_visible_or_hidden_units_is_refused(ratio, unit):
    with pytest.raises(ValueError, match="each needs at least one"):
        tiny_model(mask_unit=unit, mask_ratio=ratio)


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 0.01


@pytest.fixture
def tiny_run(tiny_training):
    """A tiny params file and random dataset in a temporary working directory."""
    tiny_training()
    return load_params("params.yaml")


def test_training_is_byte_identical_and_loss_decreases(tiny_run):
    train_cell(tiny_run, "data.npz", 0.5, 4, 0, "a")
    train_cell(tiny_run, "data.npz", 0.5, 4, 0, "b")
    for name in ("checkpoint.pt", "train_log.csv"):
        assert Path("a", name).read_bytes() == Path("b", name).read_bytes()
    train_cell(tiny_run, "data.npz", 0.5, 4, 1, "c")
    assert Path("a/checkpoint.pt").read_bytes() != Path("c/checkpoint.pt").read_bytes()
    model, meta = load_checkpoint("a/checkpoint.pt")
    losses = [h["loss"] for h in meta["history"]]
    assert losses[-1] < losses[0]
    assert meta["n_visible"] == model.n_visible == 8 and meta["n_hidden"] == 8
    assert meta["config"]["train"]["epochs"] == 3 and "torch" in meta["provenance"]["versions"]
    assert meta["trained_on"] == {"device": "cpu", "precision": "fp32"}  # what train.device/precision auto resolved to
    assert not resume_state_path("a").exists()


def test_interrupted_run_resumes_to_identical_bytes(tiny_run, monkeypatch):
    import mae_hlvm.core.train as train_mod

    train_cell(tiny_run, "data.npz", 0.25, 2, 0, "full")
    real_epoch = train_mod.train_epoch

    def dies_in_third_epoch(*args, **kwargs):
        if kwargs["epoch"] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", dies_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_cell(tiny_run, "data.npz", 0.25, 2, 0, "resumed")
    assert not Path("resumed/checkpoint.pt").exists(), "an interrupted run left a finished-looking output"
    assert resume_state_path("resumed").exists()
    monkeypatch.setattr(train_mod, "train_epoch", real_epoch)
    train_cell(tiny_run, "data.npz", 0.25, 2, 0, "resumed")
    assert Path("resumed/checkpoint.pt").read_bytes() == Path("full/checkpoint.pt").read_bytes()
    assert Path("resumed/train_log.csv").read_bytes() == Path("full/train_log.csv").read_bytes()


def test_corrupted_checkpoint_is_named(tiny_run):
    train_cell(tiny_run, "data.npz", 0.5, 2, 0, "a")
    blob = bytearray(Path("a/checkpoint.pt").read_bytes())
    Path("trunc.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ArtifactError, match="trunc.pt: corrupt or truncated"):
        load_checkpoint("trunc.pt")
    # flip bytes inside the tensor payload: the zip still opens, the hash must catch it
    data = torch.load("a/checkpoint.pt", weights_only=True)  # noqa: S614 - our own file
    data["model"]["patch_embed.weight"][0, 0] += 1.0
    torch.save(data, "flipped.pt")
    with pytest.raises(ArtifactError, match="flipped.pt: weights do not match"):
        load_checkpoint("flipped.pt")


def test_a_checkpoint_from_before_the_mask_unit_rename_is_named(tiny_run):
    train_cell(tiny_run, "data.npz", 0.5, 2, 0, "a")
    data = torch.load("a/checkpoint.pt", weights_only=True)  # noqa: S614 - our own file
    meta = json.loads(data["meta_json"])
    meta["cell"]["patch_size"] = meta["cell"].pop("mask_unit")
    data["meta_json"] = json.dumps(meta)
    torch.save(data, "old.pt")
    with pytest.raises(ArtifactError, match=r"old\.pt: made before the masking unit was renamed .*; retrain the cell"):
        load_checkpoint("old.pt")


def test_cli_reports_missing_data_in_one_line(tiny_run):
    proc = subprocess.run(
        [sys.executable, "-m", "mae_hlvm", "train", "--data", "nope.npz", "--mask-ratio", "0.5",
         "--mask-unit", "2", "--seed", "0", "--out-dir", "x"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("error: nope.npz: missing (run the step that makes it first)")
    assert not Path("x").exists()
