"""Bad params.yaml edits: each stops everything with one line naming the key and value."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mae_hlvm.core.config import RENAMED_KEYS, ParamsError, parse_params

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())
DEFAULT.pop("stability", None)  # its set names cells of the shipped grid
# Pin the values the expected messages quote, whatever the default file says.
DEFAULT["data"].update(generator="quadtree", image_size=24, depth=2, latent_dims=[8, 8, 8], noise_scales=[1.0, 0.7, 0.7])
DEFAULT["model"].update(vit_patch=2, embed_dim=64, num_heads=4)
DEFAULT["grid"].update(mask_ratios=[0.1, 0.25, 0.5, 0.75, 0.9], mask_units=[2, 4, 6], seeds=[0, 1])

class _Missing:
    """The value that deletes a key; a fixed repr keeps test ids the same in every process (pytest-xdist)."""

    def __repr__(self) -> str:
        return "<deleted>"


_MISSING = _Missing()

# (dotted key, new value or _MISSING to delete, the exact message)
BAD_EDITS = [
    ("grid.mask_ratios", [0.0, 0.5], "params.yaml: grid.mask_ratios[0]=0.0: a masking ratio must be in (0, 1)"),
    ("grid.mask_ratios", [0.5, 1.0], "params.yaml: grid.mask_ratios[1]=1.0: a masking ratio must be in (0, 1)"),
    ("grid.mask_ratios", [0.5, -0.2], "params.yaml: grid.mask_ratios[1]=-0.2: a masking ratio must be in (0, 1)"),
    ("grid.mask_ratios", [0.5, 0.5], "params.yaml: grid.mask_ratios[1]=0.5: repeated grid value"),
    ("grid.mask_ratios", [], "params.yaml: grid.mask_ratios=[]: must list at least one value"),
    ("grid.mask_ratios", "0.5", "params.yaml: grid.mask_ratios='0.5': Input should be a valid list"),
    ("grid.mask_units", [5], "params.yaml: grid.mask_units[0]=5: a masking unit must be a multiple of model.vit_patch=2"),
    ("grid.mask_units", [16], "params.yaml: grid.mask_units[0]=16: a masking unit must divide data.image_size=24"),
    ("grid.mask_units", [2, 2], "params.yaml: grid.mask_units[1]=2: repeated grid value"),
    ("grid.mask_units", [0], "params.yaml: grid.mask_units[0]=0: must be >= 1"),
    ("grid.seeds", [-1], "params.yaml: grid.seeds[0]=-1: must be >= 0"),
    ("grid.seeds", [0, 0], "params.yaml: grid.seeds[1]=0: repeated grid value"),
    (
        "grid.mask_ratios", [0.99],
        "params.yaml: grid cell mask_ratio=0.99, mask_unit=4: keeps 0 visible and 36 hidden of 36 "
        "masking units; each needs at least one",
    ),
    (
        "grid.mask_units", [24],
        "params.yaml: grid cell mask_ratio=0.1, mask_unit=24: keeps 0 visible and 1 hidden of 1 "
        "masking units; each needs at least one",
    ),
    ("grid.colour", 1, "params.yaml: unknown key 'grid.colour'"),
    ("train.epochs", 0, "params.yaml: train.epochs=0: Input should be greater than 0"),
    ("train.epochs", "10", "params.yaml: train.epochs='10': Input should be a valid integer"),
    ("train.device", "tpu", "params.yaml: train.device='tpu': Input should be 'auto', 'cpu' or 'cuda'"),
    ("train.betas", [0.9], "params.yaml: train.betas=[0.9]: needs exactly two values (beta1, beta2)"),
    ("train.betas", [0.9, 1.0], "params.yaml: train.betas[1]=1.0: Adam betas must be in [0, 1)"),
    ("model.num_heads", 5, "params.yaml: model.embed_dim=64: must be divisible by num_heads=5"),
    ("model.vit_patch", 5, "params.yaml: model.vit_patch=5: must divide data.image_size=24"),
    ("data.depth", 0, "params.yaml: data.depth=0: Input should be greater than or equal to 1"),
    (
        "data.latent_dims", [8, 1, 8],
        "params.yaml: data.latent_dims[1]=1: a parent's four children together need at least its "
        "dimension (8), so each child at least 2, for the map to be invertible",
    ),
    (
        "data.noise_scales", [1.0, 0.7],
        "params.yaml: data.noise_scales=[1.0, 0.7]: needs depth + 1 = 3 entries (one per level)",
    ),
    ("data.image_size", 20, "params.yaml: grid.mask_units[2]=6: a masking unit must divide data.image_size=20"),
    ("probe.ridge_alphas", [], "params.yaml: probe.ridge_alphas=[]: must list at least one alpha"),
    ("probe.pooling", "max", "params.yaml: probe.pooling='max': Input should be 'mean' or 'cls'"),
    ("probe.cv_folds", 1, "params.yaml: probe.cv_folds=1: Input should be greater than or equal to 2"),
    ("model.norm_pix_loss", "yes", "params.yaml: model.norm_pix_loss='yes': Input should be a valid boolean"),
    ("probe.batch_size", _MISSING, "params.yaml: missing key 'probe.batch_size'"),
]


def edited(key: str, value: object) -> dict:
    raw = copy.deepcopy(DEFAULT)
    section, leaf = key.split(".")
    if value is _MISSING:
        del raw[section][leaf]
    else:
        raw[section][leaf] = value
    return raw


def test_default_params_are_valid():
    parse_params(copy.deepcopy(DEFAULT))


@pytest.mark.parametrize("key,value,message", BAD_EDITS, ids=[f"{k}={v!r}" for k, v, _ in BAD_EDITS])
def test_bad_edit_gives_its_one_line_message(key, value, message):
    with pytest.raises(ParamsError) as err:
        parse_params(edited(key, value))
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("key,value,message", [BAD_EDITS[0], BAD_EDITS[6], BAD_EDITS[14], BAD_EDITS[-1]])
def test_cli_check_exits_2_with_one_line(tmp_path, key, value, message):
    _write(tmp_path, edited(key, value))
    proc = subprocess.run(
        [sys.executable, "-m", "mae_hlvm", "check", "--params", "params.yaml"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].endswith(message), lines


def test_cli_check_accepts_the_repository_params():
    proc = subprocess.run([sys.executable, "-m", "mae_hlvm", "check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "valid" in proc.stdout


def test_snakemake_stops_before_any_job_with_the_same_message(tmp_path):
    key, value, message = BAD_EDITS[6]
    for name in ("Snakefile",):
        (tmp_path / name).write_text((REPO / name).read_text())
    _write(tmp_path, edited(key, value))
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["snakemake", "-n", "--cores", "1"], cwd=tmp_path, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"error: {message}" in out
    assert "Traceback" not in out and "rule " not in out and "Job stats" not in out


# ----------------------------------------------------------------------------- properties

IMAGE = 24
PATCHES = [2, 4, 6, 8, 12]  # multiples of vit_patch 2 that tile 24 into >= 4 units


@settings(max_examples=60, deadline=None)
@given(
    ratios=st.lists(st.floats(0.05, 0.75), min_size=1, max_size=6, unique=True),
    patches=st.lists(st.sampled_from(PATCHES), min_size=1, max_size=5, unique=True),
    seeds=st.lists(st.integers(0, 10_000), min_size=1, max_size=4, unique=True),
)
def test_valid_random_grids_are_accepted(ratios, patches, seeds):
    raw = copy.deepcopy(DEFAULT)
    raw["grid"] = {"mask_ratios": ratios, "mask_units": patches, "seeds": seeds}
    params = parse_params(raw)
    assert params.grid.mask_ratios == ratios


@settings(max_examples=60, deadline=None)
@given(
    bad=st.one_of(st.floats(max_value=0.0, allow_nan=False), st.floats(min_value=1.0, allow_nan=False)),
    where=st.integers(0, 2),
)
def test_any_ratio_outside_open_unit_interval_is_rejected_by_name(bad, where):
    ratios = [0.3, 0.5]
    ratios.insert(where, bad)
    raw = copy.deepcopy(DEFAULT)
    raw["grid"]["mask_ratios"] = ratios
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert str(err.value).startswith(f"params.yaml: grid.mask_ratios[{where}]=")


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.sampled_from(PATCHES), min_size=1, max_size=4, unique=True), data=st.data())
def test_a_repeated_grid_value_is_rejected(values, data):
    dup_at = data.draw(st.integers(0, len(values) - 1))
    raw = copy.deepcopy(DEFAULT)
    raw["grid"]["mask_units"] = values + [values[dup_at]]
    with pytest.raises(ParamsError, match=rf"grid.mask_units\[{len(values)}\]={values[dup_at]}: repeated"):
        parse_params(raw)


@settings(max_examples=40, deadline=None)
@given(key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12), section=st.sampled_from(
    ["data", "model", "train", "probe", "grid"]))
def test_any_unknown_key_is_named(key, section):
    raw = copy.deepcopy(DEFAULT)
    if key in raw[section] or f"{section}.{key}" in RENAMED_KEYS:
        return
    raw[section][key] = 1
    with pytest.raises(ParamsError, match="unknown key"):
        parse_params(raw)
    assert f"{section}.{key}" in _message(raw)


def test_the_robustness_section_is_named_with_its_new_name():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["robustness"] = raw.pop("stability")
    assert _message(raw) == ("params.yaml: the 'robustness:' section is now 'stability (budget_factor, seed, mask_ratios, "
                             "mask_units, real)': rename it (README, Changelog)")


def test_the_stability_set_must_be_of_the_grid_only_when_it_is_on():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["stability"]["mask_ratios"] = [0.33]
    assert _message(raw) == (f"params.yaml: stability.mask_ratios[0]=0.33: the stability set must be cells of the grid; "
                             f"grid.mask_ratios is {raw['grid']['mask_ratios']}")
    raw["stability"]["enabled"] = False
    assert _message(raw) == ""
    raw["stability"].update(enabled=True, mask_ratios=[0.1], seed=5)
    assert _message(raw) == f"params.yaml: stability.seed=5: must be one of grid.seeds {raw['grid']['seeds']}"


@pytest.mark.parametrize("section", ["grid"])
def test_the_old_name_of_the_masking_unit_is_named_with_the_new_one(section):
    """A params file from before the rename (patch_sizes) is told the key's new name, before any other check."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw[section]["patch_sizes"] = raw[section].pop("mask_units")
    assert _message(raw) == (
        f"params.yaml: {section}.patch_sizes is now called {section}.mask_units (the masking unit has one name): rename the key"
    )


def _message(raw: dict) -> str:
    try:
        parse_params(raw)
    except ParamsError as err:
        return str(err)
    return ""
