"""README's Layout section names every module, benchmark and document the tree holds."""

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
