"""Limits on the params file itself, checked before anything parses it in earnest (issue 27).

:func:`mae_hlvm.core.config.load_params` (``check``, the Snakefile, ``make dvc-yaml``, every
step) calls these before validating, so a file no run needs stops with one line in well under
a second, before Snakemake builds a DAG or DVC parses it: a 10 MB params.yaml or a YAML alias
bomb kept ``dvc status`` busy for over 120 s, and a 10,000-value ``grid.mask_ratios`` kept
Snakemake at "Building DAG" for over 400 s. Messages cut long values
(:func:`cut_long_values`), so that an error naming a long list stays one readable line.

Only the standard library and PyYAML: the Snakefile imports this at parse time.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

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
    from mae_hlvm.core.config import ParamsError  # config imports this module

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


def check_cells(raw: Any, source: str) -> None:
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
