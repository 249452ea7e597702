"""One overall progress line per finished job of a Snakemake run: jobs done, total, ETA.

Snakemake prints "N of M steps done" but no time left. At the run's start (the Snakefile's
``onstart``, :func:`mae_hlvm.workflow.glue.start_run`) the jobs it will run are planned with
Snakemake's own rule (:func:`mae_hlvm.workflow.plainrun.plan`: an output missing or older than an
input, code or params file) and each job's expected seconds are read from its last
``benchmark:`` file (1 s when it has none). Each job, when it succeeds
(:func:`mae_hlvm.workflow.glue.step_hooks`), appends its name to the run's list and prints::

    run: 12 of 90 jobs done, ETA 5m10s (expected time of what is left, at this run's pace)

The pace is the elapsed time over the expected seconds of the jobs done, so it holds for
any ``--cores``. A run naming its own targets gets no plan (Snakemake's DAG may be smaller
than the plan), nor does a dry run; the files live in ``.pipeline/run/`` and go at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from mae_hlvm.core import paths
from mae_hlvm.core.progress import clock

RUN_DIR = Path(paths.STATE_DIR) / "run"
PLAN = RUN_DIR / "plan.json"
DONE = RUN_DIR / "done.txt"


def _expected_seconds(path: str) -> float:
    try:
        rows = Path(path).read_text().splitlines()
        return max(0.1, float(rows[1].split("\t")[0]))
    except (OSError, IndexError, ValueError):
        return 1.0


def start(params, argv: list[str]) -> int:  # noqa: ANN001
    """Write the run's plan unless the command line names targets; returns the planned jobs."""
    from mae_hlvm.workflow import pipeline
    from mae_hlvm.workflow.plainrun import plan

    stop()
    if set(argv) & CHANGES_THE_PLAN or any(a != "all" for a in _positional(argv)):
        return 0
    jobs = plan(params)
    by_name = {pipeline.dvc_stage_name(s, f): (s, f) for s, f in pipeline.instances(params)}
    expected = {j.name: _expected_seconds(pipeline.benchmark_path(*by_name[j.name])) for j in jobs}
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    PLAN.write_text(json.dumps({"started": time.time(), "expected": expected}))
    return len(jobs)


# Snakemake options after which its DAG is not the plan's (forced reruns, partial runs, touch)
CHANGES_THE_PLAN = frozenset({"-F", "--forceall", "-R", "--forcerun", "-U", "--until", "-O", "--omit-from",
                              "--touch", "-t", "-n", "--dry-run", "--list-untracked"})
# options that take no value: any other option is taken to consume the next argument
FLAGS = frozenset({"-p", "--printshellcmds", "-q", "--quiet", "--keep-going", "-k", "--rerun-incomplete", "--ri",
                   "--notemp", "--nolock", "--verbose", "--debug-dag", "--show-failed-logs"})


def _positional(argv: list[str]) -> list[str]:
    """Snakemake's positional arguments (its targets), skipping option values as best it can."""
    out, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = "=" not in a and a not in FLAGS
        else:
            out.append(a)
    return out


def job_done(name: str) -> str | None:
    """Record a finished job of the planned run; the progress line (also printed), or None."""
    try:
        plan = json.loads(PLAN.read_text())
    except (OSError, ValueError):
        return None
    expected = plan["expected"]
    if name not in expected:
        return None
    fd = os.open(DONE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (name + "\n").encode())
    finally:
        os.close(fd)
    done = set(DONE.read_text().split()) & set(expected)
    spent = sum(expected[n] for n in done)
    left = sum(v for n, v in expected.items() if n not in done)
    elapsed = time.time() - plan["started"]
    eta = elapsed / spent * left if spent else 0.0
    line = f"run: {len(done)} of {len(expected)} jobs done, ETA {clock(eta)} (expected time of what is left, at this run's pace)"
    print(line, file=sys.stderr, flush=True)
    return line


def stop() -> None:
    for f in (PLAN, DONE):
        f.unlink(missing_ok=True)
