"""GPU training speed: the default-size cells (alone and several at once) and the paper-scale step.

Run on a machine with a GPU (the device tool; about 4 minutes on one H100 without ``--paper ...:model``):
    PYTHONPATH=src python bench/bench_gpu.py --params profiles/gpu/params.yaml --out OUT
It writes OUT/bench_gpu.json (every figure below, the GPU named) and prints a summary.

1. ``cells``: training images/s of the GPU profile's cells at batch 256 (bf16 autocast),
   for the reference loop (the CPU path's ``train_epoch``, one host round trip per step),
   the device loop run eagerly, the device loop as one CUDA graph per cell, and K cells
   trained together in one process (a graph and a stream each: ``train_cells_together``),
   the largest group also with a bf16 copy of each model instead of autocast (``Bf16Weights``).
   Whether a cell trained beside others computes what it computes alone is measured as
   the largest relative difference of its summed loss over the same steps.
2. ``processes``: K single-cell processes sharing the GPU (a Snakemake resource that lets
   K jobs hold one GPU would give this), for comparison with 1.
3. ``cross_device``: per-epoch losses of one small cell on the CPU (fp32), on CUDA in fp32
   (TF32 off) and on CUDA with bf16 autocast, through ``train_cell``.
4. ``paper_scale``: a ViT-B/16 MAE step (decoder 512 x 8, 224 px, ratio 0.75, bf16, fused
   AdamW, SDPA), FLOPs from ``torch.utils.flop_counter``, share of the dense bf16 peak, for
   each ``--paper`` configuration: batch, precision (bf16 autocast, or a bf16 copy of the
   model with fp32 master weights) and compiling (none, each transformer block, the whole
   model); ``--profile`` adds torch.profiler's table of one configuration.
``--deadline`` stops starting parts and configurations after that many seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from mae_hlvm.core.config import load_params, parse_params
from mae_hlvm.core.data import save_dataset
from mae_hlvm.core.device_loop import Bf16Weights, DeviceLoop
from mae_hlvm.core.model import MaskedAutoencoder, build_model
from mae_hlvm.core.schedule import param_groups
from mae_hlvm.core.stacked_loop import StackedLoop
from mae_hlvm.core.train import _Progress, train_cell, train_epoch
from mae_hlvm.synthetic.generate import generate_dataset

# Dense bf16 tensor-core peaks (vendor datasheets, SXM parts, no sparsity).
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}
CELL = (0.75, 4)  # ratio, unit of the throughput cells (seeds differ)
# CUDA when present; the CPU only for a dry run of the script itself (no graphs, fp32)
DEV = "cuda" if torch.cuda.is_available() else "cpu"
AUTOCAST = torch.bfloat16 if DEV == "cuda" else None


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def _make_loop(params, images: torch.Tensor, ratio: float, unit: int, seed: int, graph: bool, steps: int,
               bf16_weights: bool = False) -> DeviceLoop:
    torch.manual_seed(seed)
    geometry = {"image_size": images.shape[-1], "channels": images.shape[1]}
    model = build_model(params.model.model_dump(), geometry, ratio, unit).to(DEV)
    batch = params.train.batch_size
    schedule = {"peak_lr": params.train.base_lr * batch / 256, "total_steps": steps, "warmup_steps": 10}
    return DeviceLoop(model, images, seed=seed, batch_size=batch, schedule=schedule,
                      weight_decay=params.train.weight_decay, betas=tuple(params.train.betas),
                      autocast_dtype=AUTOCAST, graph=graph, bf16_weights=bf16_weights and DEV == "cuda")


def _run_steps(loops: list[DeviceLoop], first: int, count: int) -> None:
    """Steps ``first`` .. ``first + count - 1`` of every loop, in turn, loading each epoch's order."""
    spe = loops[0].steps_per_epoch
    for step in range(first, first + count):
        if step % spe == 0:
            for loop in loops:
                loop.begin_epoch(step // spe)
        for loop in loops:
            loop.step()


def time_loops(loops: list[DeviceLoop], steps: int, warmup: int = 10) -> tuple[float, list[float]]:
    """Aggregate images/s of ``loops`` stepped in turn; each cell's loss sum in its last epoch."""
    _run_steps(loops, 0, warmup)  # includes the graph capture
    sync()
    start = time.perf_counter()
    _run_steps(loops, warmup, steps)
    sync()
    seconds = time.perf_counter() - start
    return len(loops) * steps * loops[0].batch / seconds, [x for loop in loops for x in loop.loss_sum.reshape(-1).tolist()]


def cells(params, images: torch.Tensor, steps: int, group_sizes: list[int]) -> dict:
    """Images/s of the reference loop, the device loop (eager, graph) and K cells together."""
    ratio, unit = CELL
    batch = params.train.batch_size
    out: dict = {"cell": [ratio, unit], "batch": batch, "steps": steps}
    # the reference loop (CPU path) on CUDA: one host round trip per step
    torch.manual_seed(0)
    model = build_model(params.model.model_dump(), {"image_size": images.shape[-1], "channels": images.shape[1]},
                        ratio, unit).to(DEV)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=0.0, betas=(0.9, 0.95))
    n = (images.shape[0] // batch) * batch  # one epoch of the data
    host = images[:n].cpu()
    schedule = {"peak_lr": 1e-3, "total_steps": steps, "warmup_steps": 10}
    train_epoch(model, opt, host[: 10 * batch], epoch=0, seed=0, batch_size=batch, schedule=schedule,
                device=torch.device(DEV), autocast_dtype=AUTOCAST, progress=_Progress(10**12))
    sync()
    t = time.perf_counter()
    train_epoch(model, opt, host, epoch=0, seed=0, batch_size=batch, schedule=schedule,
                device=torch.device(DEV), autocast_dtype=AUTOCAST, progress=_Progress(10**12))
    sync()
    out["reference_loop"] = n / (time.perf_counter() - t)
    print(f"reference loop: {out['reference_loop']:,.0f} img/s", flush=True)
    out["device_loop_eager"], eager = time_loops([_make_loop(params, images, ratio, unit, 0, False, steps + 20)], steps)
    print(f"device loop, eager: {out['device_loop_eager']:,.0f} img/s", flush=True)
    loop = _make_loop(params, images, ratio, unit, 0, True, steps + 20)
    rate, alone = time_loops([loop], steps)
    out["device_loop_graph"] = rate
    out["graph_captured"] = loop.graph is not None
    # the same seed, steps and data: a graph replays the eager step (bf16 atomics aside)
    out["graph_vs_eager_loss_sum_rel_diff"] = abs(alone[0] - eager[0]) / abs(eager[0])
    print(f"device loop, CUDA graph: {rate:,.0f} img/s (captured: {out['graph_captured']}; loss vs eager: "
          f"rel diff {out['graph_vs_eager_loss_sum_rel_diff']:.1e})", flush=True)
    out["together"] = []
    for k in group_sizes:
        loops = [_make_loop(params, images, ratio, unit, seed, True, steps + 20) for seed in range(k)]
        rate, sums = time_loops(loops, steps)
        diff = abs(sums[0] - alone[0]) / abs(alone[0])
        out["together"].append({"cells": k, "images_per_s": rate, "seed0_loss_sum_rel_diff_vs_alone": diff})
        print(f"{k} cells together: {rate:,.0f} img/s (seed 0's loss vs alone: rel diff {diff:.1e})", flush=True)
        del loops
        torch.cuda.empty_cache()
    # the same groups with a bf16 copy of each model (Bf16Weights) instead of autocast
    out["together_bf16_weights"] = []
    for k in group_sizes[-1:]:
        loops = [_make_loop(params, images, ratio, unit, seed, True, steps + 20, bf16_weights=True) for seed in range(k)]
        rate, sums = time_loops(loops, steps)
        diff = abs(sums[0] - alone[0]) / abs(alone[0])
        out["together_bf16_weights"].append({"cells": k, "images_per_s": rate, "seed0_loss_sum_rel_diff_vs_autocast_alone": diff})
        print(f"{k} cells together, bf16 weights: {rate:,.0f} img/s (seed 0's loss vs autocast alone: rel diff {diff:.1e})",
              flush=True)
        del loops
        torch.cuda.empty_cache()
    return out


def stacked(params, images: torch.Tensor, steps: int, group_sizes: list[int]) -> list[dict]:
    """K cells of CELL (seeds 0..K-1) as one stacked model (StackedLoop, one graph) against the
    same K cells as K device loops (a graph and a stream each): images/s of both, and how far
    each stacked cell's loss sum is from its device loop's (float rounding only)."""
    ratio, unit = CELL
    geometry = {"image_size": images.shape[-1], "channels": images.shape[1]}
    batch, rows = params.train.batch_size, []
    for k in group_sizes:
        apart, sums = time_loops([_make_loop(params, images, ratio, unit, s, True, steps + 20) for s in range(k)], steps)
        models = []
        for s in range(k):
            torch.manual_seed(s)  # as _make_loop: the same initial weights per seed
            models.append(build_model(params.model.model_dump(), geometry, ratio, unit).to(DEV))
        loop = StackedLoop(models, images, seeds=list(range(k)), batch_size=batch,
                           schedule={"peak_lr": params.train.base_lr * batch / 256, "total_steps": steps + 20,
                                     "warmup_steps": 10},
                           weight_decay=params.train.weight_decay, betas=tuple(params.train.betas),
                           autocast_dtype=AUTOCAST, graph=True)
        rate, stacked_sums = time_loops([loop], steps)  # counts one loop's images: k cells' are k times that
        diff = max(abs(a - b) / abs(b) for a, b in zip(stacked_sums, sums))
        rows.append({"cells": k, "stacked_images_per_s": k * rate, "apart_images_per_s": apart,
                     "graph_captured": loop.graph is not None, "max_loss_sum_rel_diff_vs_apart": diff})
        print(f"{k} cells stacked: {k * rate:,.0f} img/s against {apart:,.0f} as {k} graphs (loss rel diff "
              f"{diff:.1e}, graph captured: {loop.graph is not None})", flush=True)
        del loop, models
        _free_cuda()
    return rows


def worker(params_path: str, data: str, steps: int, seed: int, go: str) -> None:
    """One single-cell process of ``processes``: warms up, waits for ``go``, prints its images/s."""
    params = load_params(params_path)
    images = torch.load(data).to(DEV)
    loop = _make_loop(params, images, *CELL, seed, True, steps + 20)
    _run_steps([loop], 0, 10)
    sync()
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.005)
    start = time.perf_counter()
    _run_steps([loop], 10, steps)
    sync()
    print(json.dumps({"seed": seed, "images_per_s": steps * loop.batch / (time.perf_counter() - start)}), flush=True)


