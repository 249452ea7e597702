"""What a Snakemake run prints after its last job (issue 13): the ``dvc commit`` that records
the finished jobs in dvc.lock says what it does before it starts and how long it took after,
so the seconds it takes are never silent."""

from __future__ import annotations

from pathlib import Path

from helpers import one_valid_receipt, recording_dvc

from mae_hlvm.core import paths
from mae_hlvm.workflow import receipts


def test_the_commit_says_what_it_does_before_and_how_long_after(tmp_path, monkeypatch, capsys):
    name = one_valid_receipt(tmp_path, monkeypatch, recording_dvc(tmp_path / "dvc.args"))
    assert receipts.commit_receipts() == [name]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("mae_hlvm.workflow.glue: recording 1 Snakemake job(s) in dvc.lock "
                      "(one `dvc commit` of 1 stage(s) or group(s)) ...")
    assert err[1].startswith("mae_hlvm.workflow.glue: recorded 1 Snakemake job(s) in dvc.lock (")
    assert err[1].endswith(" s)") and len(err) == 2
    assert (tmp_path / "dvc.args").read_text().split() == ["predict"]
    assert not Path(paths.receipt(name)).exists()


def test_quiet_prints_neither_line(tmp_path, monkeypatch, capsys):
    name = one_valid_receipt(tmp_path, monkeypatch, recording_dvc())
    assert receipts.commit_receipts(quiet=True) == [name]
    assert capsys.readouterr().err == ""


def test_a_failed_commit_follows_the_announcement_with_dvcs_error(tmp_path, monkeypatch, capsys):
    one_valid_receipt(tmp_path, monkeypatch, "#!/bin/sh\necho 'ERROR: Unable to acquire lock' >&2\nexit 1\n")
    assert receipts.commit_receipts() == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("mae_hlvm.workflow.glue: recording 1 Snakemake job(s)")
    assert "dvc commit failed (ERROR: Unable to acquire lock)" in err[1]
