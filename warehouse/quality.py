"""Data-quality queries: plain functions that return counts, for the Dagster asset checks.

Every row check takes an optional ``since``: with it, only rows whose ``last_changed_at`` is at
or after that instant are examined (what one sync just wrote, cheap thanks to the index on
``last_changed_at``); without it, the whole table (the daily job). Everything runs in SQL and
only counts (or the first few offenders) come back, so a check over a million changed rows
holds none of them in memory. No Dagster here, so the same queries can be run by hand or from a
notebook.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warehouse.lifecycle import KNOWN_STATUSES
from warehouse.schema import reservation_daily_status_counts as counts_table
from warehouse.schema import reservations, workers
from warehouse.summary import all_days, changed_days, day_bounds, reporting_zone

# The columns a row is useless without: keys, and what the summaries group and day by.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "reservations": ("sid", "workspace_sid", "worker_sid", "reservation_status",
                     "date_created", "date_updated"),
    "workers": ("sid", "workspace_sid"),
}
TABLES = {"reservations": reservations, "workers": workers}
DAYS_PER_QUERY = 200  # day bounds are bound parameters: keep each statement small


def _scoped(table: sa.Table, query: sa.Select, since: datetime | None) -> sa.Select:
    return query if since is None else query.where(table.c.last_changed_at >= since)


def rows_examined(conn: Connection, table: sa.Table, since: datetime | None = None) -> int:
    """How many rows a check with this scope looks at."""
    query = _scoped(table, sa.select(sa.func.count()).select_from(table), since)
    return int(conn.execute(query).scalar_one())


def duplicate_sids(conn: Connection, table: sa.Table, since: datetime | None = None) -> int:
    """Number of sids held by more than one row (0 while the primary key is intact)."""
    dupes = (
        _scoped(table, sa.select(table.c.sid), since)
        .group_by(table.c.sid)
        .having(sa.func.count() > 1)
        .subquery()
    )
    return int(conn.execute(sa.select(sa.func.count()).select_from(dupes)).scalar_one())


def null_counts(conn: Connection, table: sa.Table, columns: Sequence[str] | None = None,
                since: datetime | None = None) -> dict[str, int]:
    """NULLs per required column, in one scan."""
    names = list(columns or REQUIRED_COLUMNS[table.name])
    query = _scoped(
        table,
        sa.select(*[
            sa.func.coalesce(sa.func.sum(sa.case((table.c[n].is_(None), 1), else_=0)), 0)
            for n in names
        ]),
        since,
    )
    row = conn.execute(query).one()
    return {name: int(value) for name, value in zip(names, row, strict=True)}


def dates_out_of_order(conn: Connection, since: datetime | None = None) -> int:
    """Reservations whose ``date_updated`` is before their ``date_created``."""
    c = reservations.c
    query = _scoped(
        reservations,
        sa.select(sa.func.count()).select_from(reservations).where(c.date_updated < c.date_created),
        since,
    )
    return int(conn.execute(query).scalar_one())


def unknown_statuses(conn: Connection, since: datetime | None = None,
                     known: Iterable[str] = KNOWN_STATUSES) -> dict[str, int]:
    """Reservations per status outside the known lifecycle (TaskRouter may add new ones)."""
    c = reservations.c
    query = _scoped(
        reservations,
        sa.select(c.reservation_status, sa.func.count())
        .where(c.reservation_status.not_in(list(known)))
        .group_by(c.reservation_status),
        since,
    )
    return {str(status): int(n) for status, n in conn.execute(query).all()}


@dataclass(frozen=True)
class RowMismatch:
    """A summary row that differs from the GROUP BY over ``reservations`` (0: no such row)."""

    day: date
    workspace_sid: str
    worker_sid: str
    reservation_status: str
    summary_count: int
    reservations_counted: int


@dataclass
class SummaryComparison:
    days_compared: int = 0
    rows_mismatched: int = 0
    days_mismatched: set[date] = field(default_factory=set)
    listed: list[RowMismatch] = field(default_factory=list)  # the first ``limit`` mismatches


def _bounds(days: Sequence[date], zone: ZoneInfo) -> sa.Subquery:
    """The local days as a derived table (day, day_start, day_end): bounds from Python's zoneinfo."""
    kind = reservations.c.date_created.type
    selects = []
    for day in days:
        start, end = day_bounds(day, zone)
        selects.append(sa.select(sa.literal(day, sa.Date).label("day"),
                                 sa.literal(start, kind).label("day_start"),
                                 sa.literal(end, kind).label("day_end")))
    return (sa.union_all(*selects) if len(selects) > 1 else selects[0]).subquery("bounds")


