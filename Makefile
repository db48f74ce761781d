# The two commands of the README:
#   make repro   set up .venv (pinned), then `dvc repro` the whole pipeline (synthetic world)
#   make test    set up .venv if needed, then run the test suite
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1
export TQDM_MININTERVAL ?= 5
# a few threads per process: prep and tests run several processes on small machines
export OMP_NUM_THREADS ?= 2

.PHONY: repro foundation ablations guidance test own venv notebooks lab bench clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

repro: $(STAMP)
	@test -d .dvc || (dvc init --quiet && dvc config core.analytics false && dvc config core.check_update false)
	dvc repro

# The shipped synthetic foundation (~110-126 min on 2 cores; resumable): its own pipeline,
# foundation/dvc.yaml. `make repro` never runs it; it loads foundation/weights/.
foundation: $(STAMP)
	@test -d .dvc || (dvc init --quiet && dvc config core.analytics false && dvc config core.check_update false)
	dvc repro foundation/dvc.yaml

# Table 2 (ablations, ~32 min more on 2 cores): its own pipeline, ablations/dvc.yaml
ablations: $(STAMP)
	@test -d .dvc || (dvc init --quiet && dvc config core.analytics false && dvc config core.check_update false)
	dvc repro ablations/dvc.yaml

# NeuralDiffuser's guidance studies (~9 min more): its own pipeline, guidance/dvc.yaml
guidance: $(STAMP)
	@test -d .dvc || (dvc init --quiet && dvc config core.analytics false && dvc config core.check_update false)
	dvc repro guidance/dvc.yaml

test: $(STAMP)
	$(PY) -m pytest -q

# Your own scans end to end: make own FILE=path/to/scans.npz [OUT=results/own]
OUT ?= results/own
own: $(STAMP)
	@test -n "$(FILE)" || (echo "usage: make own FILE=path/to/scans.npz [OUT=results/own]" && exit 2)
	$(PY) -m neuropictor.own "$(FILE)" --out "$(OUT)"

notebooks: $(STAMP)
	jupytext --to ipynb notebooks/[0-9]*.py

# JupyterLab on the notebooks (the .py sources are jupytext notebooks; `make notebooks`
# writes their .ipynb twins first)
lab: notebooks
	jupyter lab notebooks/

bench: $(STAMP)
	$(PY) benchmarks/bench_prep.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_metrics.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/bench_neuropictor.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/bench_guidance.py
	OMP_NUM_THREADS=2 $(PY) benchmarks/bench_memory.py

clean-venv:
	rm -rf $(VENV)
