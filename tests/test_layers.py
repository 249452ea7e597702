"""The house's floors (issue 28).

core/ is the ground floor: it imports nothing of the package above it. The two tracks
(synthetic/, real/) stand on core/ and not on each other; review/ stands on the tracks;
workflow/ on top orchestrates them and nothing below imports it.
"""

from __future__ import annotations

import ast

import pytest
from helpers import REPO

from mae_hlvm.workflow import pipeline

SRC = REPO / "src" / "mae_hlvm"
# each subpackage's floor: an import may only go down, or stay in its own subpackage
FLOOR = {"core": 0, "synthetic": 1, "real": 1, "review": 2, "workflow": 3}


def modules() -> list[str]:
    """Every module of the package, dotted within it (``core.train``)."""
    return sorted(".".join(p.relative_to(SRC).with_suffix("").parts) for p in SRC.rglob("*.py"))


def imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken, line) for every import of the package in ``module``:
    at the top, inside functions and under ``TYPE_CHECKING`` alike."""
    found = []
    for node in ast.walk(ast.parse(pipeline.module_path(module).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == pipeline.PACKAGE:
            base = node.module.split(".", 1)[1] if "." in node.module else ""
            for alias in node.names:  # `from mae_hlvm.core import io` names a module
                sub = f"{base}.{alias.name}" if base else alias.name
                if pipeline.module_path(sub).exists() or (SRC / sub.replace(".", "/")).is_dir():
                    found.append((sub, [], node.lineno))
                else:
                    found.append((base, [alias.name], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".", 1)[1], [], node.lineno) for a in node.names if a.name.startswith(f"{pipeline.PACKAGE}.")]
    return found


# ----------------------------------------------------------------------------- floors


def upward(module: str) -> list[str]:
    """The imports of ``module`` that run back up a floor, or across to the other track."""
    here = module.split(".")[0]
    if here not in FLOOR:  # the package's __init__ and __main__: the entry point, above all
        return []
    return [f"src/mae_hlvm/{module.replace('.', '/')}.py:{line} imports {target} {names or ''}"
            for target, names, line in imports(module)
            if target.split(".")[0] != here and FLOOR[target.split(".")[0]] >= FLOOR[here]]


def test_no_import_runs_back_up_a_floor():
    found = [line for module in modules() for line in upward(module)]
    assert not found, "imports that run back up (core < synthetic, real < review < workflow):\n" + "\n".join(found)


@pytest.mark.parametrize(("module", "source"), [
    ("core.fake", "def f():\n    from mae_hlvm.workflow import ledger\n\n    return ledger\n"),  # as core/io.py once did
    ("core.fake", "from mae_hlvm.synthetic.generate import ridge_fit_predict\n"),  # as core/gate.py once did
    ("real.fake", "from mae_hlvm.synthetic.probe import shape_bias\n"),  # across the tracks
    ("review.fake", "import mae_hlvm.workflow.pipeline\n"),
])
def test_the_floor_rule_sees_an_upward_import(tmp_path, monkeypatch, module, source):
    fake = tmp_path / "src" / "mae_hlvm" / (module.replace(".", "/") + ".py")
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    monkeypatch.setattr(pipeline, "SOURCE_DIR", tmp_path / "src" / "mae_hlvm")
    assert len(upward(module)) == 1


def test_the_package_tree_is_what_the_floors_name():
    assert {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(FLOOR)
