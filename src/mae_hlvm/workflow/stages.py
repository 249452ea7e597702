"""The stage table: one frozen :class:`Stage` record per pipeline stage, and nothing else.

A record says everything about its stage: the CLI step it runs (:class:`Step`: runner,
help, arguments), the params keys it reads, its command's arguments, the files it reads
and writes, its matrix (one job, one per grid cell, per seed or per real sweep's cell),
when it runs, its resources and which outputs go into Snakemake's report. The Snakefile's
rules (one loop), ``dvc.yaml`` (``make dvc-yaml``) and the command line (``cli.STEPS``)
are all derived from :data:`TABLE` by :mod:`mae_hlvm.workflow.pipeline`, so **adding a stage is one
record here plus one module** holding its ``run(params, args)``
(tests/test_stage_table.py builds such a stage and runs it through both tools).

Paths come from :mod:`mae_hlvm.core.paths`; a record's functions take the cell's fields
(``f``: ``mask_ratio``, ``mask_unit``, ``seed`` as spelled in paths, or DVC's / Snakemake's
placeholders) and, where a stage reads every cell, the params.

Nothing here imports torch or numpy: the Snakefile imports this module at parse time.
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mae_hlvm.core import cells, paths
from mae_hlvm.core.cells import (
    real_enabled,
    real_sweep_cells,
    real_sweeps,
    stability_cells,
    stability_enabled,
    stability_real,
)
from mae_hlvm.core.config import Params
from mae_hlvm.core.paths import EXAMPLES_PNG, FIGURE_NAMES, REAL_FIGURE_NAMES

PACKAGE = "mae_hlvm"
Fields = dict[str, str]  # mask_ratio, mask_unit (the masking unit), seed as spelled in paths


@dataclass(frozen=True)
class Out:
    """One output: ``kind`` is its dvc.yaml list (outs, metrics, plots); ``cache`` False = in git."""

    path: str
    kind: str = "outs"
    cache: bool = True


@dataclass(frozen=True)
class Step:
    """One ``python -m mae_hlvm <name>`` step: ``runner`` is the module with ``run(params, args)``
    (or ``module:function``), ``declare`` adds its arguments (``--params`` and ``--log`` come
    with every step), ``data`` the dataset it holds in RAM (``synthetic``/``real``; cli.check_ram)."""

    name: str
    runner: str
    help: str
    declare: Callable[[argparse.ArgumentParser], None]
    data: str | None = None

    @property
    def module(self) -> str:
        """The runner's module within the package (``real.report`` for ``mae_hlvm.real.report:run_report``)."""
        return self.runner.partition(":")[0].split(".", 1)[1]


@dataclass(frozen=True)
class Matrix:
    """The jobs of a stage that runs once per cell: DVC's ``matrix:`` (``dvc``), the job's
    fields as DVC interpolates them (``item``) and the concrete cells under some params."""

    dvc: Mapping[str, str]
    item: Mapping[str, str]
    cells: Callable[[Params], list[Fields]]

    @property
    def per_seed(self) -> bool:
        return tuple(self.item) == ("seed",)


def _always(params: Params) -> bool:
    return True


def _reads_nothing_more(params: Params) -> tuple[str, ...]:
    return ()


def _no_report(path: str) -> tuple[str, str] | None:
    return None


@dataclass(frozen=True)
class Stage:
    """One pipeline stage (see the module docstring). ``args(f)``: the step's arguments before
    ``--log``; ``threads`` None = ``train.threads``; ``report(path)`` = (category, caption file)
    for an output shown in Snakemake's report, else None; ``dvc_inputs`` replaces ``inputs`` in
    dvc.yaml where a stage reads every cell (DVC links a folder dep to the outputs in it)."""

    name: str
    step: Step
    reads: tuple[str, ...]
    args: Callable[[Fields | None], str]
    outputs: Callable[[Fields | None, Params | None], list[Out]]
    inputs: Callable[[Fields | None, Params | None], list[str]]
    matrix: Matrix | None = None
    track: str = "synthetic"  # synthetic, real, stability (synthetic cells at budget_factor x) or real_stability
    runs_when: Callable[[Params], bool] = _always
    # params keys read only under some params (the real track's, when it is on)
    reads_when: Callable[[Params], tuple[str, ...]] = _reads_nothing_more
    dvc_inputs: Callable[[Params], list[str]] | None = None
    threads: int | None = 1
    mem_mb: int = 2000
    gpu: bool = False
    report: Callable[[str], tuple[str, str] | None] = _no_report

    @property
    def module(self) -> str:
        """The module whose code (and every sibling it imports) the stage runs: its code deps."""
        return self.step.module


# ----------------------------------------------------------------------------- cells


def cell_fields(mask_ratio: float, mask_unit: int, seed: int) -> Fields:
    """A cell's values spelled as in paths: ``repr`` of the float, as DVC prints it too."""
    return {"mask_ratio": repr(float(mask_ratio)), "mask_unit": str(int(mask_unit)), "seed": str(int(seed))}


def seed_fields(seed: int) -> Fields:
    """A seed stage's fields: ``{"seed": "0"}``."""
    return {"seed": str(int(seed))}


