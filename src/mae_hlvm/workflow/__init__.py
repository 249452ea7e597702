"""The top floor, around the runs: the stage table and its views, the CLI, the Snakemake-DVC glue,
the DVC lock checks, the plain runner, remotes and replay. No step imports it, so editing it reruns
nothing."""
