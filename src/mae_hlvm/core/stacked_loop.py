"""K cells of one shape trained as one model: weights stacked along a leading dimension.

The GPU profile's cells are tiny (a step of one cell launches a few hundred small kernels), so
a GPU trains them faster together than one after another (docs/gpu.md). :class:`DeviceLoop`
puts each cell in its own CUDA graph and stream; this puts K cells of the same (ratio, unit),
hence the same tensor shapes, in one: their weights stacked by
``torch.func.stack_module_state``, one ``vmap``-ed forward and backward, one AdamW over the
stacked weights (elementwise, so each cell's update is its own) and one CUDA graph for the
step. Each cell keeps its own seed's data order and masks, drawn as :class:`DeviceLoop` draws
them. Cells of a group share the learning-rate schedule (the same epochs, batch and lr).

Measured only by ``bench/bench_gpu.py --stacked`` so far; the trainer does not use it. On
the CPU it computes each cell's steps to float rounding (batched matrix products),
tests/test_stacked_loop.py. Shapes: K cells, N images, B batch, U masking units.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from mae_hlvm.core.device_loop import DeviceLoop
from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.core.schedule import epoch_seed, lr_at, param_groups


class StackedLoop(DeviceLoop):
    """The steps of K same-shaped cells as one step, with no host round trip per step.

    A :class:`DeviceLoop` whose weights, order, noise and loss sums carry a leading cell
    dimension: it keeps the loop's stream, :meth:`step` and graph capture, and replaces the
    setup, the epoch's draws and the step's body.
    """

    def __init__(
        self,
        models: list[MaskedAutoencoder],
        images: torch.Tensor,
        *,
        seeds: list[int],
        batch_size: int,
        schedule: dict[str, float],
        weight_decay: float,
        betas: tuple[float, float],
        autocast_dtype: torch.dtype | None,
        graph: bool,
    ) -> None:
        shapes = {(m.n_visible, m.units_per_side, m.mask_unit) for m in models}
        if len(shapes) != 1 or len(seeds) != len(models):
            raise ValueError("a stacked loop trains cells of one (ratio, unit), one seed each")
        self.models, self.images, self.seeds, self.batch = models, images, list(seeds), batch_size
        self.device = images.device
        cuda = self.device.type == "cuda"
        self.autocast_dtype, self.bf16 = autocast_dtype, None
        self.base = copy.deepcopy(models[0]).to("meta")  # the functions; the weights are the stacks below
        self.params, self.buffers = stack_module_state(models)  # name -> (K, ...)
        decayed = {id(p) for p in param_groups(models[0], weight_decay)[0]["params"]}  # the one rule, by name
        decay = {n for n, p in models[0].named_parameters() if id(p) in decayed}
        groups = [
            {"params": [p for n, p in self.params.items() if n in decay], "weight_decay": weight_decay},
            {"params": [p for n, p in self.params.items() if n not in decay], "weight_decay": 0.0},
        ]
        self.steps_per_epoch = images.shape[0] // batch_size
        total = int(schedule["total_steps"])
        sched = [lr_at(s, total, int(schedule["warmup_steps"]), schedule["peak_lr"]) for s in range(total)]
        dev = {"device": self.device}
        self.sched = torch.tensor(sched + [0.0], dtype=torch.float32, **dev)  # (S + 1,)
        self.lr = torch.zeros((), dtype=torch.float32, **dev)
        self.optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=betas, fused=cuda, capturable=cuda,
                                           foreach=False if not cuda else None)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        k, units = len(models), models[0].units_per_side**2
        self.order = torch.zeros(k, images.shape[0], dtype=torch.long, **dev)  # (K, N)
        self.noise = torch.zeros(k, self.steps_per_epoch, batch_size, units, **dev)  # (K, steps, B, U)
        self.arange_b = torch.arange(batch_size, **dev)
        self.i_t = torch.zeros(1, dtype=torch.long, **dev)
        self.step_t = torch.zeros(1, dtype=torch.long, **dev)
        self.loss_sum = torch.zeros(k, dtype=torch.float32, **dev)  # (K,)
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self.use_graph, self.graph, self.eager_steps = graph and cuda, None, 0
        self._losses = vmap(self._loss)

    def _loss(self, params: dict, buffers: dict, batch: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One cell's loss: batch (B, C, S, S), noise (B, U) -> ()."""
        loss, _, _ = functional_call(self.base, (params, buffers), (batch,), {"noise": noise})
        return loss

    def begin_epoch(self, epoch: int) -> None:
        """Load every cell's order and masking noise for epoch ``epoch``, from its own seed."""
        n, b, steps, units = self.images.shape[0], self.batch, self.steps_per_epoch, self.noise.shape[-1]
        order = torch.stack([torch.from_numpy(np.random.default_rng(epoch_seed(s, epoch, "order")).permutation(n))
                             for s in self.seeds])
        noise = torch.stack([torch.rand(steps, b, units, generator=torch.Generator().manual_seed(epoch_seed(s, epoch, "mask")))
                             for s in self.seeds])
        pinned = self.stream is not None
        with self._in_stream():
            self.order.copy_(order.pin_memory() if pinned else order, non_blocking=pinned)
            self.noise.copy_(noise.pin_memory() if pinned else noise, non_blocking=pinned)
            self.step_t.fill_(epoch * steps)
            self.i_t.zero_()
            self.loss_sum.zero_()

    def _step(self) -> None:
        k, b = self.order.shape[0], self.batch
        idx = self.order.index_select(1, self.i_t * b + self.arange_b)  # (K, B)
        batch = self.images.index_select(0, idx.reshape(-1)).view(k, b, *self.images.shape[1:])  # (K, B, C, S, S)
        noise = self.noise.index_select(1, self.i_t).squeeze(1)  # (K, B, U)
        self.lr.copy_(self.sched.index_select(0, self.step_t).squeeze(0))
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None, cache_enabled=False):
            losses = self._losses(self.params, self.buffers, batch, noise)  # (K,)
        losses.sum().backward()  # the cells share no weight: each gets its own gradient
        self.optimizer.step()
        self.loss_sum.add_(losses.detach().float())
        self.i_t.add_(1)
        self.step_t.add_(1)

    def end_epoch(self) -> list[float]:
        """Each cell's mean loss over the epoch (one read of the device sums)."""
        with self._in_stream():
            losses = (self.loss_sum / self.steps_per_epoch).tolist()
        if not all(math.isfinite(x) for x in losses):
            raise RuntimeError(f"loss became {losses} in an epoch: lower train.base_lr")
        return losses

    @torch.no_grad()
    def unstack(self) -> list[MaskedAutoencoder]:
        """The K trained models (the stacked weights copied back into ``models``)."""
        for i, model in enumerate(self.models):
            for name, p in model.named_parameters():
                p.copy_(self.params[name][i])
        return self.models
