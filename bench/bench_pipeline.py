"""Wall time of `snakemake -n` and `dvc status` on a finished tree (issue 3 target: <= 3 s each).

Usage: ``python bench/bench_pipeline.py [--root DIR] [--repeats N]`` after ``make run``.
Prints the median and max of N runs per command and whether each tool saw the tree as
up to date (a timing on an unfinished tree is not the target's number).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "snakemake -n": ["snakemake", "-n", "--quiet", "rules"],
    "dvc status": ["dvc", "status"],
}
UP_TO_DATE = {"snakemake -n": "Nothing to be done", "dvc status": "up to date"}


def time_command(cmd: list[str], root: Path, repeats: int) -> tuple[list[float], str]:
    """Seconds per run of ``cmd`` in ``root`` and the last run's output."""
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    times, out = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed in {root}:\n{out[-2000:]}")
    return times, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"tree: {args.root}")
    for name, cmd in COMMANDS.items():
        times, out = time_command(cmd, args.root, args.repeats)
        state = "up to date" if UP_TO_DATE[name] in out else "NOT up to date (run the pipeline first)"
        print(f"{name:14s} median {statistics.median(times):.2f} s  max {max(times):.2f} s  ({state})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
