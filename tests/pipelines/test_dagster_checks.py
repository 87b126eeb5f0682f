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
from tests.helpers import PROJECT_ROOT, run_sync_job, small_world
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
            days = quality.summary_days(conn, "UTC")
            clean = quality.compare_summary(conn, days, "UTC")
            assert clean.days_compared == len(days) >= 6 and clean.rows_mismatched == 0
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
            found = quality.compare_summary(conn, quality.summary_days(conn, "UTC"), "UTC")
            # days 0 and 1: the status changes (2 rows each way); day 2: the deleted rows
            assert found.days_mismatched == {DAY, DAY + timedelta(days=1), DAY + timedelta(days=2)}
            missing = [m for m in found.listed if m.day == DAY + timedelta(days=2)]
            assert missing and all(m.summary_count == 0 and m.reservations_counted > 0
                                   for m in missing)
            # scoped to rows changed after now: nothing to look at
            later = datetime.now(UTC) + timedelta(seconds=5)
            assert quality.rows_examined(conn, reservations, later) == 0
            assert quality.unknown_statuses(conn, later) == {}
            assert quality.days_changed_since(conn, later, "UTC") == []
    finally:
        engine.dispose()


def _plant(conn: sa.Connection, day: date, changes: list[tuple[str, int]]) -> None:
    """Add ``delta`` to the summary count of ``status`` on ``day`` (worker WK0), in place."""
    for status, delta in changes:
        conn.execute(sa.text(
            "UPDATE reservation_daily_status_counts SET reservation_count = reservation_count + :d"
            " WHERE day = :day AND worker_sid = 'WK0' AND reservation_status = :s"),
            {"d": delta, "day": day, "s": status})


def test_the_summary_comparison_catches_what_day_totals_cannot(warehouse_url):
    """Per (day, workspace, worker, status) row: a swapped status pair, a -1/+1 pair and an
    extra row all keep the day's total, and all are found."""
    engine = _seed(warehouse_url, n=96)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT day, reservation_status, reservation_count FROM "
                "reservation_daily_status_counts WHERE worker_sid = 'WK0' ORDER BY day LIMIT 1"
            )).one()
        day = row[0] if isinstance(row[0], date) else date.fromisoformat(str(row[0]))
        other = "accepted" if row[1] != "accepted" else "completed"
        with engine.begin() as conn:  # swap: one status's count moves to another status
            conn.execute(sa.text(
                "UPDATE reservation_daily_status_counts SET reservation_status = :o WHERE day = :d"
                " AND worker_sid = 'WK0' AND reservation_status = :s"),
                {"o": other, "d": day, "s": row[1]})
        with engine.connect() as conn:
            found = quality.compare_summary(conn, [day], "UTC")
        assert found.days_mismatched == {day} and found.rows_mismatched == 2
        by_status = {m.reservation_status: m for m in found.listed}
        assert by_status[row[1]].summary_count == 0
        assert by_status[row[1]].reservations_counted == row[2]
        assert by_status[other].summary_count == row[2] and by_status[other].reservations_counted == 0

        later = day + timedelta(days=3)
        with engine.begin() as conn:  # -1/+1 on two statuses of one day: the total holds
            statuses = [r[0] for r in conn.execute(sa.text(
                "SELECT reservation_status FROM reservation_daily_status_counts "
                "WHERE day = :d AND worker_sid = 'WK0'"), {"d": later})]
            assert statuses
            conn.execute(sa.text(
                "INSERT INTO reservation_daily_status_counts VALUES (:d, 'WS1', 'WK0', 'ghost', 1)"
            ), {"d": later})
            _plant(conn, later, [(statuses[0], -1)])
        with engine.connect() as conn:
            found = quality.compare_summary(conn, [later], "UTC")
        assert found.rows_mismatched == 2
        assert {m.reservation_status for m in found.listed} == {statuses[0], "ghost"}
    finally:
        engine.dispose()


