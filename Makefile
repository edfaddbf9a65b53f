# Two entry points: `make demo` and `make test`. Each creates/updates the virtual environment it needs in .venv/.
# pip runs with --isolated so it ignores this kind of machine's pip config, whose local torch+cpu wheel breaks the
# registry's torchvision at import; pyproject.toml pins the matching torch/torchvision pair instead.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP := $(BIN)/pip install --isolated --disable-pip-version-check
# The package is installed editable, so pip byte-compiled none of it. Where PYTHONDONTWRITEBYTECODE is set (it is on
# this kind of machine) every process that imports it, each Ray worker included, compiles it again: 0.15 CPU-s for a
# Ray Train worker, 0.85 for the stage modules together. Compiled before each command below (only what changed, a
# fraction of a second), they read the cache.

.PHONY: venv demo test test-all lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -q --upgrade pip
	$(PIP) -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m compileall -q platform/fairweather jobs
	$(BIN)/fairweather demo --config smoke

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m compileall -q platform/fairweather jobs
	$(BIN)/pytest

test-all: $(STAMP)
	$(BIN)/python -m compileall -q platform/fairweather jobs
	$(BIN)/pytest -m "not gpu"

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf runs/smoke .pytest_cache .ruff_cache
