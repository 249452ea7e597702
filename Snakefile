"""The mae-hlvm grid with Snakemake: `snakemake --cores N` (profile: profiles/default).

Every rule is built from mae_hlvm.pipeline, the one definition dvc.yaml is generated
from too: the same commands, outputs and inputs in both tools. Params reach the rules as
files (.pipeline/params/<stage>.json, rewritten only when their content changes), and
the workflow profile reruns on mtime only, so an edit reruns exactly the stages reading
the edited keys whichever tool made the outputs (README, "Snakemake and DVC together").
"""

from mae_hlvm import pipeline, sync
from mae_hlvm.config import ParamsError, load_params

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
# params changed since Snakemake's last run: if DVC already made their outputs (exp apply,
# checkout, pull), re-stamp them rather than retrain (mae_hlvm.sync.adopt_dvc_results)
sync.adopt_dvc_results(pipeline.write_params_files(P))

GPU_TRAIN = 1 if pipeline.train_uses_gpu(P) else 0


report: "report/workflow.rst"


wildcard_constraints:
    mask_ratio=r"[0-9.e-]+",
    patch_size=r"[0-9]+",
    seed=r"[0-9]+",


onstart:
    # refuse while `dvc repro` runs here, record receipts an interrupted earlier run left,
    # then hold DVC's lock until the end (mae_hlvm.runlock)
    pipeline.start_run()


onsuccess:
    pipeline.finish_run()


onerror:
    # jobs that did finish are still recorded in dvc.lock
    pipeline.finish_run()


rule all:
    input:
        pipeline.final_outputs(P),
    default_target: True


rule generate:
    input:
        pipeline.smk_inputs("generate", P),
    output:
        pipeline.smk_outputs("generate")[0],
        report(pipeline.EXAMPLES_PNG, caption="report/examples.rst", category="Data"),
    log:
        pipeline.smk_log("generate"),
    benchmark:
        pipeline.smk_benchmark("generate"),
    params:
        reads=pipeline.STAGE_PARAMS["generate"],
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        pipeline.smk_shell("generate")


rule predict:
    input:
        pipeline.smk_inputs("predict", P),
    output:
        pipeline.smk_outputs("predict"),
    log:
        pipeline.smk_log("predict"),
    benchmark:
        pipeline.smk_benchmark("predict"),
    params:
        reads=pipeline.STAGE_PARAMS["predict"],
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        pipeline.smk_shell("predict")


if "train" in pipeline.active_stages(P):

    rule train:
        input:
            pipeline.smk_inputs("train", P),
        output:
            pipeline.smk_outputs("train"),
        log:
            pipeline.smk_log("train"),
        benchmark:
            pipeline.smk_benchmark("train"),
        params:
            reads=pipeline.STAGE_PARAMS["train"],
        threads: P.train.threads
        resources:
            gpu=GPU_TRAIN,
            mem_mb=4000,
        shell:
            pipeline.smk_shell("train")

else:

    # train.job: seed: every cell of a seed in one job (on a GPU they train together)
    rule train_seed:
        input:
            pipeline.smk_inputs("train_seed", P),
        output:
            pipeline.smk_outputs("train_seed", P),
        log:
            pipeline.smk_log("train_seed"),
        benchmark:
            pipeline.smk_benchmark("train_seed"),
        params:
            reads=pipeline.STAGE_PARAMS["train_seed"],
        threads: P.train.threads
        resources:
            gpu=GPU_TRAIN,
            mem_mb=8000,
        shell:
            pipeline.smk_shell("train_seed")


rule probe:
    input:
        pipeline.smk_inputs("probe", P),
    output:
        pipeline.smk_outputs("probe"),
    log:
        pipeline.smk_log("probe"),
    benchmark:
        pipeline.smk_benchmark("probe"),
    params:
        reads=pipeline.STAGE_PARAMS["probe"],
    threads: P.train.threads
    resources:
        mem_mb=4000,
    shell:
        pipeline.smk_shell("probe")


rule baseline:
    input:
        pipeline.smk_inputs("baseline", P),
    output:
        pipeline.smk_outputs("baseline"),
    log:
        pipeline.smk_log("baseline"),
    benchmark:
        pipeline.smk_benchmark("baseline"),
    params:
        reads=pipeline.STAGE_PARAMS["baseline"],
    threads: P.train.threads
    resources:
        mem_mb=4000,
    shell:
        pipeline.smk_shell("baseline")


rule aggregate:
    input:
        pipeline.smk_inputs("aggregate", P),
    output:
        pipeline.smk_outputs("aggregate"),
    log:
        pipeline.smk_log("aggregate"),
    benchmark:
        pipeline.smk_benchmark("aggregate"),
    params:
        reads=pipeline.STAGE_PARAMS["aggregate"],
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        pipeline.smk_shell("aggregate")


rule figures:
    input:
        pipeline.smk_inputs("figures", P),
    output:
        [
            report(path, caption=f"report/{pipeline.figure_stem(path)}.rst", category="Figures")
            if path.endswith(".png")
            else path
            for path in pipeline.smk_outputs("figures")
        ],
    log:
        pipeline.smk_log("figures"),
    benchmark:
        pipeline.smk_benchmark("figures"),
    params:
        reads=pipeline.STAGE_PARAMS["figures"],
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        pipeline.smk_shell("figures")


