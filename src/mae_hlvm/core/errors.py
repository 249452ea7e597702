"""The one-line error of a params problem, below the schema and the cell geometry that both raise it."""

from __future__ import annotations


class ParamsError(ValueError):
    """A params.yaml problem, phrased as one line that names the key and the value."""