def cell_name(f: Fields) -> str:
    """``r0.75_u4_s0`` (:func:`mae_hlvm.core.cells.cell_name` of the fields as spelt). Fields
    without a seed (a (ratio, unit) cell every seed shares) give ``r0.75_u4``."""
    return cells.cell_name(f["mask_ratio"], f["mask_unit"], f.get("seed"))


def pair_name(f: Fields) -> str:
    """The (ratio, unit) cell of a cell's fields, ``r0.75_u4``: the oracle table it is read against."""
    return cells.cell_name(f["mask_ratio"], f["mask_unit"])


def grid_cells(params: Params) -> list[Fields]:
    """Every cell of the grid, in DVC's matrix order (ratio, then patch, then seed)."""
    g = params.grid
    return [cell_fields(r, p, s) for r, p, s in itertools.product(g.mask_ratios, g.mask_units, g.seeds)]


def seed_cells(f: Fields, params: Params) -> list[Fields]:
    """The grid cells of seed ``f["seed"]`` (which may be a placeholder), in the grid's order."""
    g = params.grid
    return [{"mask_ratio": repr(float(r)), "mask_unit": str(int(u)), "seed": f["seed"]}
            for r, u in itertools.product(g.mask_ratios, g.mask_units)]


def _stable_cells(params: Params) -> list[Fields]:
    return [cell_fields(*c) for c in stability_cells(params)]


def _real_cells(sweep: str, stable: bool = False) -> Callable[[Params], list[Fields]]:
    """A real sweep's cells; ``stable``: those of the stability seed (the stability set's)."""
    def cells(params: Params) -> list[Fields]:
        keep = (lambda s: s == params.stability.seed) if stable else (lambda s: True)
        return [cell_fields(r, u, s) for r, u, s in real_sweep_cells(params.real)[sweep] if keep(s)]
    return cells


CELL_ITEM = {"mask_ratio": "${item.mask_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${item.seed}"}
GRID = Matrix(
    dvc={"mask_ratio": "${grid.mask_ratios}", "mask_unit": "${grid.mask_units}", "seed": "${grid.seeds}"},
    item=CELL_ITEM, cells=grid_cells,
)
# every (ratio, unit) of the grid, seeds aside: the oracle tables
PAIRS = Matrix(
    dvc={"mask_ratio": "${grid.mask_ratios}", "mask_unit": "${grid.mask_units}"},
    item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${item.mask_unit}"},
    cells=lambda params: [{"mask_ratio": repr(float(r)), "mask_unit": str(int(u))}
                          for r, u in itertools.product(params.grid.mask_ratios, params.grid.mask_units)],
)
PER_SEED = Matrix(dvc={"seed": "${grid.seeds}"}, item={"seed": "${item.seed}"},
                  cells=lambda params: [seed_fields(s) for s in params.grid.seeds])
# the stability set: its (ratio, unit) cells of the grid at the stability seed
STABLE = Matrix(
    dvc={"mask_ratio": "${stability.mask_ratios}", "mask_unit": "${stability.mask_units}"},
    item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${stability.seed}"},
    cells=_stable_cells,
)
# DVC's matrix is a plain product of params lists, so each real sweep is its own product:
# A = ratios x seeds at real.sweep_a_unit, B = units x seeds at real.sweep_b_ratio, G = all three
REAL_SWEEP_LETTERS = ("A", "B", "G")
REAL = {
    "A": Matrix(dvc={"mask_ratio": "${real.mask_ratios}", "seed": "${real.seeds}"},
                item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${real.sweep_a_unit}", "seed": "${item.seed}"},
                cells=_real_cells("A")),
    "B": Matrix(dvc={"mask_unit": "${real.mask_units}", "seed": "${real.seeds}"},
                item={"mask_ratio": "${real.sweep_b_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${item.seed}"},
                cells=_real_cells("B")),
    "G": Matrix(dvc={"mask_ratio": "${real.mask_ratios}", "mask_unit": "${real.mask_units}", "seed": "${real.seeds}"},
                item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${item.seed}"},
                cells=_real_cells("G")),
}
REAL_PER_SEED = Matrix(dvc={"seed": "${real.seeds}"}, item={"seed": "${item.seed}"},
                       cells=lambda params: [seed_fields(s) for s in params.real.seeds])
# each real sweep's cells at the stability seed (the stability set's real part)
REAL_STABLE = {
    "A": Matrix(dvc={"mask_ratio": "${real.mask_ratios}"},
                item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${real.sweep_a_unit}", "seed": "${stability.seed}"},
                cells=_real_cells("A", stable=True)),
    "B": Matrix(dvc={"mask_unit": "${real.mask_units}"},
                item={"mask_ratio": "${real.sweep_b_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${stability.seed}"},
                cells=_real_cells("B", stable=True)),
    "G": Matrix(dvc={"mask_ratio": "${real.mask_ratios}", "mask_unit": "${real.mask_units}"},
                item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${stability.seed}"},
                cells=_real_cells("G", stable=True)),
}


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


def _real_reads(keys: tuple[str, ...]) -> Callable[[Params], tuple[str, ...]]:
    return lambda params: keys if real_enabled(params) else ()


def _summary_reads(params: Params) -> tuple[str, ...]:
    """The summary prints the real section and the stability section when they are on."""
    return (("real",) if real_enabled(params) else ()) + (("stability",) if stability_enabled(params) else ())


