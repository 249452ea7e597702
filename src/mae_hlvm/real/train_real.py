"""Pretrain the real-image track's MAEs: one cell (step ``train-real``), or every cell of
one sweep and seed in one process (step ``train-real-seed``, ``train.job: seed``).

The same trainer as the synthetic grid (:func:`mae_hlvm.core.train.train_cells_together`, which
reads the image geometry from the dataset file); only the ``real:`` section's recipe
overrides (ViT patch, epochs, base lr, batch size) are applied to a copy of the params.
Trained together, the cells fill a GPU that one small cell leaves idle, and each cell's
steps, data order and masks are the ones it gets alone (docs/gpu.md).
"""

from __future__ import annotations

import argparse

from mae_hlvm.core import paths
from mae_hlvm.core.cells import cell_id, real_sweep_cells, require_real
from mae_hlvm.core.config import Params, ParamsError
from mae_hlvm.core.io import write_json
from mae_hlvm.core.train import stability_budget, train_cell, train_cells_together, with_budget


def real_train_params(params: Params) -> Params:
    """``params`` with this track's ViT patch and recipe; the other model and train keys are shared.

    ``model_copy`` skips validation on purpose: the synthetic grid's cross-checks
    (its masking units against this ViT patch) do not apply to the real track.
    """
    real = require_real(params)
    model = params.model.model_copy(update={"vit_patch": real.vit_patch})
    train = params.train.model_copy(update={"epochs": real.epochs, "base_lr": real.base_lr, "batch_size": real.batch_size})
    return params.model_copy(update={"model": model, "train": train})


def run(params: Params, args: argparse.Namespace) -> None:
    """One cell; with ``--stability`` the stability set's run of it (budget_factor x real.epochs)."""
    train_params = with_budget(real_train_params(params), stability_budget(params, args.stability))
    timing = train_cell(train_params, args.data, args.mask_ratio, args.mask_unit, args.seed, args.out_dir)
    cell = cell_id(args.mask_ratio, args.mask_unit, args.seed)
    write_json(paths.timing("train_real_stable" if args.stability else "train_real", f"{args.sweep}_{cell}"), timing)


def sweep_seed_cells(params: Params, sweep: str, seed: int, models_dir: str) -> list[tuple[float, int, int, str]]:
    """(mask_ratio, mask_unit, seed, out_dir) of every cell of ``sweep`` with ``seed``, in the sweep's order."""
    cells = real_sweep_cells(require_real(params)).get(sweep)
    if cells is None:
        raise ParamsError(f"params.yaml: real.sweep={params.real.sweep} has no sweep {sweep}")
    if seed not in params.real.seeds:
        raise ParamsError(f"--seed {seed}: not one of real.seeds {params.real.seeds}")
    return [(r, u, s, f"{models_dir}/{sweep}/{cell_id(r, u, s)}") for r, u, s in cells if s == seed]


def run_seed(params: Params, args: argparse.Namespace) -> None:
    """Every cell of one sweep and seed; with ``--stability`` the sweep's cells at the stability seed
    at budget_factor x real.epochs (``--seed`` may then be left out)."""
    factor = stability_budget(params, args.stability)
    seed = params.stability.seed if args.stability else args.seed
    if seed is None or (args.stability and args.seed not in (None, seed)):
        raise ParamsError(f"train-real-seed: --seed {args.seed}: give a seed of real.seeds, or --stability "
                          f"(which trains stability.seed={params.stability.seed if params.stability else 'n/a'})")
    cells = sweep_seed_cells(params, args.sweep, seed, args.models_dir)
    step = "train_real_stable" if args.stability else "train_real"
    for (r, u, s, _), timing in zip(cells, train_cells_together(with_budget(real_train_params(params), factor), args.data, cells)):
        write_json(paths.timing(step, f"{args.sweep}_{cell_id(r, u, s)}"), timing)
