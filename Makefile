# Two entry points for a fresh clone: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo build test unit integration lint typecheck bench clean

$(STAMP): pyproject.toml
	@command -v redis-server >/dev/null || { echo "installing Debian's redis-server (event-store tests)..."; \
	  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	@echo "setting up $(VENV) (torch CPU, onnxruntime, faiss, tritonclient, dev tools)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

## The demo: build the models from MovieLens-100k if there are none, serve the graph (Triton +
## Ray Serve), send traffic, print recommendations and a latency table, shut down.
demo: $(STAMP)
	$(BIN)/cascade demo --repo model_repo

## Build every model from MovieLens-100k: a new version in model_repo, quality and speed tables.
build: $(STAMP)
	$(BIN)/cascade build --dataset movielens-100k --out model_repo

## The tests: lint, types, then unit and integration tests.
test: lint typecheck
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## Benchmarks write JSON under benchmarks/results/.
bench: $(STAMP)
	$(BIN)/python benchmarks/quantization.py
	$(BIN)/python benchmarks/triton.py
	$(BIN)/python benchmarks/experiments.py
	$(BIN)/python benchmarks/graph.py

clean:
	rm -rf build .model_repo-staging .mypy_cache .ruff_cache .pytest_cache
	find model_repo -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
