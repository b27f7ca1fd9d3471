# The two commands a newcomer needs: `make run` (the demo) and `make test` (the whole suite).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test bench lint typecheck down

$(BIN)/eventflow: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "eventflow: $(PYTHON) (3.11+) is required; install Python 3.11 or newer"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "eventflow: Python 3.11+ is required, $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

run: $(BIN)/eventflow
	$(BIN)/eventflow dev run

test: $(BIN)/eventflow
	$(BIN)/eventflow dev provision
	$(BIN)/python -m pytest

typecheck: $(BIN)/eventflow
	$(BIN)/python -m mypy eventflow devstack events journeys consumer workflows activities

bench: $(BIN)/eventflow
	$(BIN)/python -m bench

down: $(BIN)/eventflow
	$(BIN)/eventflow dev down
