"""Profiles: a named starting point for ``params.yaml`` that lists only what differs.

``profiles/default/params.yaml`` is the complete default (the CPU smoke run). Every other
``profiles/<name>/params.yaml`` starts with ``extends: default`` and lists only the keys it
changes, each with its own comment; a section set to ``null`` is dropped (``robustness:
null``). A model section may name a preset (``preset: mae_vit_base``,
:data:`MODEL_PRESETS`): its widths are written out, and keys the
profile gives explicitly win.

``python -m mae_hlvm profile <name>`` (``make profile P=<name>``) writes ``params.yaml``
from the default with the profile's lines in place of the default's, comments kept, so the
file DVC and Snakemake read stays complete and explicit (no preset is resolved behind
either tool's back). It always starts again from the default, never from the current
``params.yaml``, so two profiles applied in turn do not mix; and it refuses to overwrite a
``params.yaml`` holding edits of the user's (``--force`` drops them).

Editing this module reruns nothing: it only writes params.yaml, whose values both tools
then read; no step imports it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mae_hlvm.core.config import ParamsError, in_profiles_dir, parse_params
from mae_hlvm.core.params_yaml import read_params_yaml

DEFAULT = "default"
PROFILES_DIR = "profiles"
PARAMS_NAME = "params.yaml"
COMMENT_COLUMN = 25  # the params files align their comments after this column
_TOP = re.compile(r"(?P<key>[A-Za-z_]\w*):(?P<rest>.*)\Z")
_KEY = re.compile(r"  (?P<key>[A-Za-z_]\w*):(?P<rest>.*)\Z")
_WRITTEN = re.compile(r"# Written by `python -m mae_hlvm profile (?P<name>\S+)`")

# Named MAE sizes (as facebookresearch/mae's ``mae_vit_base_patch16``; the ViT patch is
# not part of the name here, because each track sets its own: model.vit_patch and
# real.vit_patch). A profile names one (``model: preset: mae_vit_base``) and
# ``python -m mae_hlvm profile`` writes its widths into params.yaml.
MODEL_PRESETS: dict[str, dict[str, int | float]] = {
    # this project's CPU-sized MAE: the default of both tracks
    "mae_vit_mini": {"embed_dim": 64, "depth": 3, "num_heads": 4, "decoder_embed_dim": 32, "decoder_depth": 1,
                     "decoder_num_heads": 4, "mlp_ratio": 2.0},
    # MAE's ViT-B, -L and -H encoders with its 8-block, 512-wide decoder (the paper's ViT-B)
    "mae_vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "decoder_embed_dim": 512, "decoder_depth": 8,
                     "decoder_num_heads": 16, "mlp_ratio": 4.0},
    "mae_vit_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "decoder_embed_dim": 512, "decoder_depth": 8,
                      "decoder_num_heads": 16, "mlp_ratio": 4.0},
    "mae_vit_huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "decoder_embed_dim": 512, "decoder_depth": 8,
                     "decoder_num_heads": 16, "mlp_ratio": 4.0},
}


@dataclass
class _Key:
    """One ``  key: value  # comment`` line and the comment lines under it."""

    name: str
    value: str
    lines: list[str]


@dataclass
class _Section:
    name: str
    head: str  # the ``section:`` line, its comment included
    keys: list[_Key] = field(default_factory=list)
    value: str | None = None  # a top-level scalar (``extends: default``, ``robustness: null``)


@dataclass
class _Profile:
    header: list[str]  # the comment block before the first section
    sections: list[_Section]

    def section(self, name: str) -> _Section | None:
        return next((s for s in self.sections if s.name == name), None)


def profile_path(name: str, root: Path = Path(".")) -> Path:
    """``gpu`` -> profiles/gpu/params.yaml; a path to a .yaml file is taken as it is."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    return root / PROFILES_DIR / name / PARAMS_NAME


def _split_comment(text: str) -> tuple[str, str]:
    """``'[1, 2]  # note'`` -> (``'[1, 2]'``, ``'# note'``): a ``#`` after a space, outside quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].strip(), text[i:]
    return text.strip(), ""


