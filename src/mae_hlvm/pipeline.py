"""The one definition of every pipeline stage, shared by the Snakefile and dvc.yaml.

For each stage this module fixes its command, its outputs, its input files, the params
keys it reads and the source files it runs. The Snakefile builds its rules from these
functions at parse time and ``dvc.yaml`` is generated from them
(``python -m mae_hlvm.pipeline dvc-yaml > dvc.yaml``), so the two DAGs cannot drift.

How the two tools agree (README, "Snakemake and DVC together"):

* Snakemake sees params through files, not through its own metadata: each stage's
  params live in ``.pipeline/params/<stage>.json`` (canonical JSON of exactly the keys
  the stage reads), rewritten only when their content changes, both when the Snakefile
  is parsed and by the step itself before it runs (:func:`step_hooks`). The files are
  declared inputs, and Snakemake reruns on mtime only (profiles/default), so outputs
  DVC produced are judged exactly like outputs Snakemake produced.
* Snakemake -> DVC: a step run outside DVC leaves a receipt
  (``.pipeline/receipts/<dvc stage>.json``: params digest and hashes of its inputs and
  outputs). The Snakefile's onstart/onsuccess/onerror call :func:`commit_receipts`, which
  runs one ``dvc commit -f`` for the receipts still valid, so dvc.lock records them.
* DVC -> Snakemake: ``dvc repro`` runs the same commands, so the step's own params-file
  write keeps mtimes in order; after ``dvc pull``/``dvc checkout`` run
  ``python -m mae_hlvm.sync`` (``make sync``).

Nothing here imports torch: the Snakefile imports this module at parse time.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import itertools
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import paths
from .config import Params, ParamsError, digest, load_params
from .io import ArtifactError, dumps_json, read_json, write_json, write_text

STAGES = ("generate", "train", "probe", "aggregate", "figures")
CELL_STAGES = ("train", "probe")

# The params keys each step reads: a section name takes the whole section, "a.b" one key.
# Editing a key reruns exactly the stages listing it (in both tools).
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "generate": ("data",),
    "train": ("model", "train"),
    # the model config comes from the checkpoint, which is an input file
    "probe": ("probe", "train.threads"),
    "aggregate": ("data.depth", "probe.pooling", "grid"),
    # every figure is stamped with the digest of the whole params file
    "figures": ("data", "model", "train", "probe", "grid"),
}

# Files written by the figures step (each as .png and .pdf); examples.png comes from generate.
FIGURE_NAMES = ("r2_vs_ratio", "root_r2_heatmap", "reconstructions", "loss_curves", "region_r2")
EXAMPLES_PNG = f"{paths.FIGURES_DIR}/examples.png"

PACKAGE = "mae_hlvm"
SOURCE_DIR = Path(__file__).resolve().parent
SOURCE_REL = "src/mae_hlvm"
# Modules that validate, name or describe, but never compute a result: editing them
# must not rerun the grid, so they are not code deps.
NOT_CODE_DEPS = frozenset({"__init__", "__main__", "cli", "config", "paths", "pipeline", "provenance"})

PARAMS_DIR = f"{paths.STATE_DIR}/params"
RECEIPTS_DIR = f"{paths.STATE_DIR}/receipts"
DVC_ITEM = {"mask_ratio": "${item.mask_ratio}", "patch_size": "${item.patch_size}", "seed": "${item.seed}"}
# Snakemake spells the same fields as wildcards: in paths, and in shell commands.
SMK_PATH = {"mask_ratio": "{mask_ratio}", "patch_size": "{patch_size}", "seed": "{seed}"}
SMK_SHELL = {k: f"{{wildcards.{k}}}" for k in SMK_PATH}
MATRIX = {"mask_ratio": "${grid.mask_ratios}", "patch_size": "${grid.patch_sizes}", "seed": "${grid.seeds}"}


@dataclass(frozen=True)
class Out:
    """One output: ``kind`` is its dvc.yaml list (outs, metrics, plots); ``cache`` False = in git."""

    path: str
    kind: str = "outs"
    cache: bool = True


Fields = dict[str, str]  # mask_ratio, patch_size, seed as they are spelled in paths


# ----------------------------------------------------------------------------- cells


def cell_fields(mask_ratio: float, patch_size: int, seed: int) -> Fields:
    """A cell's values spelled as in paths: ``repr`` of the float, as DVC prints it too."""
    return {"mask_ratio": repr(float(mask_ratio)), "patch_size": str(int(patch_size)), "seed": str(int(seed))}


