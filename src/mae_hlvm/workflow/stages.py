"""The stage table: one frozen :class:`Stage` record per pipeline stage, and nothing else.

A record says everything about its stage: the CLI step it runs (a :class:`Step` of
:mod:`mae_hlvm.workflow.steps`: runner, help, arguments), the params keys it reads, its
command's arguments, the files it reads and writes, its matrix (one job, one per grid cell,
per seed or per real sweep's cell: :mod:`mae_hlvm.workflow.matrices`), when it runs
(:mod:`mae_hlvm.workflow.tracks`), its resources and which outputs go into Snakemake's
report. The Snakefile's rules (one loop), ``dvc.yaml`` (``make dvc-yaml``) and the command
line (``cli.STEPS``) are all derived from :data:`TABLE` by :mod:`mae_hlvm.workflow.pipeline`,
so **adding a stage is one record here plus one module** holding its ``run(params, args)``
(tests/test_stage_table.py builds such a stage and runs it through both tools).

Paths come from :mod:`mae_hlvm.core.paths`; a record's functions take the cell's fields
(``f``: ``mask_ratio``, ``mask_unit``, ``seed`` as spelled in paths, or DVC's / Snakemake's
placeholders) and, where a stage reads every cell, the params.

Nothing here imports torch or numpy: the Snakefile imports this module at parse time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mae_hlvm.core import paths
from mae_hlvm.core.cells import real_enabled, stability_enabled, stability_real
from mae_hlvm.core.config import Params
from mae_hlvm.core.paths import EXAMPLES_PNG, FIGURE_NAMES, REAL_FIGURE_NAMES
from mae_hlvm.workflow.matrices import (
    GRID,
    PAIRS,
    PER_SEED,
    REAL,
    REAL_PER_SEED,
    REAL_STABLE,
    REAL_SWEEP_LETTERS,
    STABLE,
    Fields,
    Matrix,
    cell_name,
    grid_cells,
    pair_name,
    seed_cells,
    stable_cells,
)
from mae_hlvm.workflow.steps import (
    AGGREGATE,
    BASELINE,
    CLAIMS,
    EVALUATE_REAL,
    FIGURES,
    GENERATE,
    ORACLES,
    PREDICT,
    PREPARE_REAL,
    PROBE,
    REPORT_REAL,
    SUMMARY,
    TRAIN,
    TRAIN_REAL,
    TRAIN_REAL_SEED,
    TRAIN_SEED,
    Step,
)
from mae_hlvm.workflow.tracks import (
    REAL_DATA_PARAMS,
    REAL_EVALUATE_PARAMS,
    REAL_REPORT_PARAMS,
    REAL_SWEEP_PARAMS,
    REAL_TRAIN_PARAMS,
    claims_reads,
    is_cell_job,
    real_cell_jsons,
    real_summary_inputs,
    real_sweep_cell_jobs,
    real_sweep_on,
    real_sweep_seed_jobs,
    stable_cell_jobs,
    stable_cell_jsons,
    stable_seed_jobs,
    summary_reads,
    user_data_inputs,
)


@dataclass(frozen=True)
class Out:
    """One output: ``kind`` is its dvc.yaml list (outs, metrics, plots); ``cache`` False = in git."""

    path: str
    kind: str = "outs"
    cache: bool = True


def _always(params: Params) -> bool:
    return True


def _reads_nothing_more(params: Params) -> tuple[str, ...]:
    return ()


def _no_report(path: str) -> tuple[str, str] | None:
    return None


@dataclass(frozen=True)
class Stage:
    """One pipeline stage (see the module docstring). ``args(f)``: the step's arguments before
    ``--log``; ``threads`` None = ``train.threads``; ``report(path)`` = (category, caption file)
    for an output shown in Snakemake's report, else None; ``dvc_inputs`` replaces ``inputs`` in
    dvc.yaml where a stage reads every cell (DVC links a folder dep to the outputs in it)."""

    name: str
    step: Step
    reads: tuple[str, ...]
    args: Callable[[Fields | None], str]
    outputs: Callable[[Fields | None, Params | None], list[Out]]
    inputs: Callable[[Fields | None, Params | None], list[str]]
    matrix: Matrix | None = None
    track: str = "synthetic"  # synthetic, real, stability (synthetic cells at budget_factor x) or real_stability
    runs_when: Callable[[Params], bool] = _always
    # params keys read only under some params (the real track's, when it is on)
    reads_when: Callable[[Params], tuple[str, ...]] = _reads_nothing_more
    dvc_inputs: Callable[[Params], list[str]] | None = None
    threads: int | None = 1
    mem_mb: int = 2000
    gpu: bool = False
    report: Callable[[str], tuple[str, str] | None] = _no_report

    @property
    def module(self) -> str:
        """The module whose code (and every sibling it imports) the stage runs: its code deps."""
        return self.step.module


# ----------------------------------------------------------------------------- stages: files

def _pictures(directory: str, names: tuple[str, ...]) -> list[Out]:
    """Each figure as a PNG (a DVC plot) and a PDF, both in git."""
    return [o for n in names for o in (Out(f"{directory}/{n}.png", "plots", cache=False),
                                       Out(f"{directory}/{n}.pdf", cache=False))]


def _png_caption(category: str) -> Callable[[str], tuple[str, str] | None]:
    """Every PNG output in the report under ``category``, captioned by report/<its stem>.rst."""
    return lambda path: (category, f"report/{Path(path).stem}.rst") if path.endswith(".png") else None


def _caption(target: str, category: str, caption: str) -> Callable[[str], tuple[str, str] | None]:
    return lambda path: (category, caption) if path == target else None


def _train_outputs(f: Fields | None, params: Params | None = None, stable: bool = False) -> list[Out]:
    cell = cell_name(f)
    return [Out(paths.checkpoint(cell, stable)), Out(paths.train_log(cell, stable))]


def _train_seed_outputs(f: Fields | None, params: Params | None) -> list[Out]:
    if params is None:
        raise ValueError("outputs('train_seed') needs the params: its cells are the grid's")
    return [o for c in seed_cells(f, params) for o in _train_outputs(c)]


def _stable_seed_outputs(f: Fields | None, params: Params | None) -> list[Out]:
    if params is None:
        raise ValueError("outputs('train_stable_seed') needs the params: its cells are the stability set's")
    return [o for c in stable_cells(params) for o in _train_outputs(c, stable=True)]


def _grid_of(params: Params | None) -> list[Fields]:
    return grid_cells(params) if params is not None else []


def _summary_inputs(f: Fields | None, params: Params | None) -> list[str]:
    return (
        [paths.METRICS_CSV, paths.BASELINES_CSV, paths.CLAIMS_JSON, paths.CLAIMS_MD, paths.PREDICTION_JSON, paths.ORACLES_MD]
        + [f"{paths.FIGURES_DIR}/{name}.png" for name in FIGURE_NAMES]
        + ([paths.STABILITY_CSV] if params is not None and stability_enabled(params) else [])
        + real_summary_inputs(params)
    )


def _real_train_outputs(sweep: str, f: Fields | None, stable: bool = False) -> list[Out]:
    cell = cell_name(f)
    return [Out(paths.real_checkpoint(sweep, cell, stable)), Out(paths.real_train_log(sweep, cell, stable))]


def _real_seed_outputs(sweep: str, stable: bool = False) -> Callable[[Fields | None, Params | None], list[Out]]:
    def outputs(f: Fields | None, params: Params | None) -> list[Out]:
        name = f"train_real{_stable(stable)}_seed_{sweep}"
        if params is None or (f is None and not stable):
            raise ValueError(f"outputs('{name}') needs the params: its cells are the sweep's")
        # the sweep's (ratio, unit) pairs at this seed, which may be a placeholder ({seed});
        # the stability set's one job trains the stability seed's
        seed = str(params.stability.seed) if stable else f["seed"]
        pairs = dict.fromkeys((c["mask_ratio"], c["mask_unit"]) for c in REAL[sweep].cells(params))
        return [o for r, u in pairs
                for o in _real_train_outputs(sweep, {"mask_ratio": r, "mask_unit": u, "seed": seed}, stable)]
    return outputs


def _stable(stable: bool) -> str:
    """The stage-name infix of the stability set's stages."""
    return "_stable" if stable else ""


