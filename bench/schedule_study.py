"""How long must a cell train before its loss settles? The gate's plateau rule against recipes.

Why: the GPU headline run of 2026-11-27 (runs/gpu-h100-2026-11-27/) learned in every cell
(gain share 0.79-1.00) but 18 of 20 synthetic and all 21 real cells failed the gate's
plateau rule (src/mae_hlvm/core/gate.py, fixed before any result: the mean loss of the last
quarter of epochs less than 1 % below the quarter before); their loss still fell 1.3-3.5 %
(synthetic, 30 epochs) and 1.3-10.9 % (real, 20 epochs). The rule is not changed here; this
study measures which recipe (epochs, batch size, peak learning rate) reaches it, and at
what cost, so that the GPU profile's recipe is chosen from the training loss alone.
(Issue 25 then took the plateau rule out of the gate, on this study's evidence: it read the
cosine schedule's anneal. :func:`plateau` keeps the rule here, as the study applied it.)

Every run is one cell trained from scratch for its own recipe (linear warmup, half-cosine
to zero over exactly its epochs, the pipeline's schedule), with the pipeline's CUDA loop
(:class:`mae_hlvm.core.device_loop.DeviceLoop`: data on the device, one CUDA graph and stream per
run). All runs share the GPU in one process; a run's steps are interleaved in proportion
to its length so that they finish together. At the end of each run it records the
per-epoch losses, the plateau verdict (:func:`plateau`: the gate's rule then), and the hidden-patch
MSE of the MAE and of the per-position-mean predictor on every test image under the probe
step's own masks (:func:`mae_hlvm.core.measures.reconstruct`, as both tracks' gates measure it):
the quality beside the cost. The gate's linear reference does not depend on the training,
so a run's gain share is computed afterwards from the headline run's ``linear_mse``.

    python bench/schedule_study.py --params profiles/gpu/params.yaml \
        --synthetic data/synthetic.npz --real data/real.npz --out $OUT/schedule_study
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mae_hlvm.core.config import load_params
from mae_hlvm.core.data import load_dataset
from mae_hlvm.core.device_loop import DeviceLoop
from mae_hlvm.core.gate import loss_rel_drop, train_mean_image
from mae_hlvm.core.measures import recon_seed, reconstruct
from mae_hlvm.core.model import build_model
from mae_hlvm.core.schedule import cosine_schedule
from mae_hlvm.real.train_real import real_train_params

PLATEAU_REL_DROP = 0.01  # the gate's former plateau rule, as this study applied it


def plateau(losses: list[float]) -> tuple[bool, str]:
    """(plateaued, reason): the last quarter's mean loss less than 1 % below the quarter before."""
    drop = loss_rel_drop(losses)
    if drop is None:
        return False, "too few epochs to judge"
    if not math.isfinite(drop):
        return False, "training loss not finite and positive"
    if drop >= PLATEAU_REL_DROP:
        return False, f"not plateaued (loss fell {drop:.1%} over the last quarter of epochs)"
    return True, "ok"


# (track, mask_ratio, mask_unit): the headline run's worst and middle cells per track
CELLS = {
    "synthetic": [(0.1, 2), (0.5, 4)],
    "real": [(0.1, 8), (0.75, 8)],
}
# (epochs, batch, peak lr): the headline recipe doubled, and larger batches (fewer steps, a fuller GPU)
RECIPES = {
    "synthetic": [(60, 256, 2.4e-3), (60, 1024, 4.8e-3), (60, 1024, 9.6e-3), (120, 1024, 4.8e-3)],
    "real": [(60, 256, 2.4e-3), (60, 1024, 4.8e-3), (120, 1024, 4.8e-3)],
}
# --headline: the GPU profile's own recipe per track, to compare precisions at the recipe that is run
HEADLINE = {"synthetic": [(30, 256, 2.4e-3)], "real": [(20, 256, 2.4e-3)]}
# DeviceLoop's precisions: bf16 autocast over fp32 weights, or a bf16 copy with fp32 master weights
PRECISIONS = ("autocast", "bf16_weights")


