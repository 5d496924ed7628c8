# Quick start: `make demo` runs the demo study, `make test` runs the test suite.
# Both create (or reuse) the virtualenv .venv inside the repo and install the pinned dependencies.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint format install benchmarks clean-data

$(STAMP): pyproject.toml constraints.txt
	@echo "install: the pinned dependencies into $(VENV)/ (minutes the first time; pip's output: $(VENV)/install.log)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@( $(BIN)/python -m pip install --upgrade pip && \
	   $(BIN)/python -m pip install --constraint constraints.txt --editable '.[dev]' ) > $(VENV)/install.log 2>&1 \
	   || { tail -n 40 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/study demo

# Everything: lint, then all tests (slow ones too), then the 15 slowest.
test: lint
	$(BIN)/python -m pytest --durations=15

# The fast tier: no Ray, no MLflow server, no subprocess, no training (under 2 minutes on 2 cores).
test-fast: lint
	$(BIN)/python -m pytest -m "not slow" --durations=5

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

benchmarks: $(STAMP)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev,bench]' >> $(VENV)/install.log 2>&1
	$(BIN)/python benchmarks/drr_generation.py
	$(BIN)/python benchmarks/registration.py

clean-data:
	rm -rf data
