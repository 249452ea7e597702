"""Run the pipeline's jobs where neither Snakemake nor DVC is installed (a lent GPU machine).

    python -m mae_hlvm.workflow.plainrun [--cores 16] [--gpu-jobs 1] [--stages generate,predict,train_seed,probe] [-n]

The jobs are the stage table's (:func:`mae_hlvm.workflow.pipeline.instances`): the same commands,
inputs and outputs both tools run. A job runs when Snakemake would run it (an output
missing or older than an input, its code or its params file, or an input's job runs),
after the jobs making its inputs; at most ``--cores`` at once, of which at most
``--gpu-jobs`` train on the GPU (:func:`next_jobs`). A ready GPU job starts before any
ready CPU job, and while GPU jobs remain, CPU jobs take at most ``cores - gpu_jobs``
slots, so a training job never waits for a slot behind the probes (the first GPU run's
GPU sat idle 10-35 s at each training job's start with 13 CPU jobs beside it,
docs/gpu.md). Each finished job leaves the receipt a Snakemake job leaves
(:func:`mae_hlvm.workflow.glue.step_hooks`), so back on a machine with DVC, ``python -m
mae_hlvm.workflow.pipeline commit-receipts`` records them in dvc.lock and both tools agree: what
the GPU profile's headline run needs (docs/gpu.md). One progress line per finished job:
jobs done of the plan, running, elapsed, and an ETA at the run's own pace.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mae_hlvm.core import paths
from mae_hlvm.core.config import Params, ParamsError, load_params
from mae_hlvm.workflow import glue, pipeline, progress, runlock

# the stages whose record claims a GPU (Stage.gpu: the training stages)
GPU_STAGES = tuple(name for name, stage in pipeline.STAGE.items() if stage.gpu)


@dataclass(frozen=True)
class Job:
    name: str  # DVC's stage instance name, train_seed@0
    argv: tuple[str, ...]
    outs: tuple[str, ...]
    ins: tuple[str, ...]
    gpu: bool


def _mtime(path: str) -> float | None:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return None


def _stale(outs: Sequence[str], triggers: Sequence[str]) -> bool:
    """Snakemake's rule: an output missing, or older than an input (artifact, code, params file)."""
    made = [_mtime(o) for o in outs]
    if None in made:
        return True
    newest = max((m for m in map(_mtime, triggers) if m is not None), default=0.0)
    return min(made) < newest


def topological(params: Params) -> list[tuple[str, str, Any, tuple[str, ...], tuple[str, ...]]]:
    """(name, stage, fields, outputs, inputs) of every job, each after the jobs making its inputs."""
    every: dict[str, tuple[str, Any, tuple[str, ...], tuple[str, ...]]] = {}
    for stage, f in pipeline.instances(params):
        outs = tuple(o.path for o in pipeline.outputs(stage, f, params))
        every[pipeline.dvc_stage_name(stage, f)] = (stage, f, outs, tuple(pipeline.input_files(stage, f, params)))
    maker = {o: name for name, (_, _, outs, _) in every.items() for o in outs}
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:  # depth first: the jobs making the inputs come first
        if name in seen:
            return
        seen.add(name)
        for i in every[name][3]:
            if i in maker:
                visit(maker[i])
        order.append(name)

    for name in every:
        visit(name)
    return [(name, *every[name]) for name in order]


def plan(params: Params, stages: Sequence[str] | None = None) -> list[Job]:
    """The selected stages' jobs that Snakemake would run, upstream first.

    Rewrites the params files whose content changed (as the Snakefile does); a job runs
    when an output is missing or older than one of its inputs, code or params file, or
    when a job making one of its inputs runs.
    """
    active = pipeline.active_stages(params)
    unknown = sorted(set(stages or ()) - set(active))
    if unknown:
        raise ParamsError(f"--stages: {', '.join(unknown)} not among this params' stages ({', '.join(active)})")
    glue.write_params_files(params)
    gpu = pipeline.train_uses_gpu(params)
    maker = {o: name for name, _, _, outs, _ in topological(params) for o in outs}
    planned: set[str] = set()
    jobs = []
    code: dict[str, list[str]] = {}
    for name, stage, f, outs, ins in topological(params):
        if stages and stage not in stages:
            continue
        if stage not in code:
            code[stage] = pipeline.code_deps(stage)
        triggers = [i for i in ins if not Path(i).is_dir()] + code[stage] + [paths.params_file(stage)]
        if not (_stale(outs, triggers) or any(maker.get(i) in planned for i in ins)):
            continue
        planned.add(name)
        argv = shlex.split(pipeline.command(stage, f))
        argv[0] = sys.executable  # the commands say `python`; this machine's may be python3
        jobs.append(Job(name, tuple(argv), outs, ins, gpu and stage in GPU_STAGES))
    return jobs


def dependencies(jobs: list[Job]) -> dict[str, set[str]]:
    """Job name -> the planned jobs making its inputs. An input neither planned nor on disk
    is one ParamsError line, before anything runs."""
    maker = {o: j.name for j in jobs for o in j.outs}
    deps: dict[str, set[str]] = {}
    for j in jobs:
        missing = [i for i in j.ins if i not in maker and not Path(i).exists()]
        if missing:
            raise ParamsError(f"{j.name} needs {missing[0]}, which no selected stage makes and which is missing: "
                              "add its stage to --stages")
        deps[j.name] = {maker[i] for i in j.ins if i in maker}
    return deps