def _stability_flag(stable: bool) -> str:
    return " --stability" if stable else ""


def _real_train(sweep: str, stable: bool = False) -> Stage:
    """One real cell (of the stability set: at stability.budget_factor x real.epochs)."""
    return Stage(
        name=f"train_real{_stable(stable)}_{sweep}", step=TRAIN_REAL, track="real_stability" if stable else "real",
        matrix=(REAL_STABLE if stable else REAL)[sweep], runs_when=real_sweep_cell_jobs(sweep, stable),
        reads=REAL_TRAIN_PARAMS + (("stability.budget_factor",) if stable else ()),
        args=lambda f: (
            f"--data {paths.REAL_DATA} --sweep {sweep} --mask-ratio {f['mask_ratio']} --mask-unit {f['mask_unit']} "
            f"--seed {f['seed']} --out-dir {paths.real_model_dir(sweep, cell_name(f), stable)}{_stability_flag(stable)}"
        ),
        inputs=lambda f, params: [paths.REAL_DATA],
        outputs=lambda f, params: _real_train_outputs(sweep, f, stable),
        threads=None, mem_mb=4000, gpu=True,
    )


def _real_train_seed(sweep: str, stable: bool = False) -> Stage:
    """train.job: seed: every cell of one sweep and seed in one job (on a GPU they train together);
    the stability set's: one job of the sweep's cells at the stability seed."""
    models = paths.REAL_STABLE_MODELS_DIR if stable else paths.REAL_MODELS_DIR
    return Stage(
        name=f"train_real{_stable(stable)}_seed_{sweep}", step=TRAIN_REAL_SEED,
        track="real_stability" if stable else "real", matrix=None if stable else REAL_PER_SEED,
        runs_when=real_sweep_seed_jobs(sweep, stable),
        reads=REAL_TRAIN_PARAMS + REAL_SWEEP_PARAMS + (("stability.budget_factor", "stability.seed") if stable else ()),
        args=lambda f: (
            f"--data {paths.REAL_DATA} --sweep {sweep}{'' if stable else ' --seed ' + f['seed']} --models-dir {models}"
            f"{_stability_flag(stable)}"
        ),
        inputs=lambda f, params: [paths.REAL_DATA],
        outputs=_real_seed_outputs(sweep, stable),
        threads=None, mem_mb=8000, gpu=True,
    )


