"""The real track's stamp and the figure writer that carries it.

:func:`real_stamp` (params digest and code revision), :func:`stamp_figure` (a footer
strip below a figure's panels, following the synthetic track's convention,
:mod:`mae_hlvm.review.figures`) and :func:`save_figure` (PNG + PDF, atomic, with no
timestamps or versions inside).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from mae_hlvm.core.config import Params
from mae_hlvm.core.io import atomic_path

STAMP_FONTSIZE = 6  # points; the same footer as mae_hlvm.review.figures.stamp (not imported: the
STAMP_LINE_IN = 0.12  # report-real stage would then depend on the synthetic figures' code)
STAMP_PAD_IN = 0.08


def stamp_figure(fig: Figure, label: str) -> None:
    """Add a footer strip below a constrained-layout figure and write ``label`` in it.

    The figure grows by the strip (panels keep their size) and the layout engine keeps
    every panel, label, legend and the suptitle above it, so the stamp overlaps none.
    The label is split after its ``|`` when one line would be wider than the figure.
    """
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.textpath import TextPath

    engine = fig.get_layout_engine()
    if not isinstance(engine, ConstrainedLayoutEngine):
        raise ValueError("stamp_figure: the figure must use layout='constrained'")
    if fig.legends:  # constrained layout anchors them to the figure's edge, i.e. into the footer
        raise ValueError("stamp_figure: put the legend in an axes, not on the figure")
    width, height = fig.get_size_inches()
    wide = TextPath((0, 0), label, size=STAMP_FONTSIZE).get_extents().width / 72
    text = label.replace(" | ", "\n") if wide > width - 2 * STAMP_PAD_IN and " | " in label else label
    footer = STAMP_LINE_IN * (text.count("\n") + 1) + 2 * STAMP_PAD_IN
    fig.set_figheight(height + footer)
    bottom = footer / (height + footer)
    engine.set(rect=(0, bottom, 1, 1 - bottom))
    fig.text(1 - STAMP_PAD_IN / width, bottom / 2, text, ha="right", va="center", ma="right",
             fontsize=STAMP_FONTSIZE, color="0.4", gid="provenance-stamp")


def save_figure(fig: Figure, out_stem: str | Path, stamp: str | None = None) -> list[Path]:
    """Write ``out_stem``.png and .pdf atomically, with no timestamps or versions inside.

    ``stamp``: the params digest and code revision (:func:`real_stamp`) the report puts on
    every figure and table, so a reviewer can match an artifact to the revision that made it.
    """
    out_stem = Path(out_stem)
    if stamp:
        stamp_figure(fig, stamp)
    written = []
    for fmt, metadata in (
        ("png", {"Software": None}),
        ("pdf", {"Creator": None, "Producer": None, "CreationDate": None}),
    ):
        path = out_stem.with_name(f"{out_stem.name}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, metadata=metadata, dpi=150)
        written.append(path)
    return written


def real_stamp(params: Params) -> str:
    """``params <digest> | code <revision>`` over every section the real track reads."""
    from mae_hlvm.core.provenance import code_revision, digest, section_dict

    sections = section_dict(params, ["model", "train", "real"])
    return f"params {digest(sections)} | code {code_revision()}"
