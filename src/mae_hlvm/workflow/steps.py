"""The command line's steps: one :class:`Step` record per ``python -m mae_hlvm <name>``.

Each step names its runner (the module with ``run(params, args)``), its help and its
arguments, declared here rather than in the step modules so that ``--help`` and ``check``
never import torch. The stage table (:mod:`mae_hlvm.workflow.stages`) gives each stage
one of these steps; ``cli.STEPS`` adds the tools on the working copy (check, verify, profile).

Nothing here imports torch or numpy: the Snakefile imports it at parse time (through stages).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from mae_hlvm.core import paths
from mae_hlvm.workflow.matrices import REAL_SWEEP_LETTERS

PACKAGE = "mae_hlvm"


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
