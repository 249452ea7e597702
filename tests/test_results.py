"""One typed schema per result file (issue 14 item 3): the writers check it before writing, the
readers read through it, and metrics.csv's columns come from it."""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import pytest
from helpers import REPO, real_cell_result

from mae_hlvm.core import paths, results
from mae_hlvm.core.config import load_params
from mae_hlvm.core.io import ArtifactError
from mae_hlvm.real import report
from mae_hlvm.review import aggregate, summary
from mae_hlvm.synthetic import baseline, probe
from mae_hlvm.workflow import replay


def committed_cell(name: str = "r0.5_u4_s0") -> dict:
    return json.loads((REPO / paths.probe_json(name)).read_text())


def test_the_committed_cells_and_baselines_give_the_committed_tables(monkeypatch):
    """metrics.csv and baselines.csv, byte for byte, from the schema's columns."""
    monkeypatch.chdir(REPO)
    params = load_params("params.yaml")
    levels, pooling = aggregate.n_levels(params), params.probe.pooling
    frame = aggregate.metrics_frame(aggregate.read_cells(params), levels, pooling)
    assert list(frame.columns) == results.cell_columns(levels, pooling)
    assert aggregate.frame_to_csv(frame) == Path(paths.METRICS_CSV).read_text()
    base = aggregate.baselines_frame(aggregate.read_baselines(params), levels, pooling)
    assert aggregate.frame_to_csv(base) == Path(paths.BASELINES_CSV).read_text()


def test_every_committed_real_cell_fits_its_schema():
    files = sorted(glob.glob(str(REPO / paths.REAL_CELLS_DIR / "*" / "*.json")))
    assert files, "no committed real cells"
    for path in files:
        res = results.read_real_cell(json.loads(Path(path).read_text()), path)
        assert res.sweep == Path(path).parent.name and res.cell_id == Path(path).stem


def test_a_new_metric_is_one_declaration_and_reaches_every_table(monkeypatch):
    """Declaring a column is all it takes (issue 28 item 4): metrics.csv, metrics.json, the
    summary's grid table, baselines.csv's random-init rows and the replay's tolerance."""
    cell = committed_cell()
    cell["new_score"] = 0.25  # what probe.py would compute
    extra = results.Column("new_score", lambda c, p: c.model_extra["new_score"], json=True, summary=True,
                           baseline=True, tolerance="acc")
    monkeypatch.setattr(results, "CELL_COLUMNS", results.CELL_COLUMNS + (extra,))
    monkeypatch.setattr(results, "BASELINE_COLUMNS", results.BASELINE_COLUMNS + (extra,))
    parsed = results.read_cell(cell, (0.5, 4, 0), 4, "cell.json")
    frame = aggregate.metrics_frame([parsed], 4, "mean")
    assert frame.columns[-1] == "new_score" and frame.loc[0, "new_score"] == 0.25
    assert aggregate.metrics_json(frame, 4)["r0.5_u4_s0"]["new_score"] == 0.25
    assert summary.seed_table(frame, 4).loc[0, "new_score"] == "0.250 ± 0.000"
    base = json.loads((REPO / paths.baseline_json(0)).read_text())
    base["random_init"]["new_score"] = 0.125
    rows = results.baseline_rows(results.read_baseline(base, 0, 4, "baseline.json"), "mean")
    assert [r["new_score"] for r in rows][0] == 0.125 and all(r["new_score"] != r["new_score"] for r in rows[1:])
    assert "new_score" in results.baseline_columns(4)
    assert replay.column_rule("new_score") == (replay.ACC_TOL, replay.ACC_TOL.why)
    assert replay.column_rule("new_score_level2")[0] is replay.ACC_TOL


def test_every_declared_metric_has_its_tolerance():
    """No metrics.csv column falls to the replay's generic rule."""
    for name in results.cell_columns(4, "mean"):
        assert replay.column_rule(name)[0] is not replay.OTHER_TOL, name


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(n_visible=32.0), "n_visible=32.0 is not an integer"),
        (lambda c: c.update(pooling=None), "pooling=None is not a string"),
        (lambda c: c["r2_spatial"].update(innovations=[0.1]), "r2_spatial.innovations needs 4 values"),
        (lambda c: c["r2_linear"]["cls"].__setitem__(2, "x"), "r2_linear.cls[2]='x' is not a number"),
        (lambda c: c["gate"].pop("gain_share"), "lacks key 'gate.gain_share'"),
        (lambda c: c.update(r2_region=[0.1]), "r2_region=[0.1]"),
    ],
)
def test_a_cell_that_does_not_fit_is_one_line_naming_file_and_key(edit, message):
    cell = committed_cell()
    edit(cell)
    with pytest.raises(ArtifactError) as err:
        results.read_cell(cell, (0.5, 4, 0), 4, "results/cells/r0.5_u4_s0.json")
    text = str(err.value)
    assert text.startswith("results/cells/r0.5_u4_s0.json: ") and message in text and "\n" not in text


def test_the_probe_step_refuses_to_write_a_result_that_does_not_fit(tmp_path, monkeypatch):
    cell = committed_cell()
    del cell["gate"]
    monkeypatch.setattr(probe, "probe_cell", lambda *a: (cell, {}, {}))
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(data="d.npz", checkpoint="c.pt", out="out.json", recon="out.npz")
    with pytest.raises(ArtifactError, match=r"out\.json: lacks key 'gate'"):
        probe.run(load_params(REPO / "params.yaml"), args)
    assert not list(tmp_path.rglob("*")), "nothing may be written"


def test_the_baseline_step_refuses_to_write_a_result_that_does_not_fit(tmp_path, monkeypatch):
    obj = json.loads((REPO / paths.baseline_json(0)).read_text())
    obj["pixels"]["r2_linear"] = obj["pixels"]["r2_linear"][:2]
    monkeypatch.setattr(baseline, "baseline_scores", lambda *a: (obj, {}))
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(data="d.npz", seed=0, out="s0.json")
    with pytest.raises(ArtifactError, match=r"s0\.json: pixels\.r2_linear needs 4 values"):
        baseline.run(load_params(REPO / "params.yaml"), args)
    assert not list(tmp_path.rglob("*"))


def test_the_real_schema_accepts_the_helper_cell_and_names_a_missing_probe():
    good = real_cell_result("A", 0.75, 8, 0)
    assert results.read_real_cell(good, "x.json").table1.linear_cls["clean"] == 50.0
    del good["table1"]["knn_mean"]["clean"]
    with pytest.raises(ArtifactError, match=r"x\.json: table1\.knn_mean lacks the clean test set; rerun evaluate-real"):
        results.read_real_cell(good, "x.json")
    assert report.read_real_cell is results.read_real_cell  # the reader report-real uses
