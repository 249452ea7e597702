"""Tables 1 and 2 and Figs. 5 to 8 over every real cell: the ``report-real`` step (:func:`run_report`).

Reads the cells' ``evaluate-real`` JSONs and renders them (:mod:`mae_hlvm.real.tables`,
:mod:`mae_hlvm.real.recon_figure`), computes the floors (:mod:`mae_hlvm.real.floors`) and
draws the attention maps and t-SNE of one seed's checkpoints (:mod:`mae_hlvm.real.attention`,
:mod:`mae_hlvm.real.tsne`), each artifact stamped with :func:`mae_hlvm.real.stamp.real_stamp`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mae_hlvm.core import progress
from mae_hlvm.core.config import Params
from mae_hlvm.core.gate import gate_line
from mae_hlvm.core.io import write_json
from mae_hlvm.core.results import read_real_cell
from mae_hlvm.real.attention import attention_grid
from mae_hlvm.real.device import step_device
from mae_hlvm.real.floors import floors_markdown, random_init_model, table1_floors
from mae_hlvm.real.recon_figure import plot_recon_quality
from mae_hlvm.real.stamp import real_stamp
from mae_hlvm.real.tables import shape_bias_frame, shape_bias_markdown, table1_render
from mae_hlvm.real.tsne import tsne_figure

log = logging.getLogger("mae_hlvm.real.report")


# ------------------------------------------------------------------ the pipeline step
# Each step reads its params inside its own function: tests/test_real_track.py checks them
# against mae_hlvm.workflow.pipeline.STAGE_PARAMS.


def figure_cells(sweep_cells: dict[str, list[tuple[float, int, int]]], seed: int) -> list[tuple[str, float, int]]:
    """(sweep, ratio, unit) of the cells shown in Figs. 6 to 8: one seed, each (ratio, unit) once.

    A cell both sweeps train is byte-identical in both (same params, same seed), so it is
    shown once, from the first sweep listing it.
    """
    out, seen = [], set()
    for sweep, cells in sweep_cells.items():
        for ratio, unit, s in cells:
            if s == seed and (ratio, unit) not in seen:
                seen.add((ratio, unit))
                out.append((sweep, ratio, unit))
    return out


def run_report(params: Params, args: Any) -> None:
    """Table 1 and Figs. 5 to 8 over every current cell of the real track."""
    from mae_hlvm.core.cells import cell_id, real_sweep_cells
    from mae_hlvm.core.io import read_json

    real = params.real
    device = step_device(params)
    where = {"sweep_a_unit": real.sweep_a_unit, "sweep_b_ratio": real.sweep_b_ratio}
    sweep_cells = real_sweep_cells(real)
    # only the cells of the current params: files of cells dropped from params.yaml are ignored
    results = []
    for sweep, cells in sweep_cells.items():
        for r, u, s in cells:
            path = Path(args.cells_dir) / sweep / f"{cell_id(r, u, s)}.json"
            res = read_json(path)
            read_real_cell(res, str(path))  # the layout evaluate-real writes (mae_hlvm.core.results)
            results.append(res)
    out_dir, fig_dir = Path(args.out_dir), Path(args.out_dir) / "figures"
    _render_report(params, args, results, sweep_cells, where, out_dir, fig_dir, device, real_stamp(params))


def real_gate_line(results: Sequence[dict[str, Any]]) -> str:
    """:func:`mae_hlvm.core.gate.gate_line` over the real cells' JSONs (each with ``sweep``, ``cell_id``, ``gate``)."""
    failing = [
        (f"{res['sweep']}/{res['cell_id']}", res["gate"]["gate_reason"]) for res in results if not res["gate"]["gate_pass"]
    ]
    return gate_line("real track", len(results), failing)


def _render_report(params: Params, args: Any, results: list, sweep_cells: dict, where: dict,
                   out_dir: Path, fig_dir: Path, device: Any, stamp: str) -> None:
    """Table 1 (+ its floors and Table 2) and Figs. 5 to 8, each stamped with ``stamp``."""
    from mae_hlvm.core import paths
    from mae_hlvm.core.cells import cell_id
    from mae_hlvm.core.data import load_dataset
    from mae_hlvm.core.io import ArtifactError, write_text
    from mae_hlvm.core.train import load_checkpoint

    real = params.real
    table1_render([{**res["table1"], "gate_pass": res["gate"]["gate_pass"]} for res in results], out_dir, **where)
    gate = real_gate_line(results)
    ds = load_dataset(args.data)
    with progress.part(log, "Table 1 floors (raw pixels and the untrained encoder, probed as the cells)"):
        floors = table1_floors(
            ds, random_init_model(params, ds, real.seeds[0], device),
            probe_epochs=real.probe_epochs, knn_k=real.knn_k, eval_seed=real.eval_seed,
        )
    table2 = shape_bias_markdown(shape_bias_frame([res["table1"] for res in results], **where), floors, real.sweep_a_unit)
    for name, comment in (("table1.md", "{floors}\n{table2}{gate}\n\n_Stamp: {stamp}._"),
                          ("table1.tex", "% {gate}\n% stamp: {stamp}")):
        path = out_dir / name
        text = comment.format(floors=floors_markdown(floors), table2=table2 and table2 + "\n", gate=gate, stamp=stamp)
        write_text(path, path.read_text().rstrip("\n") + "\n\n" + text + "\n")
    recon = pd.DataFrame([res["recon_quality"] for res in results]).rename(columns={"sweep": "sweep_tag"})
    plot_recon_quality(recon, fig_dir / "fig5_recon_quality", **where, stamp=stamp)

    evaluated = {(res["sweep"], res["cell_id"]): res["checkpoint_weights_sha256"] for res in results}
    models = []
    for sweep, ratio, unit in figure_cells(sweep_cells, real.seeds[0]):
        cell = cell_id(ratio, unit, real.seeds[0])
        model, meta = load_checkpoint(Path(args.models_dir) / sweep / cell / "checkpoint.pt", device)
        # the cell JSONs are this step's recorded deps: only the weights they evaluated may be shown
        if meta["weights_sha256"] != evaluated[(sweep, cell)]:
            raise ArtifactError(f"{args.models_dir}/{sweep}/{cell}: checkpoint differs from the one its cell JSON evaluated; rerun evaluate-real")
        models.append((f"r{ratio:g} u{unit}", model))
    with progress.part(log, f"Figs. 6 and 7 (attention maps of {len(models)} cells)"):
        attention = attention_grid(models, ds, fig_dir, n_images=real.n_eval_images, stamp=stamp)
    with progress.part(log, f"Fig. 8 (t-SNE of {real.tsne_points} test images per cell, {len(models)} cells)"):
        tsne = tsne_figure(models, ds, fig_dir / "fig8_tsne", n_points=real.tsne_points, seed=real.eval_seed, stamp=stamp)
    write_json(out_dir / Path(paths.REAL_FIGURES_JSON).name, {
        "seed_shown": real.seeds[0],
        "attention": {k: v for k, v in attention.items() if k != "files"},
        "tsne": {k: v for k, v in tsne.items() if k != "files"},
    })
