# TaskRouter reservations warehouse. Every target sets itself up (.venv, a DAGSTER_HOME).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# sync and dev use the DAGSTER_HOME you set (e.g. the production instance), else the project's;
# demo and test always use the project-local one.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
demo test: export DAGSTER_HOME := $(CURDIR)/.dagster_home
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: install demo sync dev test bench migrate lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## One full sync against the local emulator into data/warehouse.db; run again for an incremental one.
demo: install
	$(BIN)/python -m pipelines.cli demo $(DEMO_ARGS)

## One complete headless sync through Dagster against what the environment configures.
sync: install
	$(BIN)/python -m pipelines.cli sync

## The Dagster UI (on the emulator unless Twilio credentials are set).
dev: install
	$(BIN)/python -m pipelines.cli dev

## The whole test suite (PostgreSQL/MariaDB tests skip when unreachable unless REQUIRE_SERVICES=1).
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Benchmarks: figures against a baseline in the same run (see benchmarks/README.md).
bench: install
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

## Upgrade the warehouse named by WAREHOUSE_URL to the newest schema revision.
migrate: install
	$(BIN)/python -m warehouse.migrate upgrade

lint: install
	$(BIN)/ruff check pipelines warehouse tests benchmarks

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
