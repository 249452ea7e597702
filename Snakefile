"""The mae-hlvm grid with Snakemake: `snakemake --cores N` (profile: profiles/default).

Every rule is built, in one loop, from the stage table (mae_hlvm.workflow.stages.TABLE, read
through mae_hlvm.workflow.pipeline), the one definition dvc.yaml is generated from too: the same
commands, outputs and inputs in both tools. Params reach the rules as files
(.pipeline/params/<stage>.json, rewritten only when their content changes), and the
workflow profile reruns on mtime only, so an edit reruns exactly the stages reading the
edited keys whichever tool made the outputs (mae_hlvm.workflow.glue; README, "Snakemake and DVC
together").
"""

import sys

from mae_hlvm.workflow import glue, pipeline, sync
from mae_hlvm.core.config import ParamsError, load_params

if config:
    # params.yaml is the one place a user edits, and dvc.yaml reads it too: an override
    # here would be a run neither dvc.lock nor the artifacts' stamps could describe
    raise SystemExit(
        f"error: --config {', '.join(sorted(config))} is not read: edit params.yaml instead "
        "(or `dvc exp run -S key=value` for a tracked experiment)"
    )

try:
    P = load_params("params.yaml")
    # dvc.yaml's stage set follows real.enabled / real.sweep: never let the two DAGs differ
    pipeline.check_dvc_yaml(P)
except ParamsError as err:
    # one line, before any job; the traceback would only bury it
    raise SystemExit(f"error: {err}") from None
# receipts an earlier run could not record (its final `dvc commit` failed or was interrupted):
# recorded now, also when this run has nothing to do (onstart only runs with jobs)
glue.record_left_receipts(sys.argv)
# params changed since Snakemake's last run: if DVC already made their outputs (exp apply,
# checkout, pull), re-stamp them rather than retrain (mae_hlvm.workflow.sync.adopt_dvc_results)
sync.adopt_dvc_results(glue.write_params_files(P))

report: "report/workflow.rst"


wildcard_constraints:
    mask_ratio=r"[0-9.e-]+",
    mask_unit=r"[0-9]+",
    seed=r"[0-9]+",


onstart:
    # refuse while `dvc repro`, another run or `verify` is busy here, record receipts an
    # interrupted earlier run left, then hold the run lock and DVC's lock until the end
    # (mae_hlvm.workflow.runlock); one line, before any job, if an output folder is read-only
    glue.start_run()


onsuccess:
    glue.finish_run()


onerror:
    # jobs that did finish are still recorded in dvc.lock
    glue.finish_run()


rule all:
    input:
        # the final outputs, and any output that is missing: rebuilt with what depends on it
        pipeline.targets(P),
    default_target: True


# One rule per stage the current params run (train.job, stability.enabled, real.enabled
# and real.sweep choose them), named like DVC's stages; the real track alone:
# `snakemake $(python -m mae_hlvm.workflow.pipeline real-targets)`.
for _stage in pipeline.active_stages(P):

    rule:
        name:
            _stage
        input:
            pipeline.smk_inputs(_stage, P),
        output:
            [
                report(path, caption=shown[1], category=shown[0]) if shown else path
                for path, shown in pipeline.smk_report(_stage, P)
            ],
        log:
            pipeline.smk_log(_stage),
        benchmark:
            pipeline.smk_benchmark(_stage),
        params:
            reads=pipeline.stage_param_keys(_stage, P),
            cmd=pipeline.smk_command(_stage),
        threads: pipeline.smk_threads(_stage, P)
        resources:
            **pipeline.smk_resources(_stage, P),
        shell:
            # not pipeline.smk_shell(_stage): the shell is evaluated late, after the loop
            "{params.cmd}"
