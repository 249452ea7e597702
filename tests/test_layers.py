"""The house's floors and the code deps that follow from them (issue 28).

core/ is the ground floor: it imports nothing of the package above it. The two tracks
(synthetic/, real/) stand on core/ and not on each other; review/ stands on the tracks;
workflow/ on top orchestrates them and nothing below imports it. A stage's code deps are
what its process runs (``pipeline.code_deps``): the only module they skip is the params
schema, from which the steps take only ``pipeline.SCHEMA_NAMES``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys

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


# ----------------------------------------------------------------------------- code deps


def every_code_dep() -> set[str]:
    """The modules some stage runs (its code deps), dotted."""
    return {d.removeprefix("src/mae_hlvm/").removesuffix(".py").replace("/", ".")
            for s in pipeline.STAGE for d in pipeline.code_deps(s)}


def test_code_deps_take_only_schema_names_from_modules_outside_them():
    """No module that computes a result hides outside the code deps: a module a stage runs may
    take from a module that is no code dep only the schema's containers and error."""
    deps = every_code_dep()
    allowed = {pipeline.SCHEMA: pipeline.SCHEMA_NAMES}
    taken = []
    for module in sorted(deps):
        for target, names, line in imports(module):
            if target in deps or target.rsplit(".", 1)[-1] == "__init__" or not pipeline.module_path(target).exists():
                continue  # a code dep, or a subpackage (whose __init__ holds no code)
            if not names:
                taken.append(f"{module}:{line} imports the whole module {target}")
            taken += [f"{module}:{line} takes {n} from {target}" for n in names if n not in allowed.get(target, ())]
    assert not taken, "a code dep takes from a module no stage depends on:\n" + "\n".join(taken)


def test_the_schema_allow_list_is_short_and_only_names_classes():
    from mae_hlvm.core import config

    assert len(pipeline.SCHEMA_NAMES) <= 6
    assert all(isinstance(getattr(config, n), type) for n in pipeline.SCHEMA_NAMES)
    assert pipeline.SCHEMA not in every_code_dep()


def test_the_visible_unit_rounding_is_a_code_dep_of_every_stage_computing_with_a_cell():
    for stage in ("predict", "train", "train_seed", "probe", "baseline", "train_stable", "train_real_A", "evaluate_real_B"):
        assert "src/mae_hlvm/core/cells.py" in pipeline.code_deps(stage), stage


def test_the_real_track_runs_no_synthetic_code():
    # so editing synthetic/generate.py (or any synthetic module) leaves every real stage up to date
    for stage in pipeline.REAL_STAGES:
        deps = pipeline.code_deps(stage)
        assert not [d for d in deps if d.startswith("src/mae_hlvm/synthetic/")], (stage, deps)
        assert not [d for d in deps if d.startswith(("src/mae_hlvm/review/", "src/mae_hlvm/workflow/"))], (stage, deps)


def test_every_module_a_stage_loads_is_one_of_its_code_deps():
    """The scanner against what runs: import each stage's module in a fresh package (torch and
    the other libraries stay loaded) and list the package's modules it loads. Every one is a
    code dep of the stage, but the schema and the modules only the schema loads."""
    stage_of = {pipeline.STAGE[s].module: s for s in pipeline.STAGE}
    code = (
        "import importlib, json, sys\n"
        "def fresh(module):\n"
        "    for name in [m for m in sys.modules if m == 'mae_hlvm' or m.startswith('mae_hlvm.')]:\n"
        "        del sys.modules[name]\n"
        "    importlib.import_module('mae_hlvm.' + module)\n"
        "    return sorted(m.split('.', 1)[1] for m in sys.modules if m.startswith('mae_hlvm.'))\n"
        "schema = fresh(sys.argv[1])\n"
        "print(json.dumps({'schema': schema, **{m: fresh(m) for m in sys.argv[2:]}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, pipeline.SCHEMA, *stage_of], capture_output=True, text=True,
                          cwd=REPO, check=True)
    loaded = json.loads(proc.stdout)
    schema_only = set(loaded.pop("schema"))
    for module, modules_loaded in loaded.items():
        deps = {d.removeprefix("src/mae_hlvm/").removesuffix(".py").replace("/", ".")
                for d in pipeline.code_deps(stage_of[module])}
        packages = {m for m in modules_loaded if (SRC / m.replace(".", "/")).is_dir()}
        missed = set(modules_loaded) - deps - packages - schema_only
        assert not missed, f"{module} loads {sorted(missed)}, which its stage's code deps lack"
    assert "real.evaluate" in loaded and "core.cells" in loaded["core.train"]


@pytest.mark.parametrize("stage", ["train", "train_real_A"])
def test_a_stage_runs_no_workflow_module(stage):
    assert not [d for d in pipeline.code_deps(stage) if "/workflow/" in d]


def test_the_rule_skips_the_schema_alone():
    # it names no subpackage: a workflow module is no code dep only because no step imports it
    assert pipeline.is_code_dep("workflow.ledger") and pipeline.is_code_dep("core.paths")
    assert not pipeline.is_code_dep(pipeline.SCHEMA) and not pipeline.is_code_dep("core.__init__")


def test_the_package_tree_is_what_the_floors_name():
    assert {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(FLOOR)
