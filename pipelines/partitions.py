"""The daily partitions of ``reservation_daily_status_counts``, and where they start.

Dagster fixes a partitions definition when the definitions load, and shows every partition
without a materialization as "missing", so a fixed old start filled a fresh install with
missing days (benchmarks/results/design-notes.md). Unless ``SUMMARY_START_DATE`` pins it, the
start is the first day the warehouse's summary holds: every day with data stays a partition (a
backfill of any of them works), and the days before the data are not listed. An empty (or
unreachable) warehouse starts 30 days before today in ``REPORTING_TIMEZONE``, as far back as a
first sync usually reaches (TaskRouter keeps events 30 days). The summary itself is never
limited by the partitions: a sync refreshes any day.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from pipelines.settings import Settings

EMPTY_WAREHOUSE_DAYS = 30
PROBE_TIMEOUT_S = 3  # a definitions load waits at most this long on an unreachable server


def first_day_with_data(raw_url: str | None) -> date | None:
    """The summary's first day, or None when there is none (or it cannot be read now).

    Never creates anything: a SQLite file that does not exist is not opened.
    """
    import sqlalchemy as sa

    from warehouse.engine import create_warehouse_engine, normalize_url
    from warehouse.report import day_span

    try:
        url = normalize_url(raw_url)
        backend = url.get_backend_name()
        if backend == "sqlite":
            if not url.database or not Path(url.database).is_file():
                return None
            engine = create_warehouse_engine(url)
        else:
            engine = create_warehouse_engine(
                url, connect_args=_probe_connect_args(backend, url.query))
        try:
            span = day_span(engine)
        finally:
            engine.dispose()
    except (sa.exc.SQLAlchemyError, ValueError, OSError):
        return None  # no table yet, server down, bad URL: the sync will say so, not the load
    return span[0] if span else None


def _probe_connect_args(backend: str, query: Mapping[str, object]) -> dict[str, object]:
    if backend == "postgresql":
        args: dict[str, object] = {"application_name": "taskrouter-warehouse"}
        if "connect_timeout" not in query:
            args["connect_timeout"] = PROBE_TIMEOUT_S
        return args
    return {"connect_timeout": PROBE_TIMEOUT_S}  # PyMySQL


def summary_start_date(settings: Settings, environ: Mapping[str, str] | None = None,
                       today: date | None = None) -> str:
    """``SUMMARY_START_DATE`` when set, else the first day with data, else 30 days ago."""
    env = os.environ if environ is None else environ
    if env.get("SUMMARY_START_DATE", "").strip():
        return settings.summary_start_date  # checked by load_settings
    first = first_day_with_data(env.get("WAREHOUSE_URL"))
    if first is not None:
        return first.isoformat()
    today = today or datetime.now(ZoneInfo(settings.reporting_timezone)).date()
    return (today - timedelta(days=EMPTY_WAREHOUSE_DAYS)).isoformat()


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """The partitions of ``reservation_daily_status_counts``: one per day of
    ``REPORTING_TIMEZONE`` from ``summary_start_date``, today included."""
    return dg.DailyPartitionsDefinition(start_date=summary_start_date(settings),
                                        timezone=settings.reporting_timezone, end_offset=1)
