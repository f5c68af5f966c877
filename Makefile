# agentstream: every command a developer needs. Each target bootstraps the venv it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# First Python 3.11-3.13 found (3.12 preferred: the Lambda target runtime).
PYTHON ?= $(shell for p in python3.12 python3.13 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(not (3,11) <= sys.version_info[:2] < (3,14))' 2>/dev/null && { echo $$p; break; }; done)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv run test lint check fmt

help:
	@echo "make run    run the service locally (no AWS account, no API key)"
	@echo "make test   run the test suite"
	@echo "make check  lint (ruff), type check (mypy strict) and test"
	@echo "make build  build the Lambda artifacts (function zip + layers)"
	@echo "make bench  run the benchmarks"

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
