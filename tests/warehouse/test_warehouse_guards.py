"""The warehouse refuses clearly instead of failing raw: concurrent first migrations take turns,
a schema newer than the code, read-only runs that would have to migrate, a locked or read-only
SQLite file; and the summary's repair advice for days without a partition can be followed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from pipelines.checks import repair_advice
from tests.helpers import PROJECT_ROOT, expected_daily_counts, run_sync_job, stored_daily_counts
from warehouse.engine import WarehouseUnavailable, create_warehouse_engine, sqlite_trouble
from warehouse.migrate import (
    VERSION_TABLE,
    SchemaNewerThanCode,
    SchemaOutOfDate,
    current_revision,
    ensure_schema,
    head_revision,
)
from warehouse.schema import metadata


# -- two first syncs at once -------------------------------------------------------------------
def test_concurrent_first_migrations_wait_for_each_other(warehouse_url):
    """Two migrators on an empty database, released at the same instant: both end at head.
    Without the lock, one failed with 'table already exists' (3 of 3 tries on MariaDB)."""
    engines = [create_warehouse_engine(warehouse_url) for _ in range(2)]
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def migrate(engine: sa.Engine) -> None:
        try:
            start.wait(timeout=30)
            ensure_schema(engine)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors
        assert current_revision(engines[0]) == head_revision()
        assert set(metadata.tables) <= set(sa.inspect(engines[0]).get_table_names())
    finally:
        for engine in engines:
            engine.dispose()


# -- a schema newer than this code ---------------------------------------------------------------
def test_a_schema_from_a_newer_version_is_refused_clearly(sqlite_url):
    engine = create_warehouse_engine(sqlite_url)
    try:
        ensure_schema(engine)
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099_from_the_future'"))
        for attempt in (lambda: ensure_schema(engine), lambda: ensure_schema(engine, False)):
            with pytest.raises(SchemaNewerThanCode) as raised:
                attempt()
            message = str(raised.value)
            assert "'0099_from_the_future'" in message and head_revision() in message
            assert "newer version" in message
        assert current_revision(engine) == "0099_from_the_future"  # untouched
    finally:
        engine.dispose()


# -- read-only runs never migrate ------------------------------------------------------------------
def test_the_checks_job_and_a_backfill_refuse_an_unmigrated_warehouse(sync_env):
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    url = sync_env["WAREHOUSE_URL"]
    with dg.instance_for_test() as instance:
        checks = defs.resolve_job_def("taskrouter_daily_checks").execute_in_process(
            instance=instance, raise_on_error=False)
        day = "2026-11-01"
        backfill = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("reservation_daily_status_counts")],
            partition_key=day, raise_on_error=False)
    for result in (checks, backfill):
        assert not result.success
        messages = [e.step_failure_data.error.to_string() for e in result.get_step_failure_events()]
        assert messages and all("never migrate" in m and "make migrate" in m for m in messages)
    engine = create_warehouse_engine(url)
    try:
        assert current_revision(engine) is None  # still empty: nobody migrated it
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


# -- SQLite files that cannot be written -------------------------------------------------------
def test_a_read_only_sqlite_warehouse_fails_with_a_clear_message(emulator, sync_env, tmp_path):
    url = sync_env["WAREHOUSE_URL"]
    assert run_sync_job().success
    path = sa.make_url(url).database
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    os.environ["WAREHOUSE_URL"] = read_only  # restored by sync_env's monkeypatch
    result = run_sync_job(raise_on_error=False)
    assert not result.success
    [failure, *_] = result.get_step_failure_events()
    text = failure.step_failure_data.error.to_string()
    assert "is read-only for this process" in text and "writable" in text
    assert "attempt to write a readonly database" not in text.splitlines()[0]


def test_a_locked_sqlite_warehouse_is_explained(sqlite_url):
    """A real "database is locked" (a writer holding the file past the busy timeout; a short
    timeout here), turned into the message the resource raises."""
    holder = create_warehouse_engine(sqlite_url)
    waiter = sa.create_engine(sqlite_url, connect_args={"timeout": 0.1})
    try:
        ensure_schema(holder)
        with holder.connect() as conn:
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
            with pytest.raises(sa.exc.OperationalError) as raised, waiter.begin() as other:
                other.exec_driver_sql("DELETE FROM warehouse_state")
            conn.rollback()
        clear = sqlite_trouble(raised.value, sqlite_url)
        assert isinstance(clear, WarehouseUnavailable)
        assert "is locked by another process" in str(clear) and "busy timeout" in str(clear)
        assert sqlite_trouble(raised.value, "postgresql://u@h/db") is None  # SQLite only
    finally:
        holder.dispose()
        waiter.dispose()


# -- summary days without a partition --------------------------------------------------------------
def test_repair_advice_for_days_before_the_partitions_names_a_command_that_works(
    emulator, sync_env, monkeypatch
):
    start = date(2026, 10, 20)
    advice = repair_advice([date(2026, 10, 10), date(2026, 10, 12), date(2026, 10, 25)], start,
                           "UTC")
    assert "backfill partitions 2026-10-25..2026-10-25" in advice
    assert "python -m warehouse.repair 2026-10-10 2026-10-12" in advice
    assert "warehouse.repair" not in repair_advice([date(2026, 10, 25)], start, "UTC")

    url = sync_env["WAREHOUSE_URL"]
    assert run_sync_job().success
    early = date(2026, 10, 10)  # SUMMARY_START_DATE is 2025-01-01 here; any day is repairable
    engine = create_warehouse_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE reservation_daily_status_counts SET reservation_count = 999 "
                             "WHERE day BETWEEN :a AND :b"), {"a": early, "b": early + timedelta(1)})
    engine.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "warehouse.repair", str(early), str(early + timedelta(days=1))],
        cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "recomputed 2 summary day(s)" in done.stdout
    assert stored_daily_counts(url).values.tolist() == expected_daily_counts(url).values.tolist()


def test_the_repair_command_never_migrates(tmp_path: Path):
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    done = subprocess.run([sys.executable, "-m", "warehouse.repair", "2026-10-10"],
                          cwd=PROJECT_ROOT, env={**os.environ, "WAREHOUSE_URL": empty},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "make migrate" in done.stderr
    assert "Traceback" not in done.stderr


def test_schema_out_of_date_names_why_this_run_may_not_migrate(sqlite_url):
    engine = create_warehouse_engine(sqlite_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="checks never migrate"):
            ensure_schema(engine, auto_upgrade=False, why_not="checks never migrate")
    finally:
        engine.dispose()