def _claims_reads(params: Params) -> tuple[str, ...]:
    """Claims find the real track's cells, and the stability set's at both budgets, where they are on."""
    return (REAL_SWEEP_PARAMS if real_enabled(params) else ()) + (("stability",) if stability_enabled(params) else ())


# ----------------------------------------------------------------------------- steps: arguments


def _cell_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask-ratio", type=float, required=True)
    p.add_argument("--mask-unit", type=int, required=True, help="masking unit in pixels")
    p.add_argument("--seed", type=int, required=True)


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=paths.SYNTHETIC_DATA)
    p.add_argument("--figure", default=None, help="also draw example images per class here (.png)")


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=paths.PREDICTION_JSON)


def _stability_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stability", action="store_true",
                   help="the stability set's run: stability.budget_factor x the epochs (the cosine over the longer run)")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.SYNTHETIC_DATA)
    _cell_args(p)
    p.add_argument("--out-dir", required=True, help="folder for checkpoint.pt and train_log.csv")
    _stability_arg(p)


def _train_seed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.SYNTHETIC_DATA)
    p.add_argument("--seed", type=int, default=None, help="required, except with --stability (the stability seed)")
    p.add_argument("--models-dir", default=paths.MODELS_DIR, help="each cell goes to <models-dir>/<cell>/")
    _stability_arg(p)  # with it: every cell of the stability set


def _probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.SYNTHETIC_DATA)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="the cell's metrics (.json)")
    p.add_argument("--recon", required=True, help="reconstructions of fixed test images (.npz)")
    p.add_argument("--oracle", default=None, help="its (ratio, unit) cell's oracle table (.json): the frontier of even loss")


def _oracles_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.SYNTHETIC_DATA)
    p.add_argument("--mask-ratio", type=float, required=True)
    p.add_argument("--mask-unit", type=int, required=True, help="masking unit in pixels")
    p.add_argument("--out", required=True, help="the cell's oracle table (.json)")


def _baseline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.SYNTHETIC_DATA)
    p.add_argument("--seed", type=int, required=True, help="the encoder's initialisation seed")
    p.add_argument("--out", required=True, help="the seed's baseline scores (.json)")


def _aggregate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-csv", default=paths.METRICS_CSV)
    p.add_argument("--out-json", default=paths.METRICS_JSON)
    p.add_argument("--out-baselines", default=paths.BASELINES_CSV, help="random-init and raw-pixel rows (.csv)")
    p.add_argument("--out-oracles", default=paths.ORACLES_MD, help="the oracle table (.md)")


def _figures_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", default=paths.METRICS_CSV)
    p.add_argument("--baselines", default=paths.BASELINES_CSV, help="random-init and raw-pixel R^2 (.csv)")
    p.add_argument("--prediction", default=paths.PREDICTION_JSON, help="the theorem's prediction (predict step)")
    p.add_argument("--out-dir", default=paths.FIGURES_DIR)
    p.add_argument("--loss-curves", default=paths.LOSS_CURVES_CSV, help="every cell's loss per epoch (.csv)")


def _claims_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", default=paths.METRICS_CSV)
    p.add_argument("--baselines", default=paths.BASELINES_CSV)
    p.add_argument("--real-cells-dir", default=paths.REAL_CELLS_DIR, help="read when real.enabled")
    p.add_argument("--prediction", default=paths.PREDICTION_JSON, help="the theorem's prediction (predict step)")
    p.add_argument("--stable-cells-dir", default=paths.STABLE_CELLS_DIR, help="the stability set's cells, read when on")
    p.add_argument("--real-stable-cells-dir", default=paths.REAL_STABLE_CELLS_DIR,
                   help="the stability set's real cells, read when on")
    p.add_argument("--out-json", default=paths.CLAIMS_JSON)
    p.add_argument("--out-md", default=paths.CLAIMS_MD)
    p.add_argument("--out-stability", default=paths.STABILITY_CSV, help="every stability cell at both budgets (.csv)")


def _summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", default=paths.METRICS_CSV)
    p.add_argument("--baselines", default=paths.BASELINES_CSV)
    p.add_argument("--claims-md", default=paths.CLAIMS_MD)
    p.add_argument("--claims-json", default=paths.CLAIMS_JSON)
    p.add_argument("--figures-dir", default=paths.FIGURES_DIR)
    p.add_argument("--real-dir", default=paths.REAL_RESULTS_DIR, help="Table 1 and figures, read when real.enabled")
    p.add_argument("--out-md", default=paths.SUMMARY_MD)
    p.add_argument("--out-tex", default=paths.METRICS_TEX)
    p.add_argument("--out-headline", default=paths.HEADLINE_JSON, help="the numbers dvc metrics compares (.json)")
    p.add_argument("--stability-csv", default=paths.STABILITY_CSV, help="the stability set (claims step), read when on")
    p.add_argument("--prediction", default=paths.PREDICTION_JSON, help="the theorem's prediction (predict step)")
    p.add_argument("--oracles-md", default=paths.ORACLES_MD, help="the oracle table (aggregate step)")


def _prepare_real_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=paths.REAL_DATA)


def _sweep_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep", choices=list(REAL_SWEEP_LETTERS), required=True, help="the sweep the cell is trained for")


