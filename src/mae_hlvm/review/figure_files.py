"""Every synthetic figure's files: PNG and PDF with byte-identical reruns, and the stamp.

Determinism: the Agg/PDF backends stamp software names and dates into the files; every
one of those fields is blanked through ``savefig(metadata=...)`` and ``SOURCE_DATE_EPOCH``
is pinned while saving, so no backend falls back to the clock. Every figure carries the
params digest and the code revision in a footer strip reserved below everything else
(:func:`stamp`), so the stamp never covers a panel, title or label.
"""

from __future__ import annotations

import contextlib
import io as _stdio
import os
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from mae_hlvm.core.config import Params  # noqa: E402
from mae_hlvm.core.io import write_bytes  # noqa: E402
from mae_hlvm.core.provenance import code_revision, digest, section_dict  # noqa: E402

FORMATS = ("png", "pdf")
METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}


@contextlib.contextmanager
def _fixed_source_date() -> Iterator[None]:
    """Pin SOURCE_DATE_EPOCH while saving so no backend reads the clock."""
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def figure_bytes(fig: plt.Figure, fmt: str) -> bytes:
    """The figure rendered to ``fmt`` ('png' or 'pdf') with no time or software stamps."""
    buf = _stdio.BytesIO()
    with _fixed_source_date():
        fig.savefig(buf, format=fmt, metadata=METADATA[fmt])
    return buf.getvalue()


def save_figure(fig: plt.Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``<out_dir>/<name>.png`` and ``.pdf`` atomically, close the figure, return the paths."""
    written = []
    try:
        for fmt in FORMATS:
            path = Path(out_dir) / f"{name}.{fmt}"
            write_bytes(path, figure_bytes(fig, fmt))
            written.append(path)
    finally:
        plt.close(fig)
    return written


STAMP_FONTSIZE = 6  # points
STAMP_LINE_IN = 0.12  # height of one stamp line, inches
STAMP_PAD_IN = 0.08  # free space around the stamp inside the footer, inches


def stamp_lines(label: str, width_in: float) -> str:
    """``label`` on one line, or split after its ``|`` when wider than the figure allows."""
    from matplotlib.textpath import TextPath

    wide = TextPath((0, 0), label, size=STAMP_FONTSIZE).get_extents().width / 72
    if wide <= width_in - 2 * STAMP_PAD_IN or " | " not in label:
        return label
    return label.replace(" | ", "\n")


def stamp(fig: plt.Figure, label: str) -> None:
    """Lay the figure out above a footer strip added below it, and write ``label`` in the strip.

    The figure grows by the strip's height (panels keep their size); tight_layout keeps
    every axes, label, legend and the suptitle above the strip, so the stamp overlaps none.
    Call it instead of ``fig.tight_layout`` as the figure's last step.
    """
    width, height = fig.get_size_inches()
    text = stamp_lines(label, width)
    footer = STAMP_LINE_IN * (text.count("\n") + 1) + 2 * STAMP_PAD_IN
    fig.set_figheight(height + footer)
    bottom = footer / (height + footer)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.text(1 - STAMP_PAD_IN / width, bottom / 2, text, ha="right", va="center", ma="right",
             fontsize=STAMP_FONTSIZE, color="0.4", gid="provenance-stamp")


def provenance_label(params: Params) -> str:
    sections = section_dict(params, ["data", "model", "train", "probe", "grid"])
    return f"params {digest(sections)} | code {code_revision()}"
