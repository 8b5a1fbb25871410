# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv itself and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench server clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/beluga-flows demo

lint: $(STAMP)
	$(BIN)/ruff check beluga_flows tests flows bench
	$(BIN)/ruff format --check beluga_flows tests flows bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

server: $(STAMP)
	$(BIN)/beluga-flows server

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
