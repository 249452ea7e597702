"""The MAE recipe's schedule: linear warmup then per-iteration cosine decay of the learning
rate, weight decay on matrices only, and the seeded streams (data order, masks) of each
epoch. The CPU trainer (:mod:`mae_hlvm.core.train`) and the device loop
(:mod:`mae_hlvm.core.device_loop`) follow the same one.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch


def cosine_schedule(peak_lr: float, total_steps: int, warmup_epochs: float, steps_per_epoch: int) -> dict[str, float]:
    """What :func:`lr_at` follows: the peak, the total steps, and a warmup of ``warmup_epochs``
    (at least one step). The trainer and the benchmarks that retrace it build it here."""
    return {"peak_lr": peak_lr, "total_steps": total_steps,
            "warmup_steps": max(1, round(warmup_epochs * steps_per_epoch))}


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warmup to ``peak_lr``, then half-cosine decay to zero, per iteration."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only; biases, norms and tokens are left undecayed."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or name.endswith(("cls_token", "mask_token")) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """A seed for one stream (data order, masks) of one epoch, independent of every other."""
    h = hashlib.sha256(f"{seed}:{epoch}:{stream}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)
