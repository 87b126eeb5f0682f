"""Daily status counts: ``reservation_daily_status_counts`` recomputed per day with set-based SQL.

A reservation's day is the calendar day of its ``date_created`` in the reporting zone. Day
bounds are computed in Python (zoneinfo handles DST), so SQLite and MariaDB, which have no
time zones in SQL, agree with PostgreSQL. Refreshing a set of days deletes them and inserts the
grouped counts in one transaction; the days to refresh after a load come from persisted state
(rows changed since the last refresh), so a sync killed between upsert and refresh is repaired
by the next one. The same function serves syncs and Dagster backfills.

A changed row names its *new* day only. When an update moves a reservation's ``date_created``
(TaskRouter's is effectively immutable, so this is rare), the upsert records the old UTC day
in ``warehouse_state`` (``summary_moved_days``, same transaction: ``record_moved_days``) and
the next refresh recomputes it too, then clears the record it consumed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from warehouse.dialects import for_connection
from warehouse.engine import run_in_transaction
from warehouse.schema import as_utc, reservations, warehouse_state
from warehouse.schema import reservation_daily_status_counts as counts_table
from warehouse.sqlfuncs import utc_text
from warehouse.state import REPORTING_TIMEZONE, SUMMARY_WATERMARK, read_state, write_state

log = logging.getLogger(__name__)

# The UTC days that lost a reservation to an update of its date_created: JSON
# {"stamp": <last_changed_at of the latest upsert that added to it>, "days": [ISO dates] or
# EVERY_DAY once more than MOVED_DAYS_LIMIT (so the value always fits MySQL's TEXT)}. The next
# refresh_changed_days recomputes those days (EVERY_DAY: rebuilds all) and deletes the record.
MOVED_DAYS = "summary_moved_days"
MOVED_DAYS_LIMIT = 2000
EVERY_DAY = "all"


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
    # collapse to local midnights first: a handful of values to turn into Python dates
    midnights = stamps.dt.tz_localize(None).dt.normalize().dropna().drop_duplicates()
    return set(midnights.dt.date.tolist())


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
    result.rows = _count_rows(conn, wanted)
    return result


def _count_rows(conn: Connection, days: list[date]) -> int:
    if not days:
        return 0
    return conn.execute(
        sa.select(sa.func.count()).select_from(counts_table).where(counts_table.c.day.in_(days))
    ).scalar_one()


_LAST_MICROSECOND = timedelta(hours=1) - timedelta(microseconds=1)


def changed_days(conn: Connection, since: datetime | None,
                 zone: ZoneInfo) -> tuple[set[date], datetime | None]:
    """Local days of the rows changed after ``since``, and the newest change time among them.

    The database groups the changed rows by UTC hour of creation, so a few hundred values come
    back however many rows changed (a full load of millions included). An hour maps to the local
    days of its first and last instant: both, when a zone's midnight falls inside the hour
    (offsets such as +05:30); recomputing a day that did not change is harmless.
    """
    hour = utc_text(_c.date_created, "hour")  # 'YYYY-MM-DD HH', computed by the database
    query = sa.select(hour, sa.type_coerce(sa.func.max(_c.last_changed_at), sa.String))
    if since is not None:
        query = query.where(_c.last_changed_at > since)
    days: set[date] = set()
    newest: datetime | None = None
    for bucket, changed in conn.execute(query.group_by(hour)).tuples():
        if bucket is None or changed is None:
            continue
        start = datetime.strptime(bucket, "%Y-%m-%d %H").replace(tzinfo=UTC)
        days.add(start.astimezone(zone).date())
        days.add((start + _LAST_MICROSECOND).astimezone(zone).date())
        stamp = as_utc(changed)
        newest = stamp if newest is None or stamp > newest else newest
    return days, newest


def record_moved_days(conn: Connection, old_created: pd.Series, stamp: datetime) -> None:
    """Remember the UTC days of ``old_created``: the stored ``date_created`` values that this
    transaction's updates (stamped ``stamp``) replace with a different one, so the next refresh
    recomputes the days those reservations leave (their new days come from ``last_changed_at``).

    Called by the upsert under the reservations writer lock, in its transaction: the record
    commits with the rows that moved, or not at all. Every call writes a new value (the stamp
    increases), so a refresh that read an older value never deletes this one.
    """
    stamps = pd.to_datetime(old_created, utc=True).dropna()
    if stamps.empty:
        return
    raw = read_state(conn, MOVED_DAYS)
    known = json.loads(raw)["days"] if raw else []
    days: list[str] | str = EVERY_DAY
    if known != EVERY_DAY:
        merged = set(known) | set(stamps.dt.strftime("%Y-%m-%d").tolist())
        if len(merged) <= MOVED_DAYS_LIMIT:
            days = sorted(merged)
    value = {"stamp": stamp.astimezone(UTC).isoformat(), "days": days}
    write_state(conn, MOVED_DAYS, json.dumps(value))


def _moved_local_days(raw: str, zone: ZoneInfo) -> set[date] | None:
    """The local days that the recorded UTC days overlap (one or two each); None for every day."""
    recorded = json.loads(raw)["days"]
    if recorded == EVERY_DAY:
        return None
    days: set[date] = set()
    for text in recorded:
        start = datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        days.add(start.astimezone(zone).date())
        days.add((start + timedelta(days=1, microseconds=-1)).astimezone(zone).date())
    return days


def _consume_moved_days(conn: Connection, raw: str) -> None:
    """Delete the record this refresh read, unless an upsert has rewritten it since (it then
    stays, and the next refresh redoes these days too: harmless). No lock is needed: the
    ``DELETE`` judges the latest committed value, after waiting for an upsert writing it."""
    conn.execute(warehouse_state.delete().where(warehouse_state.c.key == MOVED_DAYS)
                 .where(warehouse_state.c.value == raw))


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


def _lock_summaries(conn: Connection) -> None:
    """Serialize summary refreshes: two at once would delete and insert the same days.

    The ``reporting_timezone`` lock (``WarehouseDialect.lock``); on SQLite the database's write
    lock, so the reads that choose the days and the rewrite of those days are one write
    transaction (a load cannot commit in between).
    """
    for_connection(conn).lock(conn, REPORTING_TIMEZONE)


def refresh_changed_days(engine: Engine, zone_name: str | None) -> SummaryRefresh:
    """Refresh every day touched since the last refresh; rebuild all if the zone changed.

    One transaction: the watermark moves only together with the counts it vouches for. Rows
    are stamped under the reservations writer lock with a ``last_changed_at`` later than any
    committed before (``warehouse.upsert.next_change_stamp``), so a load committing after
    this refresh read the table stamps every row after the new watermark: nothing is missed,
    even when loads run on hosts whose clocks disagree.
    """
    zone = reporting_zone(zone_name)

    def work(conn: Connection) -> SummaryRefresh:
        _lock_summaries(conn)
        stored_zone = read_state(conn, REPORTING_TIMEZONE)
        raw_mark = read_state(conn, SUMMARY_WATERMARK)
        watermark = datetime.fromisoformat(raw_mark) if raw_mark else None
        moved = read_state(conn, MOVED_DAYS)
        moved_days = _moved_local_days(moved, zone) if moved else set()
        zone_changed = stored_zone is not None and stored_zone != zone.key
        if zone_changed or moved_days is None:
            if zone_changed:
                log.warning(
                    "REPORTING_TIMEZONE changed from %s to %s: rebuilding every summary day",
                    stored_zone, zone.key,
                )
            newest = conn.execute(sa.select(sa.func.max(_c.last_changed_at))).scalar_one_or_none()
            result = rebuild_all(conn, zone)
        else:
            days, newest = changed_days(conn, watermark, zone)
            result = refresh_days(conn, days | moved_days, zone)
        if moved:
            _consume_moved_days(conn, moved)
        write_state(conn, REPORTING_TIMEZONE, zone.key)
        if newest is not None and (watermark is None or newest > watermark):
            write_state(conn, SUMMARY_WATERMARK, newest.astimezone(UTC).isoformat())
        return result

    return run_in_transaction(engine, work, what="summary refresh")


def refresh_range(engine: Engine, first: date, last: date, zone_name: str | None) -> SummaryRefresh:
    """Recompute ``first..last`` inclusive (backfills). Refuses to mix zones in one table."""
    zone = reporting_zone(zone_name)

    def work(conn: Connection) -> SummaryRefresh:
        _lock_summaries(conn)
        stored_zone = read_state(conn, REPORTING_TIMEZONE)
        if stored_zone is not None and stored_zone != zone.key:
            log.warning(
                "REPORTING_TIMEZONE changed from %s to %s: rebuilding every summary day",
                stored_zone, zone.key,
            )
            result = rebuild_all(conn, zone)
        else:
            days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
            result = refresh_days(conn, days, zone)
        write_state(conn, REPORTING_TIMEZONE, zone.key)
        return result

    return run_in_transaction(engine, work, what="summary backfill")
