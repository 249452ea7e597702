"""What produced an artifact: the digest of the params it read, library versions and the
code's git revision.

Nothing here depends on the time or the machine, so artifacts stay byte-identical
across reruns of the same revision (Determinism in README).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mae_hlvm.core.config import Params

def section_dict(params: Params, sections: list[str]) -> dict[str, Any]:
    """The named sections as plain JSON-ready data (the part of the config a step reads)."""
    return {name: getattr(params, name).model_dump(mode="json") for name in sections}


def params_of(params: Params, keys: tuple[str, ...]) -> dict[str, Any]:
    """Exactly these params keys, keyed as given: a section name takes the whole section, "a.b" one key."""
    out: dict[str, Any] = {}
    for key in keys:
        section, _, leaf = key.partition(".")
        value = getattr(params, section).model_dump(mode="json")
        out[key] = value[leaf] if leaf else value
    return out


def digest(obj: Any) -> str:
    """A stable short hash of JSON-ready data: identifies a resolved config."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def params_digest(params: Params, keys: tuple[str, ...]) -> str:
    """The :func:`digest` of the keys a stage reads (the command line gives a step its stage's keys, ``args.reads``)."""
    return digest(params_of(params, keys))


_PACKAGES = ("torch", "numpy", "scikit-learn", "pandas", "scipy", "pydantic", "pyyaml")
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # src/mae_hlvm, every subpackage


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def code_digest() -> str:
    """SHA-256 over the package's source files: changes exactly when the code does."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(f.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def code_revision() -> str:
    """The last commit that touched the package, with '+dirty' if it has local edits.

    The last commit touching ``src/`` rather than HEAD: committing results must not
    change the bytes of a checkpoint that the next ``dvc repro -f`` writes.
    """
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        rev = git("log", "-1", "--format=%H", "--", ".") or "uncommitted"
        dirty = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def provenance() -> dict[str, object]:
    return {"versions": library_versions(), "code_revision": code_revision(), "code_digest": code_digest()}
