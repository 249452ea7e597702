"""What the params switch on in the stage table: when a stage runs, what else it reads, which files.

The stage records (:mod:`mae_hlvm.workflow.stages`) take from here their ``runs_when``
(``train.job``, and whether the real track, the stability set and each real sweep are on),
the params keys of the real track's stages (and what summary and claims read when a track
is on), and the files of the optional tracks' cells under given params ([] when off).

Nothing here imports torch or numpy: the Snakefile imports it at parse time (through stages).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mae_hlvm.core import paths
from mae_hlvm.core.cells import real_enabled, real_sweeps, stability_enabled, stability_real
from mae_hlvm.core.config import Params
from mae_hlvm.core.paths import REAL_FIGURE_NAMES
from mae_hlvm.workflow.matrices import REAL, REAL_STABLE, cell_name, stable_cells

# ----------------------------------------------------------------------------- params read

# realdata.DATA_KEYS (a test checks they agree); spelled out so the Snakefile never imports numpy
REAL_DATA_PARAMS = tuple(
    f"real.{k}"
    for k in ("dataset", "path", "image_size", "channels", "fit", "n_train", "n_test", "split_seed", "cue_conflict")
)
# train_cell records the whole resolved model/train sections, but real.* overrides these:
REAL_TRAIN_PARAMS = (
    tuple(f"model.{k}" for k in ("embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_depth",
                                 "decoder_num_heads", "mlp_ratio", "norm_pix_loss"))
    + tuple(f"train.{k}" for k in ("weight_decay", "warmup_epochs", "betas", "device", "precision", "threads"))
    + ("real.vit_patch", "real.epochs", "real.base_lr", "real.batch_size")
)
REAL_EVALUATE_PARAMS = ("real.probe_epochs", "real.knn_k", "real.eval_seed", "train.threads", "train.device")
REAL_REPORT_PARAMS = (
    "real.sweep", "real.mask_ratios", "real.mask_units", "real.sweep_a_unit", "real.sweep_b_ratio", "real.seeds",
    "real.n_eval_images", "real.tsne_points", "real.eval_seed", "train.threads", "train.device",
    # Table 1's floors: the untrained encoder (built as train-real builds it) under the same probes
    "real.probe_epochs", "real.knn_k", "real.vit_patch",
    *(k for k in REAL_TRAIN_PARAMS if k.startswith("model.")),
)
# Where each real sweep's cells are: what claims reads of the real track when it is on (the
# section may be absent otherwise), to find their JSONs, and what a train_real_seed job trains.
REAL_SWEEP_PARAMS = ("real.sweep", "real.mask_ratios", "real.mask_units", "real.sweep_a_unit", "real.sweep_b_ratio", "real.seeds")


def summary_reads(params: Params) -> tuple[str, ...]:
    """The summary prints the real section and the stability section when they are on."""
    return (("real",) if real_enabled(params) else ()) + (("stability",) if stability_enabled(params) else ())


def claims_reads(params: Params) -> tuple[str, ...]:
    """Claims find the real track's cells, and the stability set's at both budgets, where they are on."""
    return (REAL_SWEEP_PARAMS if real_enabled(params) else ()) + (("stability",) if stability_enabled(params) else ())


# ----------------------------------------------------------------------------- when a stage runs


def is_cell_job(params: Params) -> bool:
    return params.train.job == "cell"


def stable_cell_jobs(params: Params) -> bool:
    return stability_enabled(params) and is_cell_job(params)


def stable_seed_jobs(params: Params) -> bool:
    return stability_enabled(params) and not is_cell_job(params)


def real_sweep_on(sweep: str, stable: bool = False) -> Callable[[Params], bool]:
    if stable:
        return lambda params: stability_real(params) and sweep in real_sweeps(params.real)
    return lambda params: real_enabled(params) and sweep in real_sweeps(params.real)


def real_sweep_cell_jobs(sweep: str, stable: bool = False) -> Callable[[Params], bool]:
    return lambda params: real_sweep_on(sweep, stable)(params) and is_cell_job(params)


def real_sweep_seed_jobs(sweep: str, stable: bool = False) -> Callable[[Params], bool]:
    return lambda params: real_sweep_on(sweep, stable)(params) and not is_cell_job(params)


# ----------------------------------------------------------------------------- the tracks' files


def real_cell_jsons(params: Params | None, stable: bool = False) -> list[str]:
    """Every current real cell's JSON (evaluate_real outputs), per sweep; [] when the track is off.
    ``stable``: the stability set's real cells (evaluate_real_stable outputs); [] when not in the set."""
    if params is None or not (stability_real(params) if stable else real_enabled(params)):
        return []
    matrices = REAL_STABLE if stable else REAL
    return [paths.real_cell_json(s, cell_name(c), stable) for s in real_sweeps(params.real) for c in matrices[s].cells(params)]


def stable_cell_jsons(params: Params | None) -> list[str]:
    """The synthetic stability set's probe JSONs (probe_stable outputs); [] when the set is off."""
    if params is None or not stability_enabled(params):
        return []
    return [paths.probe_json(cell_name(c), stable=True) for c in stable_cells(params)]


def real_summary_inputs(params: Params | None) -> list[str]:
    """The real track's Table 1 (Markdown) and figures, which the summary shows when the track is on."""
    if params is None or not real_enabled(params):
        return []
    return [f"{paths.REAL_TABLE_STEM}.md"] + [f"{paths.REAL_FIGURES_DIR}/{name}.png" for name in REAL_FIGURE_NAMES]


def user_data_inputs(params: Params | None) -> dict[str, str]:
    """The user's own real data, deps of ``prepare_real``: {``real.`` key: normalised path}.

    ``path`` for a folder or .npz (none for mnist/digits), ``cue_conflict`` when set.
    """
    real = None if params is None else params.real
    if real is None:
        return {}
    keys = (["path"] if real.dataset in ("folder", "npz") else []) + (["cue_conflict"] if real.cue_conflict else [])
    return {key: os.path.normpath(getattr(real, key)) for key in keys}
