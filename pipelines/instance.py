"""The production instance's storage (deploy/dagster.yaml): Dagster's PostgreSQL storage, built
from the ``DAGSTER_PG_*`` environment variables, on the psycopg2 driver.

Why a subclass instead of the stock ``storage: postgres`` block:

- ``DAGSTER_PG_PORT`` is optional (default 5432). An instance config value ``{env: NAME}`` must be
  set, or the instance refuses to load; there is no default for it. So the variables are read
  here, where an unset port can mean 5432 and an unset password can mean none.
- The driver is psycopg2 (``postgresql+psycopg2``), which dagster-postgres installs. Its event
  log storage sends ``NOTIFY run_events, :notify_id`` after every event. psycopg2 interpolates
  parameters on the client, so PostgreSQL receives a literal; psycopg 3, SQLAlchemy 2.1's
  default driver for ``postgresql://``, binds them on the server as ``$1``, which ``NOTIFY``
  cannot take: every run failed with ``syntax error at or near "$1"``. The warehouse keeps
  psycopg 3 (``WAREHOUSE_URL``); only Dagster's own tables use psycopg2.

The password never reaches the instance config (the UI shows that config), only the
connection URL held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_conn_string

REQUIRED = ("DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME")
DEFAULT_PORT = 5432
DRIVER = "postgresql+psycopg2"


class InstanceConfigError(ValueError):
    """The ``DAGSTER_PG_*`` variables cannot describe a database."""


def postgres_url(environ: Mapping[str, str] | None = None,
                 params: Mapping[str, Any] | None = None) -> str:
    """The storage URL from ``DAGSTER_PG_HOST``, ``_DB``, ``_USERNAME``, ``_PASSWORD`` (may be
    empty or unset) and ``_PORT`` (default 5432); fails naming every missing variable."""
    env = os.environ if environ is None else environ
    missing = [name for name in REQUIRED if not env.get(name, "").strip()]
    raw_port = env.get("DAGSTER_PG_PORT", "").strip() or str(DEFAULT_PORT)
    problems = [f"{name} is not set" for name in missing]
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        problems.append(f"DAGSTER_PG_PORT={raw_port!r} is not a port number (default 5432)")
    if problems:
        raise InstanceConfigError(
            "The Dagster instance (deploy/dagster.yaml) stores runs in PostgreSQL: "
            + "; ".join(problems) + ". Set DAGSTER_PG_HOST, DAGSTER_PG_DB, DAGSTER_PG_USERNAME, "
            "DAGSTER_PG_PASSWORD (may be empty) and optionally DAGSTER_PG_PORT."
        )
    return get_conn_string(
        username=env["DAGSTER_PG_USERNAME"].strip(),
        password=env.get("DAGSTER_PG_PASSWORD", ""),
        hostname=env["DAGSTER_PG_HOST"].strip(),
        db_name=env["DAGSTER_PG_DB"].strip(),
        port=raw_port,
        params=dict(params or {}),
        scheme=DRIVER,
    )


class PostgresFromEnvironment(DagsterPostgresStorage):
    """Run, event log and schedule storage in the PostgreSQL database ``DAGSTER_PG_*`` name."""

    @classmethod
    def config_type(cls) -> dict[str, dg.Field]:  # type: ignore[override]
        return {
            # libpq connection parameters, e.g. {sslmode: require}
            "params": dg.Field(dg.Permissive(), is_required=False, default_value={}),
            "should_autocreate_tables": dg.Field(bool, is_required=False, default_value=True),
        }

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]  # type: ignore[override]
                          ) -> PostgresFromEnvironment:
        return cls(
            postgres_url=postgres_url(params=config_value.get("params")),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
        )
