# Two commands do all the set-up: `make run` (the demo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast services ui lint bench quality clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/reposts --db reposts.duckdb demo

test: $(STAMP) services
	$(BIN)/python -m pytest

# the stages alone: no Prefect, no servers, no processes (under 30 s)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not flows"

# redis-server, which the tests of the Redis LSH index start (from Debian's
# packages, as root or through sudo; elsewhere install it yourself, or those
# tests are skipped)
services:
	@command -v redis-server >/dev/null || ( \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  if command -v apt-get >/dev/null && { [ -z "$$SUDO" ] || command -v sudo >/dev/null; }; then \
	    $$SUDO apt-get install -y -q redis-server >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q redis-server >/dev/null 2>&1; } || \
	    echo "could not install redis-server: the Redis tests will be skipped"; \
	  else echo "redis-server not found: the Redis tests will be skipped (install it with your package manager)"; fi )

# a local Prefect server with its UI, the deployments of prefect.yaml and a worker
ui: $(STAMP)
	$(BIN)/python -m flows.ui

lint: $(STAMP)
	$(BIN)/ruff check dedup flows tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/stages.py
	$(BIN)/python benchmarks/ingest_vs_extract.py

# the labelled corpora of ../shared/repostbench (not part of this repo)
quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(VENV) .prefect reposts.duckdb reposts.duckdb.wal reposts.duckdb.lsh reposts.duckdb.shingles reposts.duckdb.snapshot reposts.duckdb.waiting reposts.duckdb.run-lock reposts.duckdb.warc reposts.duckdb.before-rebuild report.html
