# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv itself and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench server clean system-deps

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

# The suite starts a real redis-server (shared circuit-breaker state); install it
# with apt when it is missing and we may (root), else say what to install.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "please install redis-server (e.g. sudo apt-get install redis-server)"; exit 1; fi; }

test: lint typecheck system-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

server: $(STAMP)
	$(BIN)/beluga-flows server

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