def cell_name(f: Fields) -> str:
    """``r0.75_p4_s0``; equals :func:`mae_hlvm.config.cell_id` for concrete fields."""
    return f"r{f['mask_ratio']}_p{f['patch_size']}_s{f['seed']}"


def grid_cells(params: Params) -> list[Fields]:
    """Every cell of the grid, in DVC's matrix order (ratio, then patch, then seed)."""
    g = params.grid
    return [cell_fields(r, p, s) for r, p, s in itertools.product(g.mask_ratios, g.patch_sizes, g.seeds)]


def dvc_stage_name(stage: str, f: Fields | None = None) -> str:
    """DVC's name of one stage instance: ``train@0.75-4-0`` for a cell stage."""
    if stage in CELL_STAGES:
        return f"{stage}@{f['mask_ratio']}-{f['patch_size']}-{f['seed']}"
    return stage


# ----------------------------------------------------------------------------- stages


def command(stage: str, f: Fields | None = None) -> str:
    """The exact shell command of a stage; ``f`` may hold placeholders (DVC or Snakemake)."""
    base = f"python -m {PACKAGE} {stage}"
    if stage == "generate":
        return f"{base} --out {paths.SYNTHETIC_DATA} --figure {EXAMPLES_PNG} --log {log_path(stage)}"
    if stage == "train":
        cell = cell_name(f)
        return (
            f"{base} --data {paths.SYNTHETIC_DATA} --mask-ratio {f['mask_ratio']} "
            f"--patch-size {f['patch_size']} --seed {f['seed']} --out-dir {paths.model_dir(cell)} "
            f"--log {log_path(stage, f)}"
        )
    if stage == "probe":
        cell = cell_name(f)
        return (
            f"{base} --data {paths.SYNTHETIC_DATA} --checkpoint {paths.checkpoint(cell)} "
            f"--out {paths.probe_json(cell)} --recon {paths.recon_npz(cell)} --log {log_path(stage, f)}"
        )
    if stage == "aggregate":
        return f"{base} --out-csv {paths.METRICS_CSV} --out-json {paths.METRICS_JSON} --log {log_path(stage)}"
    if stage == "figures":
        return f"{base} --metrics {paths.METRICS_CSV} --out-dir {paths.FIGURES_DIR} --log {log_path(stage)}"
    raise KeyError(stage)


def log_path(stage: str, f: Fields | None = None) -> str:
    return paths.log(stage, cell_name(f) if stage in CELL_STAGES else stage)


def outputs(stage: str, f: Fields | None = None) -> list[Out]:
    """Every file a stage writes (the same list in both tools)."""
    if stage == "generate":
        return [Out(paths.SYNTHETIC_DATA), Out(EXAMPLES_PNG, "plots", cache=False)]
    if stage == "train":
        cell = cell_name(f)
        return [Out(paths.checkpoint(cell)), Out(paths.train_log(cell))]
    if stage == "probe":
        cell = cell_name(f)
        # per-cell metrics live in git so that `dvc metrics diff` shows every cell
        return [Out(paths.probe_json(cell), "metrics", cache=False), Out(paths.recon_npz(cell), cache=False)]
    if stage == "aggregate":
        return [Out(paths.METRICS_CSV, "plots", cache=False), Out(paths.METRICS_JSON, "metrics", cache=False)]
    if stage == "figures":
        outs = []
        for name in FIGURE_NAMES:
            outs.append(Out(f"{paths.FIGURES_DIR}/{name}.png", "plots", cache=False))
            outs.append(Out(f"{paths.FIGURES_DIR}/{name}.pdf", cache=False))
        return outs
    raise KeyError(stage)


