"""Around the runs, never computing a result (editing these reruns nothing): the stage table and its
views, the CLI, the Snakemake-DVC glue, the DVC lock checks, the plain runner, remotes and replay."""
