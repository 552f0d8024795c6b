# One entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make demo DATA_DIR=/path/to/kaggle_3m lets the viewer browse a dataset folder.
DATA_DIR ?= $(LGGSEG_DATA_DIR)

.PHONY: help venv test test-fast lint demo bench browser clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project with its test extras

browser:  ## install Debian's chromium + chromedriver for the browser test, when possible
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "chromium could not be installed: the browser test will skip"; \
	  else echo "chromium missing and not root: the browser test will skip"; fi; }

test: venv browser  ## set up .venv and run the whole test suite (what CI runs)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

test-fast: venv  ## the suite without the slow tests
	$(BIN)/python -m pytest -m "not slow"

lint: venv  ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true
	$(BIN)/mypy

demo: venv  ## set up .venv, start the API (:8000) and the viewer (:8501) on the bundled model; Ctrl-C stops both
	$(BIN)/python -m app.demo $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench: venv  ## print the optimizer-step benchmark table
	$(BIN)/python benchmarks/optimizer_step.py

clean:  ## remove the venv and caches (runs/ is kept)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
