"""README's Layout section names every module, benchmark and document; README and modules stay small."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def layout_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Layout", 1)[1]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)


def test_layout_names_every_module_benchmark_and_doc() -> None:
    words = set(re.findall(r"[\w.]+", layout_block()))
    modules = {p.stem for p in (REPO / "src" / "mae_hlvm").rglob("*.py")} - {"__init__", "__main__"}
    modules |= {p.name for p in (REPO / "src" / "mae_hlvm").iterdir() if (p / "__init__.py").exists()}
    bench = {p.name for p in (REPO / "bench").iterdir() if p.is_file()}
    docs = {p.name for p in (REPO / "docs").glob("*.md")}
    assert not modules - words, f"README's Layout lacks modules {sorted(modules - words)}"
    assert not bench - words, f"README's Layout lacks bench files {sorted(bench - words)}"
    assert not docs - words, f"README's Layout lacks docs {sorted(docs - words)}"


def test_readme_is_for_a_user_and_modules_stay_small() -> None:
    """Issue 28: README under 300 lines (history lives in docs/history.md and git) and no
    module of the package at 500 lines or more."""
    assert len((REPO / "README.md").read_text().splitlines()) < 300
    sizes = {p.relative_to(REPO).as_posix(): len(p.read_text().splitlines())
             for p in (REPO / "src" / "mae_hlvm").rglob("*.py")}
    assert not {k: v for k, v in sizes.items() if v >= 500}, "modules of 500 lines or more"