def test_quality_days_follow_the_reporting_zone(sqlite_url):
    # 02:00 UTC on DAY is still the previous day in New York: a UTC summary is wrong there
    engine = _seed(sqlite_url, n=1)
    try:
        with engine.connect() as conn:
            assert quality.compare_summary(conn, [DAY], "UTC").rows_mismatched == 0
            ny = quality.compare_summary(conn, [DAY - timedelta(days=1), DAY], "America/New_York")
        assert ny.days_mismatched == {DAY - timedelta(days=1), DAY}
        [previous] = [m for m in ny.listed if m.day == DAY - timedelta(days=1)]
        assert (previous.summary_count, previous.reservations_counted) == (0, 1)
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
        # 8 table checks, the events gaps, the reconciliation with TaskRouter's statistics
        assert len(passed) == 10 and not any(k.endswith("_this_run") for k in passed)
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
            "reservation_daily_status_counts:summary_matches_reservations",
            "reservations:last_sync_is_recent"}
        assert {e.severity for e in results.values() if not e.passed} == {dg.AssetCheckSeverity.WARN}
        assert meta(results["reservations:date_updated_not_before_created"])["rows_out_of_order"] == 3
        assert meta(results["reservations:statuses_known"])["unknown_statuses"] == {"escalated": 4}
        totals = meta(results["reservation_daily_status_counts:summary_matches_reservations"])
        listed = totals["mismatched_rows"]
        [planted] = [m for m in listed if (m["day"], m["worker_sid"], m["reservation_status"])
                     == (str(day), row["worker_sid"], row["reservation_status"])]
        assert planted["summary_count"] == planted["reservations_counted"] + 7
        # the 4 statuses changed without a refresh: the GROUP BY has 'escalated' rows the
        # summary lacks (day totals alone would not see them)
        escalated = [m for m in listed if m["reservation_status"] == "escalated"]
        assert escalated and all(m["summary_count"] == 0 for m in escalated)
        assert sum(m["reservations_counted"] for m in escalated) == 4
        advice = results["reservation_daily_status_counts:summary_matches_reservations"].description
        assert "backfill partitions" in (advice or "") and str(day) in (advice or "")
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
    assert failed_steps == {"reservations_checks", "workers_checks"}  # one step per asset
    for key in ("reservations:sids_unique", "workers:sids_unique"):
        assert not results[key].passed and results[key].severity == dg.AssetCheckSeverity.ERROR
        assert meta(results[key])["duplicated_sids"] == 1
    nulls = meta(results["reservations:required_columns_not_null"])
    assert nulls["null_rows"] == 2 and nulls["nulls_by_column"]["worker_sid"] == 2
    assert meta(results["workers:required_columns_not_null"])["nulls_by_column"]["workspace_sid"] == 1
    # what is downstream of broken reservation keys waits: the summary check did not run
    assert "reservation_daily_status_counts:summary_matches_reservations" not in results


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
        assert all(k.endswith("_this_run") for k in results)  # never a whole-table result
        statuses = results["reservations:statuses_known_this_run"]
        assert not statuses.passed and statuses.severity == dg.AssetCheckSeverity.WARN
        assert meta(statuses)["unknown_statuses"].get("escalated", 0) > 0
        assert meta(statuses)["scope"] == "rows changed by this sync"
        assert meta(statuses)["rows_examined"] == 240
        totals = meta(results["reservation_daily_status_counts:summary_matches_reservations_this_run"])
        assert totals["days_compared"] > 20 and totals["rows_mismatched"] == 0
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


def latest_result(instance: dg.DagsterInstance, asset: str, check: str) -> Any:
    """The check's latest evaluation as the UI shows it."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    [record] = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
    return record.event.dagster_event.event_specific_data  # type: ignore[union-attr]


def test_a_swapped_status_pair_fails_the_summary_check_and_a_sync_does_not_hide_it(
    emulator, sync_env
):
    url = sync_env["WAREHOUSE_URL"]
    with dg.instance_for_test() as instance:
        assert run_sync_job(instance).success
        engine = create_warehouse_engine(url)
        with engine.begin() as conn:  # two statuses of one worker-day trade their counts
            day, worker = conn.execute(sa.text(
                "SELECT day, worker_sid FROM reservation_daily_status_counts GROUP BY day, "
                "worker_sid HAVING COUNT(DISTINCT reservation_count) > 1 ORDER BY day LIMIT 1"
            )).one()
            rows = conn.execute(sa.text(
                "SELECT reservation_status, reservation_count FROM reservation_daily_status_counts"
                " WHERE day = :d AND worker_sid = :w ORDER BY reservation_count"),
                {"d": day, "w": worker}).all()
            (low, low_n), (high, high_n) = rows[0], rows[-1]
            for status, count in ((low, high_n), (high, low_n)):
                conn.execute(sa.text(
                    "UPDATE reservation_daily_status_counts SET reservation_count = :n WHERE "
                    "day = :d AND worker_sid = :w AND reservation_status = :s"),
                    {"n": count, "d": day, "w": worker, "s": status})
        engine.dispose()

        daily = run_daily_checks(instance)
        summary = evaluations(daily)["reservation_daily_status_counts:summary_matches_reservations"]
        assert not summary.passed and meta(summary)["rows_mismatched"] == 2

        after = run_sync_job(instance)  # nothing changed upstream: the day is not refreshed
        assert after.success
        scoped = evaluations(after)[
            "reservation_daily_status_counts:summary_matches_reservations_this_run"]
        assert scoped.passed and meta(scoped)["days_compared"] == 0
        latest = latest_result(instance, "reservation_daily_status_counts",
                               "summary_matches_reservations")
        assert latest.passed is False  # still red: the defect is still in the table
