# Every target bootstraps .venv on first use and again when pyproject.toml or a lock file
# changes. Installs are reproducible: exactly the hashed versions of requirements-dev.lock
# (requirements.lock: the runtime ones, for the wheel and deploy/Dockerfile).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make lock` moves every dependency to its newest allowed version; `make lock UPGRADE=`
# only re-resolves (after an edit of pyproject.toml), keeping the other pins.
UPGRADE ?= --upgrade
LOCK    := $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
           --generate-hashes --quiet $(UPGRADE)

.PHONY: up up-secure test lint check bench schemas lock clean

$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
	  "Stekker needs Python 3.11 or newer; this is " + sys.version.split()[0] + \
	  ": run make with PYTHON=python3.11 (or newer)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes \
	  -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

up: $(STAMP)
	$(BIN)/stekker up

up-secure: $(STAMP)
	$(BIN)/stekker up --secure

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check contracts mesh services tests
	$(BIN)/mypy

# What CI runs: the linters, then the suite.
check: lint test

bench: $(STAMP)
	@for script in tests/bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

schemas: $(STAMP)
	$(BIN)/stekker contracts export --schemas contracts/schemas --asyncapi docs/asyncapi.yaml

lock: $(STAMP)
	$(LOCK) -o requirements.lock
	$(LOCK) --extra dev -o requirements-dev.lock
	@echo "locked; review the diff, run make test, and commit both lock files"

clean:
	rm -rf $(VENV) .stekker .pytest_cache