rule claims:
    input:
        pipeline.smk_inputs("claims", P),
    output:
        pipeline.smk_outputs("claims")[0],
        report(pipeline.paths.CLAIMS_MD, caption="report/claims.rst", category="Summary"),
    log:
        pipeline.smk_log("claims"),
    benchmark:
        pipeline.smk_benchmark("claims"),
    params:
        reads=pipeline.stage_param_keys("claims", P),
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        pipeline.smk_shell("claims")


rule summary:
    input:
        pipeline.smk_inputs("summary", P),
    output:
        [
            report(path, caption="report/summary.rst", category="Summary") if path == pipeline.paths.SUMMARY_MD else path
            for path in pipeline.smk_outputs("summary")
        ],
    log:
        pipeline.smk_log("summary"),
    benchmark:
        pipeline.smk_benchmark("summary"),
    params:
        reads=pipeline.stage_param_keys("summary", P),
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        pipeline.smk_shell("summary")


# ----------------------------------------------------------------------------- robustness
# Built only when robustness.enabled: a fixed subset of grid cells retrained at
# robustness.budget_factor x the epochs, then compared with the grid's (mae_hlvm.robustness).

if "robustness" in pipeline.active_stages(P):

    rule train_long:
        input:
            pipeline.smk_inputs("train_long", P),
        output:
            pipeline.smk_outputs("train_long"),
        log:
            pipeline.smk_log("train_long"),
        benchmark:
            pipeline.smk_benchmark("train_long"),
        params:
            reads=pipeline.STAGE_PARAMS["train_long"],
        threads: P.train.threads
        resources:
            gpu=GPU_TRAIN,
            mem_mb=4000,
        shell:
            pipeline.smk_shell("train_long")

    rule probe_long:
        input:
            pipeline.smk_inputs("probe_long", P),
        output:
            pipeline.smk_outputs("probe_long"),
        log:
            pipeline.smk_log("probe_long"),
        benchmark:
            pipeline.smk_benchmark("probe_long"),
        params:
            reads=pipeline.STAGE_PARAMS["probe_long"],
        threads: P.train.threads
        resources:
            mem_mb=4000,
        shell:
            pipeline.smk_shell("probe_long")

    rule robustness:
        input:
            pipeline.smk_inputs("robustness", P),
        output:
            pipeline.smk_outputs("robustness"),
        log:
            pipeline.smk_log("robustness"),
        benchmark:
            pipeline.smk_benchmark("robustness"),
        params:
            reads=pipeline.STAGE_PARAMS["robustness"],
        threads: 1
        resources:
            mem_mb=2000,
        shell:
            pipeline.smk_shell("robustness")


# ----------------------------------------------------------------------------- real track
# Built only when real.enabled; one train/evaluate rule per sweep (A, B, or G for the
# full grid), named like DVC's stages. Run it alone with
# `snakemake $(python -m mae_hlvm.pipeline real-targets)`.

REAL = set(pipeline.active_stages(P)) - set(pipeline.STAGES)

if "prepare_real" in REAL:

    rule prepare_real:
        input:
            pipeline.smk_inputs("prepare_real", P),
        output:
            pipeline.smk_outputs("prepare_real"),
        log:
            pipeline.smk_log("prepare_real"),
        benchmark:
            pipeline.smk_benchmark("prepare_real"),
        params:
            reads=pipeline.STAGE_PARAMS["prepare_real"],
        threads: 1
        resources:
            mem_mb=3000,
        shell:
            pipeline.smk_shell("prepare_real")


for _stage in sorted(s for s in REAL if s.startswith("train_real_")):

    rule:
        name:
            _stage
        input:
            pipeline.smk_inputs(_stage, P),
        output:
            pipeline.smk_outputs(_stage),
        log:
            pipeline.smk_log(_stage),
        benchmark:
            pipeline.smk_benchmark(_stage),
        params:
            reads=pipeline.STAGE_PARAMS[_stage],
            cmd=pipeline.smk_command(_stage),
        threads: P.train.threads
        resources:
            gpu=GPU_TRAIN,
            mem_mb=4000,
        shell:
            # not pipeline.smk_shell(_stage): the shell is evaluated late, after the loop
            "{params.cmd}"


for _stage in sorted(s for s in REAL if s.startswith("evaluate_real_")):

    rule:
        name:
            _stage
        input:
            pipeline.smk_inputs(_stage, P),
        output:
            pipeline.smk_outputs(_stage),
        log:
            pipeline.smk_log(_stage),
        benchmark:
            pipeline.smk_benchmark(_stage),
        params:
            reads=pipeline.STAGE_PARAMS[_stage],
            cmd=pipeline.smk_command(_stage),
        threads: P.train.threads
        resources:
            mem_mb=4000,
        shell:
            # not pipeline.smk_shell(_stage): the shell is evaluated late, after the loop
            "{params.cmd}"


if "report_real" in REAL:

    rule report_real:
        input:
            pipeline.smk_inputs("report_real", P),
        output:
            [
                report(path, caption=f"report/{pipeline.figure_stem(path)}.rst", category="Real images")
                if path.endswith(".png")
                else path
                for path in pipeline.smk_outputs("report_real")
            ],
        log:
            pipeline.smk_log("report_real"),
        benchmark:
            pipeline.smk_benchmark("report_real"),
        params:
            reads=pipeline.STAGE_PARAMS["report_real"],
        threads: P.train.threads
        resources:
            mem_mb=4000,
        shell:
            pipeline.smk_shell("report_real")