_KEYS = ("workspace_sid", "worker_sid", "reservation_status")


def _mismatch_selects(days: Sequence[date], zone: ZoneInfo) -> tuple[sa.Select, sa.Select]:
    """Rows of these days where summary and GROUP BY disagree, as two anti-joins (a FULL OUTER
    JOIN written so that SQLite, PostgreSQL and MySQL/MariaDB all run it): rows the GROUP BY has
    that the summary lacks or counts differently, and summary rows the GROUP BY does not have."""
    r, c = reservations.c, counts_table.c
    bounds = _bounds(days, zone)
    expected = (
        sa.select(bounds.c.day, r.workspace_sid, r.worker_sid, r.reservation_status,
                  sa.func.count().label("counted"))
        .select_from(bounds.join(reservations, sa.and_(r.date_created >= bounds.c.day_start,
                                                       r.date_created < bounds.c.day_end)))
        .group_by(bounds.c.day, r.workspace_sid, r.worker_sid, r.reservation_status)
        .subquery("expected")
    )
    stored = (sa.select(c.day, c.workspace_sid, c.worker_sid, c.reservation_status,
                        c.reservation_count)
              .where(c.day.in_(list(days))).subquery("stored"))
    same_row = sa.and_(stored.c.day == expected.c.day,
                       *[stored.c[k] == expected.c[k] for k in _KEYS])
    missing_or_different = (
        sa.select(expected.c.day, *[expected.c[k] for k in _KEYS],
                  sa.func.coalesce(stored.c.reservation_count, 0).label("summary_count"),
                  expected.c.counted.label("reservations_counted"))
        .select_from(expected.outerjoin(stored, same_row))
        .where(sa.or_(stored.c.reservation_count.is_(None),
                      stored.c.reservation_count != expected.c.counted))
    )
    extra = (
        sa.select(stored.c.day, *[stored.c[k] for k in _KEYS],
                  stored.c.reservation_count.label("summary_count"),
                  sa.literal(0, sa.Integer).label("reservations_counted"))
        .select_from(stored.outerjoin(expected, same_row))
        .where(expected.c.counted.is_(None))
    )
    return missing_or_different, extra


def compare_summary(conn: Connection, days: Iterable[date], zone_name: str | None,
                    limit: int = 50) -> SummaryComparison:
    """Every (day, workspace, worker, status) row of ``days`` against the GROUP BY over
    ``reservations``, in SQL, ``DAYS_PER_QUERY`` days per statement: only mismatches come back
    (counted, and the first ``limit`` listed), never the tables' rows."""
    zone = reporting_zone(zone_name)
    wanted = sorted(set(days))
    result = SummaryComparison(days_compared=len(wanted))
    for at in range(0, len(wanted), DAYS_PER_QUERY):
        for query in _mismatch_selects(wanted[at:at + DAYS_PER_QUERY], zone):
            found = query.subquery("found")
            rows = conn.execute(sa.select(found.c.day, sa.func.count())
                                .group_by(found.c.day)).all()
            for day, count in rows:
                result.rows_mismatched += int(count)
                result.days_mismatched.add(_as_date(day))
            room = limit - len(result.listed)
            if rows and room > 0:
                result.listed += [
                    RowMismatch(_as_date(m.day), m.workspace_sid, m.worker_sid,
                                m.reservation_status, int(m.summary_count),
                                int(m.reservations_counted))
                    for m in conn.execute(query.limit(room))
                ]
    return result


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def summary_days(conn: Connection, zone_name: str | None) -> list[date]:
    """Every day that has reservations or summary rows (the whole-table comparison's days)."""
    zone = reporting_zone(zone_name)
    stored = conn.execute(sa.select(sa.func.min(counts_table.c.day),
                                    sa.func.max(counts_table.c.day))).one()
    days = set(all_days(conn, zone))
    if stored[0] is not None:
        first, last = _as_date(stored[0]), _as_date(stored[1])
        days |= {first + timedelta(days=n) for n in range((last - first).days + 1)}
    return sorted(days)


def days_changed_since(conn: Connection, since: datetime, zone_name: str | None) -> list[date]:
    """The local days of the reservations changed at or after ``since``, grouped in SQL (a few
    hundred values back, however many rows changed)."""
    days, _newest = changed_days(conn, since - timedelta(microseconds=1), reporting_zone(zone_name))
    return sorted(days)
