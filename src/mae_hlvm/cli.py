"""One command line for every step: ``python -m mae_hlvm <step> ...``.

The Snakefile and dvc.yaml both call exactly these commands (built in
:mod:`mae_hlvm.pipeline`), so the two DAGs run the same code the same way.
Heavy imports (torch) happen inside the step, never at parse time.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from . import paths
from .config import GIB, ParamsError, cell_id, dataset_bytes, load_params, real_enabled
from .io import ArtifactError

log = logging.getLogger("mae_hlvm")


def _cell_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask-ratio", type=float, required=True)
    p.add_argument("--patch-size", type=int, required=True, help="masking unit in pixels")
    p.add_argument("--seed", type=int, required=True)


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=paths.SYNTHETIC_DATA)
    p.add_argument("--figure", default=None, help="also draw example images per class here (.png)")


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=paths.PREDICTION_JSON)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.SYNTHETIC_DATA)
    _cell_args(p)
    p.add_argument("--out-dir", required=True, help="folder for checkpoint.pt and train_log.csv")


def _train_seed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.SYNTHETIC_DATA)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--models-dir", default=paths.MODELS_DIR, help="each cell goes to <models-dir>/<cell>/")


def _probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.SYNTHETIC_DATA)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="the cell's metrics (.json)")
    p.add_argument("--recon", required=True, help="reconstructions of fixed test images (.npz)")


def _prepare_real_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=paths.REAL_DATA)


def _sweep_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep", choices=["A", "B", "G"], required=True, help="the sweep the cell is trained for")


def _real_cell_args(p: argparse.ArgumentParser) -> None:
    _sweep_arg(p)
    p.add_argument("--mask-ratio", type=float, required=True)
    p.add_argument("--mask-unit", type=int, required=True, help="masking unit in pixels")
    p.add_argument("--seed", type=int, required=True)


def _train_real_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.REAL_DATA)
    _real_cell_args(p)
    p.add_argument("--out-dir", required=True, help="folder for checkpoint.pt and train_log.csv")


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


def _aggregate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-csv", default=paths.METRICS_CSV)
    p.add_argument("--out-json", default=paths.METRICS_JSON)
    p.add_argument("--out-baselines", default=paths.BASELINES_CSV, help="random-init and raw-pixel rows (.csv)")


def _figures_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", default=paths.METRICS_CSV)
    p.add_argument("--baselines", default=paths.BASELINES_CSV, help="random-init and raw-pixel R^2 (.csv)")
    p.add_argument("--prediction", default=paths.PREDICTION_JSON, help="the theorem's prediction (predict step)")
    p.add_argument("--out-dir", default=paths.FIGURES_DIR)
    p.add_argument("--loss-curves", default=paths.LOSS_CURVES_CSV, help="every cell's loss per epoch (.csv)")


def _baseline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=paths.SYNTHETIC_DATA)
    p.add_argument("--seed", type=int, required=True, help="the encoder's initialisation seed")
    p.add_argument("--out", required=True, help="the seed's baseline scores (.json)")


def _claims_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", default=paths.METRICS_CSV)
    p.add_argument("--baselines", default=paths.BASELINES_CSV)
    p.add_argument("--real-cells-dir", default=paths.REAL_CELLS_DIR, help="read when real.enabled")
    p.add_argument("--prediction", default=paths.PREDICTION_JSON, help="the theorem's prediction (predict step)")
    p.add_argument("--out-json", default=paths.CLAIMS_JSON)
    p.add_argument("--out-md", default=paths.CLAIMS_MD)


def _robustness_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", default=paths.METRICS_CSV)
    p.add_argument("--cells-dir", default=paths.LONG_CELLS_DIR, help="the subset's probe JSONs at the longer budget")
    p.add_argument("--out-json", default=paths.ROBUSTNESS_JSON)
    p.add_argument("--out-md", default=paths.ROBUSTNESS_MD)


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
    p.add_argument("--robustness-md", default=paths.ROBUSTNESS_MD, help="read when robustness.enabled")


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", action="store_true", help="only report damaged artifacts, do not remove them")


# step -> (module with ``run(params, args)``, help, argument declarations). Arguments live
# here, not in the step modules, so that ``--help`` and ``check`` never import torch.
STEPS = {
    "check": ("mae_hlvm.cli", "validate params.yaml and exit", lambda p: None),
    "generate": ("mae_hlvm.generate", "draw the synthetic hierarchical dataset", _generate_args),
    "predict": ("mae_hlvm.predict", "the theorem's predicted latent level per grid cell", _predict_args),
    "train": ("mae_hlvm.train", "pretrain the MAE of one grid cell", _train_args),
    "train-seed": ("mae_hlvm.train_seed", "pretrain every grid cell of one seed in one process (train.job: seed)",
                   _train_seed_args),
    "probe": ("mae_hlvm.probe", "probe one cell's features against the true latents", _probe_args),
    "baseline": ("mae_hlvm.baseline", "probe a random-init encoder and raw pixels (one seed)", _baseline_args),
    "aggregate": ("mae_hlvm.aggregate", "collect every cell into results/metrics.*", _aggregate_args),
    "figures": ("mae_hlvm.figures", "render the figures under results/figures", _figures_args),
    "claims": ("mae_hlvm.claims", "test the paper's claims on our results (bootstrap over seeds)", _claims_args),
    "train-long": ("mae_hlvm.train_long", "retrain one robustness-subset cell at budget_factor x the epochs", _train_args),
    "robustness": ("mae_hlvm.robustness", "do verdicts and the ratio ordering survive the longer budget?", _robustness_args),
    "summary": ("mae_hlvm.summary", "results/summary.md and results/metrics.tex for review", _summary_args),
    # the real-image track (docs/real_track.md); "module:function" names a runner other than run
    "prepare-real": ("mae_hlvm.realdata:run_prepare", "convert the real images into data/real.npz", _prepare_real_args),
    "train-real": ("mae_hlvm.train_real", "pretrain the MAE of one real-track cell", _train_real_args),
    "evaluate-real": ("mae_hlvm.evaluate:run_evaluate", "Table 1 and Fig. 5 numbers of one real cell", _evaluate_real_args),
    "report-real": ("mae_hlvm.evaluate:run_report", "Table 1 and Figs. 5 to 8 under results/real", _report_real_args),
    # tools on the working copy, not stages
    "verify": ("mae_hlvm.ledger:run_verify", "check every artifact against dvc.lock; remove damaged ones", _verify_args),
}
# Steps that read no params: they work even while params.yaml is being fixed.
PARAMS_FREE = frozenset({"verify"})


# Steps that hold a whole dataset in RAM, and which one. ``check`` bounds datasets by the
# largest machine planned for (config.MEMORY_LIMIT_BYTES) because it runs where the tools
# read params; a step checks the machine it runs on, before it allocates anything.
DATA_STEPS = {
    "generate": "synthetic", "train": "synthetic", "train-seed": "synthetic", "train-long": "synthetic", "probe": "synthetic", "baseline": "synthetic",
    "prepare-real": "real", "train-real": "real", "evaluate-real": "real", "report-real": "real",
}
RAM_SHARE = 0.8  # of physical memory: the model, the probes and the OS need the rest


def physical_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_ram(step: str, params) -> None:  # noqa: ANN001
    """One ParamsError line when the step's dataset cannot fit this machine's RAM."""
    track = DATA_STEPS.get(step)
    if track is None or (track == "real" and not real_enabled(params)):
        return
    need, have = dataset_bytes(params, track), physical_ram()
    if need > RAM_SHARE * have:
        section = "real" if track == "real" else "data"
        raise ParamsError(
            f"{step}: the {track} dataset needs {need / GIB:.1f} GiB of RAM as float32 and this machine has "
            f"{have / GIB:.1f} GiB: lower {section}.n_train, {section}.n_test or {section}.image_size, "
            "or run this step on a machine with more memory"
        )


def run(params, args) -> None:  # noqa: ANN001 - the ``check`` step
    print(f"{args.params}: valid")


def job_label(args: argparse.Namespace) -> str:
    """The job a log line comes from: ``train r0.5_p2_s0``, ``train-real B/r0.75_p8_s0``,
    ``baseline s1``, ``aggregate``: two jobs' interleaved lines stay apart."""
    unit = getattr(args, "patch_size", None) or getattr(args, "mask_unit", None)
    if getattr(args, "mask_ratio", None) is not None and unit is not None:
        cell = cell_id(args.mask_ratio, unit, args.seed)
        return f"{args.step} {args.sweep}/{cell}" if getattr(args, "sweep", None) else f"{args.step} {cell}"
    if getattr(args, "seed", None) is not None:
        return f"{args.step} s{args.seed}"
    if getattr(args, "checkpoint", None):  # evaluate-real names its cell by the checkpoint's folder
        return f"{args.step} {Path(args.checkpoint).parent.parent.name}/{Path(args.checkpoint).parent.name}"
    return args.step


