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
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mae_hlvm.core import paths
from mae_hlvm.core.cells import cell_id
from mae_hlvm.core.config import Params, ParamsError
from mae_hlvm.core.data import load_dataset
from mae_hlvm.core.device_loop import DeviceLoop
from mae_hlvm.core.io import ArtifactError, atomic_path, check_recorded, dumps_json, file_sha256, write_json, write_text
from mae_hlvm.core.model import MaskedAutoencoder, build_model
from mae_hlvm.core.provenance import code_digest, digest, provenance, section_dict
from mae_hlvm.core.schedule import cosine_schedule, epoch_seed, lr_at, param_groups

log = logging.getLogger("mae_hlvm.core.train")


def resolve_device(params: Params) -> tuple[torch.device, torch.dtype | None, bool]:
    """(device, autocast dtype or None, bf16 weights). ``auto``: CUDA with bf16 autocast when
    present, else CPU fp32. ``bf16-weights`` (CUDA only): forward and backward on a bf16 copy
    of the model, fp32 master weights (:class:`Bf16Weights`), no autocast.

    bf16 autocast is off on the CPU by default: measured on this project's CPU it halves
    throughput at these model sizes (bench/bench_train.py).
    """
    want = params.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ParamsError("params.yaml: train.device='cuda': no CUDA GPU is visible to torch")
    device = torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")
    precision = params.train.precision
    if precision == "bf16-weights" and device.type != "cuda":
        raise ParamsError("params.yaml: train.precision='bf16-weights' trains on a CUDA GPU only, and training "
                          "runs on the CPU here: set train.precision to auto or fp32")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return device, (torch.bfloat16 if precision == "bf16" else None), precision == "bf16-weights"


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
    if "mask_unit" not in cell:  # cell.patch_size: before the masking unit had one name (README, "Changelog")
        raise ArtifactError(f"{path}: made before the masking unit was renamed (cell.patch_size); retrain the cell")
    model = build_model(config["model"], config["data_geometry"], cell["mask_ratio"], cell["mask_unit"])
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

    def update(self, n: int, loss: float | None) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            log.info("  %s", self.line(loss))

    def rate(self) -> float:
        return self.done / max(1e-9, time.perf_counter() - self.start)

    def line(self, loss: float | None) -> str:
        """``loss`` None: the CUDA loop, which reads its loss once per epoch."""
        rate = self.rate()
        eta = (self.total - self.done) / max(rate, 1e-9)
        shown = "" if loss is None else f", loss {loss:.4f}"
        return f"{self.done}/{self.total} images{shown}, {rate:.0f} img/s, ETA {eta:.0f}s"


