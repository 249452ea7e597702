"""Numbers copied from the paper (Kong et al., CVPR 2023) that more than one track shows, and the
layout both tracks print the paper's Table 2 in."""

from __future__ import annotations

# The paper's Table 2: shape bias of MAE (ImageNet-1K, ViT-B) at each masking ratio, on
# Geirhos et al.'s cue-conflict images (as in ../shared/paper.md).
PAPER_SHAPE_BIAS = {0.1: 0.135, 0.25: 0.255, 0.5: 0.246, 0.75: 0.256, 0.9: 0.201}


def table2_rows(ratios: list[float], ours: list[tuple[str, list[str]]], floors: list[tuple[str, str]]) -> list[str]:
    """Markdown rows of a Table 2 (shape bias per masking ratio): a column per ratio, a row per
    ``(label, cells)`` of ours, a floor row per ``(label, value)`` (one value at every ratio),
    and the paper's row ("–" where the paper has no such ratio). Cells come formatted."""
    lines = ["| | " + " | ".join(f"ratio {r:g}" for r in ratios) + " |", "|---|" + "---|" * len(ratios)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in ours]
    lines += [f"| {label} (any ratio) | " + " | ".join([value] * len(ratios)) + " |" for label, value in floors]
    paper = [f"{PAPER_SHAPE_BIAS[r]:.3f}" if r in PAPER_SHAPE_BIAS else "–" for r in ratios]
    return lines + ["| paper, ImageNet ViT-B (Table 2) | " + " | ".join(paper) + " |"]
