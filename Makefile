# Two commands do all the set-up: `make run` (the demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test ui lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/reposts --db reposts.duckdb demo

test: $(STAMP)
	$(BIN)/python -m pytest

# a local Prefect server with its UI, the deployments of prefect.yaml and a worker
ui: $(STAMP)
	$(BIN)/python -m flows.ui

lint: $(STAMP)
	$(BIN)/ruff check dedup flows tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/stages.py
	$(BIN)/python benchmarks/ingest_vs_extract.py

clean:
	rm -rf $(VENV) .prefect reposts.duckdb reposts.duckdb.wal
