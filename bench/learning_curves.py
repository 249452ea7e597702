"""Learning curves of the default MAE: hidden-patch error and probes against image passes.

Why: a verdict is only worth something on cells that learned (src/mae_hlvm/core/gate.py). This
benchmark measures, for a few cells, how the hidden-patch MSE (against the per-position
mean and the linear predictor: the gate's gain share) and the spatial probes move with the
number of training images seen, so that the default budgets are chosen from measured
curves, by the hidden-patch error only (never by a probe score or a claim).

One run per cell with the project's own model, optimiser groups, schedule and data
(params.yaml, ``--n-train`` overriding data.n_train), scheduled for ``--max-passes``; it
is evaluated at log-spaced pass counts on the way. A point inside a run sits at a higher
learning rate than the end of a run with that budget, so intermediate points are, if
anything, pessimistic. Pass 0 is the random-init encoder (the floor).

    python bench/learning_curves.py [--params params.yaml] [--cells 0.1:2,0.5:2,0.9:2]
        [--n-train 20000] [--max-passes 320000] [--out bench/results/learning_curves_cpu]

With ``--device cuda`` the cells train together in one process through the pipeline's
CUDA loop (:class:`mae_hlvm.core.device_loop.DeviceLoop`: one CUDA graph per cell, one stream each,
bf16 autocast), the way ``train_cells_together`` trains them; the probes then fit on the
first ``--probe-train`` train images and the gate's linear reference on the first
``--linear-train`` (both all of them by default).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mae_hlvm.core.cells import cell_id
from mae_hlvm.core.config import load_params
from mae_hlvm.core.data import Dataset
from mae_hlvm.core.device_loop import DeviceLoop
from mae_hlvm.core.gate import GATE_MIN_SHARE, linear_on_mae_masks, linear_reference, train_mean_image
from mae_hlvm.core.measures import recon_seed, reconstruct
from mae_hlvm.core.model import build_model
from mae_hlvm.core.schedule import cosine_schedule, epoch_seed, lr_at, param_groups
from mae_hlvm.synthetic.generate import generate_dataset
from mae_hlvm.synthetic.probe import encode_features
from mae_hlvm.synthetic.readouts import (
    class_accuracy,
    flatten_latent,
    level_scores,
    r2_ridge_blocks,
    region_r2,
    spatial_level,
    standardise,
)


def evaluate(model, train, test, passes: int, loss: float | None, linear: tuple[float, float], seed: int, alphas,
             mean_image=None) -> dict:
    """Hidden-patch errors (gate quantities) and spatial probes of the model as it is now.

    ``mean_image``: the per-position mean of ALL train images (default: of ``train``), when
    the probes fit on a subset."""
    model.eval()
    mean_image = train_mean_image(train.images) if mean_image is None else mean_image
    mse, mean_mse, _ = reconstruct(model, test.images, 256, recon_seed(seed), 0, mean_image)
    lin = linear_on_mae_masks(linear, mean_mse)
    n_levels = len(train.latents)
    level = spatial_level(n_levels)
    feats_tr = encode_features(model, train.images, 256, n_levels)
    feats_te = encode_features(model, test.images, 256, n_levels)
    f_tr = feats_tr["regions"][level].reshape(len(train.images), -1)
    f_te = feats_te["regions"][level].reshape(len(test.images), -1)
    scores = level_scores(f_tr, f_te, train, test, alphas)
    model.train()
    # the pipeline's other views (probe.py): pooled root R^2, leaf-region R^2, class accuracy
    root_tr, root_te = [flatten_latent(train.latents[0])], [flatten_latent(test.latents[0])]
    pooled = {}
    for pool in ("mean", "cls"):
        s_tr, s_te = standardise(feats_tr[pool], feats_te[pool])
        pooled[pool] = r2_ridge_blocks(s_tr, root_tr, s_te, root_te, alphas)[0]
    leaf = n_levels - 1
    leaf_r2 = float(np.mean(region_r2(feats_tr["regions"][leaf], train.latents[leaf], feats_te["regions"][leaf],
                                      test.latents[leaf], alphas)))
    acc = class_accuracy(feats_tr["mean"], train.labels, feats_te["mean"], test.labels, alphas, 3)
    return {
        "passes": passes, "train_loss": loss, "recon_mse": mse, "mean_pred_mse": mean_mse, "linear_mse": lin,
        "recon_rel": mse / mean_mse, "gain_share": (mean_mse - mse) / (mean_mse - lin),
        "r2sp": scores["levels"], "r2in": scores["innovations"],
        "root_r2_mean": pooled["mean"], "root_r2_cls": pooled["cls"], "leaf_region_r2": leaf_r2, "probe_acc_mean": acc,
    }


def run_cell(params, ds, ratio: float, unit: int, seed: int, max_passes: int, eval_at: list[int]) -> list[dict]:
    """Train one cell for ``max_passes`` images (cosine over all of them), evaluating at ``eval_at``."""
    train, test = ds.split(test=False), ds.split(test=True)
    torch.manual_seed(seed)
    geometry = {"image_size": ds.image_size, "channels": ds.channels}
    model = build_model(params.model.model_dump(), geometry, ratio, unit)
    opt = torch.optim.AdamW(param_groups(model, params.train.weight_decay), lr=0.0, betas=tuple(params.train.betas))
    images = torch.from_numpy(train.images)
    batch = params.train.batch_size
    steps_per_epoch = len(images) // batch
    schedule = cosine_schedule(params.train.base_lr * batch / 256, max_passes // batch, params.train.warmup_epochs,
                               steps_per_epoch)
    total, warmup, peak = int(schedule["total_steps"]), int(schedule["warmup_steps"]), schedule["peak_lr"]
    with threadpool_limits(limits=1):
        linear = linear_reference(train.images, test.images, unit, ratio)
    alphas = params.probe.ridge_alphas
    points = [evaluate(model, train, test, 0, None, linear, seed, alphas)]
    targets = sorted(p for p in eval_at if 0 < p <= max_passes)
    step, losses, start = 0, [], time.perf_counter()
    while step < total:
        epoch = step // steps_per_epoch
        order = torch.from_numpy(np.random.default_rng(epoch_seed(seed, epoch, "order")).permutation(len(images)))
        masks = torch.Generator().manual_seed(epoch_seed(seed, epoch, "mask"))
        for i in range(steps_per_epoch):
            if step >= total:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, peak)
            loss, _, _ = model(images[order[i * batch : (i + 1) * batch]], generator=masks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if targets and step * batch >= targets[0]:
                targets.pop(0)
                with threadpool_limits(limits=1):
                    pt = evaluate(model, train, test, step * batch, float(np.mean(losses[-steps_per_epoch:])), linear, seed, alphas)
                pt["seconds"] = round(time.perf_counter() - start, 1)
                points.append(pt)
                print(f"r{ratio} u{unit}: {pt['passes']} passes, loss {pt['train_loss']:.4f}, hidden rel "
                      f"{pt['recon_rel']:.3f}, gain share {pt['gain_share']:.2f}, root R2 {pt['r2sp'][0]:.3f}, "
                      f"{pt['seconds']:.0f} s", flush=True)
    return points


def _head(ds: Dataset, n: int | None) -> Dataset:
    """The first ``n`` images of a split (all when None), latents and labels alike."""
    if n is None or n >= len(ds.images):
        return ds
    return Dataset(ds.images[:n], ds.labels[:n], ds.is_test[:n], [z[:n] for z in ds.latents], ds.settings)


def run_cells_device(params, ds, specs: list[tuple[float, int]], seed: int, max_passes: int, eval_at: list[int],
                     device: str, probe_train: int | None, linear_train: int | None, out=None) -> dict[str, list[dict]]:
    """Train ``specs`` (ratio, unit) together on ``device``, each scheduled for ``max_passes``."""
    train, test = ds.split(test=False), ds.split(test=True)
    probe_tr = _head(train, probe_train)
    mean_image = train_mean_image(train.images)
    geometry = {"image_size": ds.image_size, "channels": ds.channels}
    images = torch.from_numpy(train.images).to(device)
    batch = params.train.batch_size
    steps_per_epoch = len(images) // batch
    total = max_passes // batch
    schedule = cosine_schedule(params.train.base_lr * batch / 256, total, params.train.warmup_epochs, steps_per_epoch)
    alphas = params.probe.ridge_alphas
    loops, linears, points = {}, {}, {}
    for ratio, unit in specs:
        name = cell_id(ratio, unit, None)
        torch.manual_seed(seed)
        model = build_model(params.model.model_dump(), geometry, ratio, unit).to(device)
        loops[name] = DeviceLoop(model, images, seed=seed, batch_size=batch, schedule=schedule,
                                 weight_decay=params.train.weight_decay, betas=tuple(params.train.betas),
                                 autocast_dtype=torch.bfloat16 if device == "cuda" else None, graph=True)
        head = _head(train, linear_train)
        linears[name] = linear_reference(head.images, test.images, unit, ratio)
        points[name] = [evaluate(model, probe_tr, test, 0, None, linears[name], seed, alphas, mean_image)]
    # the last target may fall inside the last (dropped) batch: evaluate at the last step then
    targets = sorted({min(p, total * batch) for p in eval_at if 0 < p <= max_passes})
    step, start, epoch_losses = 0, time.perf_counter(), {n: None for n in loops}
    while step < total:
        if step % steps_per_epoch == 0:
            for loop in loops.values():
                loop.begin_epoch(step // steps_per_epoch)
        for loop in loops.values():
            loop.step()
        step += 1
        if step % steps_per_epoch == 0:
            epoch_losses = {n: loop.end_epoch() for n, loop in loops.items()}
        if targets and step * batch >= targets[0]:
            targets.pop(0)
            if device == "cuda":
                torch.cuda.synchronize()
            train_s = round(time.perf_counter() - start, 1)
            for name, loop in loops.items():
                done = int(loop.i_t)  # steps into the current epoch
                loss = loop.loss_sum.item() / done if done else epoch_losses[name]
                pt = evaluate(loop.model, probe_tr, test, step * batch, loss, linears[name], seed, alphas, mean_image)
                pt["seconds"] = round(time.perf_counter() - start, 1)
                pt["train_seconds_at_start_of_eval"] = train_s
                points[name].append(pt)
                print(f"{name}: {pt['passes']} passes, loss {pt['train_loss']:.4f}, hidden rel {pt['recon_rel']:.3f}, "
                      f"gain share {pt['gain_share']:.2f}, root R2 {pt['r2sp'][0]:.3f}, {pt['seconds']:.0f} s", flush=True)
            if device == "cuda":
                torch.cuda.synchronize()  # the evaluation's reads finish before the next updates
            if out is not None:
                out(points)
    return points


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def _pools(p: dict) -> str:
    """Older result files lack the pooled columns: blank there."""
    return "" if "root_r2_mean" not in p else f"{p['root_r2_mean']:.3f} / {p['root_r2_cls']:.3f}"


def markdown(result: dict) -> str:
    lines = [
        f"# Learning curves ({result['when']}, {result['machine']})", "",
        f"params: {result['params']}, n_train {result['n_train']}, batch {result['batch']}, peak lr "
        f"{result['peak_lr']:.2e}, {result['threads']} thread(s), cosine schedule over "
        f"{result.get('max_passes', 0):,} image passes. Gate: gain share >= {GATE_MIN_SHARE} (the cell learned)."
        + (f" Probes fit on the first {result['probe_train']:,} train images" if result.get("probe_train") else "")
        + (f", the linear reference on the first {result['linear_train']:,}." if result.get("linear_train") else ""),
        "",
        "| cell | passes | train loss | hidden rel (MAE / mean) | linear rel | gain share | root R^2 (spatial) | innovation R^2 per level | root R^2 mean / CLS pool | leaf-region R^2 | probe acc | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, pts in result["cells"].items():
        for p in pts:
            loss = "" if p["train_loss"] is None else f"{p['train_loss']:.4f}"
            innov = " / ".join(f"{x:.3f}" for x in p["r2in"][1:])
            lines.append(
                f"| {cell} | {p['passes']} | {loss} | {p['recon_rel']:.3f} | {p['linear_mse'] / p['mean_pred_mse']:.3f} | "
                f"{p['gain_share']:.2f} | {p['r2sp'][0]:.3f} | {innov} | {_pools(p)} | {_num(p.get('leaf_region_r2'))} | "
                f"{_num(p.get('probe_acc_mean'))} | {p.get('seconds', 0):.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cells", default="0.1:2,0.5:2,0.9:2")
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--max-passes", type=int, default=320000)
    ap.add_argument("--eval-at", default="10000,20000,40000,80000,160000,320000")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--probe-train", type=int, default=None, help="device mode: probe on the first N train images")
    ap.add_argument("--linear-train", type=int, default=None, help="device mode: linear reference on the first N")
    ap.add_argument("--out", default="bench/results/learning_curves_cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    data = params.data.model_copy(update={"n_train": args.n_train})
    ds = generate_dataset(data)
    machine = f"{platform.processor() or platform.machine()}, {args.threads} thread(s)"
    if args.device == "cuda":
        machine = f"{torch.cuda.get_device_name()} (bf16, CUDA graphs, cells together), {args.threads} CPU thread(s)"
    result = {
        "when": time.strftime("%Y-%m-%d"), "machine": machine,
        "params": args.params, "n_train": args.n_train, "batch": params.train.batch_size,
        "peak_lr": params.train.base_lr * params.train.batch_size / 256, "threads": args.threads, "cells": {},
        "max_passes": args.max_passes, "device": args.device, "probe_train": args.probe_train,
        "linear_train": args.linear_train,
    }
    eval_at = [int(x) for x in args.eval_at.split(",")]
    specs = [(float(r), int(u)) for r, u in (spec.split(":") for spec in args.cells.split(","))]

    def save(cells: dict) -> None:
        result["cells"] = cells
        Path(args.out + ".json").write_text(json.dumps(result, indent=1, sort_keys=True))
        Path(args.out + ".md").write_text(markdown(result))

    if args.device == "cuda":
        save(run_cells_device(params, ds, specs, 0, args.max_passes, eval_at, "cuda",
                              args.probe_train, args.linear_train, out=save))
    else:
        for ratio, unit in specs:
            result["cells"][cell_id(ratio, unit, None)] = run_cell(params, ds, ratio, unit, 0, args.max_passes, eval_at)
            save(result["cells"])
    print(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
