"""Training-step throughput per grid cell: our MAE against a plain MAE of the same size.

Also measures CPU bf16 autocast against fp32 (this project's CPU has AVX-512 bf16) and
peak resident memory. Prints a Markdown table; numbers go into README by hand.

    python bench/bench_train.py [--params params.yaml] [--steps 8] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_mae import PlainMAE  # noqa: E402

from mae_hlvm.core.config import load_params  # noqa: E402
from mae_hlvm.core.model import build_model  # noqa: E402


def step_rate(step, batch: int, steps: int, device: str) -> float:
    """Images per second over ``steps`` training steps after two warm-up steps."""
    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: params train.threads)")
    args = ap.parse_args()
    params = load_params(args.params)
    torch.set_num_threads(args.threads or params.train.threads)
    m, d = params.model, params.data
    batch = params.train.batch_size
    geometry = {"image_size": d.image_size, "channels": d.channels}
    imgs = torch.randn(batch, d.channels, d.image_size, d.image_size, device=args.device)
    print(f"device {args.device}, threads {torch.get_num_threads()}, batch {batch}, image {d.image_size}px, "
          f"ViT patch {m.vit_patch}, dim {m.embed_dim}, depth {m.depth}")
    print("| ratio | unit | ours fp32 img/s | ours bf16 img/s | plain MAE fp32 img/s | ours/plain |")
    print("|---|---|---|---|---|---|")
    for unit in params.grid.mask_units:
        for ratio in params.grid.mask_ratios:
            torch.manual_seed(0)
            ours = build_model(m.model_dump(), geometry, ratio, unit).to(args.device)
            opt = torch.optim.AdamW(ours.parameters(), lr=1e-4)
            rates = {}
            for prec in ("fp32", "bf16"):
                def step_ours(prec=prec, ours=ours, opt=opt):
                    with torch.autocast(args.device, dtype=torch.bfloat16, enabled=prec == "bf16"):
                        loss, _, _ = ours(imgs)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                rates[prec] = step_rate(step_ours, batch, args.steps, args.device)
            plain = PlainMAE(d.image_size, d.channels, m.vit_patch, m.embed_dim, m.depth, m.num_heads,
                             m.decoder_embed_dim, m.decoder_depth, m.decoder_num_heads, m.mlp_ratio).to(args.device)
            popt = torch.optim.AdamW(plain.parameters(), lr=1e-4)

            def step_plain(plain=plain, popt=popt, ratio=ratio):
                loss = plain(imgs, ratio)
                popt.zero_grad()
                loss.backward()
                popt.step()

            rates["plain"] = step_rate(step_plain, batch, args.steps, args.device) if unit == m.vit_patch else float("nan")
            print(f"| {ratio} | {unit} | {rates['fp32']:.0f} | {rates['bf16']:.0f} | {rates['plain']:.0f} | "
                  f"{rates['fp32'] / rates['plain']:.2f} |")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