@dataclass
class Run:
    """One (cell, recipe) trained from scratch on its own CUDA stream."""

    track: str
    ratio: float
    unit: int
    epochs: int
    batch: int
    peak_lr: float
    loop: DeviceLoop
    precision: str
    test: np.ndarray
    mean_image: np.ndarray
    seed: int = 0
    reps: int = 1
    done_steps: int = 0
    losses: list[float] = field(default_factory=list)
    result: dict | None = None

    @property
    def name(self) -> str:
        return f"{self.track}:r{self.ratio}_p{self.unit}:e{self.epochs}_b{self.batch}_lr{self.peak_lr:g}:{self.precision}"

    @property
    def total_steps(self) -> int:
        return self.epochs * self.loop.steps_per_epoch

    def step(self) -> None:
        """One training step; opens and closes epochs as they come."""
        spe = self.loop.steps_per_epoch
        if self.done_steps % spe == 0:
            self.loop.begin_epoch(self.done_steps // spe)
        self.loop.step()
        self.done_steps += 1
        if self.done_steps % spe == 0:
            self.losses.append(self.loop.end_epoch())

    def finish(self, seconds: float) -> dict:
        model = self.loop.model
        if self.loop.device.type == "cuda":
            torch.cuda.synchronize()
        mse, mean_mse, _ = reconstruct(model, self.test, 1024, recon_seed(self.seed), 0, self.mean_image)
        settled, why = plateau(self.losses)
        self.result = {
            "track": self.track, "mask_ratio": self.ratio, "mask_unit": self.unit, "seed": self.seed,
            "epochs": self.epochs, "batch": self.batch, "peak_lr": self.peak_lr, "precision": self.precision,
            "steps": self.done_steps,
            "passes": self.done_steps * self.batch, "losses": [round(x, 6) for x in self.losses],
            "loss_rel_drop": loss_rel_drop(self.losses), "plateau": settled, "plateau_reason": why,
            "recon_mse": mse, "mean_pred_mse": mean_mse, "recon_rel": mse / mean_mse,
            "finished_at_s": round(seconds, 1),
        }
        return self.result


def make_runs(params_path: str, synthetic: str | None, real: str | None, device: torch.device,
              precisions: tuple[str, ...] = ("autocast",)) -> list[Run]:
    params = load_params(params_path)
    cuda = device.type == "cuda"
    runs = []
    for track, path in (("synthetic", synthetic), ("real", real)):
        if not path:
            continue
        p = params if track == "synthetic" else real_train_params(params)
        ds = load_dataset(path)
        train, test = ds.split(test=False), ds.split(test=True)
        images = torch.from_numpy(train.images).to(device)
        mean_image = train_mean_image(train.images)
        geometry = {"image_size": ds.image_size, "channels": ds.channels}
        for ratio, unit in CELLS[track]:
            for (epochs, batch, peak), precision in itertools.product(RECIPES[track], precisions):
                torch.manual_seed(0)
                model = build_model(p.model.model_dump(), geometry, ratio, unit).to(device)
                spe = len(images) // batch
                schedule = cosine_schedule(peak, epochs * spe, p.train.warmup_epochs, spe)
                loop = DeviceLoop(model, images, seed=0, batch_size=batch, schedule=schedule,
                                  weight_decay=p.train.weight_decay, betas=tuple(p.train.betas),
                                  autocast_dtype=torch.bfloat16 if cuda else None, graph=cuda,
                                  bf16_weights=precision == "bf16_weights" and cuda)
                runs.append(Run(track, ratio, unit, epochs, batch, peak, loop, precision, test.images, mean_image))
    shortest = min(r.total_steps for r in runs)
    for r in runs:
        r.reps = max(1, round(r.total_steps / shortest))
    return runs


def gain_share(recon_rel: float, ref: dict) -> float:
    """The gate's gain share from ratios: the reference's linear_mse / mean_pred_mse on the same cell."""
    linear_rel = ref["linear_mse"] / ref["mean_pred_mse"]
    return (1.0 - recon_rel) / (1.0 - linear_rel)


def markdown(result: dict) -> str:
    """The study as a table: each run beside the headline run's cell (``result["references"]``).
    A precision column appears when the runs name their precision (``--precisions``); the
    headline run's references trained under bf16 autocast."""
    refs = {(c["track"], c["mask_ratio"], c["mask_unit"]): c for c in result["references"]["cells"]}
    by_precision = any("precision" in r for r in result["runs"])
    question = result.get("question") or (
        "Does a longer or larger-batch recipe reach the gate's plateau rule (last quarter of epochs' mean "
        "loss < 1 % below the quarter before; src/mae_hlvm/core/gate.py, unchanged)?")
    lines = [
        f"# Schedule study ({result['when']}, {result['device']}, torch {result['torch']})", "",
        f"{question} Seed 0, the GPU profile's data "
        f"({result['params']}); {len(result['runs'])} runs together in one process, "
        f"{sum(r['passes'] for r in result['runs']) / 1e6:.1f}M image passes in {result['wall_s']:.0f} s "
        f"({result['images_per_s']:,} images/s). Reference rows (*): {result['references']['source']}. Gain share = (1 - hidden rel) / (1 - linear rel), the linear rel "
        "taken from the reference cell.", "",
        "| track | cell | epochs | batch | peak lr |" + (" precision |" if by_precision else "")
        + " passes | steps | final loss | last-quarter drop | plateau | hidden rel | gain share |",
        "|---|---|---|---|---|" + ("---|" if by_precision else "") + "---|---|---|---|---|---|---|",
    ]
    # steps per epoch of a track at a batch size, from the runs (a reference shares their data)
    per_epoch = {(r["track"], r["batch"]): r["steps"] // r["epochs"] for r in result["runs"]}
    rows = [dict(r, ref=True) for r in result["references"]["cells"]] + list(result["runs"])
    rows.sort(key=lambda r: (r["track"] != "synthetic", r["mask_ratio"], r["mask_unit"], r["batch"], r["epochs"], r["peak_lr"],
                             not r.get("ref"), r.get("precision", "autocast")))
    for r in rows:
        ref = refs[(r["track"], r["mask_ratio"], r["mask_unit"])]
        steps = r["epochs"] * per_epoch[(r["track"], r["batch"])]
        lines.append(
            f"| {r['track']} | r{r['mask_ratio']} u{r['mask_unit']}{' *' if r.get('ref') else ''} | {r['epochs']} | "
            f"{r['batch']} | {r['peak_lr']:.1e} |" + (f" {r.get('precision', 'autocast')} |" if by_precision else "")
            + f" {steps * r['batch'] / 1e6:.1f}M | {steps:,} | {r['losses'][-1]:.4f} | "
            f"{r['loss_rel_drop']:.2%} | {'yes' if plateau(r['losses'])[0] else 'no'} | "
            f"{r['recon_rel']:.3f} | {gain_share(r['recon_rel'], ref):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="profiles/gpu/params.yaml")
    ap.add_argument("--synthetic", default="data/synthetic.npz")
    ap.add_argument("--real", default="data/real.npz")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="shrink every recipe (a CPU rehearsal)")
    ap.add_argument("--out", default="bench/results/schedule_study")
    ap.add_argument("--headline", action="store_true", help="the GPU profile's recipe only (HEADLINE), not RECIPES")
    ap.add_argument("--precisions", default="autocast", help=f"comma-separated, of {PRECISIONS}: each recipe in each")
    ap.add_argument("--report", default="", help="write the markdown table of this result JSON (with references) and stop")
    args = ap.parse_args()
    if args.report:
        Path(args.report).with_suffix(".md").write_text(markdown(json.loads(Path(args.report).read_text())))
        return 0
    precisions = tuple(args.precisions.split(","))
    if not set(precisions) <= set(PRECISIONS):
        ap.error(f"--precisions {args.precisions!r}: each one of {PRECISIONS}")
    if args.headline:
        RECIPES.update(HEADLINE)
    if args.epochs_scale != 1.0:
        for track in RECIPES:
            RECIPES[track] = [(max(4, round(e * args.epochs_scale)), b, lr) for e, b, lr in RECIPES[track]]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs = make_runs(args.params, args.synthetic, args.real, device, precisions)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = {"when": time.strftime("%Y-%m-%d %H:%M"), "device": gpu, "torch": torch.__version__,
              "params": args.params, "runs": []}
    out = Path(args.out)

    def save() -> None:
        result["runs"] = [r.result or {"name": r.name, "losses": r.losses, "steps": r.done_steps} for r in runs]
        out.with_suffix(".json").write_text(json.dumps(result, indent=1))

    total_passes = sum(r.total_steps * r.batch for r in runs)
    print(f"{len(runs)} runs on {gpu}, {total_passes / 1e6:.1f}M image passes in all", flush=True)
    start = last = time.perf_counter()
    passes = 0
    active = list(runs)
    while active:
        for r in active:
            for _ in range(min(r.reps, r.total_steps - r.done_steps)):
                r.step()
                passes += r.batch
        for r in [r for r in active if r.done_steps >= r.total_steps]:
            active.remove(r)
            res = r.finish(time.perf_counter() - start)
            print(f"{r.name}: loss {res['losses'][-1]:.4f}, last-quarter drop {res['loss_rel_drop']:.2%}, "
                  f"plateau {res['plateau']}, hidden rel {res['recon_rel']:.3f}, at {res['finished_at_s']:.0f} s", flush=True)
            save()
        now = time.perf_counter()
        if now - last >= 20:
            last = now
            rate = passes / (now - start)
            print(f"{passes / 1e6:.1f}M/{total_passes / 1e6:.1f}M passes, {rate:,.0f} img/s, "
                  f"ETA {(total_passes - passes) / max(rate, 1):.0f} s", flush=True)
            save()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    result["wall_s"] = round(wall, 1)
    result["images_per_s"] = round(total_passes / wall)
    save()
    print(f"done: {total_passes / 1e6:.1f}M passes in {wall:.0f} s ({total_passes / wall:,.0f} img/s)", flush=True)
    return 0 if all(math.isfinite(r.result["recon_rel"]) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
