# `make run` serves the demo, `make test` runs lint, type checks and the whole suite.
# Both create .venv on first use; they need only Python >= 3.11 and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck pytest test-pythons bench clean

run: $(VENV)/.installed
	$(BIN)/netserve

test: lint typecheck pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests tools
	$(BIN)/ruff format --check src tests tools

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy --strict src

pytest: $(VENV)/.installed-test
	$(BIN)/pytest $(PYTEST_ARGS)

# not part of test: the suite on every Python >= 3.11 found, each in .venv-pythons/<version>
test-pythons:
	tools/test_pythons.sh

# not part of test: the shared benchmark with netserve beside its peers (tools/bench.py)
bench: $(VENV)/.installed
	$(BIN)/python tools/bench.py $(BENCH_ARGS)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "netserve needs Python >= 3.11; run: make PYTHON=python3.11 ..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[uvloop]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) .venv-pythons build dist bench-results src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
