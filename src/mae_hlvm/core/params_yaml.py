"""Reading ``params.yaml`` strictly, so that Snakemake and DVC read the same experiment.

Snakemake and this package read the file with PyYAML (YAML 1.1), DVC with ruamel.yaml
(YAML 1.2), so a repeated key or a value the two YAML versions read differently (``010``,
``1e-3``, ``yes``) is refused (:class:`_ParamsLoader`) rather than letting the two tools
run different experiments. Every failure is one :class:`ParamsError` line.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.reader import ReaderError

from mae_hlvm.core.errors import ParamsError


def read_params_text(path: Path, source: str) -> str:
    """The file as text: it must exist, be a file and be UTF-8 (YAML's encoding, and DVC's)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ParamsError(f"{source}: file not found: give the path of a params.yaml with --params") from None
    except IsADirectoryError:
        raise ParamsError(f"{source}: is a directory, not a params file: give the path of a params.yaml") from None
    except OSError as err:
        raise ParamsError(f"{source}: cannot be read ({err.strerror or err.__class__.__name__})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ParamsError(
            f"{source}: not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}): save the file as UTF-8, "
            "the encoding YAML and both tools read"
        ) from None


def read_params_yaml(text: str, source: str = "params.yaml") -> Any:
    """Parse params text as Snakemake does (PyYAML, YAML 1.1), refusing what DVC would read otherwise.

    Returns the plain data (dicts, lists, scalars); every failure is one ParamsError line.
    """
    from mae_hlvm.core import limits

    limits.check_text(text, source)  # size, aliases and list lengths, before the slow checks below
    loader = None
    try:
        loader = _ParamsLoader(text, source)  # PyYAML refuses unprintable characters here
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(f"{err.problem or ''} ({err.context or ''})".removesuffix(" ()").split())
        raise ParamsError(f"{source}: not valid YAML{where}: {problem}: fix the syntax there") from None
    except ReaderError as err:
        line = text[: err.position].count("\n") + 1
        raise ParamsError(
            f"{source}: not valid YAML at line {line}: the control character U+{err.character:04X} is not allowed "
            "in YAML: delete it"
        ) from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise ParamsError(f"{source}: not valid YAML: nested too deeply") from None
    except ParamsError:  # the loader's own one-line refusals (a ValueError too)
        raise
    except ValueError as err:  # PyYAML resolves `0x_` or `0b_` as an int, then cannot convert it
        raise ParamsError(
            f"{source}: not valid YAML: a value looks like a number but is not one ({err}): fix it, or quote it if you "
            "mean text"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


# ---------------------------------------------------------------- YAML 1.1 and 1.2
# PyYAML implements YAML 1.1; ruamel.yaml (DVC) implements YAML 1.2, whose core schema
# resolves plain scalars differently. A plain scalar is refused when PyYAML's reading
# differs from DVC's (ruamel.yaml itself, loaded as DVC loads params.yaml) or from the
# YAML 1.2 core schema (the rules below; ruamel is laxer than the spec in places, e.g. it
# reads 1_000 as 1000 and -_0 as 0). Measured differences (tests/test_bad_params.py):
#   010 -> 8 (1.1 octal) vs 10;  08 -> '08' vs 8;  0o17 -> '0o17' vs 15;  0b101 -> 5 vs text;
#   1_000 -> 1000 vs text (core);  1:30 -> 90 (base 60) vs text;  yes/no/on/off -> booleans
#   vs text;  1e-3, 1.0e3, +.5 -> text vs numbers (1.1 floats need a dot and a signed exponent).
# y/n/Y/N are booleans in the YAML 1.1 spec, but PyYAML reads them as text, as 1.2 does.
_Y12_NULL = re.compile(r"(?:null|Null|NULL|~|)\Z")
_Y12_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_Y12_INT = re.compile(r"[-+]?[0-9]+\Z")
_Y12_OCT = re.compile(r"0o[0-7]+\Z")
_Y12_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_Y12_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_Y12_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)\Z")
_Y12_NAN = re.compile(r"\.(?:nan|NaN|NAN)\Z")
_TAG = "tag:yaml.org,2002:"
_UNREADABLE = object()  # ruamel.yaml refuses the scalar


def yaml12_value(text: str) -> Any:
    """A plain scalar as the YAML 1.2 core schema reads it."""
    if _Y12_NULL.match(text):
        return None
    if text in _Y12_BOOL:
        return _Y12_BOOL[text]
    if _Y12_INT.match(text):
        return int(text)
    if _Y12_OCT.match(text):
        return int(text[2:], 8)
    if _Y12_HEX.match(text):
        return int(text[2:], 16)
    if _Y12_FLOAT.match(text):
        return float(text)
    if _Y12_INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _Y12_NAN.match(text):
        return math.nan
    return text


@functools.lru_cache(maxsize=1)
def _dvc_yaml() -> Any:
    """ruamel.yaml as ``dvc.utils.serialize.parse_yaml`` builds it; None where DVC is not installed."""
    try:
        from ruamel.yaml import YAML
    except ImportError:
        return None
    return YAML(typ="safe")


def dvc_value(text: str) -> Any:
    """A plain scalar as DVC reads it (a ``k: text`` document through ruamel.yaml).

    :data:`_UNREADABLE` when ruamel refuses it; the core schema's reading when ruamel is
    not installed.
    """
    loader = _dvc_yaml()
    if loader is None:
        return yaml12_value(text)
    try:
        return loader.load(f"k: {text}\n")["k"]
    except Exception:  # ruamel raises its own error types, not YAMLError
        return _UNREADABLE


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    return repr(value)


