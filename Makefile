# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv itself and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint typecheck bench server clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/beluga-flows demo

lint: $(STAMP)
	$(BIN)/ruff check beluga_flows tests flows bench workflows
	$(BIN)/ruff format --check beluga_flows tests flows bench workflows

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite starts real services: redis-server (shared circuit-breaker state), a
# PostgreSQL cluster (scale-out test) and headless Chromium + chromedriver (a browser
# check of the Prefect UI). Install what is missing with apt when we may (root).
SYSTEM_PACKAGES := redis-server:redis-server chromium:chromium chromedriver:chromium-driver
system-deps:
	@missing=""; \
	for pair in $(SYSTEM_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing (e.g. sudo apt-get install$$missing)"; exit 1; fi; \
	fi

# The default suite; slow fault and scale tests (marker "slow") run in `make test-slow`,
# which CI (.ci/run) runs after it.
test: lint typecheck system-deps
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/run.py

server: $(STAMP)
	$(BIN)/beluga-flows server

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
