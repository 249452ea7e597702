"""A Markdown summary of one revision's results, and the grid's table as LaTeX (step ``summary``).

``results/summary.md`` gathers what a reviewer needs to judge a revision without
running anything: the params (and their digest), the code revision, library versions,
the per-cell table averaged over seeds, the claims check and links to every figure.
``results/metrics.tex`` is the same table ready for the paper. Both are stamped with the
params digest and code revision and contain nothing that varies between reruns.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from .config import Params, digest, section_dict
from .io import ArtifactError, read_json, write_text
from .provenance import code_revision, library_versions

SECTIONS = ["data", "model", "train", "probe", "grid"]


def seed_table(metrics: pd.DataFrame, n_levels: int) -> pd.DataFrame:
    """Mean and standard deviation over seeds, one row per (patch size, masking ratio)."""
    cols = [f"r2_level{i}" for i in range(n_levels)] + ["probe_acc", "recon_mse"]
    grouped = metrics.groupby(["patch_size", "mask_ratio"])[cols]
    mean, sd = grouped.mean(), grouped.std(ddof=1).fillna(0.0)
    out = mean.copy()
    for c in cols:
        out[c] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(mean[c], sd[c])]
    out["seeds"] = grouped.size()
    return out.reset_index()


def markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def latex_table(table: pd.DataFrame, stamp: str) -> str:
    cols = list(table.columns)
    names = [c.replace("_", r"\_") for c in cols]
    lines = [
        f"% mae-hlvm synthetic grid, {stamp}",
        r"\begin{tabular}{" + "l" * len(cols) + "}",
        r"\toprule",
        " & ".join(names) + r" \\",
        r"\midrule",
    ]
    for row in table.itertuples(index=False):
        lines.append(" & ".join(str(v).replace("±", r"$\pm$") for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_summary(params: Params, metrics: pd.DataFrame, claims_md: str, figures: list[str]) -> tuple[str, str]:
    """(summary.md text, metrics.tex text)."""
    n_levels = params.data.depth + 1
    params_digest = digest(section_dict(params, SECTIONS))
    stamp = f"params {params_digest}, code {code_revision()}"
    table = seed_table(metrics, n_levels)
    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    text = "\n".join([
        "# mae-hlvm results summary",
        "",
        f"Stamp: {stamp}. Environment: {versions}.",
        "",
        "## Grid (linear probe, default pooling; mean ± sd over seeds)",
        "",
        markdown_table(table),
        "",
        claims_md.replace("# Claims check", "## Claims check"),
        "## Figures",
        "",
        *[f"![{Path(f).stem}](figures/{Path(f).name})" for f in figures],
        "",
        "## Params",
        "",
        "```yaml",
        yaml.safe_dump(section_dict(params, SECTIONS), sort_keys=False).rstrip(),
        "```",
        "",
    ])
    return text, latex_table(table, stamp)


def run(params: Params, args: argparse.Namespace) -> None:
    path = Path(args.metrics)
    if not path.exists():
        raise ArtifactError(f"{path}: missing (run the aggregate step first)")
    claims_md = Path(args.claims_md)
    if not claims_md.exists():
        raise ArtifactError(f"{claims_md}: missing (run the claims step first)")
    read_json(args.claims_json)  # a corrupt claims file stops here, named
    figures = sorted(str(p) for p in Path(args.figures_dir).glob("*.png"))
    text, tex = render_summary(params, pd.read_csv(path), claims_md.read_text(), figures)
    write_text(args.out_md, text)
    write_text(args.out_tex, tex)
