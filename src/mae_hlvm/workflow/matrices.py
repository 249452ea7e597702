"""The cells a stage runs for: a cell's fields as spelt in paths, and DVC's matrices.

A :class:`Matrix` is what a per-cell stage of the stage table (:mod:`mae_hlvm.workflow.stages`)
runs over: the grid, its (ratio, unit) pairs, its seeds, the stability set, each real sweep.
Its cells are the fields the records' functions take (``f``: ``mask_ratio``, ``mask_unit``,
``seed`` as spelled in paths, or DVC's / Snakemake's placeholders).

Nothing here imports torch or numpy: the Snakefile imports it at parse time (through stages).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mae_hlvm.core import cells
from mae_hlvm.core.cells import real_sweep_cells, stability_cells
from mae_hlvm.core.config import Params

Fields = dict[str, str]  # mask_ratio, mask_unit (the masking unit), seed as spelled in paths


@dataclass(frozen=True)
class Matrix:
    """The jobs of a stage that runs once per cell: DVC's ``matrix:`` (``dvc``), the job's
    fields as DVC interpolates them (``item``) and the concrete cells under some params."""

    dvc: Mapping[str, str]
    item: Mapping[str, str]
    cells: Callable[[Params], list[Fields]]

    @property
    def per_seed(self) -> bool:
        return tuple(self.item) == ("seed",)


# ----------------------------------------------------------------------------- cells


def cell_fields(mask_ratio: float, mask_unit: int, seed: int) -> Fields:
    """A cell's values spelled as in paths: ``repr`` of the float, as DVC prints it too."""
    return {"mask_ratio": repr(float(mask_ratio)), "mask_unit": str(int(mask_unit)), "seed": str(int(seed))}


def seed_fields(seed: int) -> Fields:
    """A seed stage's fields: ``{"seed": "0"}``."""
    return {"seed": str(int(seed))}


def cell_name(f: Fields) -> str:
    """``r0.75_u4_s0`` (:func:`mae_hlvm.core.cells.cell_name` of the fields as spelt). Fields
    without a seed (a (ratio, unit) cell every seed shares) give ``r0.75_u4``."""
    return cells.cell_name(f["mask_ratio"], f["mask_unit"], f.get("seed"))


def pair_name(f: Fields) -> str:
    """The (ratio, unit) cell of a cell's fields, ``r0.75_u4``: the oracle table it is read against."""
    return cells.cell_name(f["mask_ratio"], f["mask_unit"])


def grid_cells(params: Params) -> list[Fields]:
    """Every cell of the grid, in DVC's matrix order (ratio, then patch, then seed)."""
    g = params.grid
    return [cell_fields(r, p, s) for r, p, s in itertools.product(g.mask_ratios, g.mask_units, g.seeds)]


def seed_cells(f: Fields, params: Params) -> list[Fields]:
    """The grid cells of seed ``f["seed"]`` (which may be a placeholder), in the grid's order."""
    g = params.grid
    return [{"mask_ratio": repr(float(r)), "mask_unit": str(int(u)), "seed": f["seed"]}
            for r, u in itertools.product(g.mask_ratios, g.mask_units)]


def stable_cells(params: Params) -> list[Fields]:
    return [cell_fields(*c) for c in stability_cells(params)]


def _real_cells(sweep: str, stable: bool = False) -> Callable[[Params], list[Fields]]:
    """A real sweep's cells; ``stable``: those of the stability seed (the stability set's)."""
    def cells(params: Params) -> list[Fields]:
        keep = (lambda s: s == params.stability.seed) if stable else (lambda s: True)
        return [cell_fields(r, u, s) for r, u, s in real_sweep_cells(params.real)[sweep] if keep(s)]
    return cells


CELL_ITEM = {"mask_ratio": "${item.mask_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${item.seed}"}
GRID = Matrix(
    dvc={"mask_ratio": "${grid.mask_ratios}", "mask_unit": "${grid.mask_units}", "seed": "${grid.seeds}"},
    item=CELL_ITEM, cells=grid_cells,
)
# every (ratio, unit) of the grid, seeds aside: the oracle tables
PAIRS = Matrix(
    dvc={"mask_ratio": "${grid.mask_ratios}", "mask_unit": "${grid.mask_units}"},
    item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${item.mask_unit}"},
    cells=lambda params: [{"mask_ratio": repr(float(r)), "mask_unit": str(int(u))}
                          for r, u in itertools.product(params.grid.mask_ratios, params.grid.mask_units)],
)
PER_SEED = Matrix(dvc={"seed": "${grid.seeds}"}, item={"seed": "${item.seed}"},
                  cells=lambda params: [seed_fields(s) for s in params.grid.seeds])
# the stability set: its (ratio, unit) cells of the grid at the stability seed
STABLE = Matrix(
    dvc={"mask_ratio": "${stability.mask_ratios}", "mask_unit": "${stability.mask_units}"},
    item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${stability.seed}"},
    cells=stable_cells,
)
# DVC's matrix is a plain product of params lists, so each real sweep is its own product:
# A = ratios x seeds at real.sweep_a_unit, B = units x seeds at real.sweep_b_ratio, G = all three
REAL_SWEEP_LETTERS = ("A", "B", "G")
REAL = {
    "A": Matrix(dvc={"mask_ratio": "${real.mask_ratios}", "seed": "${real.seeds}"},
                item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${real.sweep_a_unit}", "seed": "${item.seed}"},
                cells=_real_cells("A")),
    "B": Matrix(dvc={"mask_unit": "${real.mask_units}", "seed": "${real.seeds}"},
                item={"mask_ratio": "${real.sweep_b_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${item.seed}"},
                cells=_real_cells("B")),
    "G": Matrix(dvc={"mask_ratio": "${real.mask_ratios}", "mask_unit": "${real.mask_units}", "seed": "${real.seeds}"},
                item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${item.seed}"},
                cells=_real_cells("G")),
}
REAL_PER_SEED = Matrix(dvc={"seed": "${real.seeds}"}, item={"seed": "${item.seed}"},
                       cells=lambda params: [seed_fields(s) for s in params.real.seeds])
# each real sweep's cells at the stability seed (the stability set's real part)
REAL_STABLE = {
    "A": Matrix(dvc={"mask_ratio": "${real.mask_ratios}"},
                item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${real.sweep_a_unit}", "seed": "${stability.seed}"},
                cells=_real_cells("A", stable=True)),
    "B": Matrix(dvc={"mask_unit": "${real.mask_units}"},
                item={"mask_ratio": "${real.sweep_b_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${stability.seed}"},
                cells=_real_cells("B", stable=True)),
    "G": Matrix(dvc={"mask_ratio": "${real.mask_ratios}", "mask_unit": "${real.mask_units}"},
                item={"mask_ratio": "${item.mask_ratio}", "mask_unit": "${item.mask_unit}", "seed": "${stability.seed}"},
                cells=_real_cells("G", stable=True)),
}
