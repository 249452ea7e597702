"""Numbers copied from the paper (Kong et al., CVPR 2023) that more than one track shows."""

from __future__ import annotations

# The paper's Table 2: shape bias of MAE (ImageNet-1K, ViT-B) at each masking ratio, on
# Geirhos et al.'s cue-conflict images (as in ../shared/paper.md).
PAPER_SHAPE_BIAS = {0.1: 0.135, 0.25: 0.255, 0.5: 0.246, 0.75: 0.256, 0.9: 0.201}
