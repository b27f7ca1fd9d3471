# The two commands a newcomer needs: `make run` (the demo) and `make test` (the whole suite).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PACKAGES := eventflow devstack events journeys consumer workflows activities bench tests

.PHONY: run test bench typecheck down

$(BIN)/eventflow: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "eventflow: $(PYTHON) (3.11+) is required; install Python 3.11 or newer"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "eventflow: Python 3.11+ is required, $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

run: $(BIN)/eventflow
	$(BIN)/eventflow dev run

test: $(BIN)/eventflow
	$(BIN)/eventflow dev provision
	$(BIN)/python -m mypy $(PACKAGES)
	$(BIN)/eventflow journeys validate
	$(BIN)/python -m pytest

typecheck: $(BIN)/eventflow
	$(BIN)/python -m mypy $(PACKAGES)

bench: $(BIN)/eventflow
	$(BIN)/python -m bench

down: $(BIN)/eventflow
	$(BIN)/eventflow dev down
