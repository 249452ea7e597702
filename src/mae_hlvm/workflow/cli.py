"""One command line for every step: ``python -m mae_hlvm <step> ...``.

The steps come from the stage table (:mod:`mae_hlvm.workflow.stages`), and the Snakefile and
dvc.yaml both call exactly these commands (built from the same records by
:mod:`mae_hlvm.workflow.pipeline`), so the two DAGs run the same code the same way.
Heavy imports (torch) happen inside the step, never at parse time.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from mae_hlvm.core import io
from mae_hlvm.core.cells import cell_id, real_enabled
from mae_hlvm.core.config import ParamsError, dataset_bytes, load_params
from mae_hlvm.core.io import ArtifactError
from mae_hlvm.core.limits import GIB
from mae_hlvm.workflow import ledger, pipeline
from mae_hlvm.workflow.stages import TABLE
from mae_hlvm.workflow.steps import Step

log = logging.getLogger("mae_hlvm")


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", action="store_true", help="only report damaged artifacts, do not restore or move them aside")


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a profile: default, gpu, paper (profiles/<name>/params.yaml) or a profile file's path")
    p.add_argument("--out", default="params.yaml", help="the params file to write (default: params.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite it even when it holds edits of yours")


def _check_args(p: argparse.ArgumentParser) -> None:
    """``check`` takes only ``--params``."""


# Every stage's step comes from the stage table (its Step, from mae_hlvm.workflow.steps: runner, help, arguments);
# the tools on the working copy are added here. Arguments are declared there, not in the
# step modules, so that ``--help`` and ``check`` never import torch.
STEPS: dict[str, Step] = {
    "check": Step("check", "mae_hlvm.workflow.cli", "validate params.yaml and exit", _check_args),
    **{s.step.name: s.step for s in TABLE},
    "verify": Step("verify", "mae_hlvm.workflow.verify:run_verify", "check every artifact against dvc.lock; restore or move aside damaged ones",
                   _verify_args),
    "profile": Step("profile", "mae_hlvm.core.profiles:run_profile",
                    "write params.yaml from a profile (profiles/<name>/params.yaml over the default)", _profile_args),
}
# Steps that read no params: they work even while params.yaml is being fixed (or written).
PARAMS_FREE = frozenset({"verify", "profile"})
RAM_SHARE = 0.8  # of physical memory: the model, the probes and the OS need the rest


def physical_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_ram(step: str, params) -> None:  # noqa: ANN001
    """One ParamsError line when the step's dataset cannot fit this machine's RAM."""
    track = STEPS[step].data if step in STEPS else None
    if track is None or (track == "real" and not real_enabled(params)):
        return
    need, have = dataset_bytes(params, track), physical_ram()
    if need > RAM_SHARE * have:
        section = "real" if track == "real" else "data"
        raise ParamsError(
            f"{step}: the {track} dataset needs {need / GIB:.1f} GiB of RAM as float32 and this machine has "
            f"{have / GIB:.1f} GiB: lower {section}.n_train, {section}.n_test or {section}.image_size, "
            "or run this step on a machine with more memory"
        )


def stage_reads(step: str, params) -> tuple[str, ...] | None:  # noqa: ANN001
    """The params keys the stage running ``step`` reads (its record's ``reads`` and ``reads_when``),
    given to the step as ``args.reads``: a step that stamps the digest of what it read needs no
    stage table (the science stands below the workflow). None for a step of no stage; the
    stages sharing a step read the same keys (tests/test_stage_table.py)."""
    keys = {pipeline.stage_param_keys(s.name, params) for s in TABLE if s.step.name == step}
    return keys.pop() if len(keys) == 1 else None


def run(params, args) -> None:  # noqa: ANN001 - the ``check`` step
    print(f"{args.params}: valid")


def job_label(args: argparse.Namespace) -> str:
    """The job a log line comes from: ``train r0.5_p2_s0``, ``train-real B/r0.75_p8_s0``,
    ``baseline s1``, ``train-real-seed A/s0``, ``aggregate``: two jobs' interleaved lines stay
    apart (two sweeps' seed jobs too: both sweeps can hold a cell of the same name). The
    stability set's run of a cell says so: ``train r0.5_p2_s0 (stability)``."""
    stable = getattr(args, "stability", False) or "_stable" in str(getattr(args, "checkpoint", "") or "")
    return _label(args) + (" (stability)" if stable else "")


def _label(args: argparse.Namespace) -> str:
    unit = getattr(args, "mask_unit", None)
    sweep = f"{args.sweep}/" if getattr(args, "sweep", None) else ""
    if getattr(args, "mask_ratio", None) is not None and unit is not None:
        if getattr(args, "seed", None) is None:  # a (ratio, unit) cell every seed shares (oracles)
            return f"{args.step} {sweep}{cell_id(args.mask_ratio, unit, None)}"
        return f"{args.step} {sweep}{cell_id(args.mask_ratio, unit, args.seed)}"
    if getattr(args, "seed", None) is not None:
        return f"{args.step} {sweep}s{args.seed}"
    if getattr(args, "checkpoint", None):  # evaluate-real names its cell by the checkpoint's folder
        return f"{args.step} {Path(args.checkpoint).parent.parent.name}/{Path(args.checkpoint).parent.name}"
    if sweep:  # a stability seed job of one real sweep
        return f"{args.step} {sweep.rstrip('/')}"
    return args.step


def _setup_logging(log_path: str | None, label: str = "mae_hlvm") -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    fmt = "%(asctime)s [" + label.replace("%", "%%") + "] %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, handlers=handlers, force=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mae_hlvm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, step in STEPS.items():
        p = sub.add_parser(name, help=step.help)
        p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
        p.add_argument("--log", default=None, help="also write the log to this file")
        step.declare(p)
    # its own parser (mae_hlvm.workflow.replay); listed here for --help, dispatched before parsing
    sub.add_parser("replay-check", help="compare a rerun's results with the committed ones within measured tolerances")
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["replay-check"]:
        from mae_hlvm.workflow.replay import main as replay_main

        return replay_main(raw[1:])
    args = build_parser().parse_args(argv)
    _setup_logging(args.log, job_label(args))
    # every artifact a step reads is checked against the hash dvc.lock records for it
    io.set_recorded_check(ledger.check)
    module, _, function = STEPS[args.step].runner.partition(":")
    try:
        if args.step in PARAMS_FREE:
            rc = getattr(importlib.import_module(module), function or "run")(None, args)
            return rc if isinstance(rc, int) else 0
        params = load_params(args.params)
        check_ram(args.step, params)
        args.reads = stage_reads(args.step, params)
        from mae_hlvm.workflow.glue import step_hooks

        # Rewrites the stage's params file if stale, and records a receipt for dvc commit
        # when Snakemake ran the step (README: "Snakemake and DVC together").
        with step_hooks(args.step, params, sys.argv[1:] if argv is None else argv):
            getattr(importlib.import_module(module), function or "run")(params, args)
    except (ParamsError, ArtifactError) as err:
        log.error("error: %s", err)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted: no output of this step was written")
        return 130
    return 0
