"""Pretrain every grid cell of one seed in one process (step ``train-seed``, ``train.job: seed``).

The grid's trainer (:func:`mae_hlvm.core.train.train_cells_together`) on all mask ratios x
masking units of the seed. On a GPU the cells train side by side, one CUDA graph and one
stream each, which fills the GPU where one small cell cannot (bench/results/
gpu_h100_2026-11-26.md: 147k images/s for one cell, 333k for 8 together); each cell's
steps, data order and masks are the ones it gets alone, and on the CPU, where the cells
train one after the other, its checkpoint is byte-identical to a ``train`` job's. With
``--stability`` it trains the stability set's cells at their budget instead.
"""

from __future__ import annotations

import argparse
import itertools

from mae_hlvm.core import paths
from mae_hlvm.core.cells import cell_id, stability_cells
from mae_hlvm.core.config import Params
from mae_hlvm.core.errors import ParamsError
from mae_hlvm.core.io import write_json
from mae_hlvm.core.train import stability_budget, train_cells_together, with_budget


def seed_cells(params: Params, seed: int, models_dir: str) -> list[tuple[float, int, int, str]]:
    """(mask_ratio, mask_unit, seed, out_dir) of every grid cell of ``seed``, in the grid's order."""
    g = params.grid
    return [(r, u, seed, f"{models_dir}/{cell_id(r, u, seed)}") for r, u in itertools.product(g.mask_ratios, g.mask_units)]


def run(params: Params, args: argparse.Namespace) -> None:
    """Every grid cell of ``--seed``; with ``--stability`` every cell of the stability set instead,
    at its budget (``--seed`` is then the stability seed, and may be left out)."""
    if args.stability:
        factor = stability_budget(params, True)
        cells = [(r, u, s, f"{args.models_dir}/{cell_id(r, u, s)}") for r, u, s in stability_cells(params)]
        if args.seed is not None and args.seed != params.stability.seed:
            raise ParamsError(f"--seed {args.seed}: the stability set trains stability.seed={params.stability.seed}")
    else:
        if args.seed is None:
            raise ParamsError("train-seed: --seed is required (or --stability for the stability set)")
        factor, cells = 1, seed_cells(params, args.seed, args.models_dir)
    step = "train_stable" if args.stability else "train"
    for (r, u, s, _), timing in zip(cells, train_cells_together(with_budget(params, factor), args.data, cells)):
        write_json(paths.timing(step, cell_id(r, u, s)), timing)