class _CellRun:
    """One cell being trained: its model, optimiser (or device loop), resume file and history."""

    def __init__(
        self, params: Params, ds: Any, data_path: str, mask_ratio: float, mask_unit: int, seed: int, out_dir: str,
        device: torch.device, autocast_dtype: torch.dtype | None, device_images: torch.Tensor | None,
        bf16_weights: bool = False,
    ) -> None:
        self.cell = cell_id(mask_ratio, mask_unit, seed)
        self.mask_ratio, self.mask_unit, self.seed, self.out_dir = mask_ratio, mask_unit, seed, out_dir
        self.device, self.autocast_dtype = device, autocast_dtype
        geometry = {"image_size": ds.image_size, "channels": ds.channels}
        model_cfg = section_dict(params, ["model"])["model"]
        train_cfg = section_dict(params, ["train"])["train"]
        self.config = {"model": model_cfg, "train": train_cfg, "data_geometry": geometry, "data_sha256": file_sha256(data_path)}
        # the code too: a resume after an edit of the training code would mix epochs of two codes
        self.run_digest = digest({"config": self.config, "cell": [mask_ratio, mask_unit, seed], "code": code_digest()})
        torch.manual_seed(seed)
        try:
            self.model = build_model(model_cfg, geometry, mask_ratio, mask_unit).to(device)
        except ValueError as err:
            raise ParamsError(f"params.yaml: {err}") from None
        self.images = torch.from_numpy(ds.images)
        self.batch_size = min(params.train.batch_size, self.images.shape[0])
        self.steps_per_epoch = self.images.shape[0] // self.batch_size
        self.epochs = params.train.epochs
        self.schedule = cosine_schedule(params.train.base_lr * self.batch_size / 256, self.epochs * self.steps_per_epoch,
                                        params.train.warmup_epochs, self.steps_per_epoch)
        betas = tuple(params.train.betas)
        if device_images is None:  # the CPU reference loop
            self.loop = None
            self.optimizer = torch.optim.AdamW(param_groups(self.model, params.train.weight_decay), lr=0.0, betas=betas)
        else:
            self.loop = DeviceLoop(
                self.model, device_images, seed=seed, batch_size=self.batch_size, schedule=self.schedule,
                weight_decay=params.train.weight_decay, betas=betas, autocast_dtype=autocast_dtype, graph=True,
                bf16_weights=bf16_weights,
            )
            self.optimizer = self.loop.optimizer
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.resume_path = resume_state_path(out_dir)
        if self.resume_path.exists():
            self._resume()

    def _resume(self) -> None:
        state = load_resume(self.resume_path)
        if state is None:
            log.info("ignoring %s: damaged (its hash does not match); starting from epoch 1", self.resume_path)
        elif state.get("run_digest") != self.run_digest:
            log.info("ignoring %s: made with other params, data or code; starting from epoch 1", self.resume_path)
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.loop is not None:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.loop.lr  # the loop's one device tensor, not the loaded copy
                if self.loop.bf16 is not None:
                    self.loop.bf16.weights_from_master()  # the bf16 copy computes from the resumed weights
            self.history, self.start_epoch = json.loads(state["history_json"]), state["epoch"] + 1
            log.info("resuming %s after epoch %d of %d", self.cell, self.start_epoch, self.epochs)

    def describe(self) -> str:
        c, s = self.images.shape[1], self.images.shape[2]
        return (
            f"cell {self.cell}: {self.images.shape[0]} train images {c}x{s}x{s}, {self.model.n_visible} visible / "
            f"{self.model.n_hidden} hidden tokens, device {self.device}{' bf16' if self.autocast_dtype else ''}, "
            f"{self.epochs} epochs x {self.steps_per_epoch} steps"
        )

    def end_epoch(self, epoch: int, loss: float, progress: _Progress) -> None:
        """Record the epoch's loss; keep a resume file unless it was the last epoch."""
        s = self.schedule
        lr_end = lr_at((epoch + 1) * self.steps_per_epoch - 1, int(s["total_steps"]), int(s["warmup_steps"]), s["peak_lr"])
        self.history.append({"epoch": epoch, "loss": round(loss, 8), "lr": lr_end})
        log.info("%s epoch %d/%d loss %.5f | %s", self.cell, epoch + 1, self.epochs, loss, progress.line(loss))
        if epoch + 1 < self.epochs:
            save_resume(self.resume_path, {
                "run_digest": self.run_digest, "epoch": epoch, "history_json": dumps_json(self.history),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            })

    def precision(self) -> str:
        """The precision the steps ran in (``train.precision: auto`` resolved): fp32, bf16, bf16-weights."""
        if self.loop is not None and self.loop.bf16 is not None:
            return "bf16-weights"
        return "bf16" if self.autocast_dtype else "fp32"

    def trained_on(self) -> dict[str, str]:
        """Where the weights were computed (params say ``auto``; this says what it resolved to)."""
        where = {"device": self.device.type, "precision": self.precision()}
        if self.device.type == "cuda":
            where["gpu"] = torch.cuda.get_device_name(self.device)
        return where

    def finish(self, seconds: float, rate: float) -> dict[str, Any]:
        """Write checkpoint.pt and train_log.csv; drop the resume file. Returns the timings."""
        state_dict = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        meta = {
            "cell": {"cell_id": self.cell, "mask_ratio": self.mask_ratio, "mask_unit": self.mask_unit, "seed": self.seed},
            "config": self.config,
            "n_visible": self.model.n_visible,
            "n_hidden": self.model.n_hidden,
            "n_visible_units": self.model.n_visible_units,
            "n_hidden_units": self.model.n_hidden_units,
            "history": self.history,
            "trained_on": self.trained_on(),
            "provenance": provenance(),
            "weights_sha256": state_digest(state_dict),
        }
        out = Path(self.out_dir)
        # Metadata travels as canonical JSON: pickling Python objects would make the bytes
        # depend on object identity (a resumed run's history is unpickled, not built).
        _save_torch(out / "checkpoint.pt", {"model": state_dict, "meta_json": dumps_json(meta)})
        write_text(out / "train_log.csv", "epoch,loss,lr\n" + "".join(
            f"{h['epoch']},{h['loss']:.8f},{h['lr']:.8e}\n" for h in self.history
        ))
        self.resume_path.unlink(missing_ok=True)
        return {
            "seconds": round(seconds, 3),
            "images_per_s": round(rate, 1),
            "device": str(self.device),
            "precision": self.precision(),
            "threads": torch.get_num_threads(),
        }


