"""Checks shared by the figure tests of both tracks."""

from __future__ import annotations


def stamp_collisions(fig) -> list[str]:
    """What the provenance stamp's box overlaps: any axes' tight box (panel, ticks, labels, title,
    legend), any figure-level text (suptitle, other figure texts, figure legends), or the figure's edge; and any
    figure-level text the figure's edge cuts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    stamps = [t for t in fig.texts if t.get_gid() == "provenance-stamp"]
    assert len(stamps) == 1, "one stamp per figure"
    box = stamps[0].get_window_extent(renderer)
    edge = fig.bbox
    hits = [] if edge.x0 <= box.x0 and box.x1 <= edge.x1 and edge.y0 <= box.y0 and box.y1 <= edge.y1 else ["the figure edge"]
    for ax in fig.axes:
        tight = ax.get_tightbbox(renderer)
        if tight is not None and box.overlaps(tight):
            hits.append(f"axes {ax.get_title()!r}")
    # figure-level texts (those inside an axes are in its tight box)
    texts = [t for t in fig.texts if t is not stamps[0]]
    texts += [t for t in (getattr(fig, "_suptitle", None), getattr(fig, "_supxlabel", None)) if t is not None]
    texts += [t for legend in fig.legends for t in (*legend.texts, legend.get_title())]
    for text in texts:
        if text.get_visible() and text.get_text().strip():
            extent = text.get_window_extent(renderer)
            if box.overlaps(extent):
                hits.append(f"text {text.get_text()!r}")
            if not (edge.x0 <= extent.x0 and extent.x1 <= edge.x1 and edge.y0 <= extent.y0 and extent.y1 <= edge.y1):
                hits.append(f"cut by the figure edge: {text.get_text()!r}")
    return hits
