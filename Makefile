# Two commands do all the set-up (see README):
#   make quickstart   create the venv, run the quickstart sweep on digits and plot it
#   make test         create the venv, lint, run the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv quickstart test lint clean

venv: $(VENV)/.installed

# constraints.txt pins torch and torchvision as a pair: PyPI's torchvision wheels are CUDA builds
# that import only against their own torch.
# The mlflow and wandb extras are optional for users; the test suite exercises both loggers.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,mlflow,wandb]'
	touch $@

quickstart: venv
	$(PY) sweeps/run_sweep.py sweeps/quickstart.yaml
	$(PY) analysis/plot.py output/quickstart

lint: venv
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest -q -ra

clean:
	rm -rf $(VENV) output .pytest_cache .ruff_cache