def _train_real_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.REAL_DATA)
    _sweep_arg(p)
    p.add_argument("--mask-ratio", type=float, required=True)
    p.add_argument("--mask-unit", type=int, required=True, help="masking unit in pixels")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out-dir", required=True, help="folder for checkpoint.pt and train_log.csv")
    _stability_arg(p)


def _train_real_seed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.REAL_DATA)
    _sweep_arg(p)
    p.add_argument("--seed", type=int, default=None, help="required, except with --stability (the stability seed)")
    p.add_argument("--models-dir", default=paths.REAL_MODELS_DIR, help="each cell goes to <models-dir>/<sweep>/<cell>/")
    _stability_arg(p)


def _evaluate_real_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.REAL_DATA)
    _sweep_arg(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="the cell's Table 1 and Fig. 5 numbers (.json)")


def _report_real_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.REAL_DATA)
    p.add_argument("--cells-dir", default=paths.REAL_CELLS_DIR)
    p.add_argument("--models-dir", default=paths.REAL_MODELS_DIR)
    p.add_argument("--out-dir", default=paths.REAL_RESULTS_DIR, help="tables here, figures in its figures/")


def _step(name: str, module: str, help_text: str, declare: Callable, data: str | None = None) -> Step:
    return Step(name, f"{PACKAGE}.{module}", help_text, declare, data)


GENERATE = _step("generate", "synthetic.generate", "draw the synthetic hierarchical dataset", _generate_args, "synthetic")
PREDICT = _step("predict", "synthetic.predict", "the theorem's predicted latent level per grid cell", _predict_args)
TRAIN = _step("train", "core.train", "pretrain the MAE of one grid cell", _train_args, "synthetic")
TRAIN_SEED = _step("train-seed", "synthetic.train_seed", "pretrain every grid cell of one seed in one process (train.job: seed)",
                   _train_seed_args, "synthetic")
PROBE = _step("probe", "synthetic.probe", "probe one cell's features against the true latents", _probe_args, "synthetic")
ORACLES = _step("oracles", "synthetic.oracles", "the masked probe on encoders with known answers, one (ratio, unit) cell",
                _oracles_args, "synthetic")
BASELINE = _step("baseline", "synthetic.baseline", "probe a random-init encoder and raw pixels (one seed)", _baseline_args,
                 "synthetic")
AGGREGATE = _step("aggregate", "review.aggregate", "collect every cell into results/metrics.*", _aggregate_args)
FIGURES = _step("figures", "review.figures", "render the figures under results/figures", _figures_args)
CLAIMS = _step("claims", "review.claims", "test the paper's claims on our results (bootstrap over seeds)", _claims_args)
SUMMARY = _step("summary", "review.summary", "results/summary.md and results/metrics.tex for review", _summary_args)
# the real-image track (docs/real_track.md); "module:function" names a runner other than run
PREPARE_REAL = _step("prepare-real", "real.realdata:run_prepare", "convert the real images into data/real.npz",
                     _prepare_real_args, "real")
TRAIN_REAL = _step("train-real", "real.train_real", "pretrain the MAE of one real-track cell", _train_real_args, "real")
TRAIN_REAL_SEED = _step("train-real-seed", "real.train_real:run_seed",
                        "pretrain every cell of one real sweep and seed in one process (train.job: seed)",
                        _train_real_seed_args, "real")
EVALUATE_REAL = _step("evaluate-real", "real.evaluate:run_evaluate", "Table 1 and Fig. 5 numbers of one real cell",
                      _evaluate_real_args, "real")
REPORT_REAL = _step("report-real", "real.report:run_report", "Table 1 and Figs. 5 to 8 under results/real",
                    _report_real_args, "real")


# ----------------------------------------------------------------------------- stages: files

def _pictures(directory: str, names: tuple[str, ...]) -> list[Out]:
    """Each figure as a PNG (a DVC plot) and a PDF, both in git."""
    return [o for n in names for o in (Out(f"{directory}/{n}.png", "plots", cache=False),
                                       Out(f"{directory}/{n}.pdf", cache=False))]


def _png_caption(category: str) -> Callable[[str], tuple[str, str] | None]:
    """Every PNG output in the report under ``category``, captioned by report/<its stem>.rst."""
    return lambda path: (category, f"report/{Path(path).stem}.rst") if path.endswith(".png") else None


def _caption(target: str, category: str, caption: str) -> Callable[[str], tuple[str, str] | None]:
    return lambda path: (category, caption) if path == target else None


def _train_outputs(f: Fields | None, params: Params | None = None, stable: bool = False) -> list[Out]:
    cell = cell_name(f)
    return [Out(paths.checkpoint(cell, stable)), Out(paths.train_log(cell, stable))]


def _train_seed_outputs(f: Fields | None, params: Params | None) -> list[Out]:
    if params is None:
        raise ValueError("outputs('train_seed') needs the params: its cells are the grid's")
    return [o for c in seed_cells(f, params) for o in _train_outputs(c)]


def _stable_seed_outputs(f: Fields | None, params: Params | None) -> list[Out]:
    if params is None:
        raise ValueError("outputs('train_stable_seed') needs the params: its cells are the stability set's")
    return [o for c in _stable_cells(params) for o in _train_outputs(c, stable=True)]


def _grid_of(params: Params | None) -> list[Fields]:
    return grid_cells(params) if params is not None else []


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
    return [paths.probe_json(cell_name(c), stable=True) for c in _stable_cells(params)]


