"""The one schema for ``params.yaml``, and its loader.

Every step of the pipeline, the Snakefile and the test suite load parameters through
:func:`load_params`, so a bad edit stops everything with the same one-line message
before any job runs. The config is flat and typed (nanoGPT style): five sections, a
grid and the optional real-image track (``real:``), each a model of
:mod:`mae_hlvm.core.sections`. Cross-field rules (a masking unit that does not tile the
image, a cell that keeps no visible token) are checked here too, because they are
properties of the params, not of a run; so are the sizes a run would need
(:mod:`mae_hlvm.core.limits`). The file is read strictly (:mod:`mae_hlvm.core.params_yaml`).

Validation only: nothing here computes a value a result holds, so it is no code dep of
any stage; the steps take from it only the schema classes, :class:`ParamsError` and the
loader (``pipeline.SCHEMA_NAMES``, checked by tests/test_layers.py). The cell geometry
the rules use is :mod:`mae_hlvm.core.cells`, a code dep of every stage computing with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from mae_hlvm.core import limits
from mae_hlvm.core.cells import check_cells
from mae_hlvm.core.errors import ParamsError, shown
from mae_hlvm.core.limits import MAX_IMAGE_PASSES, MAX_MODEL_WEIGHTS, check_passes, check_tokens, format_gib
from mae_hlvm.core.params_yaml import read_params_text, read_params_yaml
from mae_hlvm.core.real_section import RealParams
from mae_hlvm.core.sections import (
    DataParams,
    GridParams,
    ModelParams,
    ProbeParams,
    Section,
    StabilityParams,
    TrainParams,
)


class Params(Section):
    data: DataParams
    model: ModelParams
    train: TrainParams
    probe: ProbeParams
    grid: GridParams
    # optional so that params files written before the real track stay valid (track off)
    real: RealParams | None = None
    # optional likewise: absent means no stability set (every claim then reads "no stability run")
    stability: StabilityParams | None = None

    @model_validator(mode="before")
    @classmethod
    def _real_not_blank(cls, raw: Any) -> Any:
        # `real:` with nothing under it (keys lost to a bad indent, or deleted) would
        # silently turn the track off: absent means off, blank is a mistake.
        if isinstance(raw, dict) and "real" in raw and raw["real"] is None:
            raise ValueError(
                "real: the section is empty (null): give its keys, set real.enabled: false, or delete the "
                "'real:' line to turn the real-image track off"
            )
        return raw

    @model_validator(mode="after")
    def _cells_feasible(self) -> Params:
        grid = self.grid
        check_cells(("data.image_size", self.data.image_size), ("model.vit_patch", self.model.vit_patch),
                    [(f"grid.mask_units[{i}]", u) for i, u in enumerate(grid.mask_units)],
                    [(r, u) for u in grid.mask_units for r in grid.mask_ratios], "grid cell")
        return self

    @model_validator(mode="after")
    def _runs_feasible(self) -> Params:
        data, model, train, probe = self.data, self.model, self.train, self.probe
        size, vit = data.image_size, model.vit_patch
        # probe._check_inputs and probe.region_features: every latent node of the deepest
        # level must own at least one token, so the ViT patch must fit inside a leaf block.
        leaf = size // 2**data.depth
        if vit > leaf:
            raise ValueError(
                f"model.vit_patch={vit}: larger than a leaf's {leaf}x{leaf}-pixel block (data.image_size={size} / "
                f"2**data.depth); the probes need a token per leaf: use model.vit_patch <= {leaf}"
            )
        check_tokens("model.vit_patch", "model.vit_patch", size, vit, "data.image_size")
        _check_weights(model, data.channels, vit, "data.channels", "model.vit_patch")
        if self.real is not None:
            _check_weights(model, self.real.channels, self.real.vit_patch, "real.channels", "real.vit_patch")
        check_passes("train.epochs", "train.epochs", train.epochs, data.n_train, "data.n_train")
        per_class = data.n_train // data.n_classes
        if probe.cv_folds > per_class:
            raise ValueError(
                f"probe.cv_folds={probe.cv_folds}: stratified CV needs that many train images of every class, and "
                f"data.n_train={data.n_train} / data.n_classes={data.n_classes} gives {per_class} on average "
                f"(the probe would silently use fewer folds): use at most {per_class}"
            )
        if self.real is not None and train.warmup_epochs >= self.real.epochs:
            raise ValueError(
                f"train.warmup_epochs={train.warmup_epochs}: the real track shares it and must warm up for less than "
                f"real.epochs={self.real.epochs}, or its learning rate never leaves the warmup ramp: lower "
                "train.warmup_epochs or raise real.epochs"
            )
        return self

    @model_validator(mode="after")
    def _whole_leaves(self) -> Params:
        # the copy tree's shared set c is defined for masks of whole leaves (docs/theorem.md): a leaf
        # half hidden is determined by neither part
        leaf = self.data.image_size // 2**self.data.depth
        if self.data.generator == "copytree":
            for i, u in enumerate(self.grid.mask_units):
                if u % leaf:
                    raise ValueError(
                        f"grid.mask_units[{i}]={u}: the copytree generator's leaves are {leaf}x{leaf}-pixel blocks and "
                        "the theorem's shared set is defined for masking units of whole leaves: use multiples of "
                        f"{leaf} (or data.generator: quadtree)"
                    )
        return self

    @model_validator(mode="after")
    def _subset_of_grid(self) -> Params:
        # last, so that the grid's own problems are named first; nothing to check when the set is off
        st = self.stability
        if st is None or not st.enabled:
            return self
        for key in ("mask_ratios", "mask_units"):
            grid = getattr(self.grid, key)
            for i, v in enumerate(getattr(st, key)):
                if v not in grid:
                    raise ValueError(f"stability.{key}[{i}]={v}: the stability set must be cells of the grid; grid.{key} is {grid}")
        if st.seed not in self.grid.seeds:
            raise ValueError(f"stability.seed={st.seed}: must be one of grid.seeds {self.grid.seeds}")
        if st.real and self.real is not None and self.real.enabled and st.seed not in self.real.seeds:
            raise ValueError(f"stability.seed={st.seed}: must be one of real.seeds {self.real.seeds} (stability.real is on)")
        passes = self.train.epochs * st.budget_factor * self.data.n_train
        # (a grid budget already over the limit is train.epochs' error, named by its own check)
        if passes > MAX_IMAGE_PASSES and self.train.epochs * self.data.n_train <= MAX_IMAGE_PASSES:
            raise ValueError(
                f"stability.budget_factor={st.budget_factor}: {passes:.3g} image passes per cell, "
                f"over {MAX_IMAGE_PASSES:.0e}: lower it or train.epochs"
            )
        return self


def dataset_bytes(params: Params, track: str) -> int:
    """RAM the ``track``'s dataset takes as float32 ("synthetic": pixels and latents; "real")."""
    if track == "real":
        r = params.real
        return 4 * (r.n_train + r.n_test) * r.channels * r.image_size**2
    d = params.data
    latents = sum(4**level * dim for level, dim in enumerate(d.latent_dims))
    return 4 * (d.n_train + d.n_test) * (d.channels * d.image_size**2 + latents)


