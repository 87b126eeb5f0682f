"""Helpers the tests share (plain functions and constants; the fixtures live in conftest.py):
where things are, the test worlds, the emulator clients and syncs, records as the API returns
them, and comparing the warehouse with the truth."""

from __future__ import annotations

import os
import socket
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from pipelines.figures import SyncFigures
from pipelines.loading import list_workers_by_workspace, load_reservations, resolve_workspaces
from pipelines.taskrouter import ClientOptions, TaskRouterClient, credentials_from_env
from pipelines.taskrouter.credentials import choose_credentials
from pipelines.taskrouter.emulator import Emulator
from pipelines.taskrouter.emulator_world import WorldConfig
from warehouse import migrate
from warehouse.engine import create_warehouse_engine
from warehouse.initial_load import deferrable_indexes
from warehouse.migrate import ensure_schema
from warehouse.normalize import compact_json, normalize_reservations, parse_utc
from warehouse.schema import metadata, reservation_status_history, reservations
from warehouse.upsert import UpsertCounts, upsert_reservations

# -- where things are, and the test worlds -------------------------------------------------
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN_URL = os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
ANCHOR = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)  # the week of New York's DST change
# The tests' worlds live around ANCHOR, whatever today is: pin the summary partitions' start
# before their history (unset, it follows the warehouse's data: pipelines/partitions.py).
SUMMARY_START = (ANCHOR - timedelta(days=60)).date().isoformat()


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "").strip() in ("1", "true", "yes")


def unreachable(what: str, error: Exception) -> None:
    message = f"{what} unreachable ({type(error).__name__}); start it or set TEST_*_URL"
    if services_required():
        pytest.fail(f"REQUIRE_SERVICES=1 but {message}: {error}")
    pytest.skip(message)


def small_world(**overrides: object) -> WorldConfig:
    values: dict[str, object] = {
        "seed": 11,
        "workspaces": 2,
        "workers_per_workspace": 8,
        "reservations_per_worker": 30,
        "anchor": ANCHOR,
    }
    values.update(overrides)
    return WorldConfig(**values)  # type: ignore[arg-type]


# -- crafted records and the sync job ---------------------------------------------------
CRAFTED_WS = "WS" + "a" * 32
CRAFTED_WK = "WK" + "b" * 32


def crafted_reservation(sid: Any, status: str = "pending", updated: str = "2026-11-20T10:00:05Z",
                        created: str = "2026-11-20T10:00:00Z", **extra: Any) -> dict[str, Any]:
    """One reservation as TaskRouter returns it, for feeding ``load_batch`` directly."""
    return {
        "account_sid": "AC" + "c" * 32, "workspace_sid": CRAFTED_WS, "worker_sid": CRAFTED_WK,
        "worker_name": "Zoë", "task_sid": "WT" + "d" * 32, "reservation_status": status,
        "date_created": created, "date_updated": updated,
        "url": "https://taskrouter.twilio.com/x", "links": {"worker": "https://w"},
        "sid": sid, **extra,
    }