def _real_summary_inputs(params: Params | None) -> list[str]:
    """The real track's Table 1 (Markdown) and figures, which the summary shows when the track is on."""
    if params is None or not real_enabled(params):
        return []
    return [f"{paths.REAL_TABLE_STEM}.md"] + [f"{paths.REAL_FIGURES_DIR}/{name}.png" for name in REAL_FIGURE_NAMES]


def _summary_inputs(f: Fields | None, params: Params | None) -> list[str]:
    return (
        [paths.METRICS_CSV, paths.BASELINES_CSV, paths.CLAIMS_JSON, paths.CLAIMS_MD, paths.PREDICTION_JSON, paths.ORACLES_MD]
        + [f"{paths.FIGURES_DIR}/{name}.png" for name in FIGURE_NAMES]
        + ([paths.STABILITY_CSV] if params is not None and stability_enabled(params) else [])
        + _real_summary_inputs(params)
    )


def user_data_inputs(params: Params | None) -> dict[str, str]:
    """The user's own real data, deps of ``prepare_real``: {``real.`` key: normalised path}.

    ``path`` for a folder or .npz (none for mnist/digits), ``cue_conflict`` when set.
    """
    real = None if params is None else params.real
    if real is None:
        return {}
    keys = (["path"] if real.dataset in ("folder", "npz") else []) + (["cue_conflict"] if real.cue_conflict else [])
    return {key: os.path.normpath(getattr(real, key)) for key in keys}


def _is_cell_job(params: Params) -> bool:
    return params.train.job == "cell"


def _stable_cell_jobs(params: Params) -> bool:
    return stability_enabled(params) and _is_cell_job(params)


def _stable_seed_jobs(params: Params) -> bool:
    return stability_enabled(params) and not _is_cell_job(params)


def _real_sweep_on(sweep: str, stable: bool = False) -> Callable[[Params], bool]:
    if stable:
        return lambda params: stability_real(params) and sweep in real_sweeps(params.real)
    return lambda params: real_enabled(params) and sweep in real_sweeps(params.real)


def _real_sweep_cell_jobs(sweep: str, stable: bool = False) -> Callable[[Params], bool]:
    return lambda params: _real_sweep_on(sweep, stable)(params) and _is_cell_job(params)


def _real_sweep_seed_jobs(sweep: str, stable: bool = False) -> Callable[[Params], bool]:
    return lambda params: _real_sweep_on(sweep, stable)(params) and not _is_cell_job(params)


def _real_train_outputs(sweep: str, f: Fields | None, stable: bool = False) -> list[Out]:
    cell = cell_name(f)
    return [Out(paths.real_checkpoint(sweep, cell, stable)), Out(paths.real_train_log(sweep, cell, stable))]


def _real_seed_outputs(sweep: str, stable: bool = False) -> Callable[[Fields | None, Params | None], list[Out]]:
    def outputs(f: Fields | None, params: Params | None) -> list[Out]:
        name = f"train_real{_stable(stable)}_seed_{sweep}"
        if params is None or (f is None and not stable):
            raise ValueError(f"outputs('{name}') needs the params: its cells are the sweep's")
        # the sweep's (ratio, unit) pairs at this seed, which may be a placeholder ({seed});
        # the stability set's one job trains the stability seed's
        seed = str(params.stability.seed) if stable else f["seed"]
        pairs = dict.fromkeys((c["mask_ratio"], c["mask_unit"]) for c in REAL[sweep].cells(params))
        return [o for r, u in pairs
                for o in _real_train_outputs(sweep, {"mask_ratio": r, "mask_unit": u, "seed": seed}, stable)]
    return outputs


def _stable(stable: bool) -> str:
    """The stage-name infix of the stability set's stages."""
    return "_stable" if stable else ""


def _stability_flag(stable: bool) -> str:
    return " --stability" if stable else ""


def _real_train(sweep: str, stable: bool = False) -> Stage:
    """One real cell (of the stability set: at stability.budget_factor x real.epochs)."""
    return Stage(
        name=f"train_real{_stable(stable)}_{sweep}", step=TRAIN_REAL, track="real_stability" if stable else "real",
        matrix=(REAL_STABLE if stable else REAL)[sweep], runs_when=_real_sweep_cell_jobs(sweep, stable),
        reads=REAL_TRAIN_PARAMS + (("stability.budget_factor",) if stable else ()),
        args=lambda f: (
            f"--data {paths.REAL_DATA} --sweep {sweep} --mask-ratio {f['mask_ratio']} --mask-unit {f['mask_unit']} "
            f"--seed {f['seed']} --out-dir {paths.real_model_dir(sweep, cell_name(f), stable)}{_stability_flag(stable)}"
        ),
        inputs=lambda f, params: [paths.REAL_DATA],
        outputs=lambda f, params: _real_train_outputs(sweep, f, stable),
        threads=None, mem_mb=4000, gpu=True,
    )


