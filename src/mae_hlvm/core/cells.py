"""The cells a params file trains: each cell's masking geometry, its id, and which cells
each track and sweep runs.

Every step that computes with a cell reads it here, so this module is a code dep of each
(editing the visible-unit rounding reruns training in both tools); the schema
(:mod:`mae_hlvm.core.config`) validates with the same functions. Nothing here imports
numpy: the Snakefile reads the sweeps at parse time.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

from mae_hlvm.core.errors import ParamsError

if TYPE_CHECKING:  # annotations only: the schema validates with this module
    from mae_hlvm.core.config import Params, RealParams


def unit_counts(image_size: int, mask_unit: int, mask_ratio: float) -> tuple[int, int]:
    """(visible, hidden) masking units of one cell, with MAE's rounding ``int(L * (1 - r))``."""
    n_units = (image_size // mask_unit) ** 2
    n_visible = int(n_units * (1 - mask_ratio))
    return n_visible, n_units - n_visible


def cell_name(ratio: str, unit: str, seed: str | None = None) -> str:
    """The one spelling of a cell in every path, key and label: ``r0.75_u4_s0`` from the values
    as spelt (``repr`` of the ratio, as DVC's ``${item...}`` prints it, or a tool's placeholder);
    without a seed the (ratio, unit) cell every seed shares: ``r0.75_u4``."""
    return f"r{ratio}_u{unit}" + ("" if seed is None else f"_s{seed}")


def cell_id(mask_ratio: float, mask_unit: int, seed: int | None) -> str:
    """:func:`cell_name` of a cell's values: ``r0.75_u4_s0``; ``seed`` None: ``r0.75_u4``.

    ``repr`` of a Python float is what DVC's ``${item...}`` interpolation prints too, so
    both tools spell the same path.
    """
    if not math.isfinite(mask_ratio):
        raise ParamsError(f"mask_ratio={mask_ratio}: not a finite number")
    return cell_name(repr(float(mask_ratio)), str(int(mask_unit)), None if seed is None else str(int(seed)))


def check_cells(image: tuple[str, int], vit: tuple[str, int], units: list[tuple[str, int]],
                cells: list[tuple[float, int]], cell_label: str) -> None:
    """Both tracks' geometry rules, one ValueError line each: the ViT patch divides the image,
    every masking unit is a multiple of the patch and divides the image, and every (ratio,
    unit) cell keeps at least one visible and one hidden masking unit. ``image`` and ``vit``
    are (key as the user wrote it, value)."""
    (size_key, size), (vit_key, patch) = image, vit
    if size % patch:
        raise ValueError(f"{vit_key}={patch}: must divide {size_key}={size}")
    for name, unit in units:
        if unit % patch:
            raise ValueError(f"{name}={unit}: a masking unit must be a multiple of {vit_key}={patch}")
        if size % unit:
            raise ValueError(f"{name}={unit}: a masking unit must divide {size_key}={size}")
    for ratio, unit in cells:
        n_vis, n_hid = unit_counts(size, unit, ratio)
        if n_vis == 0 or n_hid == 0:
            raise ValueError(
                f"{cell_label} mask_ratio={ratio}, mask_unit={unit}: keeps {n_vis} visible and {n_hid} hidden "
                f"of {(size // unit) ** 2} masking units; each needs at least one"
            )


def cell_pairs(real: RealParams) -> list[tuple[float, int]]:
    """(mask_ratio, mask_unit) of every cell of the chosen sweep, in a fixed order.

    A: every ratio at ``sweep_a_unit``; B: every unit at ``sweep_b_ratio``; AB: A then
    the B cells A lacks (the paper's two sweeps); grid: every ratio x every unit.
    """
    sweep_a = [(r, real.sweep_a_unit) for r in real.mask_ratios]
    sweep_b = [(real.sweep_b_ratio, u) for u in real.mask_units]
    if real.sweep == "A":
        return sweep_a
    if real.sweep == "B":
        return sweep_b
    if real.sweep == "AB":
        return sweep_a + [c for c in sweep_b if c not in sweep_a]
    return list(itertools.product(real.mask_ratios, real.mask_units))


def real_cells(real: RealParams) -> list[tuple[float, int, int]]:
    """(mask_ratio, mask_unit, seed) of every real-track training run."""
    return [(r, u, s) for r, u in cell_pairs(real) for s in real.seeds]


# Sweep letters as pipeline stages see them: a sweep = one product of params lists, so
# DVC's ``matrix:`` can express it (A: ratios x seeds, B: units x seeds, G: the full grid).
SWEEPS_OF = {"A": ("A",), "B": ("B",), "AB": ("A", "B"), "grid": ("G",)}


def real_sweeps(real: RealParams) -> tuple[str, ...]:
    """The sweep letters ``real.sweep`` trains: AB -> (A, B); grid -> (G,)."""
    return SWEEPS_OF[real.sweep]


def real_sweep_cells(real: RealParams) -> dict[str, list[tuple[float, int, int]]]:
    """{sweep letter: [(mask_ratio, mask_unit, seed), ...]} in DVC's matrix order.

    Unlike :func:`real_cells`, the cell both sweeps share is listed (and trained) once
    per sweep: DVC's matrix is a plain product and cannot leave one item out.
    """
    out: dict[str, list[tuple[float, int, int]]] = {}
    for sweep in real_sweeps(real):
        if sweep == "A":
            out[sweep] = [(r, real.sweep_a_unit, s) for r, s in itertools.product(real.mask_ratios, real.seeds)]
        elif sweep == "B":
            out[sweep] = [(real.sweep_b_ratio, u, s) for u, s in itertools.product(real.mask_units, real.seeds)]
        else:
            out[sweep] = list(itertools.product(real.mask_ratios, real.mask_units, real.seeds))
    return out


def real_enabled(params: Params) -> bool:
    """Whether the real-image track runs: a ``real:`` section with ``enabled: true``."""
    return params.real is not None and params.real.enabled


def stability_enabled(params: Params) -> bool:
    """Whether the stability set trains: a ``stability:`` section with ``enabled: true``."""
    return params.stability is not None and params.stability.enabled


def stability_real(params: Params) -> bool:
    """Whether the stability set holds the real track's cells (the track on and ``stability.real``)."""
    return stability_enabled(params) and params.stability.real and real_enabled(params)


def stability_cells(params: Params) -> list[tuple[float, int, int]]:
    """The synthetic stability set's (mask_ratio, mask_unit, seed) cells, in the grid's matrix order."""
    st = params.stability
    return [(r, u, st.seed) for r, u in itertools.product(st.mask_ratios, st.mask_units)]


def require_real(params: Params) -> RealParams:
    """The ``real:`` section, or one line saying the track is off (for the real track's steps)."""
    if params.real is None:
        raise ParamsError("params.yaml: no 'real:' section (the real-image track is off)")
    return params.real
