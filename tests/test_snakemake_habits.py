"""Snakemake habits (issue 13 item 4): `make lint` passes with each accepted lint justified in
code, and `--config` overrides are refused with one line instead of being ignored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mae_hlvm.workflow import lint

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)


def run(*cmd: str) -> subprocess.CompletedProcess:
    env = {"PATH": VENV_BIN + ":/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run(list(cmd), cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_lint_text_is_parsed_per_rule():
    text = (
        "Lints for rule generate (line 52, /x/Snakefile):\n"
        "    * Specify a conda environment or container for each rule.:\n"
        "      This way, the used software ...\n"
        "Lints for snakefile /x/Snakefile:\n"
        "    * Mixed rules and functions in same snakefile.:\n"
    )
    assert lint.lints(text) == [
        ("rule generate (line 52, /x/Snakefile)", "Specify a conda environment or container for each rule."),
        ("snakefile /x/Snakefile", "Mixed rules and functions in same snakefile."),
    ]


def test_lint_passes_on_the_workflow_and_names_what_it_accepts():
    proc = run(sys.executable, "-m", "mae_hlvm.workflow.lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "accepted x" in proc.stdout and "requirements.lock" in proc.stdout


def test_lint_fails_on_a_suggestion_not_accepted(monkeypatch, capsys):
    monkeypatch.setattr(lint, "ACCEPTED", {})
    assert lint.main() == 1
    assert "not accepted" in capsys.readouterr().out


def test_config_overrides_are_refused_in_one_line():
    proc = run(sys.executable, "-m", "snakemake", "-n", "--config", 'train={"epochs":5}')
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "error" in ln.lower()]
    assert proc.returncode != 0
    assert errors == ["error: --config train is not read: edit params.yaml instead "
                      "(or `dvc exp run -S key=value` for a tracked experiment)"]
