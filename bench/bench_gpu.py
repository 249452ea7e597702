"""The CUDA path against the CPU path, and GPU throughput at the default and paper scale.

Run on a machine with a GPU (used once per session through the device tool):
    PYTHONPATH=src python bench/bench_gpu.py --out results-gpu
It (1) trains the same cells on the CPU (fp32), on CUDA in fp32 (TF32 off) and on CUDA
with bf16 autocast, and compares their per-epoch losses; (2) measures training
images/s of the default model on CUDA; (3) measures a ViT-B/16 MAE step at 224 px
(the paper's model) in bf16, counts its FLOPs with torch's FlopCounterMode and
reports the share of the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import yaml

from mae_hlvm.config import parse_params
from mae_hlvm.generate import generate_dataset
from mae_hlvm.data import save_dataset
from mae_hlvm.model import MaskedAutoencoder
from mae_hlvm.train import train_cell

# Dense bf16 tensor-core peaks (vendor datasheets, SXM parts, no sparsity).
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}


def cross_device(raw: dict, cells: list[tuple[float, int, int]], workdir: Path) -> list[dict]:
    rows = []
    for ratio, unit, seed in cells:
        losses = {}
        for name, device, precision in (("cpu_fp32", "cpu", "fp32"), ("cuda_fp32", "cuda", "fp32"), ("cuda_bf16", "cuda", "bf16")):
            r = copy.deepcopy(raw)
            r["train"].update(device=device, precision=precision, threads=8)
            params = parse_params(r)
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            timing = train_cell(params, str(workdir / "data.npz"), ratio, unit, seed, str(workdir / name / f"{ratio}_{unit}_{seed}"))
            log = (workdir / name / f"{ratio}_{unit}_{seed}" / "train_log.csv").read_text().splitlines()[1:]
            losses[name] = [float(line.split(",")[1]) for line in log]
            rows.append({"cell": [ratio, unit, seed], "run": name, **timing, "losses": losses[name]})
        for name in ("cuda_fp32", "cuda_bf16"):
            rel = max(abs(a - b) / abs(b) for a, b in zip(losses[name], losses["cpu_fp32"]))
            rows.append({"cell": [ratio, unit, seed], "compare": f"{name} vs cpu_fp32", "max_rel_loss_diff": rel})
            print(f"cell {ratio}/{unit}/{seed}: {name} vs cpu fp32: max relative loss difference {rel:.2e}")
    return rows


def real_cells(params, data: str, workdir: Path) -> list[dict]:
    """Real-track cells (the default recipe) on CUDA with bf16 autocast: images/s."""
    from mae_hlvm.train_real import real_train_params

    p = real_train_params(params)
    p = p.model_copy(update={"train": p.train.model_copy(update={"device": "cuda", "precision": "bf16"})})
    rows = []
    for ratio, unit in ((0.75, 8), (0.1, 4)):
        timing = train_cell(p, data, ratio, unit, 0, str(workdir / "real" / f"{ratio}_{unit}"))
        rows.append({"cell": [ratio, unit, 0], **timing})
        print(f"real cell {ratio}/{unit}: {timing}")
    return rows


def paper_scale(batch: int, steps: int) -> dict:
    """ViT-B/16 MAE (decoder 512 x 8) at 224 px, ratio 0.75, bf16 autocast."""
    model = MaskedAutoencoder(
        image_size=224, channels=3, vit_patch=16, mask_unit=16, mask_ratio=0.75, embed_dim=768, depth=12,
        num_heads=12, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0, norm_pix_loss=True,
    ).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    imgs = torch.randn(batch, 3, 224, 224, device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _, _ = model(imgs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    from torch.utils.flop_counter import FlopCounterMode
    step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), float("nan"))
    achieved = flops / dt / 1e12
    return {"gpu": name, "batch": batch, "images_per_s": batch / dt, "step_s": dt, "flops_per_step": flops,
            "achieved_tflops": achieved, "bf16_peak_tflops": peak, "share_of_peak": achieved / peak,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="bench-gpu")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--real-data", default=None, help="a prepared data/real.npz: also train real cells on CUDA")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(Path(args.params).read_text())
    raw["train"]["epochs"] = args.epochs
    params = parse_params(raw)
    t = time.perf_counter()
    save_dataset(out / "data.npz", generate_dataset(params.data))
    print(f"generated data in {time.perf_counter() - t:.1f}s; GPU: {torch.cuda.get_device_name()}")
    cells = [(0.75, params.grid.patch_sizes[0], 0), (0.25, params.grid.patch_sizes[-1], 1)]
    result = {"cross_device": cross_device(raw, cells, out)}
    for row in result["cross_device"]:
        if "images_per_s" in row:
            print(f"cell {row['cell']} {row['run']}: {row['images_per_s']} img/s, {row['seconds']} s")
    if args.real_data:
        result["real"] = real_cells(params, args.real_data, out)
    result["paper_scale"] = paper_scale(batch=256, steps=10)
    print(json.dumps(result["paper_scale"], indent=1))
    (out / "bench_gpu.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