def _real_train_seed(sweep: str, stable: bool = False) -> Stage:
    """train.job: seed: every cell of one sweep and seed in one job (on a GPU they train together);
    the stability set's: one job of the sweep's cells at the stability seed."""
    models = paths.REAL_STABLE_MODELS_DIR if stable else paths.REAL_MODELS_DIR
    return Stage(
        name=f"train_real{_stable(stable)}_seed_{sweep}", step=TRAIN_REAL_SEED,
        track="real_stability" if stable else "real", matrix=None if stable else REAL_PER_SEED,
        runs_when=_real_sweep_seed_jobs(sweep, stable),
        reads=REAL_TRAIN_PARAMS + REAL_SWEEP_PARAMS + (("stability.budget_factor", "stability.seed") if stable else ()),
        args=lambda f: (
            f"--data {paths.REAL_DATA} --sweep {sweep}{'' if stable else ' --seed ' + f['seed']} --models-dir {models}"
            f"{_stability_flag(stable)}"
        ),
        inputs=lambda f, params: [paths.REAL_DATA],
        outputs=_real_seed_outputs(sweep, stable),
        threads=None, mem_mb=8000, gpu=True,
    )


def _real_evaluate(sweep: str, stable: bool = False) -> Stage:
    return Stage(
        name=f"evaluate_real{_stable(stable)}_{sweep}", step=EVALUATE_REAL, track="real_stability" if stable else "real",
        matrix=(REAL_STABLE if stable else REAL)[sweep], runs_when=_real_sweep_on(sweep, stable), reads=REAL_EVALUATE_PARAMS,
        args=lambda f: (
            f"--data {paths.REAL_DATA} --sweep {sweep} --checkpoint {paths.real_checkpoint(sweep, cell_name(f), stable)} "
            f"--out {paths.real_cell_json(sweep, cell_name(f), stable)}"
        ),
        inputs=lambda f, params: [paths.REAL_DATA, paths.real_checkpoint(sweep, cell_name(f), stable)],
        outputs=lambda f, params: [Out(paths.real_cell_json(sweep, cell_name(f), stable), cache=False)],
        threads=None, mem_mb=4000,
    )


# ----------------------------------------------------------------------------- the table

