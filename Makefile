# TaskRouter reservations warehouse. Every target sets itself up (.venv, a DAGSTER_HOME).
# See README.md; `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
INSTALL_LOG := data/logs/install.log
# sync and dev use the DAGSTER_HOME you set (e.g. the production instance), else the project's;
# demo and test always use the project-local one.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
demo test: export DAGSTER_HOME := $(CURDIR)/.dagster_home
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: help install demo sync dev report test bench migrate lint clean

help:
	@echo "make demo     one sync from the local emulator into data/warehouse.db, then the daily counts"
	@echo "make report   data/report.html from WAREHOUSE_URL's warehouse (REPORT_ARGS=\"--from D --to D\")"
	@echo "make dev      the Dagster UI on http://127.0.0.1:3000 (PORT=3001 for another port)"
	@echo "make sync     one headless sync against what the environment configures"
	@echo "make migrate  upgrade the warehouse of WAREHOUSE_URL to the newest schema"
	@echo "make test     the whole test suite;  make bench  the benchmarks;  make lint  ruff"

# The install's output goes to $(INSTALL_LOG); the terminal gets one line, or its tail on failure.
# setuptools' "Editable installation" notice is filtered by its text where it is raised.
$(STAMP): pyproject.toml
	@mkdir -p $(dir $(INSTALL_LOG))
	@if test -x $(BIN)/python; then \
	  echo "Updating $(VENV) (pyproject.toml changed, ~1 min; log: $(INSTALL_LOG))"; \
	else \
	  echo "Installing into $(VENV) (first run, ~1-2 min; log: $(INSTALL_LOG))"; \
	fi
	@{ test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } > $(INSTALL_LOG) 2>&1 \
	  && $(BIN)/python -m pip install --disable-pip-version-check --upgrade pip >> $(INSTALL_LOG) 2>&1 \
	  && PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install \
	     --disable-pip-version-check -e '.[dev]' >> $(INSTALL_LOG) 2>&1 \
	  || { tail -n 15 $(INSTALL_LOG); echo "Install FAILED: the full output is in $(INSTALL_LOG)"; exit 1; }
	@touch $(STAMP)
	@echo "Installed."

install: $(STAMP)

## One full sync against the local emulator into data/warehouse.db; run again for an incremental one.
demo: install
	@$(BIN)/python -m pipelines.cli demo $(DEMO_ARGS)

## One complete headless sync through Dagster against what the environment configures.
sync: install
	@$(BIN)/python -m pipelines.cli sync

## The Dagster UI (on the emulator unless Twilio credentials are set): make dev PORT=3001 HOST=0.0.0.0
dev: install
	@$(BIN)/python -m pipelines.cli dev $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST))

## data/report.html from the warehouse WAREHOUSE_URL names: REPORT_ARGS="--from 2026-11-01 --to 2026-11-30"
report: install
	@$(BIN)/python -m pipelines.cli report $(REPORT_ARGS)

## The whole test suite (PostgreSQL/MariaDB tests skip when unreachable unless REQUIRE_SERVICES=1).
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Benchmarks: figures against a baseline in the same run (see docs/benchmarks.md).
bench: install
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

## Upgrade the warehouse named by WAREHOUSE_URL to the newest schema revision.
migrate: install
	@$(BIN)/python -m pipelines.cli migrate $(MIGRATE_ARGS)

lint: install
	$(BIN)/ruff check pipelines warehouse tests benchmarks

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
