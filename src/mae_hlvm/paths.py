"""Every artifact path of the pipeline, in one place.

The Snakefile, dvc.yaml (generated from :mod:`mae_hlvm.pipeline`) and the steps all
spell paths through these functions, so the two DAGs cannot drift apart.
"""

from __future__ import annotations

SYNTHETIC_DATA = "data/synthetic.npz"
METRICS_CSV = "results/metrics.csv"
METRICS_JSON = "results/metrics.json"
TIMINGS_CSV = "results/timings.csv"
FIGURES_DIR = "results/figures"
CELLS_DIR = "results/cells"
MODELS_DIR = "models"
LOGS_DIR = "logs"
STATE_DIR = ".pipeline"


def model_dir(cell: str) -> str:
    return f"{MODELS_DIR}/{cell}"


def checkpoint(cell: str) -> str:
    return f"{MODELS_DIR}/{cell}/checkpoint.pt"


def train_log(cell: str) -> str:
    """Per-epoch loss and learning rate: deterministic, so a DVC output."""
    return f"{MODELS_DIR}/{cell}/train_log.csv"


def resume_state(cell: str) -> str:
    """Last end-of-epoch state of an unfinished run: never an output of either tool."""
    return f"{STATE_DIR}/resume/{cell}.pt"


def probe_json(cell: str) -> str:
    return f"{CELLS_DIR}/{cell}.json"


def recon_npz(cell: str) -> str:
    return f"{CELLS_DIR}/{cell}.recon.npz"


def timing(step: str, cell: str) -> str:
    """Wall time and throughput vary run to run, so they live beside the logs, untracked."""
    return f"{LOGS_DIR}/timings/{step}/{cell}.json"


def log(step: str, name: str) -> str:
    return f"{LOGS_DIR}/{step}/{name}.log"
