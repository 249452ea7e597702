"""The records of runs made elsewhere (runs/<device>-<date>/, e.g. the GPU headline run).

Each record is a copy of one run's review outputs with the params that made them; the run
itself (params, dvc.lock, results) lives on its branch, named in the record's README. These
checks catch a record copied in part: a README without its device or branch, a metrics
table that misses cells of its own grid, a claims table from another run.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECORDS = sorted(p for p in (REPO / "runs").iterdir() if p.is_dir()) if (REPO / "runs").is_dir() else []


def test_there_is_a_record() -> None:
    assert RECORDS, "runs/ holds no record"


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.name)
def test_record_names_its_device_and_branch(record: Path) -> None:
    readme = (record / "README.md").read_text()
    assert re.search(r"NVIDIA \w+", readme), "the README names the GPU that trained the run"
    branch = re.search(r"`(runs/[\w.-]+)`", readme)
    assert branch, "the README names the branch holding the run's params, dvc.lock and results"


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.name)
def test_record_metrics_cover_its_grid_with_gate_columns(record: Path) -> None:
    params = yaml.safe_load((record / "params.yaml").read_text())
    grid = params["grid"]
    want = {(float(r), int(u), int(s)) for r, u, s in itertools.product(grid["mask_ratios"], grid["mask_units"], grid["seeds"])}
    with open(record / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(float(r["mask_ratio"]), int(r["mask_unit"]), int(r["seed"])) for r in rows} == want
    assert len(rows) == len(want)
    assert all(r["gate_pass"] in ("0", "1") and r["gain_share"] != "" for r in rows)


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.name)
def test_record_claims_and_summary_are_the_runs(record: Path) -> None:
    claims = json.loads((record / "claims.json").read_text())["claims"]
    summary = (record / "summary.md").read_text()
    n_cells = sum(1 for _ in open(record / "metrics.csv")) - 1
    # the summary reports the gate over exactly the record's cells, and every claim's verdict
    assert re.search(rf"Learning gate, synthetic grid: \d+ of {n_cells} cells pass", summary)
    assert claims and all(c["verdict"] in summary for c in claims.values())
