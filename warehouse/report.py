"""The daily status report's figures, read from ``reservation_daily_status_counts``.

Plain SQLAlchemy and pandas (no Dagster, no HTTP), so the page renderer, the Dagster
partitions and the tests share one reading of the summary table. Days are the table's own:
calendar days of ``date_created`` in the zone the summaries were computed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from warehouse.lifecycle import KNOWN_STATUSES
from warehouse.schema import reservation_daily_status_counts as counts
from warehouse.state import REPORTING_TIMEZONE, read_state

# The acceptance rate counts the worker's own decisions only: a reservation accepted (and
# possibly wrapping or completed since) against one the worker rejected or let time out.
# canceled and rescinded were TaskRouter's or the caller's call, and pending is undecided.
ACCEPTED_STATUSES = ("accepted", "wrapping", "completed")
DECIDED_STATUSES = (*ACCEPTED_STATUSES, "rejected", "timeout")
DEFAULT_DAYS = 30


def as_date(value: object) -> date:
    """A ``day`` as the drivers return it: ``date`` (PostgreSQL, MySQL) or text (SQLite)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def day_span(engine: Engine) -> tuple[date, date] | None:
    """The first and last day the summary holds, or None when it is empty."""
    with engine.connect() as conn:
        first, last = conn.execute(sa.select(sa.func.min(counts.c.day),
                                             sa.func.max(counts.c.day))).one()
    return None if first is None else (as_date(first), as_date(last))


def summary_zone(engine: Engine) -> str | None:
    """The zone the summary days were computed in (None before the first refresh)."""
    with engine.connect() as conn:
        return read_state(conn, REPORTING_TIMEZONE)


def default_range(last: date, days: int = DEFAULT_DAYS) -> tuple[date, date]:
    """The ``days`` days ending at ``last`` (the latest day with data)."""
    return last - timedelta(days=days - 1), last


def status_order(statuses: list[str]) -> list[str]:
    """The lifecycle's order for known statuses, then any new ones alphabetically."""
    known = [s for s in KNOWN_STATUSES if s in statuses]
    return known + sorted(s for s in statuses if s not in KNOWN_STATUSES)


def daily_status_counts(engine: Engine, first: date, last: date) -> pd.DataFrame:
    """Reservations per day (index, ``date``) and status (columns, int64) in [first, last].

    One row per day that has reservations; one column per status seen in the range.
    """
    query = (
        sa.select(counts.c.day, counts.c.reservation_status,
                  sa.func.sum(counts.c.reservation_count))
        .where(counts.c.day >= first, counts.c.day <= last)
        .group_by(counts.c.day, counts.c.reservation_status)
    )
    with engine.connect() as conn:
        rows = [(as_date(day), str(status), int(total)) for day, status, total in conn.execute(query)]
    frame = pd.DataFrame(rows, columns=["day", "status", "count"])
    table = frame.pivot_table(index="day", columns="status", values="count", aggfunc="sum",
                              fill_value=0)
    table = table.reindex(columns=status_order(list(table.columns))).astype("int64")
    table.index.name, table.columns.name = "day", None
    return table.sort_index()


def acceptance(table: pd.DataFrame) -> pd.DataFrame:
    """Per day: accepted, decided (accepted + rejected + timeout) and their ratio (float64,
    NaN on a day with no decision)."""
    accepted = table.reindex(columns=list(ACCEPTED_STATUSES), fill_value=0).sum(axis=1)
    decided = table.reindex(columns=list(DECIDED_STATUSES), fill_value=0).sum(axis=1)
    rate = accepted.astype("float64") / decided.where(decided > 0).astype("float64")
    return pd.DataFrame({"accepted": accepted.astype("int64"), "decided": decided.astype("int64"),
                         "rate": rate})


@dataclass(frozen=True)
class DailyReport:
    """What the report page shows: the range, the zone and the per-day figures."""

    first: date
    last: date
    zone: str
    counts: pd.DataFrame  # day x status, int64
    rates: pd.DataFrame  # day: accepted, decided, rate

    @property
    def total(self) -> int:
        return int(self.counts.to_numpy().sum())

    @property
    def overall_rate(self) -> float | None:
        decided = int(self.rates["decided"].sum())
        return int(self.rates["accepted"].sum()) / decided if decided else None


def build_report(engine: Engine, first: date | None = None, last: date | None = None,
                 days: int = DEFAULT_DAYS) -> DailyReport:
    """The report for [first, last]; a bound left out comes from the latest day with data
    (``days`` days ending there), or today when the summary is empty."""
    span = day_span(engine)
    latest = span[1] if span else date.today()
    if last is None:
        last = latest if first is None else max(first, latest)
    if first is None:
        first = default_range(last, days)[0]
    if first > last:
        raise ValueError(f"the range starts after it ends ({first} > {last})")
    table = daily_status_counts(engine, first, last)
    return DailyReport(first, last, summary_zone(engine) or "UTC", table, acceptance(table))
