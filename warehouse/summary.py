"""Daily status counts: ``reservation_daily_status_counts`` recomputed per day with set-based SQL.

A reservation's day is the calendar day of its ``date_created`` in the reporting zone. Day
bounds are computed in Python (zoneinfo handles DST), so SQLite and MariaDB, which have no
time zones in SQL, agree with PostgreSQL. Refreshing a set of days deletes them and inserts the
grouped counts in one transaction; the days to refresh after a load come from persisted state
(rows changed since the last refresh), so a sync killed between upsert and refresh is repaired
by the next one. The same function serves syncs and Dagster backfills.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from warehouse.schema import reservation_daily_status_counts as counts_table
from warehouse.schema import reservations
from warehouse.state import REPORTING_TIMEZONE, SUMMARY_WATERMARK, read_state, write_state

log = logging.getLogger(__name__)
STREAM_CHUNK = 50_000


class UnknownTimezone(ValueError):
    """``REPORTING_TIMEZONE`` is not an IANA zone name."""


def reporting_zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo((name or "UTC").strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise UnknownTimezone(
            f"REPORTING_TIMEZONE={name!r} is not an IANA time zone (e.g. UTC, America/New_York)"
        ) from None


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants [start, end) of a local calendar day (23 or 25 hours around DST)."""
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return start, end


def local_days(timestamps: pd.Series, zone: ZoneInfo) -> set[date]:
    if timestamps.empty:
        return set()
    stamps = pd.to_datetime(timestamps, utc=True).dt.tz_convert(zone)
    return set(stamps.dt.date.dropna().unique().tolist())


@dataclass
class SummaryRefresh:
    days: list[date] = field(default_factory=list)
    rows: int = 0
    rebuilt: bool = False
    zone: str = "UTC"


_c = reservations.c
_DELETE_DAY = counts_table.delete().where(counts_table.c.day == sa.bindparam("day", type_=sa.Date))
_INSERT_DAY = counts_table.insert().from_select(
    ["day", "workspace_sid", "worker_sid", "reservation_status", "reservation_count"],
    sa.select(
        sa.bindparam("day", type_=sa.Date),
        _c.workspace_sid,
        _c.worker_sid,
        _c.reservation_status,
        sa.func.count(),
    )
    .where(_c.date_created >= sa.bindparam("start", type_=_c.date_created.type))
    .where(_c.date_created < sa.bindparam("end", type_=_c.date_created.type))
    .group_by(_c.workspace_sid, _c.worker_sid, _c.reservation_status),
)


def refresh_days(conn: Connection, days: Iterable[date], zone: ZoneInfo) -> SummaryRefresh:
    """Recompute exactly these days (delete, then insert the grouped counts) in ``conn``'s transaction."""
    wanted = sorted(set(days))
    result = SummaryRefresh(days=wanted, zone=zone.key)
    if not wanted:
        return result
    params = []
    for day in wanted:
        start, end = day_bounds(day, zone)
        params.append({"day": day, "start": start, "end": end})
    conn.execute(_DELETE_DAY, [{"day": p["day"]} for p in params])
    conn.execute(_INSERT_DAY, params)
    result.rows = conn.execute(
        sa.select(sa.func.count()).select_from(counts_table).where(counts_table.c.day.in_(wanted))
    ).scalar_one()
    return result


def changed_since(conn: Connection, watermark: datetime | None) -> tuple[pd.Series, datetime | None]:
    """``date_created`` of rows changed after the watermark, and the newest change time seen."""
    query = sa.select(_c.date_created, _c.last_changed_at)
    if watermark is not None:
        query = query.where(_c.last_changed_at > watermark)
    created: list[datetime] = []
    newest: datetime | None = None
    result = conn.execution_options(yield_per=STREAM_CHUNK).execute(query)
    for chunk in result.partitions():
        created.extend(row[0] for row in chunk)
        top = max(row[1] for row in chunk)
        newest = top if newest is None or top > newest else newest
    return pd.Series(created, dtype=object), newest


def all_days(conn: Connection, zone: ZoneInfo) -> list[date]:
    low, high = conn.execute(sa.select(sa.func.min(_c.date_created), sa.func.max(_c.date_created))).one()
    if low is None:
        return []
    first = pd.Timestamp(low).tz_convert(zone).date()
    last = pd.Timestamp(high).tz_convert(zone).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def rebuild_all(conn: Connection, zone: ZoneInfo) -> SummaryRefresh:
    conn.execute(counts_table.delete())
    result = refresh_days(conn, all_days(conn, zone), zone)
    result.rebuilt = True
    return result


def refresh_changed_days(engine: Engine, zone_name: str | None) -> SummaryRefresh:
    """Refresh every day touched since the last refresh; rebuild all if the zone changed.

    One transaction: the watermark moves only together with the counts it vouches for.
    """
    zone = reporting_zone(zone_name)
    with engine.begin() as conn:
        stored_zone = read_state(conn, REPORTING_TIMEZONE)
        raw_mark = read_state(conn, SUMMARY_WATERMARK)
        watermark = datetime.fromisoformat(raw_mark) if raw_mark else None
        created, newest = changed_since(conn, watermark)
        if stored_zone is not None and stored_zone != zone.key:
            log.warning(
                "REPORTING_TIMEZONE changed from %s to %s: rebuilding every summary day",
                stored_zone, zone.key,
            )
            result = rebuild_all(conn, zone)
        else:
            result = refresh_days(conn, local_days(created, zone), zone)
        write_state(conn, REPORTING_TIMEZONE, zone.key)
        if newest is not None:
            write_state(conn, SUMMARY_WATERMARK, newest.astimezone(UTC).isoformat())
        return result


def refresh_range(engine: Engine, first: date, last: date, zone_name: str | None) -> SummaryRefresh:
    """Recompute ``first..last`` inclusive (backfills). Refuses to mix zones in one table."""
    zone = reporting_zone(zone_name)
    with engine.begin() as conn:
        stored_zone = read_state(conn, REPORTING_TIMEZONE)
        if stored_zone is not None and stored_zone != zone.key:
            result = rebuild_all(conn, zone)
        else:
            days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
            result = refresh_days(conn, days, zone)
        write_state(conn, REPORTING_TIMEZONE, zone.key)
        return result
