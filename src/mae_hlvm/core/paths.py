"""Every artifact path of the pipeline, in one place.

The Snakefile, dvc.yaml (generated from :mod:`mae_hlvm.workflow.pipeline`) and the steps all
spell paths through these functions, so the two DAGs cannot drift apart.
"""

from __future__ import annotations

SYNTHETIC_DATA = "data/synthetic.npz"
# the theorem's prediction per (ratio, unit), beside the data it is computed for (git)
PREDICTION_JSON = "data/prediction.json"
METRICS_CSV = "results/metrics.csv"
METRICS_JSON = "results/metrics.json"
TIMINGS_CSV = "results/timings.csv"
BASELINES_DIR = "results/baselines"
BASELINES_CSV = "results/baselines.csv"
CLAIMS_JSON = "results/claims.json"
CLAIMS_MD = "results/claims.md"
SUMMARY_MD = "results/summary.md"
# The handful of numbers a reviewer compares across revisions (`dvc metrics show/diff`)
HEADLINE_JSON = "results/headline.json"
METRICS_TEX = "results/metrics.tex"
FIGURES_DIR = "results/figures"
# Files written by the figures step (each as .png and .pdf); examples.png comes from generate.
FIGURE_NAMES = ("r2_vs_ratio", "root_r2_heatmap", "reconstructions", "loss_curves", "region_r2", "spatial_r2", "theorem_levels")
EXAMPLES_PNG = f"{FIGURES_DIR}/examples.png"
# Every cell's training loss per epoch in one table, for `dvc plots` (figures step)
LOSS_CURVES_CSV = "results/loss_curves.csv"
CELLS_DIR = "results/cells"
MODELS_DIR = "models"
LOGS_DIR = "logs"
STATE_DIR = ".pipeline"
# The stability set, trained again at budget_factor x the passes: its own folders, so that
# the grid's folder deps (results/cells, models, results/real/cells) never see these cells
STABLE_MODELS_DIR = "models_stable"
STABLE_CELLS_DIR = "results/cells_stable"
REAL_STABLE_MODELS_DIR = "models_real_stable"
REAL_STABLE_CELLS_DIR = "results/real/cells_stable"
# The masked probe on encoders with known answers, per (ratio, unit) cell (oracles step), and
# their table (aggregate step)
ORACLES_DIR = "results/oracles"
ORACLES_MD = "results/oracles.md"
# Every stability cell of both tracks at both budgets (claims step)
STABILITY_CSV = "results/stability.csv"


def model_dir(cell: str, stable: bool = False) -> str:
    """``stable``: the stability set's run of the cell (budget_factor x the passes)."""
    return f"{STABLE_MODELS_DIR if stable else MODELS_DIR}/{cell}"


def checkpoint(cell: str, stable: bool = False) -> str:
    return f"{model_dir(cell, stable)}/checkpoint.pt"


def train_log(cell: str, stable: bool = False) -> str:
    """Per-epoch loss and learning rate: deterministic, so a DVC output."""
    return f"{model_dir(cell, stable)}/train_log.csv"


def probe_json(cell: str, stable: bool = False) -> str:
    return f"{STABLE_CELLS_DIR if stable else CELLS_DIR}/{cell}.json"


def oracle_json(pair: str) -> str:
    """The oracle table of one (ratio, unit) cell, ``r0.5_p2`` (every seed shares it)."""
    return f"{ORACLES_DIR}/{pair}.json"


def baseline_json(seed: int | str) -> str:
    """The untrained encoder's and raw pixels' probe scores for one seed's initialisation."""
    return f"{BASELINES_DIR}/s{seed}.json"


def recon_npz(cell: str, stable: bool = False) -> str:
    return f"{STABLE_CELLS_DIR if stable else CELLS_DIR}/{cell}.recon.npz"


def timing(step: str, cell: str) -> str:
    """Wall time and throughput vary run to run, so they live beside the logs, untracked."""
    return f"{LOGS_DIR}/timings/{step}/{cell}.json"


def log(step: str, name: str) -> str:
    return f"{LOGS_DIR}/{step}/{name}.log"


# ---------------------------------------------------------------- the real-image track
# Its models live outside MODELS_DIR: the synthetic figures stage depends on that whole
# folder in DVC, and real checkpoints must not make it stale.
REAL_DATA = "data/real.npz"
REAL_MODELS_DIR = "models_real"
REAL_RESULTS_DIR = "results/real"
REAL_CELLS_DIR = "results/real/cells"
REAL_FIGURES_DIR = "results/real/figures"
# Written by report_real under REAL_FIGURES_DIR (each as .png and .pdf).
REAL_FIGURE_NAMES = ("fig5_recon_quality", "fig6_cls_attention", "fig7_token_attention", "fig8_tsne")
REAL_TABLE_STEM = "results/real/table1"  # .csv, .md, .tex
REAL_RANK_JSON = "results/real/table1_rank.json"
REAL_FIGURES_JSON = "results/real/figures_summary.json"


def real_model_dir(sweep: str, cell: str, stable: bool = False) -> str:
    """``sweep``: A, B or G (grid); the same cell trained for two sweeps has two folders.
    ``stable``: the stability set's run of the cell (budget_factor x the passes)."""
    return f"{REAL_STABLE_MODELS_DIR if stable else REAL_MODELS_DIR}/{sweep}/{cell}"


def real_checkpoint(sweep: str, cell: str, stable: bool = False) -> str:
    return f"{real_model_dir(sweep, cell, stable)}/checkpoint.pt"


def real_train_log(sweep: str, cell: str, stable: bool = False) -> str:
    return f"{real_model_dir(sweep, cell, stable)}/train_log.csv"


def real_cell_json(sweep: str, cell: str, stable: bool = False) -> str:
    """One cell's Table 1 and Fig. 5 numbers."""
    return f"{REAL_STABLE_CELLS_DIR if stable else REAL_CELLS_DIR}/{sweep}/{cell}.json"


# ---------------------------------------------------------------- Snakemake and DVC together
# Working state of mae_hlvm.workflow.glue, never an artifact: each stage's params as Snakemake sees
# them, the receipts of jobs DVC has not recorded yet, and listings of a user's image folders.
PARAMS_DIR = f"{STATE_DIR}/params"
RECEIPTS_DIR = f"{STATE_DIR}/receipts"


def params_file(stage: str) -> str:
    """Exactly the params keys ``stage`` reads, as canonical JSON (a Snakemake input)."""
    return f"{PARAMS_DIR}/{stage}.json"


def receipt(name: str) -> str:
    """The receipt of DVC stage instance ``name`` (``train@0.5-2-0``) that Snakemake ran."""
    return f"{RECEIPTS_DIR}/{name}.json"


def folder_listing_file(key: str = "path") -> str:
    """The listing file standing in for the folder at ``real.<key>`` (``path`` or ``cue_conflict``)."""
    return f"{STATE_DIR}/inputs/real_{key}.json"