def _parse(text: str, source: str) -> _Profile:
    """The line structure of a params file: sections of one-line ``key: value`` entries."""
    header: list[str] = []
    sections: list[_Section] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not sections:
            if not stripped or stripped.startswith("#"):
                header.append(line)
                continue
        top, key = _TOP.match(line), _KEY.match(line)
        if top:
            if any(s.name == top["key"] for s in sections):
                raise ParamsError(f"{source}: line {number}: section {top['key']}: is given twice: keep one")
            value, _ = _split_comment(top["rest"])
            sections.append(_Section(top["key"], line, value=value or None))
        elif key and sections and sections[-1].value is None:
            value, _ = _split_comment(key["rest"])
            if not value:
                raise ParamsError(
                    f"{source}: line {number}: `{key['key']}:` has its value on the next lines; a params file "
                    "keeps every value on its key's line (`key: value` or `key: [a, b]`)"
                )
            if any(k.name == key["key"] for k in sections[-1].keys):
                raise ParamsError(f"{source}: line {number}: {sections[-1].name}.{key['key']} is given twice: keep one")
            sections[-1].keys.append(_Key(key["key"], value, [line]))
        elif not stripped and sections[-1].keys:
            sections[-1].keys.append(_Key("", "", [line]))  # a blank line ends with the section before it
        elif not stripped:
            sections[-1].head += "\n"
        elif stripped.startswith("#") and sections and sections[-1].keys:
            sections[-1].keys[-1].lines.append(line)  # a comment under a key continues its comment
        elif stripped.startswith("#") and sections:
            sections[-1].head += "\n" + line
        else:
            raise ParamsError(
                f"{source}: line {number}: not a `section:` line, a `  key: value` line or a comment: a params "
                "file has two levels, sections and their keys, two spaces in"
            )
    return _Profile(header, sections)


def _preset_keys(name: str, source: str) -> list[_Key]:
    """A model preset's widths as key lines, each saying where it comes from."""
    if name not in MODEL_PRESETS:
        raise ParamsError(
            f"{source}: model.preset {name!r} is not a preset: use one of {', '.join(sorted(MODEL_PRESETS))} "
            "(mae_hlvm.core.profiles.MODEL_PRESETS) or give the widths"
        )
    out = []
    for key, value in MODEL_PRESETS[name].items():
        text = "true" if value is True else "false" if value is False else str(value)
        line = f"  {key}: {text}"
        out.append(_Key(key, text, [f"{line.ljust(COMMENT_COLUMN)} # preset {name}"]))
    return out


def _expand_presets(profile: _Profile, source: str) -> None:
    """Replace a ``preset:`` line by its widths; keys the section gives explicitly win."""
    for section in profile.sections:
        preset = next((k for k in section.keys if k.name == "preset"), None)
        if preset is None:
            continue
        if section.name != "model":
            raise ParamsError(f"{source}: {section.name}.preset: only the model section has presets")
        explicit = {k.name for k in section.keys}
        expanded = [k for k in _preset_keys(preset.value.strip("\"'"), source) if k.name not in explicit]
        at = section.keys.index(preset)
        section.keys[at:at + 1] = expanded


def _header(name: str, profile: _Profile) -> list[str]:
    own = list(profile.header)
    while own and not own[-1].strip():
        own.pop()
    over = "" if name == DEFAULT else f" over profiles/{DEFAULT}/"
    return [
        "# params.yaml: the one file a user edits; src/mae_hlvm/core/config.py validates it before any job runs.",
        f"# Written by `python -m mae_hlvm profile {name}` ({profile_path(name)}{over}); edit it",
        "# freely. `make profile P=<name>` rewrites it from a profile and refuses while it holds your edits.",
        "#",
        *own,
        "",
    ]


def render(name: str, root: Path = Path(".")) -> str:
    """The complete params.yaml text of profile ``name`` (``default``, ``gpu``, or a path)."""
    path = profile_path(name, root)
    source = str(path)
    profile = _parse(_read(path), source)
    extends = profile.section("extends")
    # a file profiles/<name>/params.yaml extends the default beside it, wherever it is run from
    base_path = path.resolve().parent.parent / DEFAULT / PARAMS_NAME if in_profiles_dir(path) else profile_path(DEFAULT, root)
    if extends is None:
        if path.resolve() != base_path.resolve():
            raise ParamsError(f"{source}: a profile starts with `extends: {DEFAULT}` and lists only what differs")
        base, overrides = profile, _Profile([], [])
    else:
        if extends.value != DEFAULT:
            raise ParamsError(
                f"{source}: extends: {extends.value}: profiles extend `{DEFAULT}` only (one level: what a profile "
                "changes is always read against the default)"
            )
        base = _parse(_read(base_path), str(base_path))
        if base.section("extends") is not None:
            raise ParamsError(f"{base_path}: the default profile is complete: it extends nothing")
        overrides = profile
    _expand_presets(base, str(base_path))
    _expand_presets(overrides, source)
    out = _header(name, profile)
    body = _merge(base, overrides, source)
    text = "\n".join(out + body).rstrip("\n") + "\n"
    _check(text, base, overrides, source)
    return text


