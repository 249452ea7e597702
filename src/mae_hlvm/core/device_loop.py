"""Training on a GPU: the device loop (data, order, masks and schedule on the device, one CUDA
graph and stream per cell) and the bf16 copy of the weights it may train.

On the CPU the trainer keeps :func:`mae_hlvm.core.train.train_epoch`, whose bytes are the
recorded ones; the loop computes the same steps (tests/test_device_loop.py).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math

import numpy as np
import torch

from mae_hlvm.core.model import MaskedAutoencoder
from mae_hlvm.core.schedule import epoch_seed, lr_at, param_groups

log = logging.getLogger("mae_hlvm.core.device_loop")


class Bf16Weights:
    """A bf16 copy of ``master`` that runs forward and backward; the optimizer keeps ``master``'s fp32 weights.

    Mixed precision without autocast. Autocast keeps every activation it does not cast in
    fp32: the residual stream and LayerNorm run in fp32, and each linear layer first casts
    its input to bf16 (13 % of the eager ViT-B/16 step went to such copies,
    bench/results/gpu_h200_paper_2026-11-27.md). Here the copy's weights and activations are
    bf16, and only the loss target and the loss are fp32. Each step:
    ``loss = w.model(...)``, ``loss.backward()``, :meth:`grads_to_master`, the optimizer's
    step on ``master``, :meth:`weights_from_master`. The master gradients are allocated once
    and overwritten, never set to None, so a CUDA graph can capture the whole step.
    """

    def __init__(self, master: torch.nn.Module) -> None:
        self.master = master
        self.model = copy.deepcopy(master).to(torch.bfloat16)
        self._master = list(master.parameters())
        self._work = list(self.model.parameters())
        for p in self._master:
            p.grad = torch.zeros_like(p)

    @torch.no_grad()
    def grads_to_master(self) -> None:
        """Copy the bf16 gradients into the fp32 ``.grad`` of the master weights; clear the copy's."""
        torch._foreach_copy_([p.grad for p in self._master], [p.grad for p in self._work])
        for p in self._work:
            p.grad = None

    @torch.no_grad()
    def weights_from_master(self) -> None:
        """Round the updated fp32 master weights into the bf16 copy."""
        torch._foreach_copy_(self._work, self._master)


