"""Profiles list only what differs from the default; `python -m mae_hlvm profile` writes params.yaml.

Issue 14 item 4: override-only profiles and MAE-style model presets, with params.yaml kept
complete and explicit (DVC reads it as it stands; Snakemake reads it through config.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from mae_hlvm.core import profiles
from mae_hlvm.core.config import ModelParams, ParamsError, load_params
from mae_hlvm.core.params_yaml import read_params_yaml
from mae_hlvm.core.profiles import MODEL_PRESETS

NAMES = sorted(p.parent.name for p in (REPO / "profiles").glob("*/params.yaml"))


def rendered(name: str) -> dict:
    return read_params_yaml(profiles.render(name, REPO))


def test_the_committed_params_yaml_is_what_the_default_profile_writes():
    assert "default" in NAMES and {"gpu", "paper"} <= set(NAMES)
    assert profiles.render("default", REPO) == (REPO / "params.yaml").read_text()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "default"])
def test_a_profile_lists_only_keys_whose_value_differs_from_the_default(name):
    default = rendered("default")
    raw = yaml.safe_load((REPO / "profiles" / name / "params.yaml").read_text())
    assert raw.pop("extends") == "default"
    for section, keys in raw.items():
        assert section in default, section
        if keys is None:  # a dropped section
            continue
        for key, value in keys.items():
            if key == "preset":
                assert any(default[section][k] != v for k, v in MODEL_PRESETS[value].items()), key
            else:
                assert default[section][key] != value, f"{name}: {section}.{key} repeats the default's value"


@pytest.mark.parametrize("name", NAMES)
def test_every_profile_writes_a_valid_complete_params_file_with_its_values(name, tmp_path):
    text = profiles.render(name, REPO)
    out = tmp_path / "params.yaml"
    out.write_text(text)
    params = load_params(out)  # complete: config.py's own checks, as any tool reads it
    assert params == load_params(REPO / "profiles" / name / "params.yaml")
    assert "preset:" not in text and "extends:" not in text
    assert profiles.written_by(text) == name


def test_the_gpu_and_paper_profiles_hold_their_recipes():
    gpu, paper, default = rendered("gpu"), rendered("paper"), rendered("default")
    assert (gpu["data"]["n_train"], gpu["train"]["epochs"], gpu["train"]["job"]) == (100000, 30, "seed")
    # the stability set: the whole grid on the GPU, a subset on the CPU default; both with the real cells
    assert gpu["stability"]["mask_ratios"] == gpu["grid"]["mask_ratios"] and gpu["stability"]["mask_units"] == [2, 4]
    assert default["stability"]["mask_ratios"] == [0.1, 0.5, 0.9] and gpu["stability"]["real"] and default["stability"]["real"]
    assert paper["stability"]["mask_units"] == paper["grid"]["mask_units"]
    assert gpu["model"] == default["model"]  # untouched sections are the default's
    vit_b = {k: paper["model"][k] for k in MODEL_PRESETS["mae_vit_base"]}
    assert vit_b == MODEL_PRESETS["mae_vit_base"]
    assert (paper["model"]["vit_patch"], paper["model"]["norm_pix_loss"]) == (2, True)


def test_comments_travel_with_their_lines():
    text = profiles.render("gpu", REPO)
    # the profile's own comment on a key it changes, and the default's on a key it keeps
    assert "n_train: 100000          # 30 epochs = 3M passes per cell" in text
    assert "image_size: 16          # pixels per side" in text
    assert "smoke budget" not in text  # the default's comment on train.epochs went with its value
    paper = profiles.render("paper", REPO)
    assert "embed_dim: 768          # preset mae_vit_base" in paper


def test_two_profiles_applied_in_turn_do_not_mix(tmp_path):
    out = tmp_path / "params.yaml"
    profiles.write_profile("gpu", out, root=REPO)
    profiles.write_profile("paper", out, root=REPO)
    assert out.read_text() == profiles.render("paper", REPO)
    profiles.write_profile("default", out, root=REPO)
    assert out.read_text() == (REPO / "params.yaml").read_text()


def test_a_params_file_with_edits_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "params.yaml"
    profiles.write_profile("gpu", out, root=REPO)
    edited = out.read_text().replace("epochs: 30", "epochs: 31", 1)
    out.write_text(edited)
    with pytest.raises(ParamsError, match=r"holds edits to profile gpu: train\.epochs; .*--force"):
        profiles.write_profile("paper", out, root=REPO)
    assert out.read_text() == edited
    profiles.write_profile("paper", out, force=True, root=REPO)
    assert out.read_text() == profiles.render("paper", REPO)
    out.write_text("data: {}\n")  # not written by a profile at all
    with pytest.raises(ParamsError, match="was not written by a profile"):
        profiles.write_profile("default", out, root=REPO)


# ----------------------------------------------------------------------------- small trees solved by hand

BASE = """# base
data:                     # the data
  n_train: 3000           # smoke
  n_test: 10
  latent_dims: [1, 2]     # per level
                          # (a second line)

