"""Asset checks: each passes on a good warehouse, fails on one crafted to break it, and a failing
warn-only check never stops the sync. Real emulator over HTTP, real databases."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from pipelines.taskrouter.emulator import Emulator, Faults
from tests.conftest import PROJECT_ROOT, small_world
from tests.helpers import run_sync_job
from warehouse import quality
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import ensure_schema
from warehouse.schema import reservation_daily_status_counts as counts_table
from warehouse.schema import reservations
from warehouse.summary import refresh_range

DAY = date(2026, 3, 10)


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """``asset:check`` -> the evaluation, for the checks this run executed."""
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e
            for e in result.get_asset_check_evaluations()}


def meta(evaluation: Any) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}


def run_daily_checks(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from pipelines.definitions import build_definitions

    job = build_definitions().resolve_job_def("taskrouter_daily_checks")
    return job.execute_in_process(instance=instance, raise_on_error=False)


# -- the counting queries, on all three databases ---------------------------------------------
def _seed(url: str, n: int = 48) -> sa.Engine:
    """``n`` good reservations, one every 3 hours from DAY, and their summary days."""
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    now = datetime.now(UTC)
    start = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)
    rows = [
        {"sid": f"WR{i:032d}", "workspace_sid": "WS1", "worker_sid": f"WK{i % 3}",
         "reservation_status": ("accepted", "completed", "rejected")[i % 3], "status_rank": 1,
         "date_created": start + timedelta(hours=3 * i),
         "date_updated": start + timedelta(hours=3 * i, minutes=2),
         "first_loaded_at": now, "last_changed_at": now}
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(reservations.insert(), rows)
    refresh_range(engine, DAY - timedelta(days=1), DAY + timedelta(days=n // 8 + 1), "UTC")
    return engine


def test_quality_queries_pass_on_good_data_and_count_each_breakage(warehouse_url):
    engine = _seed(warehouse_url)
    try:
        with engine.connect() as conn:
            assert quality.duplicate_sids(conn, reservations) == 0
            assert set(quality.null_counts(conn, reservations).values()) == {0}
            assert quality.dates_out_of_order(conn) == 0
            assert quality.unknown_statuses(conn) == {}
            compared, mismatches = quality.summary_mismatches(conn, "UTC")
            assert compared >= 6 and mismatches == []
        c = reservations.c
        with engine.begin() as conn:
            conn.execute(reservations.update().where(c.sid == f"WR{1:032d}")
                         .values(date_updated=datetime(2020, 1, 1, tzinfo=UTC)))
            conn.execute(reservations.update().where(c.sid.in_([f"WR{i:032d}" for i in (2, 5, 8)]))
                         .values(reservation_status="escalated"))
            conn.execute(reservations.update().where(c.sid == f"WR{4:032d}")
                         .values(reservation_status="parked"))
            # a summary day that no longer matches its reservations
            conn.execute(counts_table.delete().where(counts_table.c.day == DAY + timedelta(days=2))
                         .where(counts_table.c.reservation_status == "completed"))
        with engine.connect() as conn:
            assert quality.dates_out_of_order(conn) == 1
            assert quality.unknown_statuses(conn) == {"escalated": 3, "parked": 1}
            compared, mismatches = quality.summary_mismatches(conn, "UTC")
            assert [m.day for m in mismatches] == [DAY + timedelta(days=2)]
            assert mismatches[0].reservations_created == 8
            assert mismatches[0].summary_total < 8
            # scoped to rows changed after now: nothing to look at
            later = datetime.now(UTC) + timedelta(seconds=5)
            assert quality.rows_examined(conn, reservations, later) == 0
            assert quality.unknown_statuses(conn, later) == {}
            assert quality.summary_mismatches(conn, "UTC", later) == (0, [])
    finally:
        engine.dispose()


def test_quality_days_follow_the_reporting_zone(sqlite_url):
    # 02:00 UTC on DAY is still the previous day in New York
    engine = _seed(sqlite_url, n=1)
    try:
        with engine.connect() as conn:
            zone = quality.reporting_zone("America/New_York")
            counted = quality.reservations_per_day(conn, [DAY - timedelta(days=1), DAY], zone)
        assert counted == {DAY - timedelta(days=1): 1, DAY: 0}
    finally:
        engine.dispose()


# -- the Dagster checks ----------------------------------------------------------------------
def _loosen_sqlite_table(conn: sa.Connection, table: str) -> None:
    """Recreate ``table`` without its primary key and NOT NULLs, so it can be broken."""
    conn.exec_driver_sql("PRAGMA legacy_alter_table=ON")
    conn.exec_driver_sql(f"CREATE TABLE {table}_loose AS SELECT * FROM {table}")
    conn.exec_driver_sql(f"DROP TABLE {table}")
    conn.exec_driver_sql(f"ALTER TABLE {table}_loose RENAME TO {table}")


def test_every_check_passes_on_a_good_warehouse_and_fails_on_a_broken_one(
    emulator, sync_env, monkeypatch
):
    monkeypatch.setenv("FRESHNESS_MAX_AGE_MINUTES", "0.0005")  # 30 ms: stale by the second run
    url = sync_env["WAREHOUSE_URL"]
    with dg.instance_for_test() as instance:
        assert run_sync_job(instance).success
        good = run_daily_checks(instance)
        assert good.success
        passed = evaluations(good)
        assert len(passed) == 10  # 8 table checks, the events gaps, the reconciliation
        failed = {k for k, e in passed.items() if not e.passed}
        assert failed <= {"reservations:last_sync_is_recent"}  # only if this host is slow
        whole = meta(passed["reservations:statuses_known"])
        assert whole["scope"] == "whole table" and whole["rows_examined"] == 480

        # 1. break what only warns: the run still succeeds
        engine = create_warehouse_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(
                "UPDATE reservations SET date_updated = :old WHERE sid IN "
                "(SELECT sid FROM reservations ORDER BY sid LIMIT 3 OFFSET 10)"),
                {"old": "2001-01-01 00:00:00.000000"})
            conn.execute(sa.text(
                "UPDATE reservations SET reservation_status = 'escalated' WHERE sid IN "
                "(SELECT sid FROM reservations ORDER BY sid LIMIT 4 OFFSET 20)"))
            row = conn.execute(sa.text(
                "SELECT day, workspace_sid, worker_sid, reservation_status "
                "FROM reservation_daily_status_counts ORDER BY day LIMIT 1 OFFSET 5"
            )).mappings().one()
            day = row["day"]
            conn.execute(sa.text(
                "UPDATE reservation_daily_status_counts SET reservation_count = reservation_count + 7"
                " WHERE day = :day AND workspace_sid = :workspace_sid AND worker_sid = :worker_sid"
                " AND reservation_status = :reservation_status"), dict(row))
        time.sleep(0.1)  # let the 30 ms freshness limit pass
        warned = run_daily_checks(instance)
        assert warned.success
        results = evaluations(warned)
        assert {k for k, e in results.items() if not e.passed} == {
            "reservations:date_updated_not_before_created", "reservations:statuses_known",
            "reservation_daily_status_counts:day_totals_match_reservations",
            "reservations:last_sync_is_recent"}
        assert {e.severity for e in results.values() if not e.passed} == {dg.AssetCheckSeverity.WARN}
        assert meta(results["reservations:date_updated_not_before_created"])["rows_out_of_order"] == 3
        assert meta(results["reservations:statuses_known"])["unknown_statuses"] == {"escalated": 4}
        totals = meta(results["reservation_daily_status_counts:day_totals_match_reservations"])
        assert totals["days_mismatched"] == 1
        mismatch = totals["mismatched_days"][0]
        assert mismatch["day"] == str(day)
        assert mismatch["summary_total"] == mismatch["reservations_created"] + 7
        assert meta(results["reservations:last_sync_is_recent"])["age_minutes"] > 0.0005

        # 2. break the keys (a table without its constraints): the blocking checks fail the run
        with engine.begin() as conn:
            first = conn.execute(sa.text("SELECT sid FROM reservations LIMIT 1")).scalar_one()
            worker = conn.execute(sa.text("SELECT sid FROM workers LIMIT 1")).scalar_one()
            _loosen_sqlite_table(conn, "reservations")
            _loosen_sqlite_table(conn, "workers")
            conn.execute(sa.text("INSERT INTO reservations SELECT * FROM reservations WHERE sid = :s"),
                         {"s": first})
            conn.execute(sa.text("INSERT INTO workers SELECT * FROM workers WHERE sid = :s"),
                         {"s": worker})
            conn.execute(sa.text("UPDATE workers SET workspace_sid = NULL WHERE sid = "
                                 "(SELECT MAX(sid) FROM workers)"))
            conn.execute(sa.text(
                "UPDATE reservations SET worker_sid = NULL WHERE sid IN "
                "(SELECT sid FROM reservations ORDER BY sid DESC LIMIT 2)"))
        engine.dispose()
        broken = run_daily_checks(instance)
    assert not broken.success
    results = evaluations(broken)
    failed_steps = {e.step_key for e in broken.get_step_failure_events()}
    assert failed_steps == {"reservations_sids_unique", "reservations_required_columns_not_null",
                            "workers_sids_unique", "workers_required_columns_not_null"}
    for key in ("reservations:sids_unique", "workers:sids_unique"):
        assert not results[key].passed and results[key].severity == dg.AssetCheckSeverity.ERROR
        assert meta(results[key])["duplicated_sids"] == 1
    nulls = meta(results["reservations:required_columns_not_null"])
    assert nulls["null_rows"] == 2 and nulls["nulls_by_column"]["worker_sid"] == 2
    assert meta(results["workers:required_columns_not_null"])["nulls_by_column"]["workspace_sid"] == 1
    # what is downstream of broken reservation keys waits: the summary check did not run
    assert "reservation_daily_status_counts:day_totals_match_reservations" not in results


def test_freshness_fails_when_this_instance_never_synced(sync_env):
    with dg.instance_for_test() as instance:
        result = run_daily_checks(instance)
    fresh = evaluations(result)["reservations:last_sync_is_recent"]
    assert not fresh.passed and "never been synced" in (fresh.description or "")


# -- a failing warn-only check never stops the sync --------------------------------------------
@pytest.fixture
def dirty_env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str,
              tmp_path: Path) -> Iterator[tuple[Emulator, dict[str, str]]]:
    """A world with statuses TaskRouter may add one day ('escalated'), and the project's instance
    configuration (with its taskrouter_api pool) in a scratch DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / ".dagster_home" / "dagster.yaml").read_text())
    for name in ("TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET", "TASKROUTER_WORKSPACE_SIDS",
                 "REPORTING_TIMEZONE", "SUMMARY_START_DATE"):
        monkeypatch.delenv(name, raising=False)
    with Emulator(small_world(dirty=True, workers_per_workspace=4), Faults()) as emu:
        env = {**emu.env(), "WAREHOUSE_URL": sqlite_url, "DAGSTER_HOME": str(home)}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield emu, env


