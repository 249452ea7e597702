"""The CUDA training loop (DeviceLoop), checked on the CPU where it must match the reference loop.

The CUDA path keeps everything a step reads on the device and reads its loss once per
epoch; run without a graph on the CPU it must compute the reference loop's steps: the same
order, the same masks (a whole epoch's noise in one draw equals the per-step draws) and
the same losses up to float32 rounding of the learning rate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mae_hlvm.core.config import ParamsError, load_params
from mae_hlvm.core.device_loop import Bf16Weights, DeviceLoop
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.core.schedule import param_groups
from mae_hlvm.core.train import _Progress, resolve_device, train_cell, train_cells_together, train_epoch

KW = dict(image_size=16, channels=3, vit_patch=2, mask_unit=4, mask_ratio=0.5, embed_dim=32, depth=2, num_heads=4,
          decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=4, mlp_ratio=2.0, norm_pix_loss=False)


def test_epoch_noise_in_one_draw_equals_the_per_step_draws():
    g = torch.Generator().manual_seed(11)
    steps = [torch.rand(32, 16, generator=g) for _ in range(9)]
    g = torch.Generator().manual_seed(11)
    assert torch.equal(torch.stack(steps), torch.rand(9, 32, 16, generator=g))


def test_device_loop_matches_the_reference_loop_on_the_cpu():
    torch.set_num_threads(1)
    images = torch.randn(256, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    schedule = {"peak_lr": 1e-3, "total_steps": 3 * 8, "warmup_steps": 4}
    torch.manual_seed(0)
    reference = MaskedAutoencoder(**KW)
    torch.manual_seed(0)
    candidate = MaskedAutoencoder(**KW)
    assert all(torch.equal(a, b) for a, b in zip(reference.parameters(), candidate.parameters()))
    optimizer = torch.optim.AdamW(param_groups(reference, 0.05), lr=0.0, betas=(0.9, 0.95))
    loop = DeviceLoop(candidate, images, seed=3, batch_size=32, schedule=schedule, weight_decay=0.05,
                      betas=(0.9, 0.95), autocast_dtype=None, graph=True)  # no graph on the CPU
    for epoch in range(3):
        want = train_epoch(reference, optimizer, images, epoch=epoch, seed=3, batch_size=32, schedule=schedule,
                           device=torch.device("cpu"), autocast_dtype=None, progress=_Progress(10**9))
        loop.begin_epoch(epoch)
        for _ in range(loop.steps_per_epoch):
            loop.step()
        got = loop.end_epoch()
        # the loss sums in float32 on the device, the learning rate is held in float32
        assert got == pytest.approx(want, rel=1e-6 if epoch == 0 else 1e-5)
    assert int(loop.step_t) == 24 and loop.graph is None


def test_device_loop_refuses_a_diverged_epoch():
    images = torch.randn(64, 3, 16, 16)
    torch.manual_seed(0)
    loop = DeviceLoop(MaskedAutoencoder(**KW), images, seed=0, batch_size=32,
                      schedule={"peak_lr": float("nan"), "total_steps": 2, "warmup_steps": 1},
                      weight_decay=0.0, betas=(0.9, 0.95), autocast_dtype=None, graph=False)
    loop.begin_epoch(0)
    loop.step()
    loop.step()
    with pytest.raises(RuntimeError, match="lower train.base_lr"):
        loop.end_epoch()


def test_cells_trained_together_on_the_cpu_are_the_cells_trained_alone(tiny_training):
    tiny_training(train=dict(epochs=2))
    params = load_params("params.yaml")
    train_cell(params, "data.npz", 0.5, 4, 0, "alone_a")
    train_cell(params, "data.npz", 0.25, 2, 1, "alone_b")
    timings = train_cells_together(params, "data.npz", [(0.5, 4, 0, "group_a"), (0.25, 2, 1, "group_b")])
    assert len(timings) == 2 and all(t["device"] == "cpu" for t in timings)
    for alone, group in (("alone_a", "group_a"), ("alone_b", "group_b")):
        for name in ("checkpoint.pt", "train_log.csv"):
            assert Path(alone, name).read_bytes() == Path(group, name).read_bytes()


def test_train_seed_step_writes_every_cell_of_the_seed_as_train_would(tiny_training):
    from mae_hlvm.workflow import cli

    tiny_training(train=dict(epochs=2, job="seed"), grid=dict(seeds=[0, 1]))
    assert cli.main(["train-seed", "--data", "data.npz", "--seed", "1", "--models-dir", "grouped"]) == 0
    made = sorted(p.parent.name for p in Path("grouped").glob("*/checkpoint.pt"))
    assert made == ["r0.25_u2_s1", "r0.25_u4_s1", "r0.5_u2_s1", "r0.5_u4_s1"]
    assert cli.main(["train", "--data", "data.npz", "--mask-ratio", "0.5", "--mask-unit", "4", "--seed", "1",
                     "--out-dir", "alone"]) == 0
    for name in ("checkpoint.pt", "train_log.csv"):
        assert Path("alone", name).read_bytes() == Path("grouped/r0.5_u4_s1", name).read_bytes()


def test_bf16_weights_copy_computes_in_bf16_and_the_fp32_master_learns():
    torch.manual_seed(0)
    master = MaskedAutoencoder(**KW)
    bf16 = Bf16Weights(master)
    work = list(bf16.model.parameters())
    assert all(q.dtype == torch.bfloat16 and torch.equal(q, p.detach().to(torch.bfloat16))
               for p, q in zip(master.parameters(), work))
    optimizer = torch.optim.AdamW(param_groups(master, 0.05), lr=1e-2, betas=(0.9, 0.95))
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    loss, pred, mask = bf16.model(images, generator=torch.Generator().manual_seed(2))
    # the loss and its normalisation stay fp32 while the activations are bf16
    assert loss.dtype == torch.float32 and mask.dtype == torch.float32 and pred.dtype == torch.bfloat16
    loss.backward()
    grads = [q.grad.clone() for q in work]
    bf16.grads_to_master()
    assert all(p.grad.dtype == torch.float32 and torch.equal(p.grad, g.float()) for p, g in zip(master.parameters(), grads))
    assert all(q.grad is None for q in work)
    before = [p.detach().clone() for p in master.parameters()]
    optimizer.step()
    bf16.weights_from_master()
    assert sum(not torch.equal(a, p) for a, p in zip(before, master.parameters())) > len(before) // 2
    assert all(torch.equal(q, p.detach().to(torch.bfloat16)) for p, q in zip(master.parameters(), work))


def test_device_loop_with_bf16_weights_trains_like_fp32_on_the_cpu():
    torch.set_num_threads(1)
    images = torch.randn(256, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    schedule = {"peak_lr": 1e-3, "total_steps": 3 * 8, "warmup_steps": 4}
    losses = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        loop = DeviceLoop(MaskedAutoencoder(**KW), images, seed=3, batch_size=32, schedule=schedule, weight_decay=0.05,
                          betas=(0.9, 0.95), autocast_dtype=None, graph=False, bf16_weights=bf16)
        losses[bf16] = []
        for epoch in range(3):
            loop.begin_epoch(epoch)
            for _ in range(loop.steps_per_epoch):
                loop.step()
            losses[bf16].append(loop.end_epoch())
        assert all(p.dtype == torch.float32 for p in loop.model.parameters())  # the checkpoint's weights
    assert losses[True][-1] < losses[True][0]
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)


def test_bf16_weights_refuses_the_cpu_in_one_line():
    params = load_params(str(Path(__file__).resolve().parents[1] / "params.yaml"))
    train = params.train.model_copy(update={"precision": "bf16-weights", "device": "cpu"})
    with pytest.raises(ParamsError, match="train.precision='bf16-weights' trains on a CUDA GPU only"):
        resolve_device(params.model_copy(update={"train": train}))


def test_attention_heads_are_the_views_the_reshape_unbind_gave():
    torch.manual_seed(0)
    attn = MaskedAutoencoder(**KW).blocks[0].attn
    x = torch.randn(2, 5, 32)
    n, t, d = x.shape
    old = attn.qkv(x).reshape(n, t, 3, attn.num_heads, d // attn.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    for a, b in zip(attn._heads(x), old):
        assert torch.equal(a, b) and a.stride() == b.stride()
