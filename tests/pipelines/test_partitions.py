"""Where the summary's daily partitions start: pinned by SUMMARY_START_DATE, else at the first
day the warehouse holds (so a fresh install shows no wall of empty "missing" days, and every
day with data can still be backfilled), else 30 days back on an empty warehouse."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from pipelines.partitions import EMPTY_WAREHOUSE_DAYS, first_day_with_data, summary_start_date
from pipelines.settings import load_settings
from tests.helpers import ANCHOR, assert_summary_consistent, run_sync_job
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import ensure_schema
from warehouse.schema import reservation_daily_status_counts as counts

TODAY = date(2026, 12, 6)


def test_a_pinned_start_wins(tmp_path):
    env = {"SUMMARY_START_DATE": "2024-02-29", "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    assert summary_start_date(load_settings(env), env, TODAY) == "2024-02-29"


def test_an_empty_or_absent_warehouse_starts_thirty_days_back_and_creates_nothing(tmp_path):
    absent = tmp_path / "absent.db"
    env = {"WAREHOUSE_URL": f"sqlite:///{absent}"}
    expected = (TODAY - timedelta(days=EMPTY_WAREHOUSE_DAYS)).isoformat()
    assert summary_start_date(load_settings(env), env, TODAY) == expected
    assert not absent.exists()  # a definitions load never creates the warehouse

    engine = create_warehouse_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    ensure_schema(engine)
    engine.dispose()
    env = {"WAREHOUSE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    assert summary_start_date(load_settings(env), env, TODAY) == expected


def test_an_unreachable_server_does_not_fail_the_load():
    for url in ("postgresql+psycopg://nobody@127.0.0.1:1/none", "mysql+pymysql://nobody@127.0.0.1:1/x",
                "postgresql://u:p@h@x/db"):  # refused, refused, a URL the engine refuses
        assert first_day_with_data(url) is None


def test_the_start_follows_the_data_on_every_database(warehouse_url):
    engine = create_warehouse_engine(warehouse_url)
    try:
        ensure_schema(engine)
        assert first_day_with_data(warehouse_url) is None  # tables, no rows
        with engine.begin() as conn:
            conn.execute(counts.insert(), [
                {"day": day, "workspace_sid": "WS1", "worker_sid": "WK1",
                 "reservation_status": "completed", "reservation_count": 1}
                for day in (date(2026, 10, 4), date(2026, 11, 3))])
    finally:
        engine.dispose()
    assert first_day_with_data(warehouse_url) == date(2026, 10, 4)
    env = {"WAREHOUSE_URL": warehouse_url}
    assert summary_start_date(load_settings(env), env, TODAY) == "2026-10-04"


def test_after_a_sync_every_day_with_data_is_a_partition_and_backfills(emulator, sync_env,
                                                                       monkeypatch):
    """No pinned start: the partitions begin at the summary's first day, so the oldest day with
    data can be backfilled, and no day before the data is listed."""
    monkeypatch.delenv("SUMMARY_START_DATE")
    assert run_sync_job().success
    url = sync_env["WAREHOUSE_URL"]
    engine = create_warehouse_engine(url)
    with engine.connect() as conn:
        days = sorted({d if isinstance(d, date) else date.fromisoformat(str(d))
                       for (d,) in conn.execute(sa.select(counts.c.day).distinct())})
    engine.dispose()
    assert days[0] < ANCHOR.date() - timedelta(days=20)

    from pipelines.definitions import build_definitions

    defs = build_definitions()
    summary = defs.resolve_assets_def("reservation_daily_status_counts")
    keys = summary.partitions_def.get_partition_keys()  # type: ignore[union-attr]
    assert keys[0] == days[0].isoformat()
    assert {d.isoformat() for d in days} <= set(keys)

    result = dg.materialize([summary],  # resolved with the definitions' warehouse resource
                            partition_key=days[0].isoformat(),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    # the newest materialization of the day carries that day's own figures (operations-unattended)
    materialized = result.asset_materializations_for_node("reservation_daily_status_counts")[-1]
    assert materialized.partition == days[0].isoformat()
    assert materialized.metadata["reservations"].value > 0  # type: ignore[union-attr]
    assert_summary_consistent(url)


def test_the_summary_asset_links_the_report_and_has_no_automation(sync_env):
    from pipelines.definitions import build_definitions
    from pipelines.report import REPORT_PATH

    summary = build_definitions().resolve_assets_def("reservation_daily_status_counts")
    spec = next(iter(summary.specs))
    assert spec.metadata["report"] == dg.MetadataValue.path(str(REPORT_PATH))
    assert spec.automation_condition is None
    assert "needs no automation" in (spec.description or "")
    assert Path(REPORT_PATH).name == "report.html"
