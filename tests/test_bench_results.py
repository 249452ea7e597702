"""Committed benchmark results agree with themselves and with the rules they quote.

A study's markdown is made from its JSON (``--report``), and its plateau verdicts are the
rule it applied (the gate's former plateau rule, kept in bench/schedule_study.py) on the
per-epoch losses it stored. These
checks catch a table edited by hand, a JSON replaced without its table, or a verdict that
no longer follows from the stored curve.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from mae_hlvm.core.gate import loss_rel_drop

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "bench" / "results").glob("schedule_study_*.json"))


def _study_module():
    spec = importlib.util.spec_from_file_location("schedule_study", REPO / "bench" / "schedule_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_there_is_a_schedule_study() -> None:
    assert STUDIES, "bench/results holds no schedule study"


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_schedule_study_table_is_made_from_its_json(path: Path) -> None:
    result = json.loads(path.read_text())
    assert _study_module().markdown(result) == path.with_suffix(".md").read_text()


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_schedule_study_verdicts_follow_from_the_stored_losses(path: Path) -> None:
    result = json.loads(path.read_text())
    assert result["device"] and result["runs"]
    for run in result["runs"]:
        assert len(run["losses"]) == run["epochs"], run
        # the losses are stored to 6 decimals: the drop agrees to 1e-4 (the rule's threshold is 1e-2)
        assert math.isclose(run["loss_rel_drop"], loss_rel_drop(run["losses"]), abs_tol=1e-4), run
        assert run["plateau"] == _study_module().plateau(run["losses"])[0], run
    for ref in result["references"]["cells"]:
        assert len(ref["losses"]) == ref["epochs"] and math.isclose(ref["loss_rel_drop"], loss_rel_drop(ref["losses"]), abs_tol=1e-4)
