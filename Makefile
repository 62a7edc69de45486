# qmsflow: `make demo` starts the embedded stack with demo data; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
PORT   ?= 4200

.PHONY: demo test install install-dev system-deps test-deps bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "qmsflow needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@ $(VENV)/.installed

system-deps:
	@bash scripts/system-deps.sh

test-deps:
	@bash scripts/system-deps.sh --with-browser

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## demo: install, scaffold ./demo with demo data if absent, start Prefect server + runner (Ctrl-C stops)
demo: system-deps $(VENV)/.installed
	$(BIN)/qms demo $(DEMO)
	$(BIN)/qms up -c $(DEMO)/qms.yaml --port $(PORT)

## test: install with dev extras and run every test (PostgreSQL tests need 127.0.0.1:5432)
test: test-deps $(VENV)/.installed-dev
	$(BIN)/python -m pytest

## bench: the trail benchmark (1,000,000 events; several minutes)
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/trail.py

clean:
	rm -rf $(VENV) dist build .pytest_cache .hypothesis