def model_weights(model: ModelParams, channels: int, vit_patch: int) -> int:
    """Weights of the MAE (encoder and decoder, as model.MaskedAutoencoder builds it), biases included."""
    return sum(_weight_terms(model, channels, vit_patch).values())


def _weight_terms(model: ModelParams, channels: int, vit_patch: int) -> dict[str, int]:
    def blocks(dim: int, depth: int) -> int:
        hidden = int(dim * model.mlp_ratio)
        attention = 4 * dim * dim + 4 * dim  # qkv and proj
        mlp = 2 * dim * hidden + hidden + dim
        return depth * (attention + mlp + 4 * dim)  # + two LayerNorms

    d, dd, patch = model.embed_dim, model.decoder_embed_dim, vit_patch * vit_patch * channels
    return {
        "encoder": blocks(d, model.depth) + 4 * d + d * dd + dd,  # cls, norm, decoder_embed
        "decoder": blocks(dd, model.decoder_depth) + 3 * dd,  # mask token, norm
        "patches": patch * (d + dd) + patch,  # patch embedding and prediction
    }


def _check_weights(model: ModelParams, channels: int, vit_patch: int, channels_key: str, vit_key: str) -> None:
    terms = _weight_terms(model, channels, vit_patch)
    n = sum(terms.values())
    if n <= MAX_MODEL_WEIGHTS:
        return
    # lead with the key that made the biggest part of the model too big
    biggest = max(terms, key=terms.__getitem__)
    if biggest == "patches":
        lead = (vit_key, vit_patch) if vit_patch * vit_patch >= channels else (channels_key, channels)
    elif model.mlp_ratio > 16:
        lead = ("model.mlp_ratio", model.mlp_ratio)
    else:
        dim, depth = ("embed_dim", "depth") if biggest == "encoder" else ("decoder_embed_dim", "decoder_depth")
        key = dim if getattr(model, dim) >= getattr(model, depth) else depth
        lead = (f"model.{key}", getattr(model, key))
    raise ValueError(
        f"{lead[0]}={lead[1]}: the MAE (model.embed_dim={model.embed_dim}, model.depth={model.depth}, "
        f"model.decoder_embed_dim={model.decoder_embed_dim}, model.decoder_depth={model.decoder_depth}, "
        f"model.mlp_ratio={model.mlp_ratio}, {vit_key}={vit_patch}, {channels_key}={channels}) has {n:.3g} weights, "
        f"over {MAX_MODEL_WEIGHTS:.0e} ({format_gib(16 * n)} to train with AdamW): make it smaller"
    )


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _lookup(raw: Any, loc: tuple[Any, ...]) -> Any:
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