def train_cells_together(params: Params, data_path: str, cells: list[tuple[float, int, int, str]]) -> list[dict[str, Any]]:
    """Train several cells (mask_ratio, mask_unit, seed, out_dir) of one data set; their timings.

    On the CPU they train one after the other through :func:`train_epoch`. On CUDA each
    gets a :class:`DeviceLoop` on its own stream and the host queues their steps in turn,
    so small cells fill the GPU together; each cell's steps, data order and masks are the
    ones it would get alone. The images/s reported is the group's total.
    """
    ds = load_dataset(data_path).split(test=False)
    device, autocast_dtype, bf16_weights = resolve_device(params)
    if device.type == "cpu":
        torch.set_num_threads(params.train.threads)
        return [_train_reference(_CellRun(params, ds, data_path, *c, device, autocast_dtype, None)) for c in cells]
    device_images = torch.from_numpy(ds.images).to(device)
    runs = [_CellRun(params, ds, data_path, *c, device, autocast_dtype, device_images, bf16_weights) for c in cells]
    for run_ in runs:
        log.info("%s (on a CUDA stream, %d cells together)", run_.describe(), len(runs))
    first = min(r.start_epoch for r in runs)
    epochs, steps, batch = runs[0].epochs, runs[0].steps_per_epoch, runs[0].batch_size
    progress = _Progress(sum((epochs - r.start_epoch) * steps * batch for r in runs))
    started = time.perf_counter()
    for epoch in range(first, epochs):
        active = [r for r in runs if epoch >= r.start_epoch]
        for r in active:
            r.loop.begin_epoch(epoch)
        for _ in range(steps):
            for r in active:
                r.loop.step()
            progress.update(batch * len(active), None)
        for r in active:
            r.end_epoch(epoch, r.loop.end_epoch(), progress)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return [r.finish(seconds, progress.rate()) for r in runs]


def _train_reference(run_: _CellRun) -> dict[str, Any]:
    """The CPU loop: :func:`train_epoch` per epoch, bit-for-bit the recorded artifacts."""
    log.info("%s", run_.describe())
    progress = _Progress((run_.epochs - run_.start_epoch) * run_.steps_per_epoch * run_.batch_size)
    started = time.perf_counter()
    for epoch in range(run_.start_epoch, run_.epochs):
        loss = train_epoch(
            run_.model, run_.optimizer, run_.images, epoch=epoch, seed=run_.seed, batch_size=run_.batch_size,
            schedule=run_.schedule, device=run_.device, autocast_dtype=run_.autocast_dtype, progress=progress,
        )
        run_.end_epoch(epoch, loss, progress)
    return run_.finish(time.perf_counter() - started, progress.rate())


def train_cell(params: Params, data_path: str, mask_ratio: float, mask_unit: int, seed: int, out_dir: str) -> dict[str, Any]:
    """Train one cell; write checkpoint.pt and train_log.csv under ``out_dir``. Returns timings."""
    return train_cells_together(params, data_path, [(mask_ratio, mask_unit, seed, out_dir)])[0]


def with_budget(params: Params, factor: int) -> Params:
    """``params`` with ``factor`` x ``train.epochs``: the same batch, peak lr and warmup (in epochs),
    the cosine over the whole longer run. ``model_copy``: no revalidation needed."""
    if factor == 1:
        return params
    return params.model_copy(update={"train": params.train.model_copy(update={"epochs": params.train.epochs * factor})})


def stability_budget(params: Params, stability: bool) -> int:
    """The budget factor of a training step: ``stability.budget_factor`` for the stability set's run, else 1."""
    if not stability:
        return 1
    if params.stability is None or not params.stability.enabled:
        raise ParamsError("--stability: params.yaml has no enabled 'stability:' section (the stability set is off)")
    return params.stability.budget_factor


def run(params: Params, args: argparse.Namespace) -> None:
    stable = getattr(args, "stability", False)
    budget = with_budget(params, stability_budget(params, stable))
    timing = train_cell(budget, args.data, args.mask_ratio, args.mask_unit, args.seed, args.out_dir)
    step = "train_stable" if stable else "train"
    write_json(paths.timing(step, cell_id(args.mask_ratio, args.mask_unit, args.seed)), timing)