def _float_text(text: str, value: float) -> str:
    """``text`` rewritten so that YAML 1.1 and 1.2 both read ``value``: 1e-3 -> 1.0e-3."""
    mantissa, _, exponent = text.lower().replace("_", "").partition("e")
    negative = mantissa.startswith("-")
    whole, _, frac = mantissa.lstrip("+-").partition(".")
    candidate = f"{'-' if negative else ''}{whole or '0'}.{frac or '0'}"
    if exponent:
        candidate += f"e{exponent if exponent[0] in '+-' else '+' + exponent}"
    if _same(yaml.safe_load(candidate), value) and _same(yaml12_value(candidate), value):
        return candidate
    return yaml.safe_dump(value).split("\n")[0]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _advice(text: str, v11: Any, v12: Any) -> str:
    """What to write instead of a plain scalar YAML 1.1 reads as ``v11`` and YAML 1.2 as ``v12``."""
    digits = text.lstrip("+-")
    number = v11 if _is_number(v11) else v12 if _is_number(v12) else None
    if "_" in text and number is not None:
        return f"write {number!r} without underscores (YAML 1.1 and 1.2 read digit separators differently)"
    if digits.startswith(("0b", "0B")) and number is not None:
        return f"write {number} (0b binary numbers are YAML 1.1 only)"
    if ":" in text and _is_number(v11):
        return f"write {v11!r}, or quote '{text}' for text (base-60 numbers like 1:30 are YAML 1.1 only)"
    if isinstance(v11, bool):
        return f"write {_describe(v11)} (yes/no/on/off are booleans in YAML 1.1 only)"
    if isinstance(v11, (datetime.date, datetime.datetime)):
        return f"quote it ('{text}'): dates are not part of YAML 1.2"
    if isinstance(v12, int) and not isinstance(v12, bool) and digits[:1] == "0" and digits[1:2].isdigit():
        if _is_number(v11):
            return f"write {v12} or {v11} without a leading zero"
        return f"write {v12} without the leading zero"
    if isinstance(v12, int) and digits.startswith("0o"):
        return f"write {v12} (0o octal numbers are YAML 1.2 only)"
    if isinstance(v12, float) and isinstance(v11, str):
        whole = f", or {int(v12)} for a whole number" if v12.is_integer() and abs(v12) < 1e16 else ""
        return f"write {_float_text(text, v12)}{whole} (YAML 1.1, which Snakemake uses, reads {text} as text)"
    if number is not None:
        return f"write {number!r}"
    return f"quote it ('{text}') if you mean text"


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader (Snakemake's reading of params.yaml) that refuses, in document
    order, what DVC's YAML 1.2 reading would not match: a repeated key (Snakemake keeps the
    last value, DVC refuses the file), a plain scalar the YAML versions read differently,
    an explicit tag, a merge key."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source

    def construct_document(self, node: yaml.Node) -> Any:
        self._check(node, "", set())
        return super().construct_document(node)

    def _fail(self, node: yaml.Node, where: str, problem: str) -> None:
        raise ParamsError(f"{self.source}: {where or 'the document'} (line {node.start_mark.line + 1}): {problem}")

    def _check(self, node: yaml.Node, where: str, seen: set[int]) -> None:
        if id(node) in seen:  # an alias: checked where its anchor is
            return
        seen.add(id(node))
        self._check_tag(node, where)
        if isinstance(node, yaml.ScalarNode):
            if node.style is None:
                self._check_plain(node, where)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check(item, f"{where}[{i}]", seen)
        else:
            first_line: dict[Any, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else f"<{key.tag.removeprefix(_TAG)}>"
                path = f"{where}.{name}" if where else str(name)
                self._check(key, path, seen)
                if isinstance(key, yaml.ScalarNode):
                    k = self.construct_object(key)
                    if k in first_line:
                        self._fail(
                            key, path,
                            f"repeated key, first set at line {first_line[k]}: Snakemake would silently take the "
                            "last value and DVC refuses the file; keep one",
                        )
                    first_line[k] = key.start_mark.line + 1
                self._check(value, path, seen)

    def _check_tag(self, node: yaml.Node, where: str) -> None:
        if isinstance(node, yaml.ScalarNode):
            implicit = (True, False) if node.style is None else (False, True)
            expected = self.resolve(yaml.ScalarNode, node.value, implicit)
        else:
            expected = self.DEFAULT_SEQUENCE_TAG if isinstance(node, yaml.SequenceNode) else self.DEFAULT_MAPPING_TAG
        if node.tag in (_TAG + "merge", _TAG + "value"):
            self._fail(
                node, where,
                f"`{node.value}` is a YAML 1.1 special key ({node.tag.removeprefix(_TAG)}) that YAML 1.2 reads as "
                "text: write the keys out",
            )
        if node.tag != expected:
            tag = node.tag.replace(_TAG, "!!")
            self._fail(
                node, where,
                f"the YAML tag {tag} is not allowed (YAML 1.1 and 1.2 read tagged values differently): "
                "write the plain value",
            )

    def _check_plain(self, node: yaml.ScalarNode, where: str) -> None:
        v11 = self.construct_object(node)
        text = node.value
        dvc = dvc_value(text)
        if not _same(v11, dvc):
            who, v12 = "DVC (YAML 1.2)", dvc
        else:
            who, v12 = "YAML 1.2", yaml12_value(text)
            if _same(v11, v12):
                return
        if v12 is _UNREADABLE:  # ruamel fails on a few, e.g. -_ (an int with no digits)
            reading, v12 = f"{who} cannot read it", yaml12_value(text)
        else:
            reading = f"as {_describe(v12)} by {who}"
        self._fail(
            node, where,
            f"`{text}` is read as {_describe(v11)} by Snakemake (YAML 1.1) and {reading}: {_advice(text, v11, v12)}",
        )
