"""The device and CPU threads of a real-track step (``evaluate-real``, ``report-real``)."""

from __future__ import annotations

import torch

from mae_hlvm.core.config import Params


def step_device(params: Params) -> str:
    """CPU threads from ``train.threads``; CUDA when ``train.device`` asks for it or ``auto`` finds it."""
    torch.set_num_threads(params.train.threads)
    want = params.train.device
    return "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"
