"""The sizes no run we plan for comes near, and the checks that refuse params past them.

Past a limit a job would hang, exhaust memory or die in a traceback an hour in, so the
schema (:mod:`mae_hlvm.core.config`) refuses the params instead, naming what to lower. Each
check raises a ValueError line that begins with the key as the section that raises it
sees it ("vit_patch=8" inside real:, which the schema prefixes with "real.") and names every
other key in full, so the line reads the same from every section.

The params file itself (issue 27) is checked before anything parses it in earnest
(:func:`check_text`, :func:`check_lists`, :func:`check_grid_size`): a file no run needs stops
with one line in well under a second, before Snakemake builds a DAG or DVC parses it (a 10 MB
params.yaml or a YAML alias bomb kept ``dvc status`` busy for over 120 s, a 10,000-value
``grid.mask_ratios`` kept Snakemake at "Building DAG" for over 400 s). Messages cut long values
(:func:`cut_long_values`). Only the standard library and PyYAML: the Snakefile imports this.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

# Seeds reach numpy's legacy RandomState through scikit-learn's ``random_state`` (t-SNE,
# Nystroem), which takes only 32-bit seeds.
SEED_LIMIT = 2**32

# The synthetic dataset and the real track's converted split are held in RAM as float32.
# The limit is the largest machine this project plans for, not this machine's RAM:
# ``check`` runs where Snakemake or DVC read the params (a laptop, a cluster's login
# node), not where the jobs run, and profiles/paper/params.yaml needs 718 GiB on a 1 TiB
# node (docs/real_track.md). Read through :func:`memory_limit_bytes`, so tests can lower it.
MEMORY_LIMIT_BYTES = 2**40

# Encoder + decoder weights. ViT-H/14 has 0.63e9; AdamW training holds 16 bytes per
# weight (weights, gradients, two moments): 30 GiB at this limit before any activation.
MAX_MODEL_WEIGHTS = 2_000_000_000

# Tokens per image (image_size / vit_patch)**2. Attention costs tokens**2 per head and the
# probe and attention figures run the encoder on every token; ViT-B/16 at 224 px has 196,
# the paper profile's ViT patch 8 has 784.
MAX_TOKENS = 4096

# Epochs x train images of one run (pretraining or the real track's linear probe). The
# paper's ImageNet pretraining is 800 x 1.23M = 9.9e8; ten times that would run for
# months on one GPU, so more is a typo (an epochs count meant for a smaller split).
MAX_IMAGE_PASSES = 10**10

# Peak learning rate (base_lr * batch_size / 256). AdamW moves each weight by about the
# learning rate per step, so a peak above 1 diverges at once (MAE's peak is 6e-3).
MAX_PEAK_LR = 1.0

# Decoupled weight decay shrinks every weight by lr * weight_decay per step; above 1 it
# erases what the model learns (MAE: 0.05).
MAX_WEIGHT_DECAY = 1.0

# Generator scales. The gains are calibrated on variances, which overflow float64 near
# 1e154; any useful setting is below 100.
MAX_GENERATOR_SCALE = 1e6

# The synthetic class probe (RidgeClassifierCV, stratified ``probe.cv_folds``-fold CV on
# the train split, scored on the test split) needs examples of every class in both
# splits. Labels are drawn uniformly, so this is a per-class average; with fewer, classes
# miss from a split and the accuracy means nothing (``n_classes: 1e6`` read 0.000).
MIN_IMAGES_PER_CLASS = 10

# The real track: the learning gate's linear reference picks its ridge alpha on the last
# quarter of the train split and the linear probe's BatchNorm needs two images a batch.
MIN_REAL_TRAIN = 10
# t-SNE's perplexity is (n - 1) / 3 and must be > 0; below 5 images every accuracy is
# one of a handful of fractions.
MIN_REAL_TEST = 5
# The built-in real datasets: their class count and size are known without the data.
# 10 digit classes each; t-SNE's silhouette score needs more points than classes, so
# their test split needs 2 images per class.
BUILTIN_CLASSES = {"mnist": 10, "digits": 10}
BUILTIN_SPLITS = {"mnist": (60_000, 10_000)}  # MNIST's official train and test files
BUILTIN_TOTAL = {"digits": 1797}  # scikit-learn's digits, split by split_seed
BUILTIN_SIDE = {"mnist": 28, "digits": 8}  # native image side, for fit: pad

GIB = 2**30


def memory_limit_bytes() -> int:
    """The most RAM a dataset may take (:data:`MEMORY_LIMIT_BYTES`); a function so tests can lower it."""
    return MEMORY_LIMIT_BYTES


def check_seed(value: int) -> None:
    if value >= SEED_LIMIT:
        raise ValueError(
            f"={value}: a seed must be below 2**32 = {SEED_LIMIT} "
            "(scikit-learn passes it to numpy's RandomState, which takes 32-bit seeds)"
        )


def check_scale(value: float) -> None:
    if value > MAX_GENERATOR_SCALE:
        raise ValueError(
            f"={value}: must be at most {MAX_GENERATOR_SCALE:g}, far past any useful setting (below 100); "
            "near 1e154 the generator's variances overflow"
        )


def format_gib(n_bytes: float) -> str:
    gib = n_bytes / GIB
    if gib < 10:
        return f"{gib:.2f} GiB"
    return f"{gib:,.1f} GiB" if gib < 1e6 else f"{gib:.3g} GiB"


def check_memory(section: Any, n_images: int, floats_per_image: int, prefix: str, what: str) -> None:
    """Refuse a dataset of ``n_images`` x ``floats_per_image`` float32 over :func:`memory_limit_bytes`.

    The message leads with the bigger factor: the image count, or the image itself.
    """
    n_bytes = 4 * n_images * floats_per_image
    limit = memory_limit_bytes()
    if n_bytes <= limit:
        return
    if n_images >= floats_per_image:
        lead = "n_train"
    else:
        lead = "channels" if getattr(section, "channels", 0) > section.image_size else "image_size"
    raise ValueError(
        f"{lead}={getattr(section, lead)}: the dataset needs {n_images} images x {what} x 4 bytes = {format_gib(n_bytes)} "
        f"of RAM (float32), over the {format_gib(limit)} allowed: lower {prefix}n_train, {prefix}n_test or "
        f"{prefix}image_size"
    )


def check_tokens(lead: str, full: str, image_size: int, vit_patch: int, image_key: str) -> None:
    tokens = (image_size // vit_patch) ** 2
    if tokens > MAX_TOKENS:
        raise ValueError(
            f"{lead}={vit_patch}: {image_key}={image_size} makes {tokens} tokens per image, over "
            f"{MAX_TOKENS} (attention costs tokens**2): raise {full} or lower {image_key}"
        )


def check_passes(lead: str, full: str, epochs: int, n_train: int, n_key: str) -> None:
    passes = epochs * n_train
    if passes > MAX_IMAGE_PASSES:
        raise ValueError(
            f"{lead}={epochs}: {epochs} epochs x {n_key}={n_train} = {passes:.2g} image passes per run, over the "
            f"{MAX_IMAGE_PASSES:.0e} allowed (10x the paper's ImageNet pretraining): lower {full}"
        )


def check_peak_lr(lead: str, full: str, base_lr: float, batch_key: str, batch_size: int) -> None:
    peak = base_lr * batch_size / 256
    if peak > MAX_PEAK_LR:
        raise ValueError(
            f"{lead}={base_lr}: the peak learning rate {full} x {batch_key} / 256 = {peak:.3g} is over "
            f"{MAX_PEAK_LR:g}, where AdamW diverges at once (MAE peaks at 6e-3): lower {full}"
        )


# ---------------------------------------------------------------- the params file itself

# params.yaml is about 7 KB; every profile is smaller. 256 KiB leaves room for any comment.
MAX_PARAMS_BYTES = 256 * 1024
# The longest list a planned run uses has 6 values (ridge_alphas); 100 leaves room for fine sweeps.
MAX_LIST_VALUES = 100
# Cells of one grid (ratios x units x seeds). Measured on 2 cores: `snakemake -n` builds the
# DAG of 1,000 cells (2,000 jobs) in 9 s and of 2,500 cells in 20 s; the default grid has 20.
MAX_GRID_CELLS = 1000
# A value in a one-line message longer than this is cut in the middle.
MAX_SHOWN = 120


def _fail(message: str) -> None:
    from mae_hlvm.core.errors import ParamsError  # errors imports this module

    raise ParamsError(message)


def _loader() -> type:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_text(text: str, source: str) -> None:
    """Refuse a params text over :data:`MAX_PARAMS_BYTES`, with a YAML alias, or with a list
    over :data:`MAX_LIST_VALUES` values; one ParamsError line each. Text that is not valid
    YAML is left to the params loader, whose message names the line."""
    size = len(text.encode())
    if size > MAX_PARAMS_BYTES:
        _fail(
            f"{source}: {size:,} bytes, over the {MAX_PARAMS_BYTES // 1024} KiB a params file may hold (params.yaml "
            "is about 7 KB): remove what is not params (DVC and Snakemake parse the whole file on every command)"
        )
    try:
        root = yaml.compose(text, Loader=_loader())  # nodes only: fast, and an alias is not expanded
    except yaml.YAMLError:
        return
    if root is not None:
        _check_node(root, "", {}, source)


def _check_node(node: yaml.Node, where: str, seen: dict[int, yaml.Node], source: str) -> None:
    if id(node) in seen:  # the composer hands an alias back as the node its anchor names
        first = seen[id(node)]
        _fail(
            f"{source}: {where or 'the document'}: a YAML alias (*name) repeats the value set at line "
            f"{first.start_mark.line + 1}: write the values out (an alias lets a few lines expand into billions "
            "of values, which DVC expands)"
        )
    seen[id(node)] = node
    if isinstance(node, yaml.SequenceNode):
        if len(node.value) > MAX_LIST_VALUES:
            _fail(
                f"{source}: {where or 'the document'} (line {node.start_mark.line + 1}): {len(node.value):,} values, "
                f"over the {MAX_LIST_VALUES} a list may hold (no planned run comes near): shorten it"
            )
        for i, item in enumerate(node.value):
            _check_node(item, f"{where}[{i}]", seen, source)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "<key>"
            _check_node(key, f"{where}.{name}" if where else str(name), seen, source)
            _check_node(value, f"{where}.{name}" if where else str(name), seen, source)


def _length(section: Any, key: str) -> int:
    value = section.get(key) if isinstance(section, dict) else None
    return len(value) if isinstance(value, list) else 1


def check_grid_size(raw: Any, source: str) -> None:
    """Refuse a grid (``grid:``, or ``real:``'s ratios x units x seeds) over :data:`MAX_GRID_CELLS` cells."""
    if not isinstance(raw, dict):
        return
    for section in ("grid", "real"):
        keys = ("mask_ratios", "mask_units", "seeds")
        sizes = [_length(raw.get(section), k) for k in keys]
        cells = math.prod(sizes)
        if cells > MAX_GRID_CELLS:
            parts = " x ".join(f"{n} {section}.{k}" for n, k in zip(sizes, keys))
            _fail(
                f"{source}: {section}: {cells:,} cells ({parts}), over the {MAX_GRID_CELLS:,} a grid may hold "
                f"(Snakemake spends seconds per hundred jobs on its DAG alone): shorten one of the lists"
            )


def check_lists(raw: Any, source: str, where: str = "") -> None:
    """:func:`check_text`'s list rule on already-loaded data (a profile, or a mapping from a test)."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            check_lists(value, source, f"{where}.{key}" if where else str(key))
    elif isinstance(raw, list):
        if len(raw) > MAX_LIST_VALUES:
            _fail(
                f"{source}: {where}: {len(raw):,} values, over the {MAX_LIST_VALUES} a list may hold "
                "(no planned run comes near): shorten it"
            )
        for i, item in enumerate(raw):
            check_lists(item, source, f"{where}[{i}]")


def cut(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` cut in the middle when longer than ``limit``, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]} ... {text[-limit // 4:]} ({len(text):,} characters)"


def cut_long_values(message: str) -> str:
    """A one-line message whose long parts (a part: the text between two ``: `` separators, where
    the messages put the file, the key and value, the problem and the advice) are cut in the middle
    to ``2 * MAX_SHOWN`` characters: a value listing 10,000 ratios is cut, the advice stays whole."""
    if len(message) <= 2 * MAX_SHOWN:
        return message
    return ": ".join(cut(part, 2 * MAX_SHOWN) for part in message.split(": "))