def run_sync_job(instance: dg.DagsterInstance | None = None,
                 raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Build definitions from the current environment and run ``taskrouter_sync`` once."""
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    job = defs.resolve_job_def("taskrouter_sync")
    return job.execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=raise_on_error
    )


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for mat in result.asset_materializations_for_node(asset):
        if mat.partition is None:
            return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialization of {asset}")


def warehouse_frame(url: str, table: str = "reservations") -> pd.DataFrame:
    engine = create_warehouse_engine(url)
    try:
        from warehouse import schema

        tbl = schema.metadata.tables[table]
        with engine.connect() as conn:
            rows = conn.execute(sa.select(tbl)).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in tbl.columns])
    finally:
        engine.dispose()


def truth_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The emulator's records as the warehouse should hold them."""
    frame = pd.DataFrame.from_records(records)
    for name in ("date_created", "date_updated"):
        frame[name] = parse_utc(frame[name])
    frame["links"] = frame["links"].map(compact_json)
    return frame


def assert_matches_truth(url: str, truth: list[dict[str, Any]], allow_extra: bool = False) -> pd.DataFrame:
    """Every truth sid is in the warehouse with identical fields; returns the warehouse frame."""
    stored = warehouse_frame(url).set_index("sid")
    assert stored.index.is_unique
    expected = truth_frame(truth).set_index("sid")
    missing = set(expected.index) - set(stored.index)
    assert not missing, f"{len(missing)} sids missing, e.g. {sorted(missing)[:3]}"
    if not allow_extra:
        assert set(stored.index) == set(expected.index)
    got = stored.loc[expected.index]
    for column in ("account_sid", "workspace_sid", "worker_sid", "worker_name", "task_sid",
                   "reservation_status", "url", "links"):
        left = got[column].astype(object).where(got[column].notna(), None).tolist()
        right = expected[column].astype(object).where(expected[column].notna(), None).tolist()
        assert left == right, f"column {column} differs"
    for column in ("date_created", "date_updated"):
        left = pd.to_datetime(got[column], utc=True)
        right = pd.to_datetime(expected[column], utc=True)
        assert (left.values == right.values).all(), f"column {column} differs"
    return stored


def expected_daily_counts(url: str, zone: str = "UTC") -> pd.DataFrame:
    """``GROUP BY day, workspace, worker, status`` over ``reservations``, computed in pandas."""
    stored = warehouse_frame(url)
    if stored.empty:
        return pd.DataFrame(columns=["day", "workspace_sid", "worker_sid", "reservation_status",
                                     "reservation_count"])
    local = pd.to_datetime(stored["date_created"], utc=True).dt.tz_convert(ZoneInfo(zone))
    stored["day"] = local.dt.date
    grouped = (
        stored.groupby(["day", "workspace_sid", "worker_sid", "reservation_status"])
        .size()
        .reset_index(name="reservation_count")
    )
    return grouped.sort_values(["day", "workspace_sid", "worker_sid", "reservation_status"]).reset_index(drop=True)


def stored_daily_counts(url: str) -> pd.DataFrame:
    frame = warehouse_frame(url, "reservation_daily_status_counts")
    frame["day"] = frame["day"].map(lambda d: d if isinstance(d, date) else date.fromisoformat(str(d)))
    frame["reservation_count"] = frame["reservation_count"].astype(int)
    return frame.sort_values(["day", "workspace_sid", "worker_sid", "reservation_status"]).reset_index(drop=True)


def assert_summary_consistent(url: str, zone: str = "UTC") -> None:
    expected = expected_daily_counts(url, zone)
    stored = stored_daily_counts(url)
    assert len(stored) == len(expected)
    assert stored.values.tolist() == expected.values.tolist()


# -- the emulator: clients and syncs ----------------------------------------------------------
# Small waits so the suite stays fast; the defaults are exercised through the Dagster job.
FAST = {"page_size": 10, "backoff_factor": 0.02, "backoff_max": 0.2, "retry_after_max": 0.2,
        "read_timeout": 0.5}


def make_client(emu: Emulator, *, token: str | None = None, **overrides: Any) -> TaskRouterClient:
    """A client for ``emu`` with the suite's short waits (``FAST``), ``overrides`` on top."""
    world = emu.world
    credentials = choose_credentials(world.account_sid, token or world.auth_token)
    return TaskRouterClient(credentials, emu.base_url, ClientOptions(**{**FAST, **overrides}))


def sync_with_functions(emu: Emulator, url: str, **overrides: Any) -> tuple[SyncFigures, TaskRouterClient]:
    """One full reservations sync through ``pipelines.loading`` (what the asset runs)."""
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    try:
        with make_client(emu, **overrides) as client:
            listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
            figures = load_reservations(client, engine, listing, batch_rows=100)
        return figures, client
    finally:
        engine.dispose()


def load_from_emulator(emulator: Emulator, engine: Engine, **options: Any) -> SyncFigures:
    """Every worker's reservations loaded into ``engine`` with the default client options."""
    with TaskRouterClient(credentials_from_env(emulator.env()), emulator.base_url) as client:
        listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
        return load_reservations(client, engine, listing, **options)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- records as the API returns them, loaded straight into the warehouse -----------------------
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WS = "WS" + "0" * 32


def rec(sid: str, status: str, updated: str, *, created: str = "2026-11-20T10:00:00Z",
        worker: str = "WK1", name: str | None = "Ann", **extra: Any) -> dict[str, Any]:
    """A reservation as TaskRouter's API returns it."""
    return {
        "sid": sid,
        "account_sid": "AC1",
        "workspace_sid": WS,
        "worker_sid": worker,
        "worker_name": name,
        "task_sid": "WT" + sid[2:],
        "reservation_status": status,
        "date_created": created,
        "date_updated": updated,
        "url": f"https://taskrouter.twilio.com/v1/Workspaces/{WS}/Workers/{worker}/Reservations/{sid}",
        "links": {"worker": "https://w", "task": "https://t", "workspace": "https://ws"},
        **extra,
    }


def load(engine: Engine, records: list[dict[str, Any]], now: datetime = NOW) -> UpsertCounts:
    """``records`` normalized and upserted in one transaction; the upsert's counts."""
    normalized = normalize_reservations(records)
    assert not normalized.rejected, normalized.rejected
    with engine.begin() as conn:
        return upsert_reservations(conn, normalized.rows, now)


def stored(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(reservations)).mappings().all()
    return {r["sid"]: dict(r) for r in rows}


def counts(c: UpsertCounts) -> tuple[int, int, int]:
    return (c.inserted, c.updated, c.unchanged)


# -- the schema --------------------------------------------------------------------------------
DEFERRABLE = {str(index.name) for index in deferrable_indexes()}


def index_names(engine: Engine) -> set[str]:
    inspector = sa.inspect(engine)
    return {str(ix["name"]) for table in (reservations, reservation_status_history)
            for ix in inspector.get_indexes(table.name)}


def schema_differences(engine: Engine) -> list[object]:
    """What Alembic finds between the database and ``warehouse.schema`` (its own table aside)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, metadata)
    return [d for d in diffs
            if not (d[0] == "remove_table" and d[1].name == migrate.VERSION_TABLE)]