# Keys renamed since a release (README, "Changelog"): an old params file gets the new name, not
# just "unknown key". The masking unit had two names, patch_size and mask_unit (issue 14).
RENAMED_KEYS = {
    "grid.patch_sizes": "grid.mask_units",
}
# Sections renamed since a release: the budget-robustness subset became the stability set (issue 25).
RENAMED_SECTIONS = {"robustness": "stability (budget_factor, seed, mask_ratios, mask_units, real)"}


def _one_line(err: ValidationError, raw: Any, source: str) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = _location(loc)
    value = _lookup(raw, loc)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {key!r}"
    if first["type"] == "missing":
        return f"{source}: missing key {key!r}"
    if first["type"] == "value_error":
        # Our validators name the offending entry themselves; add the path to it.
        if msg.startswith(("[", "=")):
            return f"{source}: {key}{msg}"
        if not loc:
            return f"{source}: {msg}"
        if isinstance(value, dict):
            return f"{source}: {key}.{msg}"
    if first["type"] == "finite_number":
        return f"{source}: {key}={value!r}: must be a finite number (.inf and .nan are not allowed): write a number"
    if first["type"] == "int_type" and isinstance(value, float):
        whole = f"write {int(value)}" if value.is_integer() else "write a whole number"
        return f"{source}: {key}={value!r}: {msg}; {whole} (no decimal point or exponent)"
    if first["type"] == "model_type" and value is None:
        return f"{source}: {key}: the section is empty (null): give its keys, indented under '{key}:'"
    if value is None:
        return f"{source}: {key}: no value (null): {msg}"
    return f"{source}: {key}={_short(value)}: {msg}"


def _short(value: Any, limit: int = 80) -> str:
    """repr of a value for a one-line message, cut in the middle when long (a 400-digit number)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 4 :]} ({len(text)} characters)"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; raise :class:`ParamsError` with one line."""
    if raw is None:
        raise ParamsError(f"{source}: the file is empty: it needs the sections data, model, train, probe and grid")
    if not isinstance(raw, dict):
        kind = {list: "a list", str: "a single text value"}.get(type(raw), f"a single {type(raw).__name__} value")
        raise ParamsError(
            f"{source}: expected a mapping of sections (data:, model:, train:, probe:, grid:), got {kind}"
        )
    if isinstance(raw.get("model"), dict) and "preset" in raw["model"]:
        raise ParamsError(
            f"{source}: model.preset: a preset is for profiles; params.yaml holds the widths themselves, so that both "
            "tools read the same values: write it with `python -m mae_hlvm profile <name>` from a profile naming the "
            "preset (profiles/paper/params.yaml does)"
        )
    if "extends" in raw:
        raise ParamsError(
            f"{source}: extends: is for profiles (profiles/<name>/params.yaml); DVC reads params.yaml as it stands, so it "
            "must be complete: write it with `python -m mae_hlvm profile <name>`"
        )
    for old, new in RENAMED_SECTIONS.items():
        if old in raw:
            raise ParamsError(f"{source}: the '{old}:' section is now '{new}': rename it (README, Changelog)")
    for old, new in RENAMED_KEYS.items():
        section, _, leaf = old.partition(".")
        if isinstance(raw.get(section), dict) and leaf in raw[section]:
            raise ParamsError(f"{source}: {old} is now called {new} (the masking unit has one name): rename the key")
    limits.check_lists(raw, source)  # sizes first: validating 10,000 values takes seconds
    limits.check_grid_size(raw, source)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_one_line(err, raw, source)) from None


def in_profiles_dir(path: Path) -> bool:
    """Whether ``path`` is a profile, ``profiles/<name>/params.yaml`` (mae_hlvm.core.profiles)."""
    return path.name == "params.yaml" and path.resolve().parent.parent.name == "profiles"


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; every failure is one :class:`ParamsError` line.

    The Snakefile, ``python -m mae_hlvm check`` and every step call this one function.
    """
    path = Path(path)
    source = shown(path)
    raw = read_params_yaml(read_params_text(path, source), source)
    if in_profiles_dir(path):
        from mae_hlvm.core.profiles import load_profile  # a profile: its values over the default's

        raw = load_profile(path)
    return parse_params(raw, source)


class _RealOnly(Section):
    # Wrapping the section gives error messages the ``real.`` prefix config.py users see.
    real: RealParams


def parse_real(raw: Any, source: str = "params.yaml") -> RealParams:
    """Validate a ``real:`` mapping; every failure is one :class:`ParamsError` line."""
    wrapped = {"real": raw}
    try:
        return _RealOnly.model_validate(wrapped).real
    except ValidationError as err:
        raise ParamsError(_one_line(err, wrapped, source)) from None
