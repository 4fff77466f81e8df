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

.PHONY: help venv lint format up test bench load system-deps jai-venv test-gateway test-labextension

help:
	@echo "make up     - bring Codeyard up on http://127.0.0.1:8000 (embedded defaults)"
	@echo "make test   - run every test suite (what .ci/run calls)"
	@echo "make bench  - run the benchmarks and print ratios"
	@echo "make load   - the load test: 500 users, 50 workspaces on 3 machines (LOAD_ARGS=...)"
	@echo "make lint   - ruff check, format check and mypy"

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
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Debian packages the suites drive for real: dockerd, debootstrap (offline base image),
# Chromium (browser tests), OpenSSH (ssh:// Docker hosts), git, strace (reads the patch
# engine's real fsync/syncfs calls), PostgreSQL (the Hub and placement databases in tests),
# docker-registry + apache2-utils (the image registry and its htpasswd login).
SYSTEM_PACKAGES := docker.io debootstrap chromium openssh-server openssh-client git strace \
  postgresql docker-registry apache2-utils
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "==> apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# Each suite runs in its own pytest process: pytest-jupyter's event loop clashes with the
# Hub suites' loops. Every fixture starts the real part it needs (dockerd, images, vLLM,
# JupyterHub, Chromium) and caches what it builds under $(CODEYARD_CACHE).
SUITES := server_extension images hub placement gateway ui
test-%: venv system-deps
	$(PYTEST) tests/$*

# jupyter-ai (Jupyternaut) in a venv of its own, pinned by the single-user image's constraints,
# so the gateway suite can drive a real Jupyternaut chat against the shared model.
JAI_KEY := $(shell cat images/singleuser/constraints.txt | sha256sum | cut -c1-16)
JAI_VENV := $(CODEYARD_CACHE)/jai-venvs/$(JAI_KEY)
jai-venv:
	@if [ ! -f "$(JAI_VENV)/.complete" ]; then \
	  echo "==> creating the jupyter-ai venv $(JAI_VENV)"; \
	  rm -rf "$(JAI_VENV)" && $(PYTHON) -m venv "$(JAI_VENV)" && \
	  "$(JAI_VENV)/bin/pip" install -q -c images/singleuser/constraints.txt \
	    "jupyter-ai[jupyternaut]==3.2.0" "litellm<1.106" 2>&1 \
	    | { grep -v "^WARNING: Location" || true; } && \
	  touch "$(JAI_VENV)/.complete"; \
	fi

test-gateway: venv system-deps jai-venv
	CODEYARD_JUPYTER_AI_PYTHON="$(JAI_VENV)/bin/python" $(PYTEST) tests/gateway

# The labextension's TypeScript unit tests (node's test runner; Node 20 is on the machine).
test-labextension: venv
	cd labextension && ../$(BIN)/jlpm install --silent && ../$(BIN)/jlpm test

# One real vLLM (SmolLM2 on CPU) serves every suite that needs the model: with-vllm.sh starts
# it once and the fixtures reuse it through CODEYARD_TEST_VLLM_URL. One PostgreSQL likewise
# (with-postgres.sh, CODEYARD_TEST_POSTGRES_URL); each test makes its own database on it. One
# image registry too (with-registry.sh, CODEYARD_TEST_REGISTRY), and one namespace machine
# (with-machines.sh, CODEYARD_TEST_MACHINES: a dockerd with its own network and disk) for the
# tests that use another machine without changing it; tests that kill, fill or join theirs
# to a swarm start their own.
TEST_MACHINES ?= 1
test: lint test-labextension system-deps
	hub_config/vllm/with-vllm.sh tests/support/with-postgres.sh tests/support/with-registry.sh \
	  tests/support/with-machines.sh -n $(TEST_MACHINES) \
	  $(MAKE) --no-print-directory $(addprefix test-,$(SUITES))

# Docker engine, single-user image, proxy, secrets, model services, then the Hub in the
# foreground on http://127.0.0.1:8000. Ctrl-C stops what it started.
up: venv system-deps
	hub_config/bin/up.sh

# Benchmarks print ratios against a baseline measured in the same run; they are not tests.
# Each records its targets (tests/bench/results.py) in a fresh file under .artifacts/bench/;
# the run ends with one table of them (tests/bench/summary.py), also when a bench failed,
# and fails when any bench did.
BENCHES ?= bench_tree bench_patch_apply bench_placement bench_gateway bench_spawn bench_events \
  bench_login bench_redaction bench_warm_pool bench_workspace_cost
bench: venv system-deps
	@results="$(CURDIR)/.artifacts/bench/$$(date -u +%Y%m%dT%H%M%SZ).jsonl"; status=0; \
	mkdir -p "$(CURDIR)/.artifacts/bench"; \
	vllm=hub_config/vllm/with-vllm.sh; [ -z "$${CODEYARD_TEST_VLLM_URL:-}" ] || vllm=; \
	CODEYARD_BENCH_RESULTS="$$results" $$vllm \
	  $(BIN)/python tests/bench/run_benches.py $(BENCHES) || status=$$?; \
	echo "==> summary ($$results)"; $(BIN)/python tests/bench/summary.py "$$results" || true; \
	exit $$status

# The load test (docs/load-test.md): the project's Hub on a fresh state folder, two namespace
# machines, simulated users; prints a table, writes a chart to .artifacts/load/. A benchmark,
# not part of `make test`. It uses the run's vLLM when CODEYARD_TEST_VLLM_URL is set.
LOAD_ARGS ?=
load: venv system-deps
	@if [ -n "$${CODEYARD_TEST_VLLM_URL:-}" ]; then $(BIN)/python tests/load/run_load.py $(LOAD_ARGS); \
	else hub_config/vllm/with-vllm.sh $(BIN)/python tests/load/run_load.py $(LOAD_ARGS); fi
