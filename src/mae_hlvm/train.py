"""Pretrain the MAE of one grid cell (step ``train``).

AdamW with linear warmup and per-iteration cosine decay, the MAE recipe. The learning
rate is ``base_lr * batch_size / 256`` and weight decay skips biases and norms, as in
MAE. On the CPU the run is bit-for-bit deterministic: every source of randomness (init,
data order, masks) is derived from the cell's seed and the epoch, so a run resumed from
its last end-of-epoch state ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import argparse
import hashlib
import io as _io
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import paths
from .config import ParamsError, Params, cell_id, digest, section_dict
from .data import load_dataset
from .io import ArtifactError, atomic_path, check_recorded, dumps_json, file_sha256, write_json, write_text
from .model import MaskedAutoencoder, build_model
from .provenance import code_digest, provenance

log = logging.getLogger("mae_hlvm.train")


def resolve_device(params: Params) -> tuple[torch.device, torch.dtype | None]:
    """(device, autocast dtype or None). ``auto``: CUDA with bf16 when present, else CPU fp32.

    bf16 autocast is off on the CPU by default: measured on this project's CPU it halves
    throughput at these model sizes (bench/bench_train.py).
    """
    want = params.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ParamsError("params.yaml: train.device='cuda': no CUDA GPU is visible to torch")
    device = torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")
    precision = params.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return device, (torch.bfloat16 if precision == "bf16" else None)


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


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name and bytes: detects a corrupted checkpoint on load."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _save_torch(path: str | Path, obj: Any) -> None:
    buf = _io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


# A resume file is this header, then torch.save's bytes: the hash catches a damaged file
# before torch reads it (a flipped byte would otherwise load and change the run).
RESUME_MAGIC = b"mae-hlvm-resume sha256="


def save_resume(path: str | Path, state: dict[str, Any]) -> None:
    buf = _io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(RESUME_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_resume(path: str | Path) -> dict[str, Any] | None:
    """The state in a resume file, or None when it is damaged (wrong header or hash)."""
    blob = Path(path).read_bytes()
    head, _, payload = blob.partition(b"\n")
    if not head.startswith(RESUME_MAGIC) or head[len(RESUME_MAGIC):] != hashlib.sha256(payload).hexdigest().encode():
        return None
    try:
        return torch.load(_io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - hash matched, so only another torch version gets here
        return None


def resume_state_path(out_dir: str | Path) -> Path:
    """Where an unfinished run of ``out_dir`` keeps its last end-of-epoch state.

    Keyed by the output folder, not the cell name: the real track trains the same cell
    name in two sweeps, and runs side by side must not share a resume file.
    """
    key = str(Path(out_dir)).strip("/").replace("/", "__")
    return Path(paths.STATE_DIR) / "resume" / f"{key}.pt"


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[MaskedAutoencoder, dict[str, Any]]:
    """Rebuild a cell's trained model from its checkpoint; any defect is one ArtifactError."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: missing (run the train step first)")
    check_recorded(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta, state = json.loads(blob["meta_json"]), blob["model"]
    except Exception as err:  # torch raises many types for a damaged zip/pickle
        raise ArtifactError(f"{path}: corrupt or truncated checkpoint ({err.__class__.__name__})") from None
    if state_digest(state) != meta.get("weights_sha256"):
        raise ArtifactError(f"{path}: weights do not match their recorded hash (corrupted checkpoint)")
    cell, config = meta["cell"], meta["config"]
    model = build_model(config["model"], config["data_geometry"], cell["mask_ratio"], cell["patch_size"])
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def train_epoch(
    model: MaskedAutoencoder,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    *,
    epoch: int,
    seed: int,
    batch_size: int,
    schedule: dict[str, float],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    progress: _Progress,
) -> float:
    """One pass over ``images`` (N, C, S, S) in a seed-and-epoch-determined order; mean loss."""
    model.train()
    n = images.shape[0]
    order = torch.from_numpy(np.random.default_rng(epoch_seed(seed, epoch, "order")).permutation(n))
    masks = torch.Generator().manual_seed(epoch_seed(seed, epoch, "mask"))
    steps_per_epoch = n // batch_size  # drop the ragged last batch: every step sees a full batch
    total = 0.0
    for i in range(steps_per_epoch):
        step = epoch * steps_per_epoch + i
        lr = lr_at(step, int(schedule["total_steps"]), int(schedule["warmup_steps"]), schedule["peak_lr"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = images[order[i * batch_size : (i + 1) * batch_size]].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss, _, _ = model(batch, generator=masks)
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss became {loss.item()} at epoch {epoch} step {i}: lower train.base_lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        progress.update(batch_size, loss.item())
    return total / steps_per_epoch


class _Progress:
    """Periodic log lines with loss, images/s and ETA (a bar would garble Snakemake's logs)."""

    def __init__(self, total_images: int, every_s: float = 10.0) -> None:
        self.total, self.done, self.every = total_images, 0, every_s
        self.start = self.last = time.perf_counter()

    def update(self, n: int, loss: float) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            log.info("  %s", self.line(loss))

    def rate(self) -> float:
        return self.done / max(1e-9, time.perf_counter() - self.start)

    def line(self, loss: float) -> str:
        rate = self.rate()
        eta = (self.total - self.done) / max(rate, 1e-9)
        return f"{self.done}/{self.total} images, loss {loss:.4f}, {rate:.0f} img/s, ETA {eta:.0f}s"


def train_cell(params: Params, data_path: str, mask_ratio: float, patch_size: int, seed: int, out_dir: str) -> dict[str, Any]:
    """Train one cell; write checkpoint.pt and train_log.csv under ``out_dir``. Returns timings."""
    cell = cell_id(mask_ratio, patch_size, seed)
    ds = load_dataset(data_path).split(test=False)
    geometry = {"image_size": ds.image_size, "channels": ds.channels}
    model_cfg = section_dict(params, ["model"])["model"]
    train_cfg = section_dict(params, ["train"])["train"]
    config = {"model": model_cfg, "train": train_cfg, "data_geometry": geometry, "data_sha256": file_sha256(data_path)}
    # the code too: a resume after an edit of the training code would mix epochs of two codes
    run_digest = digest({"config": config, "cell": [mask_ratio, patch_size, seed], "code": code_digest()})

    device, autocast_dtype = resolve_device(params)
    if device.type == "cpu":
        torch.set_num_threads(params.train.threads)
    torch.manual_seed(seed)
    try:
        model = build_model(model_cfg, geometry, mask_ratio, patch_size).to(device)
    except ValueError as err:
        raise ParamsError(f"params.yaml: {err}") from None
    optimizer = torch.optim.AdamW(
        param_groups(model, params.train.weight_decay), lr=0.0, betas=tuple(params.train.betas)
    )
    images = torch.from_numpy(ds.images)
    batch_size = min(params.train.batch_size, images.shape[0])
    steps_per_epoch = images.shape[0] // batch_size
    epochs = params.train.epochs
    schedule = {
        "peak_lr": params.train.base_lr * batch_size / 256,
        "total_steps": epochs * steps_per_epoch,
        "warmup_steps": max(1, round(params.train.warmup_epochs * steps_per_epoch)),
    }

    history: list[dict[str, float]] = []
    start_epoch = 0
    resume_path = resume_state_path(out_dir)
    if resume_path.exists():
        state = load_resume(resume_path)
        if state is None:
            log.info("ignoring %s: damaged (its hash does not match); starting from epoch 1", resume_path)
        elif state.get("run_digest") != run_digest:
            log.info("ignoring %s: made with other params, data or code; starting from epoch 1", resume_path)
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            history, start_epoch = json.loads(state["history_json"]), state["epoch"] + 1
            log.info("resuming %s after epoch %d of %d", cell, start_epoch, epochs)

    log.info(
        "cell %s: %d train images %dx%dx%d, %d visible / %d hidden tokens, device %s%s, %d epochs x %d steps",
        cell, images.shape[0], ds.channels, ds.image_size, ds.image_size, model.n_visible, model.n_hidden,
        device, " bf16" if autocast_dtype else "", epochs, steps_per_epoch,
    )
    progress = _Progress((epochs - start_epoch) * steps_per_epoch * batch_size)
    started = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        loss = train_epoch(
            model, optimizer, images, epoch=epoch, seed=seed, batch_size=batch_size, schedule=schedule,
            device=device, autocast_dtype=autocast_dtype, progress=progress,
        )
        lr_end = lr_at((epoch + 1) * steps_per_epoch - 1, int(schedule["total_steps"]), int(schedule["warmup_steps"]), schedule["peak_lr"])
        history.append({"epoch": epoch, "loss": round(loss, 8), "lr": lr_end})
        log.info("epoch %d/%d loss %.5f | %s", epoch + 1, epochs, loss, progress.line(loss))
        if epoch + 1 < epochs:
            save_resume(resume_path, {
                "run_digest": run_digest, "epoch": epoch, "history_json": dumps_json(history),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            })
    seconds = time.perf_counter() - started

    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {
        "cell": {"cell_id": cell, "mask_ratio": mask_ratio, "patch_size": patch_size, "seed": seed},
        "config": config,
        "n_visible": model.n_visible,
        "n_hidden": model.n_hidden,
        "n_visible_units": model.n_visible_units,
        "n_hidden_units": model.n_hidden_units,
        "history": history,
        "provenance": provenance(),
        "weights_sha256": state_digest(state_dict),
    }
    out = Path(out_dir)
    # Metadata travels as canonical JSON: pickling Python objects would make the bytes
    # depend on object identity (a resumed run's history is unpickled, not built).
    _save_torch(out / "checkpoint.pt", {"model": state_dict, "meta_json": dumps_json(meta)})
    write_text(out / "train_log.csv", "epoch,loss,lr\n" + "".join(
        f"{h['epoch']},{h['loss']:.8f},{h['lr']:.8e}\n" for h in history
    ))
    resume_path.unlink(missing_ok=True)
    return {
        "seconds": round(seconds, 3),
        "images_per_s": round(progress.rate(), 1),
        "device": str(device),
        "precision": "bf16" if autocast_dtype else "fp32",
        "threads": torch.get_num_threads(),
    }


def run(params: Params, args: argparse.Namespace) -> None:
    timing = train_cell(params, args.data, args.mask_ratio, args.patch_size, args.seed, args.out_dir)
    write_json(paths.timing("train", cell_id(args.mask_ratio, args.patch_size, args.seed)), timing)