model:
  vit_patch: 2
  preset: mae_vit_mini    # the small one
  norm_pix_loss: false

extra:
  on: 1
"""


def small_tree(tmp_path: Path, profile: str) -> Path:
    (tmp_path / "profiles" / "default").mkdir(parents=True)
    (tmp_path / "profiles" / "default" / "params.yaml").write_text(BASE)
    (tmp_path / "profiles" / "p").mkdir()
    path = tmp_path / "profiles" / "p" / "params.yaml"
    path.write_text(profile)
    return path


def body(text: str) -> str:
    """The text after the generated header (the first four lines)."""
    return "\n".join(text.splitlines()[4:]) + "\n"


def test_overrides_replace_lines_in_place_and_presets_expand(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "_check", lambda *a: None)  # the toy sections are not a valid params file
    small_tree(tmp_path, "# mine\nextends: default\n\ndata:\n  latent_dims: [3, 4]  # wider\n\nmodel:\n"
                         "  preset: mae_vit_base\n  depth: 2\n\nextra: null\n")
    widths = MODEL_PRESETS["mae_vit_base"]
    model = "\n".join(
        ("  depth: 2" if k == "depth" else f"{f'  {k}: {v}'.ljust(25)} # preset mae_vit_base") for k, v in widths.items()
    )
    expected = ("# mine\n\ndata:                     # the data\n  n_train: 3000           # smoke\n  n_test: 10\n"
                "  latent_dims: [3, 4]  # wider\n\nmodel:\n  vit_patch: 2\n" + model + "\n  norm_pix_loss: false\n")
    assert body(profiles.render("p", tmp_path)) == expected


@pytest.mark.parametrize(("profile", "message"), [
    ("extends: default\ndata:\n  n_trian: 5\n", r"data\.n_trian: is not a key of profiles/default/params\.yaml"),
    ("extends: default\nnope:\n  a: 1\n", "nope: is not a section of profiles/default"),
    ("extends: gpu\n", "profiles extend `default` only"),
    ("data:\n  n_train: 5\n", "a profile starts with `extends: default`"),
    ("extends: default\nmodel:\n  preset: mae_vit_giant\n", "'mae_vit_giant' is not a preset: use one of mae_vit_base"),
    ("extends: default\ndata:\n  latent_dims:\n    - 1\n", r"`latent_dims:` has its value on the next lines"),
    ("extends: default\ndata:\n    n_train: 5\n", "line 3: not a `section:` line"),
    ("extends: default\nextra: 3\n", "a section is changed key by key, or dropped with `null`"),
    ("extends: default\ndata:\n  n_test: 5\n  n_test: 6\n", r"line 4: data\.n_test is given twice"),
    ("extends: default\ndata:\n  n_test: 5\ndata:\n  n_train: 6\n", "line 4: section data: is given twice"),
])
def test_a_bad_profile_is_one_line_naming_the_problem(tmp_path, profile, message):
    small_tree(tmp_path, profile)
    with pytest.raises(ParamsError, match=message) as err:
        profiles.render("p", tmp_path)
    assert "\n" not in str(err.value)


def test_the_default_names_every_key_of_the_schema():
    """DVC tracks the keys a stage reads as params.yaml spells them: a key left to its schema
    default cannot be tracked on its own, and a stage reading its whole section would rerun
    in DVC alone the day someone writes it out (as probe.masked_masks once was)."""
    params, raw = load_params(REPO / "params.yaml"), rendered("default")
    for section in ("data", "model", "train", "probe", "grid", "real", "stability"):
        missing = set(type(getattr(params, section)).model_fields) - set(raw[section])
        assert not missing, f"params.yaml: {section} lacks {sorted(missing)}"


def test_params_yaml_itself_must_be_complete_and_explicit(tmp_path):
    for text, message in [("extends: default\n", "extends: is for profiles"),
                          ("model:\n  preset: mae_vit_mini\n", "model.preset: a preset is for profiles")]:
        path = tmp_path / "params.yaml"
        path.write_text(text)
        with pytest.raises(ParamsError, match=message):
            load_params(path)


def test_presets_are_valid_models_and_the_default_is_the_mini_one():
    for name, widths in MODEL_PRESETS.items():
        ModelParams(vit_patch=16, norm_pix_loss=True, **widths)  # validates, heads divide, etc.
        assert name.startswith("mae_vit_")
    default = rendered("default")["model"]
    assert {k: default[k] for k in MODEL_PRESETS["mae_vit_mini"]} == MODEL_PRESETS["mae_vit_mini"]


def test_the_cli_writes_a_profile_and_refuses_in_one_line(tmp_path):
    out = tmp_path / "params.yaml"
    run = subprocess.run([sys.executable, "-m", "mae_hlvm", "profile", "gpu", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_text() == profiles.render("gpu", REPO)
    bad = subprocess.run([sys.executable, "-m", "mae_hlvm", "profile", "nosuch", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "no such profile; profiles here: default, gpu, paper" in bad.stderr
