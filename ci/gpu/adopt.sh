#!/usr/bin/env bash
# Adopt a device run (ci/gpu/device-run.sh) into this working copy, on a machine with DVC:
#   bash ci/gpu/adopt.sh /work/.device/N     (the folder holding run.tgz.part*)
# Unpacks the outputs and receipts, regenerates the data files here (the synthetic
# generator is byte-identical across CPUs, docs/reproducibility.md; MNIST's split is
# fixed), records the device's jobs in dvc.lock through their receipts, re-stamps them
# in DAG order, and leaves the remaining stages (aggregate, figures, claims, summary, and
# whatever the device did not reach) to `snakemake --cores N`.
set -eu
SRC=${1:?the folder with run.tgz.part*}
cat "$SRC"/run.tgz.part* | tar -xzf -
python -m mae_hlvm.workflow.pipeline check-dvc-yaml
DATA=$(python -c "from mae_hlvm.workflow import pipeline; from mae_hlvm.core.config import load_params
print(','.join(s for s in ('generate', 'predict', 'prepare_real') if s in pipeline.active_stages(load_params('params.yaml'))))")
python -m mae_hlvm.workflow.plainrun --stages "$DATA"
python -m mae_hlvm.workflow.pipeline commit-receipts
python -c "from mae_hlvm.workflow import sync; from mae_hlvm.core.config import load_params
print('re-stamped:', len(sync.restamp_current(load_params('params.yaml'))), 'stages up to date in dvc.lock')"
echo "adopted: now run 'snakemake --cores N' for the remaining stages, then check results/summary.md"