def _merge(base: _Profile, overrides: _Profile, source: str) -> list[str]:
    """The base's lines with each overridden key's line replaced by the profile's."""
    changes = {s.name: s for s in overrides.sections if s.name != "extends"}
    for name in changes:
        if base.section(name) is None:
            raise ParamsError(f"{source}: {name}: is not a section of profiles/{DEFAULT}/{PARAMS_NAME}")
    lines: list[str] = []
    for section in base.sections:
        change = changes.get(section.name)
        if change is not None and change.value is not None:
            if change.value not in ("null", "~"):
                raise ParamsError(f"{source}: {section.name}: {change.value}: a section is changed key by key, or "
                                  "dropped with `null`")
            continue  # dropped, with the blank line after it
        # a section line of the profile's replaces the default's when it says something (a comment)
        lines.append(change.head if change is not None and "#" in change.head else section.head)
        given = {k.name: k for k in (change.keys if change else []) if k.name}
        known = {k.name for k in section.keys if k.name}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ParamsError(
                f"{source}: {section.name}.{unknown[0]}: is not a key of profiles/{DEFAULT}/{PARAMS_NAME}: check its "
                "spelling (a profile changes keys, it does not add them)"
            )
        for key in section.keys:
            lines.extend(given[key.name].lines if key.name in given else key.lines)
    return lines


def _check(text: str, base: _Profile, overrides: _Profile, source: str) -> None:
    """The written file must validate, and hold exactly the default's values with the profile's on top."""
    raw = read_params_yaml(text, f"{source} (as params.yaml)")
    parse_params(raw, f"{source} (as params.yaml)")

    def values(profile: _Profile) -> dict[str, Any]:
        return read_params_yaml("\n".join(
            line for s in profile.sections if s.name != "extends"
            for line in ([s.head.splitlines()[0]] + [k.lines[0] for k in s.keys if k.name])
        ), source) or {}

    want = values(base)
    for name, section in values(overrides).items():
        if section is None:
            want.pop(name, None)
        else:
            want[name] = {**want[name], **section}
    if raw != want:
        raise ParamsError(f"{source}: writing the profile changed values it does not list (a bug in mae_hlvm.core.profiles)")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        names = sorted(p.parent.name for p in path.parent.parent.glob(f"*/{PARAMS_NAME}")) if path.parent.parent.is_dir() else []
        raise ParamsError(f"{path}: no such profile; profiles here: {', '.join(names) or 'none'}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: cannot be read as UTF-8 text ({err.__class__.__name__})") from None


def load_profile(path: Path) -> Any:
    """A profile file's complete values (what ``params.yaml`` would hold), as plain data."""
    return read_params_yaml(render(str(path)), str(path))


def written_by(text: str) -> str | None:
    """The profile a params.yaml says it was written from (its header), or None."""
    match = _WRITTEN.search("\n".join(text.splitlines()[:3]))
    return match["name"] if match else None


def edited_keys(current: str, written: str) -> list[str]:
    """``section.key`` values where ``current`` differs from ``written`` (both params texts)."""
    a, b = read_params_yaml(current) or {}, read_params_yaml(written) or {}
    out = []
    for section in sorted(set(a) | set(b)):
        sa, sb = a.get(section), b.get(section)
        if isinstance(sa, dict) and isinstance(sb, dict):
            out += [f"{section}.{k}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
        elif sa != sb:
            out.append(section)
    return out


def _holds_edits(current: str, text: str, root: Path) -> str | None:
    """How ``current`` (a params file about to become ``text``) differs from what the profile
    named in its header writes: the user's edits, which overwriting would lose; None if none."""
    if current == text:
        return None
    was = written_by(current)
    if was is None:
        return "was not written by a profile (no `Written by` line)"
    try:
        reference = render(was, root)
        edits = edited_keys(current, reference)
    except ParamsError:  # the profile it names is gone or broken, or the file is not valid YAML
        return f"differs from what profile {was} writes"
    if current == reference:
        return None
    return f"holds edits to profile {was}: {', '.join(edits[:6])}" if edits else f"differs from what profile {was} writes"


def write_profile(name: str, out: Path = Path(PARAMS_NAME), force: bool = False, root: Path = Path(".")) -> str:
    """Write profile ``name`` to ``out`` (atomically); refuse to drop the user's edits unless ``force``."""
    from mae_hlvm.core.io import write_text

    text = render(name, root)
    why = None if force or not out.exists() else _holds_edits(out.read_text(encoding="utf-8", errors="replace"), text, root)
    if why:
        raise ParamsError(
            f"{out}: {why}; overwriting it would lose them: keep them in a profile of your own "
            f"(profiles/<name>/{PARAMS_NAME}), or rerun with --force (make profile ... FORCE=1) to drop them"
        )
    write_text(out, text)
    return text


def run_profile(params: Any, args: argparse.Namespace) -> int:
    """The ``profile`` step: write params.yaml from a profile, then say what to run next."""
    write_profile(args.name, Path(args.out), args.force)
    print(f"{args.out}: written from profile {args.name}; now `make dvc-yaml` (the Makefile's `profile` target does it)")
    return 0