TABLE: tuple[Stage, ...] = (
    Stage(
        name="generate", step=GENERATE, reads=("data",),
        args=lambda f: f"--out {paths.SYNTHETIC_DATA} --figure {EXAMPLES_PNG}",
        inputs=lambda f, params: [],
        outputs=lambda f, params: [Out(paths.SYNTHETIC_DATA), Out(EXAMPLES_PNG, "plots", cache=False)],
        report=_caption(EXAMPLES_PNG, "Data", "report/examples.rst"),
    ),
    Stage(
        # the theorem's prediction needs the tree's geometry and widths, and the grid's cells
        name="predict", step=PREDICT,
        reads=("data.image_size", "data.latent_dims", "data.texture_separation", "grid.mask_ratios", "grid.mask_units"),
        args=lambda f: f"--out {paths.PREDICTION_JSON}",
        inputs=lambda f, params: [],
        outputs=lambda f, params: [Out(paths.PREDICTION_JSON, cache=False)],
    ),
    Stage(
        name="train", step=TRAIN, matrix=GRID, runs_when=_is_cell_job, reads=("model", "train"),
        args=lambda f: (
            f"--data {paths.SYNTHETIC_DATA} --mask-ratio {f['mask_ratio']} --mask-unit {f['mask_unit']} "
            f"--seed {f['seed']} --out-dir {paths.model_dir(cell_name(f))}"
        ),
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=_train_outputs,
        threads=None, mem_mb=4000, gpu=True,
    ),
    Stage(
        # train.job: seed: every cell of a seed in one job (on a GPU they train together)
        name="train_seed", step=TRAIN_SEED, matrix=PER_SEED, runs_when=lambda params: not _is_cell_job(params),
        reads=("model", "train", "grid.mask_ratios", "grid.mask_units"),
        args=lambda f: f"--data {paths.SYNTHETIC_DATA} --seed {f['seed']} --models-dir {paths.MODELS_DIR}",
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=_train_seed_outputs,
        threads=None, mem_mb=8000, gpu=True,
    ),
    Stage(
        # the masked probe on oracles, per (ratio, unit): the measures checked on known answers
        # and each cell's frontier of even loss; the random-init encoder is built from the model section
        name="oracles", step=ORACLES, matrix=PAIRS, reads=("data", "model", "probe", "train.threads"),
        args=lambda f: (
            f"--data {paths.SYNTHETIC_DATA} --mask-ratio {f['mask_ratio']} --mask-unit {f['mask_unit']} "
            f"--out {paths.oracle_json(pair_name(f))}"
        ),
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=lambda f, params: [Out(paths.oracle_json(pair_name(f)), cache=False)],
        threads=None, mem_mb=4000,
    ),
    Stage(
        # the model config comes from the checkpoint, which is an input file; the data section
        # gives the generator's latent variables (the masked probe's targets)
        name="probe", step=PROBE, matrix=GRID, reads=("data", "probe", "train.threads"),
        args=lambda f: (
            f"--data {paths.SYNTHETIC_DATA} --checkpoint {paths.checkpoint(cell_name(f))} "
            f"--out {paths.probe_json(cell_name(f))} --recon {paths.recon_npz(cell_name(f))} "
            f"--oracle {paths.oracle_json(pair_name(f))}"
        ),
        inputs=lambda f, params: [paths.SYNTHETIC_DATA, paths.checkpoint(cell_name(f)), paths.oracle_json(pair_name(f))],
        # per-cell metrics live in git (`git diff`, replay-check); DVC's metrics are the headline
        outputs=lambda f, params: [Out(paths.probe_json(cell_name(f)), cache=False),
                                   Out(paths.recon_npz(cell_name(f)), cache=False)],
        threads=None, mem_mb=4000,
    ),
    Stage(
        # the untrained encoder and raw pixels under the same probes, once per seed; the
        # random-init model is built from the model section (seeded by the job's seed)
        name="baseline", step=BASELINE, matrix=PER_SEED, reads=("data", "model", "probe", "train.threads"),
        args=lambda f: f"--data {paths.SYNTHETIC_DATA} --seed {f['seed']} --out {paths.baseline_json(f['seed'])}",
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=lambda f, params: [Out(paths.baseline_json(f["seed"]), cache=False)],
        threads=None, mem_mb=4000,
    ),
    Stage(
        name="aggregate", step=AGGREGATE, reads=("data.depth", "probe.pooling", "grid"),
        args=lambda f: (f"--out-csv {paths.METRICS_CSV} --out-json {paths.METRICS_JSON} --out-baselines {paths.BASELINES_CSV} "
                        f"--out-oracles {paths.ORACLES_MD}"),
        inputs=lambda f, params: (
            [paths.probe_json(cell_name(c)) for c in _grid_of(params)]
            + [paths.baseline_json(s) for s in (params.grid.seeds if params is not None else [])]
            + ([paths.oracle_json(pair_name(c)) for c in PAIRS.cells(params)] if params is not None else [])
        ),
        dvc_inputs=lambda params: [paths.CELLS_DIR, paths.BASELINES_DIR, paths.ORACLES_DIR],
        outputs=lambda f, params: [
            Out(paths.METRICS_CSV, cache=False),  # drawn by dvc.yaml's top-level plots (pipeline.DVC_PLOTS)
            Out(paths.METRICS_JSON, cache=False),
            Out(paths.BASELINES_CSV, cache=False),
            Out(paths.ORACLES_MD, cache=False),
        ],
    ),
    Stage(
        # every figure is stamped with the digest of the whole params file
        name="figures", step=FIGURES, reads=("data", "model", "train", "probe", "grid"),
        args=lambda f: (
            f"--metrics {paths.METRICS_CSV} --baselines {paths.BASELINES_CSV} --prediction {paths.PREDICTION_JSON} "
            f"--out-dir {paths.FIGURES_DIR} --loss-curves {paths.LOSS_CURVES_CSV}"
        ),
        inputs=lambda f, params: (
            [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON]
            + [paths.recon_npz(cell_name(c)) for c in _grid_of(params)]
            + [paths.train_log(cell_name(c)) for c in _grid_of(params)]
        ),
        dvc_inputs=lambda params: [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON, paths.CELLS_DIR,
                                   paths.MODELS_DIR],
        outputs=lambda f, params: [Out(paths.LOSS_CURVES_CSV, cache=False)] + _pictures(paths.FIGURES_DIR, FIGURE_NAMES),
        report=_png_caption("Figures"),
    ),
    Stage(
        # claims and summary find the real track's files at their default paths (cli), so
        # their commands do not change, nor name the track, when it is switched off
        # probe.pooling: the stability set's probe JSONs are read into metrics.csv's columns
        name="claims", step=CLAIMS, reads=("data.depth", "probe.pooling"), reads_when=_claims_reads,
        args=lambda f: (
            f"--metrics {paths.METRICS_CSV} --baselines {paths.BASELINES_CSV} --prediction {paths.PREDICTION_JSON} "
            f"--out-json {paths.CLAIMS_JSON} --out-md {paths.CLAIMS_MD} --out-stability {paths.STABILITY_CSV}"
        ),
        inputs=lambda f, params: (
            [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON] + real_cell_jsons(params)
            + stable_cell_jsons(params) + real_cell_jsons(params, stable=True)
        ),
        dvc_inputs=lambda params: [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON] + (
            [paths.REAL_CELLS_DIR] if real_enabled(params) else []
        ) + ([paths.STABLE_CELLS_DIR] if stability_enabled(params) else []) + (
            [paths.REAL_STABLE_CELLS_DIR] if stability_real(params) else []
        ),
        outputs=lambda f, params: [Out(paths.CLAIMS_JSON, cache=False), Out(paths.CLAIMS_MD, cache=False),
                                   Out(paths.STABILITY_CSV, cache=False)],
        report=_caption(paths.CLAIMS_MD, "Summary", "report/claims.rst"),
    ),
    Stage(
        # the summary prints and stamps the params (+ the real and stability sections when on)
        name="summary", step=SUMMARY, reads=("data", "model", "train", "probe", "grid"), reads_when=_summary_reads,
        args=lambda f: (
            f"--metrics {paths.METRICS_CSV} --baselines {paths.BASELINES_CSV} --claims-md {paths.CLAIMS_MD} "
            f"--claims-json {paths.CLAIMS_JSON} --figures-dir {paths.FIGURES_DIR} "
            f"--out-md {paths.SUMMARY_MD} --out-tex {paths.METRICS_TEX} --out-headline {paths.HEADLINE_JSON}"
        ),
        inputs=_summary_inputs,
        # the one DVC metrics file: per-cell numbers stay in git, out of `dvc metrics show`
        outputs=lambda f, params: [Out(paths.SUMMARY_MD, cache=False), Out(paths.METRICS_TEX, cache=False),
                                   Out(paths.HEADLINE_JSON, "metrics", cache=False)],
        report=_caption(paths.SUMMARY_MD, "Summary", "report/summary.rst"),
    ),
    # The stability set (stability: in params.yaml): cells trained again at budget_factor x the
    # passes, read by claims (a claim counts when its effect keeps its sign at both budgets)
    Stage(
        name="train_stable", step=TRAIN, track="stability", matrix=STABLE, runs_when=_stable_cell_jobs,
        reads=("model", "train", "stability.budget_factor"),
        args=lambda f: (
            f"--data {paths.SYNTHETIC_DATA} --mask-ratio {f['mask_ratio']} --mask-unit {f['mask_unit']} "
            f"--seed {f['seed']} --out-dir {paths.model_dir(cell_name(f), stable=True)} --stability"
        ),
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=lambda f, params: _train_outputs(f, params, stable=True),
        threads=None, mem_mb=4000, gpu=True,
    ),
    Stage(
        # train.job: seed: the whole synthetic stability set in one job (on a GPU together)
        name="train_stable_seed", step=TRAIN_SEED, track="stability", runs_when=_stable_seed_jobs,
        reads=("model", "train", "stability.budget_factor", "stability.seed", "stability.mask_ratios",
               "stability.mask_units"),
        args=lambda f: f"--data {paths.SYNTHETIC_DATA} --models-dir {paths.STABLE_MODELS_DIR} --stability",
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=_stable_seed_outputs,
        threads=None, mem_mb=8000, gpu=True,
    ),
    Stage(
        name="probe_stable", step=PROBE, track="stability", matrix=STABLE, runs_when=stability_enabled,
        reads=("data", "probe", "train.threads"),
        args=lambda f: (
            f"--data {paths.SYNTHETIC_DATA} --checkpoint {paths.checkpoint(cell_name(f), stable=True)} "
            f"--out {paths.probe_json(cell_name(f), stable=True)} --recon {paths.recon_npz(cell_name(f), stable=True)} "
            f"--oracle {paths.oracle_json(pair_name(f))}"
        ),
        inputs=lambda f, params: [paths.SYNTHETIC_DATA, paths.checkpoint(cell_name(f), stable=True),
                                  paths.oracle_json(pair_name(f))],
        outputs=lambda f, params: [Out(paths.probe_json(cell_name(f), stable=True), cache=False),
                                   Out(paths.recon_npz(cell_name(f), stable=True), cache=False)],
        threads=None, mem_mb=4000,
    ),
    # The real-image track (docs/real_track.md): on with real.enabled; one train and
    # evaluate stage per sweep that real.sweep trains
    Stage(
        name="prepare_real", step=PREPARE_REAL, track="real", runs_when=real_enabled, reads=REAL_DATA_PARAMS,
        args=lambda f: f"--out {paths.REAL_DATA}",
        inputs=lambda f, params: list(user_data_inputs(params).values()),
        outputs=lambda f, params: [Out(paths.REAL_DATA)],
        mem_mb=3000,
    ),
    *(_real_train(s) for s in REAL_SWEEP_LETTERS),
    *(_real_train_seed(s) for s in REAL_SWEEP_LETTERS),
    *(_real_evaluate(s) for s in REAL_SWEEP_LETTERS),
    # the stability set's real part: each sweep's cells at the stability seed, budget_factor x
    *(_real_train(s, stable=True) for s in REAL_SWEEP_LETTERS),
    *(_real_train_seed(s, stable=True) for s in REAL_SWEEP_LETTERS),
    *(_real_evaluate(s, stable=True) for s in REAL_SWEEP_LETTERS),
    Stage(
        # The report also loads the first seed's checkpoints, but each cell JSON records the
        # weights hash it evaluated and the report refuses any other weights: the JSONs pin
        # the checkpoints. (A dir dep on models_real would also see the .gitignore files DVC
        # writes beside cached outputs, and go stale after every `dvc commit`.)
        name="report_real", step=REPORT_REAL, track="real", runs_when=real_enabled, reads=REAL_REPORT_PARAMS,
        args=lambda f: (
            f"--data {paths.REAL_DATA} --cells-dir {paths.REAL_CELLS_DIR} --models-dir {paths.REAL_MODELS_DIR} "
            f"--out-dir {paths.REAL_RESULTS_DIR}"
        ),
        inputs=lambda f, params: [paths.REAL_DATA] + real_cell_jsons(params),
        dvc_inputs=lambda params: [paths.REAL_DATA, paths.REAL_CELLS_DIR],
        outputs=lambda f, params: [
            Out(f"{paths.REAL_TABLE_STEM}.csv", cache=False),
            Out(f"{paths.REAL_TABLE_STEM}.md", cache=False),
            Out(f"{paths.REAL_TABLE_STEM}.tex", cache=False),
            Out(paths.REAL_RANK_JSON, cache=False),
            Out(paths.REAL_FIGURES_JSON, cache=False),
        ] + _pictures(paths.REAL_FIGURES_DIR, REAL_FIGURE_NAMES),
        threads=None, mem_mb=4000,
        report=_png_caption("Real images"),
    ),
)