def _setup_logging(log_path: str | None, label: str = "mae_hlvm") -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    fmt = "%(asctime)s [" + label.replace("%", "%%") + "] %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, handlers=handlers, force=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mae_hlvm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, (_, help_text, declare) in STEPS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
        p.add_argument("--log", default=None, help="also write the log to this file")
        declare(p)
    # its own parser (mae_hlvm.replay); listed here for --help, dispatched before parsing
    sub.add_parser("replay-check", help="compare a rerun's results with the committed ones within measured tolerances")
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["replay-check"]:
        from .replay import main as replay_main

        return replay_main(raw[1:])
    args = build_parser().parse_args(argv)
    _setup_logging(args.log, job_label(args))
    module, _, function = STEPS[args.step][0].partition(":")
    try:
        if args.step in PARAMS_FREE:
            rc = getattr(importlib.import_module(module), function or "run")(None, args)
            return rc if isinstance(rc, int) else 0
        params = load_params(args.params)
        check_ram(args.step, params)
        from .pipeline import step_hooks

        # Rewrites the stage's params file if stale, and records a receipt for dvc commit
        # when Snakemake ran the step (README: "Snakemake and DVC together").
        with step_hooks(args.step, params, sys.argv[1:] if argv is None else argv):
            getattr(importlib.import_module(module), function or "run")(params, args)
    except (ParamsError, ArtifactError) as err:
        log.error("error: %s", err)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted: no output of this step was written")
        return 130
    return 0
