"""The mae-hlvm grid with Snakemake: `snakemake --cores N` (profile: profiles/default).

Every rule is built from mae_hlvm.pipeline, the one definition dvc.yaml is generated
from too: the same commands, outputs and inputs in both tools. Params reach the rules as
files (.pipeline/params/<stage>.json, rewritten only when their content changes), and
the workflow profile reruns on mtime only, so an edit reruns exactly the stages reading
the edited keys whichever tool made the outputs (README, "Snakemake and DVC together").
"""

from mae_hlvm import pipeline
from mae_hlvm.config import ParamsError, load_params

try:
    P = load_params("params.yaml")
except ParamsError as err:
    # one line, before any job; the traceback would only bury it
    raise SystemExit(f"error: {err}") from None
pipeline.write_params_files(P)

GPU_TRAIN = 1 if pipeline.train_uses_gpu(P) else 0


wildcard_constraints:
    mask_ratio=r"[0-9.e-]+",
    patch_size=r"[0-9]+",
    seed=r"[0-9]+",


onstart:
    # receipts left by an interrupted earlier run
    pipeline.commit_receipts()


onsuccess:
    pipeline.commit_receipts()


onerror:
    # jobs that did finish are still recorded in dvc.lock
    pipeline.commit_receipts()


rule all:
    input:
        pipeline.all_outputs(P),
    default_target: True


rule generate:
    input:
        pipeline.smk_inputs("generate", P),
    output:
        pipeline.smk_outputs("generate")[0],
        report(pipeline.EXAMPLES_PNG, caption="report/examples.rst", category="Data"),
    log:
        pipeline.smk_log("generate"),
    params:
        reads=pipeline.STAGE_PARAMS["generate"],
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        pipeline.smk_shell("generate")


rule train:
    input:
        pipeline.smk_inputs("train", P),
    output:
        pipeline.smk_outputs("train"),
    log:
        pipeline.smk_log("train"),
    params:
        reads=pipeline.STAGE_PARAMS["train"],
    threads: P.train.threads
    resources:
        gpu=GPU_TRAIN,
        mem_mb=4000,
    shell:
        pipeline.smk_shell("train")


rule probe:
    input:
        pipeline.smk_inputs("probe", P),
    output:
        pipeline.smk_outputs("probe"),
    log:
        pipeline.smk_log("probe"),
    params:
        reads=pipeline.STAGE_PARAMS["probe"],
    threads: P.train.threads
    resources:
        mem_mb=4000,
    shell:
        pipeline.smk_shell("probe")


rule aggregate:
    input:
        pipeline.smk_inputs("aggregate", P),
    output:
        pipeline.smk_outputs("aggregate"),
    log:
        pipeline.smk_log("aggregate"),
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
    params:
        reads=pipeline.STAGE_PARAMS["figures"],
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        pipeline.smk_shell("figures")
