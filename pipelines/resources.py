"""Dagster resources: the TaskRouter API and the warehouse.

Secrets arrive as ``dg.EnvVar`` values, which Dagster resolves at run time and shows in the UI
by variable name only.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import contextmanager

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.heartbeat import run_heartbeat
from pipelines.settings import client_options
from pipelines.taskrouter import TaskRouterClient
from pipelines.taskrouter.credentials import choose_credentials
from pipelines.taskrouter.options import DEFAULT_BASE_URL, DEFAULT_CONCURRENCY, MAX_PAGE_SIZE
from warehouse.engine import create_warehouse_engine, mask_url, normalize_url, sqlite_trouble
from warehouse.migrate import ensure_schema


class TaskRouterResource(dg.ConfigurableResource):
    """TaskRouter REST API access: credentials, workspaces and client tuning.

    The tuning fields carry the names of ``Settings`` (``definitions.py`` passes
    ``Settings.client_tuning()``) and become the client's ``ClientOptions`` in
    ``pipelines.settings.client_options``.
    """

    account_sid: str | None = None
    auth_token: str | None = None
    api_key_sid: str | None = None
    api_key_secret: str | None = None
    base_url: str = DEFAULT_BASE_URL
    workspace_sids: str = ""
    page_size: int = MAX_PAGE_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    requests_per_second: float | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 6
    # "auto": a first load reads reservations in a child process (taskrouter.reader_process);
    # "1": every sync does; "0": none (reader threads in the sync's process)
    reader_process: str = "auto"

    def configured_workspaces(self) -> list[str]:
        return [s.strip() for s in self.workspace_sids.split(",") if s.strip()]

    @contextmanager
    def client(self, requests_per_second: float | None = None) -> Iterator[TaskRouterClient]:
        """A client; ``requests_per_second`` overrides the budget (a shard gets its share)."""
        credentials = choose_credentials(
            self.account_sid, self.auth_token, self.api_key_sid, self.api_key_secret
        )
        client = TaskRouterClient(credentials, self.base_url,
                                  client_options(self, requests_per_second))
        try:
            yield client
        finally:
            client.close()


READ_ONLY_RUN = ("this run does not change the schema (checks and backfills never migrate; "
                 "only a sync or `make migrate` does)")


class WarehouseResource(dg.ConfigurableResource):
    """The SQL warehouse (``WAREHOUSE_URL``) and how summaries assign days.

    While a run holds it (every step of every job here does), the run's process heartbeats
    into its event log (``pipelines.heartbeat``), so a run whose process died is recognized.
    """

    url: str = "sqlite:///data/warehouse.db"
    reporting_timezone: str = "UTC"
    auto_migrate: bool = True

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Generator[WarehouseResource, None, None]:
        with run_heartbeat(context):
            yield self

    @contextmanager
    def engine(self, migrate: bool = True) -> Iterator[Engine]:
        """The warehouse, at the head schema revision. ``migrate=False`` (the checks, backfills:
        runs that only read, or only rewrite summaries) never changes the schema: an old one is
        refused with what to run instead. A locked or read-only SQLite file fails with a message
        that says so, not SQLite's raw error."""
        engine = create_warehouse_engine(self.url)
        try:
            ensure_schema(engine, auto_upgrade=self.auto_migrate and migrate,
                          why_not=None if migrate else READ_ONLY_RUN)
            yield engine
        except sa.exc.OperationalError as error:
            clear = sqlite_trouble(error, self.url)
            if clear is None:
                raise
            raise clear from None
        finally:
            engine.dispose()

    def display_url(self) -> str:
        return mask_url(normalize_url(self.url))

    def dialect_name(self) -> str:
        """The warehouse's database (sqlite, postgresql, mysql, ...) without connecting."""
        return normalize_url(self.url).get_backend_name()
