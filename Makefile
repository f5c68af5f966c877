# agentstream: every command a developer needs. Each target bootstraps the venv it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# First Python 3.11-3.13 found (3.12 preferred: the Lambda target runtime).
PYTHON ?= $(shell for p in python3.12 python3.13 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(not (3,11) <= sys.version_info[:2] < (3,14))' 2>/dev/null && { echo $$p; break; }; done)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv run test lint check fmt build infra-tools infra-check

help:
	@echo "make run    run the service locally (no AWS account, no API key)"
	@echo "make test   run the test suite"
	@echo "make check  lint (ruff), type check (mypy strict) and test"
	@echo "make build  build the Lambda artifacts (function zip + layers)"
	@echo "make bench  run the benchmarks"
	@echo "make infra-check  lint, validate, build and package both templates (no AWS account)"

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: need Python 3.11, 3.12 or 3.13 on PATH" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

# DynamoDB Local + a local model (built once, ~4 min) + the app on http://127.0.0.1:8000; Ctrl-C stops all.
# Options (make variables, passed on as environment): PROVIDER=local|scripted|openai PORT=8000 RESET=1
# MODEL=... DATA_DIR=... CACHE_DIR=... (see functions/agentstream/devserver/run.py).
run: $(STAMP)
	$(PY) -m agentstream.devserver

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

fmt: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

check: lint test

# --- Deployment -------------------------------------------------------------------------------
# Lambda target architecture of `make build` (arm64 or x86_64); template.yaml/serverless.yml use arm64.
ARCH ?= arm64
TOOLS_VENV ?= .venv-tools
# sam build finds the Lambda runtime's interpreter on PATH: the tools venv is made with python3.12.
TOOLS_PYTHON ?= python3.12
TOOLS_STAMP := $(TOOLS_VENV)/.installed
NPM_STAMP := node_modules/.installed
INFRA_OUT := build/infra-check
export SAM_CLI_TELEMETRY := 0

build: $(STAMP)
	$(PY) infra/scripts/build.py zips --arch $(ARCH) --out build

$(TOOLS_STAMP): infra/requirements-tools.txt
	@$(TOOLS_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null || { \
		echo "error: need Python 3.12 as $(TOOLS_PYTHON) on PATH (sam build uses it); e.g. TOOLS_PYTHON=/path/to/python3.12" >&2; exit 1; }
	@test -x $(TOOLS_VENV)/bin/python || $(TOOLS_PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet -r infra/requirements-tools.txt
	@touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

infra-tools: $(TOOLS_STAMP) $(NPM_STAMP)

# Both templates, checked without an AWS account; tests/infra's infra_tools tests read $(INFRA_OUT).
infra-check: $(STAMP) infra-tools
	$(TOOLS_VENV)/bin/cfn-lint template.yaml
	$(TOOLS_VENV)/bin/sam validate --lint --region us-east-1
	rm -rf $(INFRA_OUT) && mkdir -p $(INFRA_OUT)
	$(MAKE) --no-print-directory build
	PATH="$(CURDIR)/$(TOOLS_VENV)/bin:$$PATH" $(TOOLS_VENV)/bin/sam build --build-dir $(INFRA_OUT)/sam-build
	$(PY) infra/scripts/osls_package.py $(INFRA_OUT)/serverless
	@# The checks it ignores, and why, are in serverless.yml's resources.Metadata.
	$(TOOLS_VENV)/bin/cfn-lint -- $(INFRA_OUT)/serverless/cloudformation-template-update-stack.json
	AGENTSTREAM_INFRA_CHECK=$(INFRA_OUT) $(PY) -m pytest tests/infra -m infra_tools $(PYTEST_ARGS)

# Ours vs baselines, as ratios in one run: CPU per event, added latency, store cost, TTFB, cold start,
# the Lambda path (bench/README.md). BENCH_QUICK=1 for a smoke run; writes bench/results.{json,md,png}.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	@touch $@

.PHONY: bench
bench: $(BENCH_STAMP)
	$(PY) -m bench
