"""Pretrain one cell of the budget-robustness subset (step ``train-long``).

The grid's trainer (:func:`mae_hlvm.core.train.train_cell`) on a copy of the params whose
``train.epochs`` is multiplied by ``robustness.budget_factor``; everything else (data,
model, the rest of the recipe, the seed's data order and masks) is the grid's own.
"""

from __future__ import annotations

import argparse

from mae_hlvm.core import paths
from mae_hlvm.core.cells import cell_id
from mae_hlvm.core.config import Params, ParamsError
from mae_hlvm.core.io import write_json
from mae_hlvm.core.train import train_cell


def long_train_params(params: Params) -> Params:
    """``params`` with ``budget_factor`` x the epochs (``model_copy``: no revalidation needed)."""
    if params.robustness is None:
        raise ParamsError("params.yaml: no 'robustness:' section (the budget-robustness stage is off)")
    train = params.train.model_copy(update={"epochs": params.train.epochs * params.robustness.budget_factor})
    return params.model_copy(update={"train": train})


def run(params: Params, args: argparse.Namespace) -> None:
    timing = train_cell(long_train_params(params), args.data, args.mask_ratio, args.mask_unit, args.seed, args.out_dir)
    write_json(paths.timing("train_long", cell_id(args.mask_ratio, args.mask_unit, args.seed)), timing)
