"""Data-quality queries: plain functions that return counts, for the Dagster asset checks.

Every function takes an optional ``since``: with it, only rows whose ``last_changed_at`` is at or
after that instant are examined (what one sync just wrote, cheap thanks to the index on
``last_changed_at``); without it, the whole table (the daily job). No Dagster here, so the same
queries can be run by hand or from a notebook.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warehouse.lifecycle import KNOWN_STATUSES
from warehouse.schema import reservation_daily_status_counts as counts_table
from warehouse.schema import reservations, workers
from warehouse.summary import all_days, day_bounds, local_days, reporting_zone

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
class DayMismatch:
    day: date
    summary_total: int
    reservations_created: int


def reservations_per_day(conn: Connection, days: Iterable[date], zone: ZoneInfo) -> dict[date, int]:
    """Reservations created on each local day, counted over the day's UTC bounds (set-based)."""
    wanted = sorted(set(days))
    counted: dict[date, int] = {}
    r = reservations.c
    kind = r.date_created.type
    for at in range(0, len(wanted), DAYS_PER_QUERY):
        chunk = wanted[at:at + DAYS_PER_QUERY]
        selects = []
        for day in chunk:
            start, end = day_bounds(day, zone)
            selects.append(sa.select(
                sa.literal(day.isoformat(), sa.String(10)).label("day"),
                sa.literal(start, kind).label("day_start"),
                sa.literal(end, kind).label("day_end"),
            ))
        bounds = (sa.union_all(*selects) if len(selects) > 1 else selects[0]).subquery("bounds")
        query = (
            sa.select(bounds.c.day, sa.func.count(r.sid))
            .select_from(bounds.outerjoin(
                reservations,
                sa.and_(r.date_created >= bounds.c.day_start, r.date_created < bounds.c.day_end),
            ))
            .group_by(bounds.c.day)
        )
        counted.update({date.fromisoformat(str(d)): int(n) for d, n in conn.execute(query).all()})
    return counted


def summary_totals(conn: Connection, days: Iterable[date] | None = None) -> dict[date, int]:
    c = counts_table.c
    query = sa.select(c.day, sa.func.sum(c.reservation_count)).group_by(c.day)
    if days is not None:
        query = query.where(c.day.in_(sorted(set(days))))
    return {d if isinstance(d, date) else date.fromisoformat(str(d)): int(n)
            for d, n in conn.execute(query).all()}


def summary_mismatches(conn: Connection, zone_name: str | None,
                       since: datetime | None = None,
                       days: Iterable[date] | None = None) -> tuple[int, list[DayMismatch]]:
    """Days whose summary total differs from the reservations created that day.

    Returns (days compared, mismatches). With ``days``, exactly those days are compared (a
    backfill's range); with ``since``, the days of reservations changed since then; with
    neither, every day that has reservations or summary rows.
    """
    zone = reporting_zone(zone_name)
    if days is not None:
        days = set(days)
        stored = summary_totals(conn, days) if days else {}
    elif since is None:
        stored = summary_totals(conn)
        days = set(all_days(conn, zone)) | set(stored)
    else:
        changed = conn.execute(
            sa.select(reservations.c.date_created).where(reservations.c.last_changed_at >= since)
        ).scalars().all()
        days = local_days(pd.Series(changed, dtype=object), zone)
        stored = summary_totals(conn, days) if days else {}
    actual = reservations_per_day(conn, days, zone)
    mismatches = [
        DayMismatch(day, stored.get(day, 0), actual.get(day, 0))
        for day in sorted(days)
        if stored.get(day, 0) != actual.get(day, 0)
    ]
    return len(days), mismatches
