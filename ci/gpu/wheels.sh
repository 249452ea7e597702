#!/usr/bin/env bash
# Wheels for running Snakemake and DVC themselves on the lent GPU machine (issue 29, item 3):
# the closure of snakemake, dvc, the SLURM executor plugin and pydantic at this venv's pinned
# versions, less what the device's python3 already has (docs/gpu.md), for CPython 3.12 on
# x86-64 Linux, into .whl/ (carried with `carry: [".whl", ".gpu"]`). pulp (16.4 MB, the ILP
# scheduler's solver, imported only by it) stays behind unless WITH_PULP=1: without it the
# carry fits the device tool's 64 MiB (measured 2026-12-07, docs/gpu.md); run Snakemake
# there with `--scheduler greedy`.
#   bash ci/gpu/wheels.sh            (needs .venv and PyPI)
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${DEST:-.whl}
mkdir -p "$DEST"
.venv/bin/python - "${WITH_PULP:-0}" > "$DEST/closure.txt" <<'EOF'
import importlib.metadata as md
import re
import sys

# what the device's python3 has (the device tool's README), and what comes with those
DEVICE = {"torch", "numpy", "pandas", "seaborn", "scikit-learn", "scikit-image", "pyyaml", "matplotlib", "scipy",
          "pillow", "python-dateutil", "pytz", "tzdata", "six", "packaging", "joblib", "threadpoolctl", "networkx",
          "jinja2", "markupsafe", "filelock", "fsspec", "sympy", "mpmath", "typing-extensions", "contourpy", "cycler",
          "fonttools", "kiwisolver", "pyparsing", "imageio", "tifffile", "lazy-loader", "setuptools", "triton"}
if sys.argv[1] != "1":
    DEVICE.add("pulp")


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


seen, todo = set(), ["snakemake", "dvc", "pydantic", "snakemake-executor-plugin-slurm"]
while todo:
    name = norm(todo.pop())
    if name in seen:
        continue
    seen.add(name)
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    todo += [re.match(r"[A-Za-z0-9_.\-]+", r).group(0) for r in dist.requires or [] if "extra ==" not in r]
for name in sorted(seen - DEVICE):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
EOF
PLAT=(--python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux_2_28_x86_64 --platform any)
while read -r req; do  # one at a time: a few exist only as source, built here (pure Python)
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d "$DEST" "$req" 2>/dev/null \
    || .venv/bin/python -m pip wheel -q --no-deps -w "$DEST" "$req"
done < "$DEST/closure.txt"
echo "wheels: $(ls "$DEST"/*.whl | wc -l) files, $(du -cb "$DEST"/*.whl | tail -1 | cut -f1) bytes in $DEST"
