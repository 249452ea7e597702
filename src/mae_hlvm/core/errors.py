"""The one-line errors' common parts, below the schema and the cell geometry that raise them:
the params error, and the spelling of a path inside a one-line message."""

from __future__ import annotations

from typing import Any


class ParamsError(ValueError):
    """A params.yaml problem, phrased as one line that names the key and the value (a long value cut)."""

    def __init__(self, message: str) -> None:
        from mae_hlvm.core.limits import cut_long_values  # limits raises this error

        super().__init__(cut_long_values(message))


def shown(path: Any) -> str:
    """A path for a one-line message: control characters (a newline in a name) escaped."""
    text = str(path)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
