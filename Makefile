# The two commands of the README: `make demo` and `make test`. Each creates or reuses .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[local,dev]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m scaler.demo

lint: $(STAMP)
	$(BIN)/ruff check scaler tests bench inventory/scaler-inventory
	$(BIN)/ruff format --check scaler tests bench inventory/scaler-inventory

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 -q

test: lint typecheck unit

# Every benchmark in turn (about 15 minutes); each prints its own figures.
bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/inventory.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/local_cloud.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bake.py --runs 3
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/setgid.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/rollout.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .scaler
