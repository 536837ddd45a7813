# Every target bootstraps .venv on first use and again when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up up-secure test bench lint schemas clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

up: $(STAMP)
	$(BIN)/stekker up

up-secure: $(STAMP)
	$(BIN)/stekker up --secure

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	@for script in tests/bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check contracts mesh services tests
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/stekker contracts export --schemas contracts/schemas --asyncapi docs/asyncapi.yaml

clean:
	rm -rf $(VENV) .stekker .pytest_cache