def input_files(stage: str, f: Fields | None = None, cells: Sequence[Fields] = ()) -> list[str]:
    """The artifact files a stage reads (not code, not params); ``cells``: the grid's cells."""
    if stage == "generate":
        return []
    if stage == "train":
        return [paths.SYNTHETIC_DATA]
    if stage == "probe":
        return [paths.SYNTHETIC_DATA, paths.checkpoint(cell_name(f))]
    if stage == "aggregate":
        return [paths.probe_json(cell_name(c)) for c in cells]
    if stage == "figures":
        return (
            [paths.METRICS_CSV]
            + [paths.recon_npz(cell_name(c)) for c in cells]
            + [paths.train_log(cell_name(c)) for c in cells]
        )
    raise KeyError(stage)


def dvc_input_deps(stage: str) -> list[str]:
    """Artifact deps in dvc.yaml. A stage reading every cell depends on the folder:
    DVC links a folder dep to the stage outputs inside it (matrix deps cannot be listed)."""
    if stage == "aggregate":
        return [paths.CELLS_DIR]
    if stage == "figures":
        return [paths.METRICS_CSV, paths.CELLS_DIR, paths.MODELS_DIR]
    return input_files(stage, DVC_ITEM)


def _imports_of(module: str) -> set[str]:
    """Sibling modules of the package that ``module`` imports (static, no import run)."""
    tree = ast.parse((SOURCE_DIR / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:
                found.update(a.name for a in node.names)
            elif node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.split(".")[0] == PACKAGE:
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
    return {m for m in found if (SOURCE_DIR / f"{m}.py").exists()}


def code_deps(stage: str) -> list[str]:
    """Source files a stage runs: its module and every sibling it imports, transitively.

    A step module that does not exist yet is still listed, so the missing file is the error.
    """
    seen: set[str] = set()
    todo = [stage]
    while todo:
        mod = todo.pop()
        if mod in seen or mod in NOT_CODE_DEPS:
            continue
        seen.add(mod)
        if (SOURCE_DIR / f"{mod}.py").exists():
            todo.extend(_imports_of(mod))
    return [f"{SOURCE_REL}/{m}.py" for m in sorted(seen)]


def smk_outputs(stage: str) -> list[str]:
    """A rule's output patterns (wildcards for cell stages)."""
    return [o.path for o in outputs(stage, SMK_PATH if stage in CELL_STAGES else None)]


def smk_inputs(stage: str, params: Params) -> list[str]:
    """A rule's inputs: artifacts, then the stage's code and params file (mtime triggers)."""
    f = SMK_PATH if stage in CELL_STAGES else None
    return input_files(stage, f, grid_cells(params)) + code_deps(stage) + [params_file(stage)]


def smk_shell(stage: str) -> str:
    """The rule's shell: :func:`command` with wildcards, so it resolves to DVC's cmd."""
    return command(stage, SMK_SHELL if stage in CELL_STAGES else None)


def smk_log(stage: str) -> str:
    return log_path(stage, SMK_PATH if stage in CELL_STAGES else None)


def figure_stem(path: str) -> str:
    """``results/figures/r2_vs_ratio.png`` -> ``r2_vs_ratio`` (its report caption's name)."""
    return Path(path).stem


def all_outputs(params: Params) -> list[str]:
    """Every output of the grid: the target of ``rule all``."""
    out = []
    for stage in STAGES:
        for f in grid_cells(params) if stage in CELL_STAGES else [None]:
            out.extend(o.path for o in outputs(stage, f))
    return out


# ----------------------------------------------------------------------------- params


def stage_params(params: Params, stage: str) -> dict[str, Any]:
    """Exactly the params a stage reads, keyed as in :data:`STAGE_PARAMS`."""
    out: dict[str, Any] = {}
    for key in STAGE_PARAMS[stage]:
        section, _, leaf = key.partition(".")
        value = getattr(params, section).model_dump(mode="json")
        out[key] = value[leaf] if leaf else value
    return out


def params_file(stage: str) -> str:
    return f"{PARAMS_DIR}/{stage}.json"


def write_params_file(params: Params, stage: str) -> bool:
    """Write the stage's params file if its content changed; True when written.

    Unchanged content keeps the old mtime, so outputs made with these params stay newer.
    """
    path = Path(params_file(stage))
    text = dumps_json(stage_params(params, stage))
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    write_text(path, text)
    return True


def write_params_files(params: Params) -> list[str]:
    """All stages' params files (Snakefile parse time); returns the stages rewritten."""
    return [s for s in STAGES if write_params_file(params, s)]


# ----------------------------------------------------------------------------- dvc.yaml


def _dvc_outs(outs: list[Out]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for o in outs:
        groups.setdefault(o.kind, []).append(o.path if o.cache else {o.path: {"cache": False}})
    return groups


def dvc_stage(stage: str) -> dict[str, Any]:
    f = DVC_ITEM if stage in CELL_STAGES else None
    spec: dict[str, Any] = {}
    if stage in CELL_STAGES:
        spec["matrix"] = dict(MATRIX)
    spec["cmd"] = command(stage, f)
    spec["deps"] = code_deps(stage) + dvc_input_deps(stage)
    spec["params"] = list(STAGE_PARAMS[stage])
    spec.update(_dvc_outs(outputs(stage, f)))
    return spec


def dvc_yaml() -> str:
    """The text of dvc.yaml (committed; tests/test_pipeline.py checks it is current)."""
    header = "# Generated by `python -m mae_hlvm.pipeline dvc-yaml > dvc.yaml`; do not edit.\n"
    body = {"stages": {s: dvc_stage(s) for s in STAGES}}
    return header + yaml.safe_dump(body, sort_keys=False, width=1000)


# ----------------------------------------------------------------------------- receipts


def _sha256(path: str, memo: dict[tuple[str, int, int], str] | None = None) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_mtime_ns, st.st_size)
    if memo is not None and key in memo:
        return memo[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if memo is not None:
        memo[key] = h.hexdigest()
    return h.hexdigest()


def _instance(stage: str, params: Params, f: Fields | None) -> dict[str, Any]:
    """What a valid receipt must match: params digest, input and output file hashes."""
    cells = grid_cells(params)
    return {
        "params": digest(stage_params(params, stage)),
        "deps": sorted(code_deps(stage) + input_files(stage, f, cells)),
        "outs": sorted(o.path for o in outputs(stage, f)),
    }


def _receipt(stage: str, params: Params, f: Fields | None, memo: dict | None = None) -> dict[str, Any]:
    inst = _instance(stage, params, f)
    return {
        "stage": dvc_stage_name(stage, f),
        "params": inst["params"],
        "deps": {p: _sha256(p, memo) for p in inst["deps"]},
        "outs": {p: _sha256(p, memo) for p in inst["outs"]},
    }


def receipt_path(name: str) -> str:
    return f"{RECEIPTS_DIR}/{name}.json"


def _canonical_fields(step: str, params: Params, argv: Sequence[str]) -> Fields | None | bool:
    """The grid cell whose stage command is exactly ``argv`` (None: not a cell stage), else False."""
    for f in grid_cells(params) if step in CELL_STAGES else [None]:
        if list(argv) == shlex.split(command(step, f))[3:]:
            return f
    return False


@contextlib.contextmanager
def step_hooks(step: str, params: Params, argv: Sequence[str]) -> Iterator[None]:
    """Wrap one CLI step (cli.py): params file before it runs, a receipt after it succeeds.

    ``argv``: the step's arguments after ``python -m mae_hlvm``. Only the canonical
    stage command gets a receipt, and none under DVC (DVC records its own runs).
    """
    if step in STAGES:
        write_params_file(params, step)
    yield
    if step not in STAGES or os.environ.get("DVC_STAGE"):
        return
    f = _canonical_fields(step, params, argv)
    if f is False:
        return
    rec = _receipt(step, params, f)
    write_json(receipt_path(rec["stage"]), rec)


def _valid_receipts(params: Params) -> tuple[list[str], list[Path]]:
    """(stage names whose receipts still match the tree, receipt files to delete)."""
    current: dict[str, tuple[str, Fields | None]] = {}
    for stage in STAGES:
        for f in grid_cells(params) if stage in CELL_STAGES else [None]:
            current[dvc_stage_name(stage, f)] = (stage, f)
    valid, done = [], []
    memo: dict = {}
    for path in sorted(Path(RECEIPTS_DIR).glob("*.json")):
        done.append(path)
        try:
            rec = read_json(path)
        except ArtifactError:
            continue
        name = rec.get("stage")
        if name not in current:
            continue
        stage, f = current[name]
        now = _receipt(stage, params, f, memo)
        if now == rec and None not in now["outs"].values():
            valid.append(name)
    return valid, done


def commit_receipts(params_path: str = "params.yaml", quiet: bool = False) -> list[str]:
    """Record in dvc.lock every stage Snakemake finished whose receipt is still valid.

    One ``dvc commit -f`` for all of them; output mtimes are restored afterwards because
    DVC relinks committed files (a fresh mtime would make downstream outputs look stale to
    Snakemake). Receipts are removed once committed or found stale; on a DVC failure
    (e.g. its lock is held) they are kept for the next call. Returns the committed stages.
    """
    if not Path(".dvc").is_dir() or not Path(RECEIPTS_DIR).is_dir():
        return []
    params = load_params(params_path)
    valid, done = _valid_receipts(params)
    if valid:
        outs = [o.path for name in valid for o in _outs_of(name, params)]
        mtimes = {p: os.stat(p).st_mtime_ns for p in outs}
        proc = subprocess.run(["dvc", "commit", "-f", "-q", *valid], capture_output=True, text=True)
        for p, ns in mtimes.items():
            with contextlib.suppress(OSError):
                os.utime(p, ns=(ns, ns))
        if proc.returncode != 0:
            msg = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
            print(f"mae_hlvm.pipeline: dvc commit failed, receipts kept: {msg}", file=sys.stderr)
            return []
    for path in done:
        path.unlink(missing_ok=True)
    if valid and not quiet:
        print(f"mae_hlvm.pipeline: recorded {len(valid)} Snakemake job(s) in dvc.lock", file=sys.stderr)
    return valid


def _outs_of(name: str, params: Params) -> list[Out]:
    for stage in STAGES:
        for f in grid_cells(params) if stage in CELL_STAGES else [None]:
            if dvc_stage_name(stage, f) == name:
                return outputs(stage, f)
    return []


# ----------------------------------------------------------------------------- resources


def train_uses_gpu(params: Params) -> bool:
    """Whether training will claim a GPU; ``auto`` checks for a driver without importing torch."""
    device = params.train.device
    if device == "cuda":
        return True
    return device == "auto" and (Path("/proc/driver/nvidia/version").exists() or bool(_which("nvidia-smi")))


def _which(cmd: str) -> str | None:
    import shutil

    return shutil.which(cmd)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mae_hlvm.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["dvc-yaml", "write-params", "commit-receipts", "stage-params"])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        if args.action == "dvc-yaml":
            sys.stdout.write(dvc_yaml())
        elif args.action == "write-params":
            write_params_files(load_params(args.params))
        elif args.action == "commit-receipts":
            commit_receipts(args.params)
        else:
            p = load_params(args.params)
            sys.stdout.write(dumps_json({s: stage_params(p, s) for s in STAGES}))
    except (ParamsError, ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