def processes(params_path: str, images: torch.Tensor, workdir: Path, steps: int, counts: list[int], batch: int) -> list[dict]:
    """K single-cell processes sharing the GPU, started together after each has warmed up."""
    data = workdir / "images.pt"
    torch.save(images.cpu(), data)
    rows = []
    for k in counts:
        go = workdir / f"go{k}"
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(steps), "--worker-seed", str(s),
                                   "--params", params_path, "--worker-data", str(data), "--worker-go", str(go)],
                                  stdout=subprocess.PIPE, text=True, env=os.environ) for s in range(k)]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        t = time.perf_counter()
        go.touch()
        rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["images_per_s"] for p in procs]
        wall = time.perf_counter() - t
        rows.append({"processes": k, "sum_images_per_s": sum(rates), "images_per_s_by_wall": k * steps * batch / wall})
        print(f"{k} processes: sum {sum(rates):,.0f} img/s, {rows[-1]['images_per_s_by_wall']:,.0f} by wall time", flush=True)
    return rows


def cross_device(raw: dict, workdir: Path) -> list[dict]:
    """One small cell through train_cell on the CPU, on CUDA fp32 and on CUDA bf16."""
    r = copy.deepcopy(raw)
    r["data"].update(n_train=3000, n_test=200)
    r["train"].update(epochs=3)
    data = workdir / "small.npz"
    save_dataset(data, generate_dataset(parse_params(r).data))
    rows, losses = [], {}
    runs = (("cpu_fp32", "cpu", "fp32"), ("cuda_fp32", "cuda", "fp32"), ("cuda_bf16", "cuda", "bf16"))
    for name, device, precision in runs if DEV == "cuda" else runs[:1] + (("cpu_again", "cpu", "fp32"),):
        rr = copy.deepcopy(r)
        rr["train"].update(device=device, precision=precision, threads=8)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        timing = train_cell(parse_params(rr), str(data), 0.75, 4, 0, str(workdir / name))
        log = (workdir / name / "train_log.csv").read_text().splitlines()[1:]
        losses[name] = [float(line.split(",")[1]) for line in log]
        rows.append({"run": name, **timing, "losses": losses[name]})
    for name in [n for n in losses if n != "cpu_fp32"]:
        rel = max(abs(a - b) / abs(b) for a, b in zip(losses[name], losses["cpu_fp32"]))
        rows.append({"compare": f"{name} vs cpu_fp32", "max_rel_loss_diff": rel})
        print(f"{name} vs cpu fp32: max relative per-epoch loss difference {rel:.2e}", flush=True)
    return rows


