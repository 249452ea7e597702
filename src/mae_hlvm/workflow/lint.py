"""``make lint``: Snakemake's linter with each accepted suggestion named and justified here.

``snakemake --lint`` exits 1 on any suggestion. This runs it, accepts exactly the
suggestions listed in :data:`ACCEPTED` (each with the reason it does not apply to this
workflow), and fails on anything else, printing it. Then ``check`` validates params.yaml.

Usage: ``python -m mae_hlvm.workflow.lint`` (``make lint``); exit 0 when clean.
"""

from __future__ import annotations

import re
import subprocess
import sys

# Lint title (as Snakemake prints it) -> why this workflow does not follow it.
ACCEPTED = {
    "Specify a conda environment or container for each rule.": (
        "every rule runs `python -m mae_hlvm` in the one pinned virtual environment "
        "(requirements.lock, installed by `make`), and every checkpoint records the resolved "
        "library versions; a per-rule conda env would be a second, untested definition of it"
    ),
}


def lints(text: str) -> list[tuple[str, str]]:
    """(where, title) of every suggestion in ``snakemake --lint``'s text output."""
    found, where = [], "workflow"
    for line in text.splitlines():
        head = re.match(r"^Lints for (.+?):\s*$", line)
        if head:
            where = head.group(1)
            continue
        item = re.match(r"^\s+\* (.+?):\s*$", line)
        if item:
            found.append((where, item.group(1)))
    return found


def main(argv: list[str] | None = None) -> int:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    found = lints(text)
    if proc.returncode != 0 and not found:
        print(text.strip(), file=sys.stderr)
        print("lint: snakemake --lint failed without a suggestion (see above)", file=sys.stderr)
        return 1
    rejected = [(w, t) for w, t in found if t not in ACCEPTED]
    for where, title in rejected:
        print(f"lint: {where}: {title}", file=sys.stderr)
    accepted = sorted({t for _, t in found if t in ACCEPTED})
    for title in accepted:
        n = sum(1 for _, t in found if t == title)
        print(f"lint: accepted x{n}: {title} ({ACCEPTED[title]})")
    if rejected:
        print(f"lint: {len(rejected)} suggestion(s) not accepted: follow them, or justify them in mae_hlvm/workflow/lint.py")
        return 1
    print(f"lint: snakemake --lint clean but for {len(found)} accepted suggestion(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
