"""The records of runs made elsewhere (runs/<device>-<date>/, e.g. the GPU headline run).

Each record holds one run's params, review outputs and (since issue 25) its dvc.lock and
per-cell JSONs, kept by ``python -m mae_hlvm.review.records keep``; its claims are judged
again under today's rules by ``... rejudge``. These checks catch a record copied in part: a
README without its device, a metrics table that misses cells of its own grid, claims that
are not what the record's own files give under today's rules.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECORDS = sorted(p for p in (REPO / "runs").iterdir() if p.is_dir()) if (REPO / "runs").is_dir() else []


def test_there_is_a_record() -> None:
    assert RECORDS, "runs/ holds no record"


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.name)
def test_record_names_its_device_and_holds_its_run_or_says_what_it_lacks(record: Path) -> None:
    readme = (record / "README.md").read_text()
    assert re.search(r"NVIDIA \w+", readme), "the README names the GPU that trained the run"
    complete = (record / "dvc.lock").is_file() and (record / "cells").is_dir()
    assert complete or "What this record lacks" in readme, "a record without dvc.lock and per-cell JSONs says so"


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
def test_record_claims_are_todays_rules_on_its_own_files(record: Path, tmp_path: Path) -> None:
    from mae_hlvm.review.records import rejudge

    claims = json.loads((record / "claims.json").read_text())["claims"]
    summary = (record / "summary.md").read_text()
    n_cells = sum(1 for _ in open(record / "metrics.csv")) - 1
    # the summary reports the gate over exactly the record's cells
    assert re.search(rf"Learning gate, synthetic grid: \d+ of {n_cells} cells pass", summary)
    # the committed claims are what re-judging the record's files gives today (no stale verdict)
    copy = tmp_path / record.name
    shutil.copytree(record, copy)
    again = {c["id"] + str(c.get("scope", c.get("mask_unit"))): c["verdict"] for c in rejudge(copy)}
    assert again == {c["id"] + str(c.get("scope", c.get("mask_unit"))): c["verdict"] for c in claims.values()}
    md = (record / "claims.md").read_text()
    assert claims and all(f"**{c['verdict']}**" in md for c in claims.values())
    # the numbers `dvc metrics` compares are today's too, and the record's own summary says it is superseded
    assert json.loads((record / "headline.json").read_text()) == json.loads((copy / "headline.json").read_text())
    assert (record / "summary.md").read_text() == (copy / "summary.md").read_text()
    assert "**Re-judged**" in summary


def test_keep_copies_what_a_record_needs_and_refuses_an_unfinished_run(tmp_path: Path) -> None:
    from mae_hlvm.core.io import ArtifactError
    from mae_hlvm.review.records import KEPT, KEPT_REAL, keep

    root, record = tmp_path / "wc", tmp_path / "runs" / "gpu-x"
    (root).mkdir()
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    for rel in KEPT + KEPT_REAL:
        if rel != "params.yaml":
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(rel)
    (root / "dvc.lock").unlink()
    with pytest.raises(ArtifactError, match="lacks dvc.lock"):
        keep(root, record)
    assert not record.exists(), "nothing is copied from an unfinished run"
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    for rel in ("results/cells/r0.1_u2_s0.json", "results/cells_stable/r0.1_u2_s0.json",
                "results/real/cells/A/r0.1_u8_s0.json", "results/cells/r0.1_u2_s0.recon.npz"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("{}")
    copied = keep(root, record)
    for rel in ("params.yaml", "dvc.lock", "data/prediction.json", "metrics.csv", "claims.md", "stability.csv",
                "cells/r0.1_u2_s0.json", "cells_stable/r0.1_u2_s0.json", "real/cells/A/r0.1_u8_s0.json", "real/table1.csv"):
        assert (record / rel).is_file(), rel
    assert not (record / "cells/r0.1_u2_s0.recon.npz").exists(), "reconstructions stay out (large, not read by claims)"
    assert "results/cells/r0.1_u2_s0.json" in copied


def test_the_real_gate_of_a_record_without_real_cells_is_read_from_its_summary() -> None:
    from mae_hlvm.review.records import _learned_real_from_summary

    line = ("- Learning gate, real track: 1 of 3 cells pass; failing: A/r0.1_u8_s0 (not plateaued (loss fell 10.7% over "
            "the last quarter of epochs)), B/r0.75_u16_s2 (not learned (gain share 0.31 < 0.5 of the linear predictor's)).")
    assert _learned_real_from_summary(f"# x\n{line}\n") == {"A/r0.1_u8_s0": True, "B/r0.75_u16_s2": False}
