# The two commands a newcomer needs: `make run` (the demo) and `make test` (the whole suite).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PACKAGES := eventflow devstack events journeys consumer workflows activities store bench tests
# Every dependency, with hashes: requirements-dev.lock for the venv (runtime + test tools),
# requirements.lock for the image (runtime). `make lock` re-resolves both after editing pyproject.toml.
DEV_LOCK := requirements-dev.lock
LOCK := requirements.lock
UV_VERSION := 0.13.9
UV_COMPILE = $(VENV)-tools/bin/uv pip compile pyproject.toml requirements-build.in --generate-hashes --universal --python-version 3.11 --quiet

.PHONY: run test bench typecheck down lock

$(BIN)/eventflow: pyproject.toml $(DEV_LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "eventflow: $(PYTHON) (3.11+) is required; install Python 3.11 or newer"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "eventflow: Python 3.11+ is required, $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

run: $(BIN)/eventflow
	$(BIN)/eventflow dev run

test: $(BIN)/eventflow
	$(BIN)/eventflow dev provision
	$(BIN)/ruff check $(PACKAGES)
	$(BIN)/python -m mypy $(PACKAGES)
	$(BIN)/eventflow journeys validate
	$(BIN)/python -m pytest

typecheck: $(BIN)/eventflow
	$(BIN)/ruff check $(PACKAGES)
	$(BIN)/python -m mypy $(PACKAGES)

bench: $(BIN)/eventflow
	$(BIN)/python -m bench

down: $(BIN)/eventflow
	$(BIN)/eventflow dev down

# Re-resolves the lock files (after a dependency change in pyproject.toml); uv runs from its own venv.
lock:
	$(PYTHON) -m venv $(VENV)-tools
	$(VENV)-tools/bin/pip install --quiet uv==$(UV_VERSION)
	$(UV_COMPILE) --extra test -o $(DEV_LOCK)
	$(UV_COMPILE) --constraint $(DEV_LOCK) -o $(LOCK)
