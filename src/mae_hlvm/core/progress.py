"""How long a step's parts take, in its log: ``what ...`` before a long silent part, ``what:
done in 1m05s`` after it (:func:`part`), durations spelled one way (:func:`clock`).

The overall progress of a Snakemake run is the workflow's (:mod:`mae_hlvm.workflow.progress`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager


def clock(seconds: float) -> str:
    """``5m10s``: the one way run lines spell a duration."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


@contextmanager
def part(log: logging.Logger, what: str) -> Iterator[None]:
    """Log ``what ...`` before a long silent part of a step and ``what: done in 1m05s`` after it."""
    log.info("%s ...", what)
    started = time.perf_counter()
    yield
    log.info("%s: done in %s", what, clock(time.perf_counter() - started))
