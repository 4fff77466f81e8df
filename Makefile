# Codeyard's single entry point. `make up` brings the system up; `make test` runs every suite.
# Every target installs what it needs and is safe to run again.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export CODEYARD_CACHE ?= $(HOME)/.cache/codeyard
export CODEYARD_STATE ?= $(CODEYARD_CACHE)/state
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST := $(BIN)/pytest -p no:cacheprovider
# The venv is cached outside the checkout, keyed by the hash of what decides its contents.
VENV_KEY := $(shell cat pyproject.toml .ci/constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
VENV_DIR := $(CODEYARD_CACHE)/venvs/$(VENV_KEY)

.PHONY: help venv lint format up test test-ext bench

help:
	@echo "make up     - bring Codeyard up on http://127.0.0.1:8000 (embedded defaults)"
	@echo "make test   - run every test suite (what .ci/run calls)"
	@echo "make bench  - run the benchmarks and print ratios"
	@echo "make lint   - ruff check and format check"

venv: $(BIN)/.codeyard-$(VENV_KEY)

$(BIN)/.codeyard-$(VENV_KEY):
	@if [ ! -f "$(VENV_DIR)/.complete" ]; then \
	  echo "==> creating the virtual environment $(VENV_DIR)"; \
	  rm -rf "$(VENV_DIR)" && $(PYTHON) -m venv "$(VENV_DIR)" && \
	  "$(VENV_DIR)/bin/pip" install -q -c .ci/constraints.txt ".[hub,test]" 2>&1 \
	    | { grep -v "^WARNING: Location" || true; } && \
	  touch "$(VENV_DIR)/.complete"; \
	fi
	@if [ -d $(VENV) ] && [ ! -L $(VENV) ]; then rm -rf $(VENV); fi
	@ln -sfn "$(VENV_DIR)" $(VENV)
	@echo "==> installing codeyard (editable) into $(VENV)"
	@$(BIN)/pip install -q --no-deps -e . 2>&1 | { grep -v "^WARNING: Location" || true; }
	@rm -f $(BIN)/.codeyard-* && touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The server-extension suite runs alone: pytest-jupyter's event loop clashes with the Hub's.
test-ext: venv
	$(PYTEST) tests/server_extension

test: lint test-ext

up: venv
	@echo "==> starting a JupyterLab on a demo workspace with the Codeyard extension"
	@mkdir -p "$(CODEYARD_STATE)/demo-workspace"
	$(BIN)/jupyter server --ip=127.0.0.1 --port=8888 --ServerApp.root_dir="$(CODEYARD_STATE)/demo-workspace"

# Benchmarks print ratios against a baseline measured in the same run; they are not tests.
BENCHES ?= bench_tree bench_patch_apply
bench: venv
	@for b in $(BENCHES); do echo "==> $$b"; $(BIN)/python tests/bench/$$b.py; done
