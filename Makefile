# Two entry points for a fresh clone: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo build test unit integration e2e controlplane lint typecheck bench clean

$(STAMP): pyproject.toml
	@command -v redis-server >/dev/null || { echo "installing Debian's redis-server (event-store tests)..."; \
	  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	@echo "setting up $(VENV) (torch CPU, onnxruntime, faiss, tritonclient, dev tools)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[train,dev]'
	@touch $(STAMP)

setup: $(STAMP)

## The demo: build the models from MovieLens-100k if there are none, serve the graph (Triton +
## Ray Serve), send traffic, print recommendations and a latency table, shut down.
demo: $(STAMP)
	$(BIN)/cascade demo --repo model_repo

## Build every model from MovieLens-100k: a new version in model_repo, quality and speed tables.
build: $(STAMP)
	$(BIN)/cascade build --dataset movielens-100k --out model_repo

## The tests: lint, types, unit and integration tests, then the e2e tier against a real
## kube-apiserver (its own pytest session: it starts a Triton and a Ray cluster of its own).
test: lint typecheck
	$(BIN)/python -m pytest -q --ignore=tests/e2e
	$(MAKE) e2e

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

## A real kube-apiserver and kube-controller-manager, built once per machine from Debian's
## kubernetes source package (the first run takes several minutes; later runs reuse it).
controlplane:
	@bash tests/e2e/controlplane/build.sh >/dev/null

## The chart, the operator and the rendered pods against that control plane.
e2e: $(STAMP) controlplane
	@command -v kubectl >/dev/null || { echo "installing Debian's kubernetes-client (kubectl)..."; \
	  apt-get update -qq && apt-get install -y -qq kubernetes-client >/dev/null; }
	@command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; }
	CASCADE_KUBE_BIN="$$(bash tests/e2e/controlplane/build.sh)" $(BIN)/python -m pytest -q tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

## Benchmarks write JSON under benchmarks/results/.
bench: $(STAMP)
	$(BIN)/python benchmarks/quantization.py
	$(BIN)/python benchmarks/served_quality.py
	$(BIN)/python benchmarks/triton.py
	$(BIN)/python benchmarks/experiments.py
	$(BIN)/python benchmarks/graph.py
	$(BIN)/python benchmarks/reliability.py

clean:
	rm -rf build .model_repo-staging .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
	find model_repo -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