def paper_model() -> MaskedAutoencoder:
    """ViT-B/16 MAE (decoder 512 x 8) at 224 px on CUDA; a tiny stand-in on the CPU (dry run)."""
    torch.manual_seed(0)
    side, width = (224, 768) if DEV == "cuda" else (32, 96)
    return MaskedAutoencoder(
        image_size=side, channels=3, vit_patch=16, mask_unit=16, mask_ratio=0.75, embed_dim=width, depth=12,
        num_heads=12, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0, norm_pix_loss=True,
    ).to(DEV)


PRECISIONS = ("autocast", "bf16_weights")  # paper scale: bf16 autocast, or a bf16 copy of the model (Bf16Weights)
COMPILES = ("none", "blocks", "model")  # paper scale: eager, each transformer block compiled, the whole model
SDPA_BACKENDS = ("default", "cudnn", "flash", "efficient")  # paper scale: which fused attention SDPA may use


def _paper_spec(spec: str) -> tuple[int, str, str, str]:
    """'1024:bf16_weights:blocks[:flash]' -> (1024, 'bf16_weights', 'blocks', 'flash'), checked."""
    batch, precision, compile_mode, *rest = spec.split(":")
    backend = rest[0] if rest else "default"
    if precision not in PRECISIONS or compile_mode not in COMPILES or backend not in SDPA_BACKENDS or len(rest) > 1:
        raise SystemExit(f"--paper/--profile {spec!r}: BATCH:PRECISION:COMPILE[:SDPA], precision one of {PRECISIONS}, "
                         f"compile one of {COMPILES}, SDPA one of {SDPA_BACKENDS}")
    return int(batch), precision, compile_mode, backend


