# Two commands do all the set-up (see README.md):
#   make quickstart   create the venv, run the quickstart sweep on digits and plot it
#   make test         create the venv, lint, run the whole test suite (what CI runs)
#   make test-fast    the fast tier: no Ray, no subprocess, a few training steps at most (minutes)
#   make docs         rerun the sweeps the docs quote; rewrite their tables and figures, and the
#                     TensorBoard screenshots (headless chromium: apt install chromium)
#   make docs-flowers rerun the Flowers-102 CPU study (half an hour); rewrite its README block
#   make docs-check   fail if a page differs from what the results in output/docs give
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv quickstart test test-fast lint clean docs docs-check docs-flowers

venv: $(VENV)/.installed

# constraints.txt pins torch and torchvision as a pair: PyPI's torchvision wheels are CUDA builds
# that import only against their own torch.
# The mlflow, wandb, export and search extras are optional for users; the test suite exercises them all.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,mlflow,wandb,export,search]'
	touch $@

quickstart: venv
	$(PY) sweeps/run_sweep.py sweeps/quickstart.yaml
	$(PY) analysis/plot.py output/quickstart

# The docs' numbers are never typed: docs/generate.py reruns the sweeps of docs/sections.py
# (a fresh output/docs/NAME each time) and rewrites the marked blocks of README.md and docs/methods.md.
docs: venv
	$(PY) docs/generate.py
	$(PY) docs/tensorboard_screenshot.py

# The Flowers-102 CPU study (sweeps/flowers_cpu.yaml, about half an hour on 2 cores) has a
# target of its own: `make docs` leaves its README block as it is.
docs-flowers: venv
	$(PY) docs/generate.py --only flowers_cpu

docs-check: venv
	$(PY) docs/generate.py --check --results output/docs

lint: venv
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest -q -ra --durations=25

# The tests not marked slow, on both cores; tests/conftest.py fails any of them that starts a
# process (a subprocess, or Ray), so the tier stays fast as tests are added.
test-fast: venv
	PRUNETUNE_TEST_TIER=fast $(VENV)/bin/pytest -q -ra -n 2 --durations=10

clean:
	rm -rf $(VENV) output .pytest_cache .ruff_cache