class DeviceLoop:
    """One cell's training steps with no host round trip per step: the CUDA path.

    Everything a step reads lives on the device: the training images, the epoch's order and
    masking noise (drawn from the same seeded streams as :func:`train_epoch`, so the masks
    are the same ones), the whole learning-rate schedule and the step counters. One step
    gathers its batch, sets the learning rate, runs forward, backward and a fused AdamW
    update, and adds its loss to a device sum that the host reads once per epoch. With
    ``graph`` the step is captured as a CUDA graph after WARMUP_STEPS eager steps and then
    replayed: one launch per step. Each loop owns a CUDA stream, so several cells trained
    in one process (:func:`train_cells_together`) overlap on the GPU.

    On the CPU (no graph, no stream) it computes the same steps as :func:`train_epoch`;
    the CPU pipeline keeps :func:`train_epoch`, whose bytes are the recorded ones.
    Shapes: N images, B batch, U masking units, S total steps.
    """

    WARMUP_STEPS = 3  # eager steps before capture (lazy init, AdamW state, kernel choice)

    def __init__(
        self,
        model: MaskedAutoencoder,
        images: torch.Tensor,
        *,
        seed: int,
        batch_size: int,
        schedule: dict[str, float],
        weight_decay: float,
        betas: tuple[float, float],
        autocast_dtype: torch.dtype | None,
        graph: bool,
        bf16_weights: bool = False,
    ) -> None:
        self.model, self.images, self.seed, self.batch = model, images, seed, batch_size
        self.device = images.device
        cuda = self.device.type == "cuda"
        self.autocast_dtype = None if bf16_weights else autocast_dtype
        self.bf16 = Bf16Weights(model) if bf16_weights else None  # see Bf16Weights: no autocast then
        self.steps_per_epoch = images.shape[0] // batch_size
        total = int(schedule["total_steps"])
        sched = [lr_at(s, total, int(schedule["warmup_steps"]), schedule["peak_lr"]) for s in range(total)]
        dev = {"device": self.device}
        self.sched = torch.tensor(sched + [0.0], dtype=torch.float32, **dev)  # (S + 1,)
        self.lr = torch.zeros((), dtype=torch.float32, **dev)
        self.optimizer = torch.optim.AdamW(
            param_groups(model, weight_decay), lr=self.lr, betas=betas,
            fused=cuda, capturable=cuda, foreach=False if not cuda else None,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr  # one device tensor for every group
        units = model.units_per_side**2
        self.order = torch.zeros(images.shape[0], dtype=torch.long, **dev)  # (N,)
        self.noise = torch.zeros(self.steps_per_epoch, batch_size, units, **dev)  # (steps, B, U)
        self.arange_b = torch.arange(batch_size, **dev)
        self.i_t = torch.zeros(1, dtype=torch.long, **dev)  # step within the epoch
        self.step_t = torch.zeros(1, dtype=torch.long, **dev)  # step since the start
        self.loss_sum = torch.zeros((), dtype=torch.float32, **dev)
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self.use_graph, self.graph, self.eager_steps = graph and cuda, None, 0

    def _in_stream(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def begin_epoch(self, epoch: int) -> None:
        """Load epoch ``epoch``'s order and masking noise; reset the epoch's loss sum."""
        n, b, steps = self.images.shape[0], self.batch, self.steps_per_epoch
        order = torch.from_numpy(np.random.default_rng(epoch_seed(self.seed, epoch, "order")).permutation(n))
        masks = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, "mask"))
        noise = torch.rand(steps, b, self.noise.shape[-1], generator=masks)  # the per-step draws, in one call
        pinned = self.stream is not None
        with self._in_stream():
            self.order.copy_(order.pin_memory() if pinned else order, non_blocking=pinned)
            self.noise.copy_(noise.pin_memory() if pinned else noise, non_blocking=pinned)
            self.step_t.fill_(epoch * steps)
            self.i_t.zero_()
            self.loss_sum.zero_()

    def _step(self) -> None:
        """One training step, all on the device (the body a CUDA graph captures)."""
        idx = self.order.index_select(0, self.i_t * self.batch + self.arange_b)  # (B,)
        batch = self.images.index_select(0, idx)  # (B, C, S, S)
        noise = self.noise.index_select(0, self.i_t).squeeze(0)  # (B, U)
        self.lr.copy_(self.sched.index_select(0, self.step_t).squeeze(0))
        if self.bf16 is not None:
            loss, _, _ = self.bf16.model(batch, noise=noise)
            loss.backward()
            self.bf16.grads_to_master()
            self.optimizer.step()
            self.bf16.weights_from_master()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None, cache_enabled=False):
                loss, _, _ = self.model(batch, noise=noise)
            loss.backward()
            self.optimizer.step()
        self.loss_sum.add_(loss.detach().float())
        self.i_t.add_(1)
        self.step_t.add_(1)

    def step(self) -> None:
        """Queue one step (returns before the GPU has run it)."""
        with self._in_stream():
            if self.graph is not None:
                self.graph.replay()
                return
            self._step()
            self.eager_steps += 1
        if self.use_graph and self.eager_steps >= self.WARMUP_STEPS:
            self._capture()

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        if self.bf16 is None:  # the bf16 copy's master gradients stay allocated (Bf16Weights)
            self.optimizer.zero_grad(set_to_none=True)
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                self._step()
        except RuntimeError as err:  # a torch build that cannot capture: stay eager, same results
            log.info("CUDA graph capture failed (%s); training eagerly", str(err).splitlines()[0])
            self.use_graph = False
            return
        self.graph = graph

    def end_epoch(self) -> float:
        """The epoch's mean loss (one read of the device sum)."""
        with self._in_stream():
            loss = self.loss_sum.item() / self.steps_per_epoch
        if not math.isfinite(loss):
            raise RuntimeError(f"loss became {loss} in an epoch: lower train.base_lr")
        return loss