@contextlib.contextmanager
def sdpa_only(backend: str):
    """Let scaled_dot_product_attention use only ``backend`` (no math fallback: an unsupported
    shape then fails instead of timing something else); ``default`` leaves torch's choice."""
    cuda = torch.backends.cuda
    switches = {"cudnn": cuda.enable_cudnn_sdp, "flash": cuda.enable_flash_sdp,
                "efficient": cuda.enable_mem_efficient_sdp, "math": cuda.enable_math_sdp}
    if backend != "default":
        for name, switch in switches.items():
            switch(name == backend)
    torch._dynamo.reset()  # no compiled graph carries over from another configuration
    try:
        yield
    finally:
        for switch in switches.values():
            switch(True)


def paper_training(batch: int, precision: str = "autocast", compile_mode: str = "none"):
    """(flops, step): the FLOPs of one forward and backward of the ViT-B/16 MAE (counted by
    ``torch.utils.flop_counter`` on the eager model, before any compiling: the same math), and one
    training step of it on a fixed random batch, images (B, 3, 224, 224), masking noise (B, 196).

    ``precision``: ``autocast`` (bf16 autocast over fp32 weights) or ``bf16_weights`` (forward and
    backward on a bf16 copy, fp32 master weights in the fused AdamW: ``Bf16Weights``).
    ``compile_mode``: ``blocks`` compiles each transformer block in place (the 12 encoder blocks
    share one compiled graph, the 8 decoder blocks another), ``model`` the whole forward."""
    from torch.utils.flop_counter import FlopCounterMode

    side = 224 if DEV == "cuda" else 32
    master = paper_model()
    opt = torch.optim.AdamW(param_groups(master, 0.05), lr=1e-4, betas=(0.9, 0.95), fused=DEV == "cuda")
    imgs = torch.randn(batch, 3, side, side, device=DEV)
    noise = torch.rand(batch, (side // 16) ** 2, device=DEV)
    bf16 = Bf16Weights(master) if precision == "bf16_weights" else None
    model = bf16.model if bf16 is not None else master
    use_autocast = bf16 is None and DEV == "cuda"
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=use_autocast):
            loss, _, _ = model(imgs, noise=noise)
        loss.backward()
    model.zero_grad(set_to_none=True)
    fwd = model
    if compile_mode == "blocks":
        for block in [*model.blocks, *model.decoder_blocks]:
            block.compile()
    elif compile_mode == "model":
        fwd = torch.compile(model)

    def step() -> None:
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=use_autocast):
            loss, _, _ = fwd(imgs, noise=noise)
        if bf16 is None:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if bf16 is not None:
            bf16.grads_to_master()
        opt.step()
        if bf16 is not None:
            bf16.weights_from_master()

    return counter.get_total_flops(), step