def test_sync_checks_only_what_it_changed_and_warnings_do_not_fail_it(dirty_env):
    _emulator, _env = dirty_env
    with dg.instance_for_test() as instance:
        first = run_sync_job(instance)
        assert first.success
        results = evaluations(first)
        assert "reservations:last_sync_is_recent" not in results  # left to the daily job
        statuses = results["reservations:statuses_known"]
        assert not statuses.passed and statuses.severity == dg.AssetCheckSeverity.WARN
        assert meta(statuses)["unknown_statuses"].get("escalated", 0) > 0
        assert meta(statuses)["scope"] == "rows changed by this sync"
        assert meta(statuses)["rows_examined"] == 240
        totals = meta(results["reservation_daily_status_counts:day_totals_match_reservations"])
        assert totals["days_compared"] > 20 and totals["days_mismatched"] == 0
        blocking = [k for k, e in results.items() if e.severity == dg.AssetCheckSeverity.ERROR]
        assert len(blocking) == 4 and all(results[k].passed for k in blocking)

        second = run_sync_job(instance)  # nothing changed upstream: nothing to examine
        assert second.success
        again = evaluations(second)
        assert {meta(e).get("rows_examined", 0) for e in again.values()} == {0}
        assert all(e.passed for e in again.values())


def test_make_sync_exits_zero_while_a_warn_check_fails(dirty_env):
    """The command behind `make sync`, on the project's instance config (pool included)."""
    _emulator, env = dirty_env
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "sync"], cwd=PROJECT_ROOT,
        env={**os.environ, **env}, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Sync finished" in done.stdout
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = instance.get_run_records(dg.RunsFilter(job_name="taskrouter_sync"))
        assert [r.dagster_run.status for r in records] == [dg.DagsterRunStatus.SUCCESS]
        check = instance.get_latest_materialization_event(dg.AssetKey("reservations"))
        assert check is not None and check.run_id == records[0].dagster_run.run_id