def _real_evaluate(sweep: str, stable: bool = False) -> Stage:
    return Stage(
        name=f"evaluate_real{_stable(stable)}_{sweep}", step=EVALUATE_REAL, track="real_stability" if stable else "real",
        matrix=(REAL_STABLE if stable else REAL)[sweep], runs_when=real_sweep_on(sweep, stable), reads=REAL_EVALUATE_PARAMS,
        args=lambda f: (
            f"--data {paths.REAL_DATA} --sweep {sweep} --checkpoint {paths.real_checkpoint(sweep, cell_name(f), stable)} "
            f"--out {paths.real_cell_json(sweep, cell_name(f), stable)}"
        ),
        inputs=lambda f, params: [paths.REAL_DATA, paths.real_checkpoint(sweep, cell_name(f), stable)],
        outputs=lambda f, params: [Out(paths.real_cell_json(sweep, cell_name(f), stable), cache=False)],
        threads=None, mem_mb=4000,
    )


# ----------------------------------------------------------------------------- the table

TABLE: tuple[Stage, ...] = (
    Stage(
        name="generate", step=GENERATE, reads=("data",),
        args=lambda f: f"--out {paths.SYNTHETIC_DATA} --figure {EXAMPLES_PNG}",
        inputs=lambda f, params: [],
        outputs=lambda f, params: [Out(paths.SYNTHETIC_DATA), Out(EXAMPLES_PNG, "plots", cache=False)],
        report=_caption(EXAMPLES_PNG, "Data", "report/examples.rst"),
    ),
    Stage(
        # the theorem's prediction needs the tree's geometry and widths, and the grid's cells
        name="predict", step=PREDICT,
        reads=("data.image_size", "data.latent_dims", "data.texture_separation", "grid.mask_ratios", "grid.mask_units"),
        args=lambda f: f"--out {paths.PREDICTION_JSON}",
        inputs=lambda f, params: [],
        outputs=lambda f, params: [Out(paths.PREDICTION_JSON, cache=False)],
    ),
    Stage(
        name="train", step=TRAIN, matrix=GRID, runs_when=is_cell_job, reads=("model", "train"),
        args=lambda f: (
            f"--data {paths.SYNTHETIC_DATA} --mask-ratio {f['mask_ratio']} --mask-unit {f['mask_unit']} "
            f"--seed {f['seed']} --out-dir {paths.model_dir(cell_name(f))}"
        ),
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=_train_outputs,
        threads=None, mem_mb=4000, gpu=True,
    ),
    Stage(
        # train.job: seed: every cell of a seed in one job (on a GPU they train together)
        name="train_seed", step=TRAIN_SEED, matrix=PER_SEED, runs_when=lambda params: not is_cell_job(params),
        reads=("model", "train", "grid.mask_ratios", "grid.mask_units"),
        args=lambda f: f"--data {paths.SYNTHETIC_DATA} --seed {f['seed']} --models-dir {paths.MODELS_DIR}",
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=_train_seed_outputs,
        threads=None, mem_mb=8000, gpu=True,
    ),
    Stage(
        # the masked probe on oracles, per (ratio, unit): the measures checked on known answers
        # and each cell's frontier of even loss; the random-init encoder is built from the model section
        name="oracles", step=ORACLES, matrix=PAIRS,
        reads=("data", "model", "probe.batch_size", "probe.max_train", "probe.masked_masks", "probe.masked_token_dims",
               "train.threads"),
        args=lambda f: (
            f"--data {paths.SYNTHETIC_DATA} --mask-ratio {f['mask_ratio']} --mask-unit {f['mask_unit']} "
            f"--out {paths.oracle_json(pair_name(f))}"
        ),
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=lambda f, params: [Out(paths.oracle_json(pair_name(f)), cache=False)],
        threads=None, mem_mb=4000,
    ),
    Stage(
        # the model config comes from the checkpoint, which is an input file; the data section
        # gives the generator's latent variables (the masked probe's targets)
        name="probe", step=PROBE, matrix=GRID, reads=("data", "probe", "train.threads"),
        args=lambda f: (
            f"--data {paths.SYNTHETIC_DATA} --checkpoint {paths.checkpoint(cell_name(f))} "
            f"--out {paths.probe_json(cell_name(f))} --recon {paths.recon_npz(cell_name(f))} "
            f"--oracle {paths.oracle_json(pair_name(f))}"
        ),
        inputs=lambda f, params: [paths.SYNTHETIC_DATA, paths.checkpoint(cell_name(f)), paths.oracle_json(pair_name(f))],
        # per-cell metrics live in git (`git diff`, replay-check); DVC's metrics are the headline
        outputs=lambda f, params: [Out(paths.probe_json(cell_name(f)), cache=False),
                                   Out(paths.recon_npz(cell_name(f)), cache=False)],
        threads=None, mem_mb=4000,
    ),
    Stage(
        # the untrained encoder and raw pixels under the same probes, once per seed; the
        # random-init model is built from the model section (seeded by the job's seed)
        name="baseline", step=BASELINE, matrix=PER_SEED, reads=("data", "model", "probe", "train.threads"),
        args=lambda f: f"--data {paths.SYNTHETIC_DATA} --seed {f['seed']} --out {paths.baseline_json(f['seed'])}",
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=lambda f, params: [Out(paths.baseline_json(f["seed"]), cache=False)],
        threads=None, mem_mb=4000,
    ),
    Stage(
        name="aggregate", step=AGGREGATE, reads=("data.depth", "probe.pooling", "grid"),
        args=lambda f: (f"--out-csv {paths.METRICS_CSV} --out-json {paths.METRICS_JSON} --out-baselines {paths.BASELINES_CSV} "
                        f"--out-oracles {paths.ORACLES_MD}"),
        inputs=lambda f, params: (
            [paths.probe_json(cell_name(c)) for c in _grid_of(params)]
            + [paths.baseline_json(s) for s in (params.grid.seeds if params is not None else [])]
            + ([paths.oracle_json(pair_name(c)) for c in PAIRS.cells(params)] if params is not None else [])
        ),
        dvc_inputs=lambda params: [paths.CELLS_DIR, paths.BASELINES_DIR, paths.ORACLES_DIR],
        outputs=lambda f, params: [
            Out(paths.METRICS_CSV, cache=False),  # drawn by dvc.yaml's top-level plots (pipeline.DVC_PLOTS)
            Out(paths.METRICS_JSON, cache=False),
            Out(paths.BASELINES_CSV, cache=False),
            Out(paths.ORACLES_MD, cache=False),
        ],
    ),
    Stage(
        # every figure is stamped with the digest of the whole params file
        name="figures", step=FIGURES, reads=("data", "model", "train", "probe", "grid"),
        args=lambda f: (
            f"--metrics {paths.METRICS_CSV} --baselines {paths.BASELINES_CSV} --prediction {paths.PREDICTION_JSON} "
            f"--out-dir {paths.FIGURES_DIR} --loss-curves {paths.LOSS_CURVES_CSV}"
        ),
        inputs=lambda f, params: (
            [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON]
            + [paths.recon_npz(cell_name(c)) for c in _grid_of(params)]
            + [paths.train_log(cell_name(c)) for c in _grid_of(params)]
        ),
        dvc_inputs=lambda params: [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON, paths.CELLS_DIR,
                                   paths.MODELS_DIR],
        outputs=lambda f, params: [Out(paths.LOSS_CURVES_CSV, cache=False)] + _pictures(paths.FIGURES_DIR, FIGURE_NAMES),
        report=_png_caption("Figures"),
    ),
    Stage(
        # claims and summary find the real track's files at their default paths (cli), so
        # their commands do not change, nor name the track, when it is switched off
        # probe.pooling: the stability set's probe JSONs are read into metrics.csv's columns
        name="claims", step=CLAIMS, reads=("data.depth", "probe.pooling"), reads_when=claims_reads,
        args=lambda f: (
            f"--metrics {paths.METRICS_CSV} --baselines {paths.BASELINES_CSV} --prediction {paths.PREDICTION_JSON} "
            f"--out-json {paths.CLAIMS_JSON} --out-md {paths.CLAIMS_MD} --out-stability {paths.STABILITY_CSV}"
        ),
        inputs=lambda f, params: (
            [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON] + real_cell_jsons(params)
            + stable_cell_jsons(params) + real_cell_jsons(params, stable=True)
        ),
        dvc_inputs=lambda params: [paths.METRICS_CSV, paths.BASELINES_CSV, paths.PREDICTION_JSON] + (
            [paths.REAL_CELLS_DIR] if real_enabled(params) else []
        ) + ([paths.STABLE_CELLS_DIR] if stability_enabled(params) else []) + (
            [paths.REAL_STABLE_CELLS_DIR] if stability_real(params) else []
        ),
        outputs=lambda f, params: [Out(paths.CLAIMS_JSON, cache=False), Out(paths.CLAIMS_MD, cache=False),
                                   Out(paths.STABILITY_CSV, cache=False)],
        report=_caption(paths.CLAIMS_MD, "Summary", "report/claims.rst"),
    ),
    Stage(
        # the summary prints and stamps the params (+ the real and stability sections when on)
        name="summary", step=SUMMARY, reads=("data", "model", "train", "probe", "grid"), reads_when=summary_reads,
        args=lambda f: (
            f"--metrics {paths.METRICS_CSV} --baselines {paths.BASELINES_CSV} --claims-md {paths.CLAIMS_MD} "
            f"--claims-json {paths.CLAIMS_JSON} --figures-dir {paths.FIGURES_DIR} "
            f"--out-md {paths.SUMMARY_MD} --out-tex {paths.METRICS_TEX} --out-headline {paths.HEADLINE_JSON}"
        ),
        inputs=_summary_inputs,
        # the one DVC metrics file: per-cell numbers stay in git, out of `dvc metrics show`
        outputs=lambda f, params: [Out(paths.SUMMARY_MD, cache=False), Out(paths.METRICS_TEX, cache=False),
                                   Out(paths.HEADLINE_JSON, "metrics", cache=False)],
        report=_caption(paths.SUMMARY_MD, "Summary", "report/summary.rst"),
    ),
    # The stability set (stability: in params.yaml): cells trained again at budget_factor x the
    # passes, read by claims (a claim counts when its effect keeps its sign at both budgets)
    Stage(
        name="train_stable", step=TRAIN, track="stability", matrix=STABLE, runs_when=stable_cell_jobs,
        reads=("model", "train", "stability.budget_factor"),
        args=lambda f: (
            f"--data {paths.SYNTHETIC_DATA} --mask-ratio {f['mask_ratio']} --mask-unit {f['mask_unit']} "
            f"--seed {f['seed']} --out-dir {paths.model_dir(cell_name(f), stable=True)} --stability"
        ),
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=lambda f, params: _train_outputs(f, params, stable=True),
        threads=None, mem_mb=4000, gpu=True,
    ),
    Stage(
        # train.job: seed: the whole synthetic stability set in one job (on a GPU together)
        name="train_stable_seed", step=TRAIN_SEED, track="stability", runs_when=stable_seed_jobs,
        reads=("model", "train", "stability.budget_factor", "stability.seed", "stability.mask_ratios",
               "stability.mask_units"),
        args=lambda f: f"--data {paths.SYNTHETIC_DATA} --models-dir {paths.STABLE_MODELS_DIR} --stability",
        inputs=lambda f, params: [paths.SYNTHETIC_DATA],
        outputs=_stable_seed_outputs,
        threads=None, mem_mb=8000, gpu=True,
    ),
    Stage(
        name="probe_stable", step=PROBE, track="stability", matrix=STABLE, runs_when=stability_enabled,
        reads=("data", "probe", "train.threads"),
        args=lambda f: (
            f"--data {paths.SYNTHETIC_DATA} --checkpoint {paths.checkpoint(cell_name(f), stable=True)} "
            f"--out {paths.probe_json(cell_name(f), stable=True)} --recon {paths.recon_npz(cell_name(f), stable=True)} "
            f"--oracle {paths.oracle_json(pair_name(f))}"
        ),
        inputs=lambda f, params: [paths.SYNTHETIC_DATA, paths.checkpoint(cell_name(f), stable=True),
                                  paths.oracle_json(pair_name(f))],
        outputs=lambda f, params: [Out(paths.probe_json(cell_name(f), stable=True), cache=False),
                                   Out(paths.recon_npz(cell_name(f), stable=True), cache=False)],
        threads=None, mem_mb=4000,
    ),
    # The real-image track (docs/real_track.md): on with real.enabled; one train and
    # evaluate stage per sweep that real.sweep trains
    Stage(
        name="prepare_real", step=PREPARE_REAL, track="real", runs_when=real_enabled, reads=REAL_DATA_PARAMS,
        args=lambda f: f"--out {paths.REAL_DATA}",
        inputs=lambda f, params: list(user_data_inputs(params).values()),
        outputs=lambda f, params: [Out(paths.REAL_DATA)],
        mem_mb=3000,
    ),
    *(_real_train(s) for s in REAL_SWEEP_LETTERS),
    *(_real_train_seed(s) for s in REAL_SWEEP_LETTERS),
    *(_real_evaluate(s) for s in REAL_SWEEP_LETTERS),
    # the stability set's real part: each sweep's cells at the stability seed, budget_factor x
    *(_real_train(s, stable=True) for s in REAL_SWEEP_LETTERS),
    *(_real_train_seed(s, stable=True) for s in REAL_SWEEP_LETTERS),
    *(_real_evaluate(s, stable=True) for s in REAL_SWEEP_LETTERS),
    Stage(
        # The report also loads the first seed's checkpoints, but each cell JSON records the
        # weights hash it evaluated and the report refuses any other weights: the JSONs pin
        # the checkpoints. (A dir dep on models_real would also see the .gitignore files DVC
        # writes beside cached outputs, and go stale after every `dvc commit`.)
        name="report_real", step=REPORT_REAL, track="real", runs_when=real_enabled, reads=REAL_REPORT_PARAMS,
        args=lambda f: (
            f"--data {paths.REAL_DATA} --cells-dir {paths.REAL_CELLS_DIR} --models-dir {paths.REAL_MODELS_DIR} "
            f"--out-dir {paths.REAL_RESULTS_DIR}"
        ),
        inputs=lambda f, params: [paths.REAL_DATA] + real_cell_jsons(params),
        dvc_inputs=lambda params: [paths.REAL_DATA, paths.REAL_CELLS_DIR],
        outputs=lambda f, params: [
            Out(f"{paths.REAL_TABLE_STEM}.csv", cache=False),
            Out(f"{paths.REAL_TABLE_STEM}.md", cache=False),
            Out(f"{paths.REAL_TABLE_STEM}.tex", cache=False),
            Out(paths.REAL_RANK_JSON, cache=False),
            Out(paths.REAL_FIGURES_JSON, cache=False),
        ] + _pictures(paths.REAL_FIGURES_DIR, REAL_FIGURE_NAMES),
        threads=None, mem_mb=4000,
        report=_png_caption("Real images"),
    ),
)