def _free_cuda() -> None:
    if DEV == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def paper_profile(batch: int, precision: str, compile_mode: str, backend: str, steps: int = 5) -> str:
    """torch.profiler's table of the ViT-B/16 step's top operators by device time (where a step goes)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV == "cuda" else [])
    with sdpa_only(backend):
        _, step = paper_training(batch, precision, compile_mode)
        for _ in range(3):
            step()
        sync()
        with profile(activities=acts) as prof:
            for _ in range(steps):
                step()
            sync()
    key = "cuda_time_total" if DEV == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=30)
    print(f"profile: batch {batch}, {precision}, compile {compile_mode}, SDPA {backend}, {steps} steps\n{table}", flush=True)
    step = None
    _free_cuda()
    return table


def paper_step(batch: int, steps: int, precision: str, compile_mode: str, backend: str = "default") -> dict:
    """ViT-B/16 MAE (decoder 512 x 8) at 224 px, ratio 0.75, fused AdamW: one timed configuration."""
    with sdpa_only(backend):
        t = time.perf_counter()
        flops, step = paper_training(batch, precision, compile_mode)
        step()
        step()
        sync()
        warm_s = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        dt = (time.perf_counter() - t) / steps
    name = torch.cuda.get_device_name() if DEV == "cuda" else "cpu"
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), float("nan"))
    achieved = flops / dt / 1e12
    row = {"gpu": name, "batch": batch, "precision": precision, "compile": compile_mode, "sdpa": backend,
           "images_per_s": batch / dt,
           "step_s": dt, "flops_per_step": flops, "achieved_tflops": achieved, "bf16_peak_tflops": peak,
           "share_of_peak": achieved / peak, "setup_and_warmup_s": warm_s,
           "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if DEV == "cuda" else None}
    print(f"ViT-B/16 MAE step, batch {batch}, {precision}, compile {compile_mode}, SDPA {backend}: {achieved:.0f} TFLOP/s, "
          f"{100 * achieved / peak:.1f} % of dense bf16 peak, {batch / dt:,.0f} img/s, setup+warmup {warm_s:.0f} s",
          flush=True)
    step = None  # drop the last references before empty_cache
    _free_cuda()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="profiles/gpu/params.yaml")
    ap.add_argument("--out", default="bench-gpu")
    ap.add_argument("--steps", type=int, default=400, help="timed steps per throughput figure")
    ap.add_argument("--groups", default="2,4,8,16", help="cells trained together")
    ap.add_argument("--processes", default="4,8", help="single-cell processes at once ('' skips)")
    ap.add_argument("--parts", default="cells,processes,cross_device,paper_scale", help="also: stacked")
    ap.add_argument("--paper", default="1024:autocast:none,1024:bf16_weights:none,1024:bf16_weights:blocks",
                    help="ViT-B/16 configurations timed, BATCH:PRECISION:COMPILE, comma-separated "
                         f"(precision {'/'.join(PRECISIONS)}; compile {'/'.join(COMPILES)})")
    ap.add_argument("--paper-steps", type=int, default=10, help="timed ViT-B/16 steps per configuration")
    ap.add_argument("--profile", default="", help="paper scale: torch.profiler's top ops of BATCH:PRECISION:COMPILE")
    ap.add_argument("--deadline", type=float, default=0.0,
                    help="seconds after start: no new part or configuration begins after it (0: none)")
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker-seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker-data", default="", help=argparse.SUPPRESS)
    ap.add_argument("--worker-go", default="", help=argparse.SUPPRESS)
    ap.add_argument("--work", default="/tmp/bench-gpu-work", help="scratch folder (data, small runs)")
    args = ap.parse_args()
    started = time.perf_counter()
    for spec in [c for c in args.paper.split(",") if c] + ([args.profile] if args.profile else []):
        _paper_spec(spec)  # a wrong configuration stops here, before any work
    if args.worker:
        worker(args.params, args.worker_data, args.worker, args.worker_seed, args.worker_go)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    params = load_params(args.params)  # a profile (profiles/gpu/params.yaml) or a complete params file
    raw = params.model_dump(mode="json", exclude_none=True)
    result: dict = {"gpu": torch.cuda.get_device_name() if DEV == "cuda" else "none (CPU dry run)", "torch": torch.__version__, "params": args.params}
    parts = args.parts.split(",")

    def late() -> bool:
        return bool(args.deadline) and time.perf_counter() - started > args.deadline

    def save() -> None:
        (out / "bench_gpu.json").write_text(json.dumps(result, indent=1))

    t = time.perf_counter()
    ds = generate_dataset(params.data.model_copy(update={"n_train": 20000, "n_test": 100}))
    images = torch.from_numpy(ds.split(test=False).images).to(DEV)
    print(f"{result['gpu']}, torch {torch.__version__}; data in {time.perf_counter() - t:.1f} s", flush=True)
    for part in parts:
        if late():
            result.setdefault("skipped", []).append(part)
            continue
        t = time.perf_counter()
        try:
            if part == "cells":
                result["cells"] = cells(params, images, args.steps, [int(k) for k in args.groups.split(",")])
            elif part == "stacked":
                result["stacked"] = stacked(params, images, args.steps, [int(k) for k in args.groups.split(",")])
            elif part == "processes" and args.processes:
                result["processes"] = processes(args.params, images, work, args.steps, [int(k) for k in args.processes.split(",")],
                                                params.train.batch_size)
            elif part == "cross_device":
                result["cross_device"] = cross_device(raw, work)
            elif part == "paper_scale":
                result["paper_scale"] = []
                for spec in [c for c in args.paper.split(",") if c]:
                    if late():
                        result.setdefault("skipped", []).append(spec)
                        continue
                    try:  # one configuration failing (out of memory, a compiler error) keeps the others
                        batch, precision, compile_mode, backend = _paper_spec(spec)
                        result["paper_scale"].append(paper_step(batch, args.paper_steps, precision, compile_mode, backend))
                    except Exception as err:  # noqa: BLE001
                        result["paper_scale"].append({"config": spec, "error": f"{err.__class__.__name__}: {err}"[:2000]})
                        print(f"ViT-B/16 {spec} failed: {result['paper_scale'][-1]['error'][:300]}", flush=True)
                        _free_cuda()
                    save()
                if args.profile and not late():
                    result["paper_profile"] = paper_profile(*_paper_spec(args.profile))
                    (out / "paper_profile.txt").write_text(result["paper_profile"])
        except Exception as err:  # noqa: BLE001 - keep the other parts' figures
            result[f"{part}_error"] = f"{err.__class__.__name__}: {err}"
            print(f"{part} failed: {result[f'{part}_error']}", flush=True)
        result.setdefault("part_seconds", {})[part] = round(time.perf_counter() - t, 1)
        save()
    print(json.dumps({k: v for k, v in result.items() if k != "cross_device"}, indent=1))


if __name__ == "__main__":
    main()
