"""Pretrain every grid cell of one seed in one process (step ``train-seed``, ``train.job: seed``).

The grid's trainer (:func:`mae_hlvm.core.train.train_cells_together`) on all mask ratios x
masking units of the seed. On a GPU the cells train side by side, one CUDA graph and one
stream each, which fills the GPU where one small cell cannot (bench/results/
gpu_h100_2026-11-26.md: 147k images/s for one cell, 333k for 8 together); each cell's
steps, data order and masks are the ones it gets alone, and on the CPU, where the cells
train one after the other, its checkpoint is byte-identical to a ``train`` job's.
"""

from __future__ import annotations

import argparse
import itertools

from mae_hlvm.core import paths
from mae_hlvm.core.cells import cell_id
from mae_hlvm.core.config import Params
from mae_hlvm.core.io import write_json
from mae_hlvm.core.train import train_cells_together


def seed_cells(params: Params, seed: int, models_dir: str) -> list[tuple[float, int, int, str]]:
    """(mask_ratio, mask_unit, seed, out_dir) of every grid cell of ``seed``, in the grid's order."""
    g = params.grid
    return [(r, u, seed, f"{models_dir}/{cell_id(r, u, seed)}") for r, u in itertools.product(g.mask_ratios, g.mask_units)]


def run(params: Params, args: argparse.Namespace) -> None:
    cells = seed_cells(params, args.seed, args.models_dir)
    for (r, u, s, _), timing in zip(cells, train_cells_together(params, args.data, cells)):
        write_json(paths.timing("train", cell_id(r, u, s)), timing)