def next_jobs(pending: Sequence[str], deps: dict[str, set[str]], done: set[str], running: Sequence[Job],
              by_name: dict[str, Job], cores: int, gpu_jobs: int) -> list[str]:
    """The ready jobs to start now, in plan order: GPU jobs first, up to ``gpu_jobs`` on the GPU;
    CPU jobs in the slots left, keeping ``gpu_jobs`` slots (at most ``cores - 1``) free while
    any GPU job is pending."""
    ready = [by_name[n] for n in pending if deps[n] <= done]
    free = cores - len(running)
    gpu_free = gpu_jobs - sum(j.gpu for j in running)
    start = [j for j in ready if j.gpu][: max(0, min(free, gpu_free))]
    gpu_left = any(by_name[n].gpu for n in pending if by_name[n] not in start)
    reserved = min(gpu_jobs, cores - 1) if gpu_left else 0  # never all slots: a GPU job may wait on a CPU job
    cpu_slots = cores - reserved - sum(not j.gpu for j in running)
    start += [j for j in ready if not j.gpu][: max(0, min(free - len(start), cpu_slots))]
    return [j.name for j in start]


def run(jobs: list[Job], cores: int, gpu_jobs: int) -> int:
    """Run ``jobs`` in dependency order; 0 when all succeeded, else 1 (after the running ones end)."""
    deps = dependencies(jobs)
    by_name = {j.name: j for j in jobs}
    done: set[str] = set()
    running: dict[Future, Job] = {}
    start = time.perf_counter()
    failed: list[str] = []

    def execute(job: Job) -> tuple[int, float]:
        """(exit code, seconds the job ran)."""
        t = time.perf_counter()
        rc = subprocess.run(job.argv).returncode
        return rc, time.perf_counter() - t

    progress.stop()  # a Snakemake run's plan left by a killed run is not this run's
    print(f"plainrun: {len(jobs)} jobs to run, {cores} at once ({gpu_jobs} on the GPU)", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=cores) as pool:
        pending = [j.name for j in jobs]
        while pending or running:
            if not failed:
                for name in next_jobs(pending, deps, done, list(running.values()), by_name, cores, gpu_jobs):
                    pending.remove(name)
                    running[pool.submit(execute, by_name[name])] = by_name[name]
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                rc, secs = fut.result()
                if rc != 0:
                    failed.append(job.name)
                    print(f"plainrun: {job.name} failed (exit {rc}); its log: {job.argv[-1]}", file=sys.stderr, flush=True)
                    continue
                done.add(job.name)
                elapsed = time.perf_counter() - start
                eta = elapsed / len(done) * (len(jobs) - len(done))
                print(f"plainrun: {len(done)}/{len(jobs)} jobs done ({job.name}, {secs:.0f} s), {len(running)} running, "
                      f"elapsed {progress.clock(elapsed)}, ETA {progress.clock(eta)}", file=sys.stderr, flush=True)
    if failed or len(done) < len(jobs):
        print(f"plainrun: stopped: {len(done)}/{len(jobs)} jobs done; failed: {', '.join(failed) or 'none'}",
              file=sys.stderr)
        return 1
    return 0


def pack_list(params: Params) -> list[str]:
    """What a device run brings back (ci/gpu/device-run.sh): the top folders of every output of
    the stage table but the data files (regenerated where the run is adopted), the logs, the
    benchmarks, the receipts and the params files the jobs read."""
    roots = {Path(o.path).parts[0] for stage, f in pipeline.instances(params) for o in pipeline.outputs(stage, f, params)}
    roots -= {Path(paths.SYNTHETIC_DATA).parts[0], Path(paths.REAL_DATA).parts[0]}
    bench = Path(pipeline.benchmark_path("generate", None)).parts[0]
    return sorted(roots) + [paths.LOGS_DIR, bench, paths.RECEIPTS_DIR, paths.PARAMS_DIR, "params.yaml", "dvc.yaml"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mae_hlvm.workflow.plainrun", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cores", type=int, default=1, help="jobs at once")
    ap.add_argument("--gpu-jobs", type=int, default=1, help="training jobs at once on the GPU")
    ap.add_argument("--stages", default="", help="comma-separated stages (default: all of them)")
    ap.add_argument("-n", "--dry-run", action="store_true", help="list the jobs and stop")
    ap.add_argument("--pack-list", action="store_true", help="print what a device run brings back, and stop")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        if args.pack_list:
            print(" ".join(pack_list(params)))
            return 0
        pipeline.check_dvc_yaml(params)
        jobs = plan(params, [s for s in args.stages.split(",") if s] or None)
        dependencies(jobs)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        for j in jobs:
            print(f"{j.name}{' (GPU)' if j.gpu else ''}: {shlex.join(j.argv[1:])}")
        return 0
    try:  # the runs' lock: not beside a Snakemake run, DVC or `verify` in this working copy
        with runlock.exclusive("plainrun"):
            return run(jobs, max(1, args.cores), max(1, args.gpu_jobs))
    except runlock.BusyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
