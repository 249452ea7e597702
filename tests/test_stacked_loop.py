"""K cells trained as one stacked model (StackedLoop), checked on the CPU against each cell
trained alone in the device loop: the same order, masks and schedule per seed, so the same
losses and weights up to float rounding of batched matrix products."""

from __future__ import annotations

import pytest
import torch

from mae_hlvm.core.device_loop import DeviceLoop
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.core.stacked_loop import StackedLoop

KW = dict(image_size=16, channels=3, vit_patch=2, mask_unit=4, mask_ratio=0.5, embed_dim=32, depth=2, num_heads=4,
          decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=4, mlp_ratio=2.0, norm_pix_loss=False)
TRAIN = dict(batch_size=32, schedule={"peak_lr": 1e-3, "total_steps": 2 * 8, "warmup_steps": 4}, weight_decay=0.05,
             betas=(0.9, 0.95), autocast_dtype=None, graph=True)  # no graph on the CPU


def _model(seed: int, **kw) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    return MaskedAutoencoder(**{**KW, **kw})


# torch has no vmap rule for the CPU flash-attention kernel: it loops over the cells (a speed
# warning; the results are what this test checks)
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_cells_stacked_train_as_each_alone():
    torch.set_num_threads(1)
    images = torch.randn(256, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    seeds = [0, 1, 2]
    alone = [DeviceLoop(_model(s), images, seed=s, **TRAIN) for s in seeds]
    stacked = StackedLoop([_model(s) for s in seeds], images, seeds=seeds, **TRAIN)
    for epoch in range(2):
        want = []
        for loop in alone:
            loop.begin_epoch(epoch)
            for _ in range(loop.steps_per_epoch):
                loop.step()
            want.append(loop.end_epoch())
        stacked.begin_epoch(epoch)
        for _ in range(stacked.steps_per_epoch):
            stacked.step()
        got = stacked.end_epoch()
        assert got == pytest.approx(want, rel=1e-5)
        assert len(set(got)) == 3  # three cells, three different trainings
    for trained, loop in zip(stacked.unstack(), alone):
        for (name, a), b in zip(trained.named_parameters(), loop.model.parameters()):
            if name.endswith("qkv.bias"):
                # the key bias's true gradient is 0 (it shifts a query's logits over every key alike,
                # which softmax ignores), so Adam scales rounding noise up to steps of the learning
                # rate's size: it alone drifts (up to 1.8e-4 here, every other weight at most 6e-8)
                d = a.shape[0] // 3
                q_v = torch.cat([torch.arange(d), torch.arange(2 * d, 3 * d)])
                torch.testing.assert_close(a[q_v], b[q_v], rtol=1e-5, atol=1e-6, msg=name)
                torch.testing.assert_close(a[d:2 * d], b[d:2 * d], rtol=0, atol=1e-3, msg=name)
            else:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_only_cells_of_one_shape_stack():
    images = torch.randn(64, 3, 16, 16)
    with pytest.raises(ValueError, match="one \\(ratio, unit\\)"):
        StackedLoop([_model(0), _model(1, mask_ratio=0.25)], images, seeds=[0, 1], **TRAIN)
