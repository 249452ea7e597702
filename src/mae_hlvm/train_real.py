"""Pretrain one cell of the real-image track (step ``train-real``).

The same trainer as the synthetic grid (:func:`mae_hlvm.train.train_cell`, which reads
the image geometry from the dataset file); only the ``real:`` section's recipe
overrides (ViT patch, epochs, base lr, batch size) are applied to a copy of the params.
"""

from __future__ import annotations

import argparse

from . import paths
from .config import ParamsError, Params, cell_id
from .io import write_json
from .train import train_cell


def real_train_params(params: Params) -> Params:
    """``params`` with this track's ViT patch and recipe; the other model and train keys are shared.

    ``model_copy`` skips validation on purpose: the synthetic grid's cross-checks
    (its masking units against this ViT patch) do not apply to the real track.
    """
    real = params.real
    if real is None:
        raise ParamsError("params.yaml: no 'real:' section (the real-image track is off)")
    model = params.model.model_copy(update={"vit_patch": real.vit_patch})
    train = params.train.model_copy(update={"epochs": real.epochs, "base_lr": real.base_lr, "batch_size": real.batch_size})
    return params.model_copy(update={"model": model, "train": train})


def run(params: Params, args: argparse.Namespace) -> None:
    timing = train_cell(real_train_params(params), args.data, args.mask_ratio, args.mask_unit, args.seed, args.out_dir)
    cell = cell_id(args.mask_ratio, args.mask_unit, args.seed)
    write_json(paths.timing("train_real", f"{args.sweep}_{cell}"), timing)
