"""The analyst queries of docs/data-dictionary.md, as data: one SQL text for SQLite, PostgreSQL and
MySQL/MariaDB.

docs/data-dictionary.md shows each ``sql`` verbatim (a test checks it), and the tests run that
exact text on all three databases, through SQLAlchemy and through the ``sqlite3``, ``psql`` and
``mysql`` clients, against answers computed with pandas. Portability rules they follow:
literal dates (``'2026-10-27'``: every client and driver takes them as pasted; ``Example.for_client``
writes each client's own variable syntax), no timestamp arithmetic or time-zone functions
(``reservation_times`` and ``reservation_status_history.seconds_since_created`` carry the
per-database expressions), window functions instead of ``PERCENTILE_CONT``, ``NULLIF`` against
division by zero, and ``ROUND`` on every computed fraction, so the three clients print the same
digits (PostgreSQL and MySQL compute exact decimals, SQLite doubles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warehouse.report import as_date

# What a column holds, and the pandas dtype ``run_example`` gives it on every database.
DTYPES = {"date": "object", "count": "int64", "number": "float64", "text": "string"}
CLIENTS = ("sqlite3", "psql", "mysql")


@dataclass(frozen=True)
class Example:
    name: str
    question: str
    sql: str
    columns: dict[str, str]  # column -> "date" (datetime.date), "count", "number" or "text"
    variables: dict[str, str] = field(default_factory=dict)  # name -> the literal date in sql

    def for_client(self, client: str) -> tuple[list[str], str]:
        """The lines that set this query's variables in ``client``, and the query using them."""
        sql = self.sql
        setup = []
        for name, value in self.variables.items():
            literal = f"'{value}'"
            if client == "sqlite3":  # .parameter evaluates its value: quote it twice
                setup.append(f".parameter set :{name} \"{literal}\"")
                sql = sql.replace(literal, f":{name}")
            elif client == "psql":
                setup.append(f"\\set {name} {value}")
                sql = sql.replace(literal, f":'{name}'")
            elif client == "mysql":
                setup.append(f"SET @{name} = {literal};")
                sql = sql.replace(literal, f"@{name}")
            else:
                raise ValueError(f"unknown client {client!r}; use one of {CLIENTS}")
        return setup, sql


# Acceptance counts the worker's own decisions only (warehouse.report.ACCEPTED_STATUSES and
# DECIDED_STATUSES): canceled and rescinded were not the worker's call, pending is undecided.
ACCEPTANCE_RATE = Example(
    "acceptance_rate_per_worker_per_day",
    "Acceptance rate per worker per day (day of date_created in REPORTING_TIMEZONE): "
    "reservations now accepted, wrapping or completed, over those plus rejected and timeout "
    "(the worker's own decisions; canceled, rescinded and pending are left out).",
    """\
SELECT day, workspace_sid, worker_sid,
       SUM(reservation_count) AS reservations,
       SUM(CASE WHEN reservation_status IN ('accepted', 'wrapping', 'completed')
                THEN reservation_count ELSE 0 END) AS accepted,
       SUM(CASE WHEN reservation_status IN ('accepted', 'wrapping', 'completed',
                                            'rejected', 'timeout')
                THEN reservation_count ELSE 0 END) AS decided,
       ROUND(1.0 * SUM(CASE WHEN reservation_status IN ('accepted', 'wrapping', 'completed')
                            THEN reservation_count ELSE 0 END)
             / NULLIF(SUM(CASE WHEN reservation_status IN ('accepted', 'wrapping', 'completed',
                                                           'rejected', 'timeout')
                               THEN reservation_count ELSE 0 END), 0), 4) AS acceptance_rate
FROM reservation_daily_status_counts
GROUP BY day, workspace_sid, worker_sid
ORDER BY day, workspace_sid, worker_sid""",
    {"day": "date", "workspace_sid": "text", "worker_sid": "text", "reservations": "count",
     "accepted": "count", "decided": "count", "acceptance_rate": "number"},
)

MEDIAN_TIME_TO_ACCEPT = Example(
    "median_seconds_created_to_accepted",
    "Median seconds from a reservation's creation to its acceptance, per workspace, from the "
    "status history. It covers the reservations a sync saw in status accepted "
    "(reservations_timed); one accepted and completed between two syncs has no acceptance time.",
    """\
WITH accepted AS (
    SELECT r.workspace_sid, h.sid, MIN(h.seconds_since_created) AS seconds
    FROM reservation_status_history h
    JOIN reservations r ON r.sid = h.sid
    WHERE h.reservation_status = 'accepted'
    GROUP BY r.workspace_sid, h.sid
), ranked AS (
    SELECT workspace_sid, seconds,
           ROW_NUMBER() OVER (PARTITION BY workspace_sid ORDER BY seconds) AS row_num,
           COUNT(*) OVER (PARTITION BY workspace_sid) AS row_total
    FROM accepted
)
SELECT workspace_sid, ROUND(AVG(seconds), 1) AS median_seconds,
       MAX(row_total) AS reservations_timed
FROM ranked
WHERE 2 * row_num BETWEEN row_total AND row_total + 2
GROUP BY workspace_sid
ORDER BY workspace_sid""",
    {"workspace_sid": "text", "median_seconds": "number", "reservations_timed": "count"},
)

STATUS_BY_HOUR = Example(
    "reservations_per_status_per_hour",
    "Reservations per current status per hour of day (UTC) of their creation.",
    """\
SELECT created_hour_utc, reservation_status, COUNT(*) AS reservations
FROM reservation_times
GROUP BY created_hour_utc, reservation_status
ORDER BY created_hour_utc, reservation_status""",
    {"created_hour_utc": "count", "reservation_status": "text", "reservations": "count"},
)

TOP_TIMEOUTS = Example(
    "workers_with_most_timeouts",
    "The ten workers with the most timed-out reservations created in one week (days in "
    "REPORTING_TIMEZONE, from Monday 2026-10-27 up to, not including, the next Monday).",
    """\
SELECT c.workspace_sid, c.worker_sid, w.friendly_name, SUM(c.reservation_count) AS timeouts
FROM reservation_daily_status_counts c
LEFT JOIN workers w ON w.sid = c.worker_sid
WHERE c.reservation_status = 'timeout'
  AND c.day >= '2026-10-27' AND c.day < '2026-11-03'
GROUP BY c.workspace_sid, c.worker_sid, w.friendly_name
ORDER BY timeouts DESC, c.workspace_sid, c.worker_sid
LIMIT 10""",
    {"workspace_sid": "text", "worker_sid": "text", "friendly_name": "text", "timeouts": "count"},
    {"week_start": "2026-10-27", "week_end": "2026-11-03"},
)

_STEPS = """\
WITH steps AS (
    SELECT sid, reservation_status, seconds_since_created,
           CASE reservation_status WHEN 'pending' THEN 0 WHEN 'accepted' THEN 1
                WHEN 'wrapping' THEN 2 ELSE 3 END AS status_step
    FROM reservation_status_history
), timed AS (
    SELECT sid, reservation_status, status_step, seconds_since_created AS entered_after_seconds,
           LEAD(seconds_since_created) OVER (PARTITION BY sid
                                             ORDER BY seconds_since_created, status_step)
             - seconds_since_created AS seconds_in_status
    FROM steps
)"""

TIME_IN_STATUS = Example(
    "seconds_in_each_status_per_reservation",
    "Seconds each reservation spent in each status, from the status history (a status's "
    "date_updated is when the reservation entered it). The status it is in now has no end yet "
    "(NULL). A status no sync saw is folded into the one before it.",
    f"""\
{_STEPS}
SELECT sid, reservation_status, entered_after_seconds, seconds_in_status
FROM timed
ORDER BY sid, entered_after_seconds, status_step""",
    {"sid": "text", "reservation_status": "text", "entered_after_seconds": "count",
     "seconds_in_status": "number"},
)

AVERAGE_TIME_IN_STATUS = Example(
    "average_seconds_in_each_status",
    "Average seconds reservations spent in each status before leaving it, over every "
    "reservation the history saw leave that status.",
    f"""\
{_STEPS}
SELECT reservation_status, COUNT(*) AS reservations,
       ROUND(AVG(seconds_in_status), 1) AS average_seconds
FROM timed
WHERE seconds_in_status IS NOT NULL
GROUP BY reservation_status
ORDER BY reservation_status""",
    {"reservation_status": "text", "reservations": "count", "average_seconds": "number"},
)

EXAMPLES: dict[str, Example] = {
    e.name: e for e in (ACCEPTANCE_RATE, MEDIAN_TIME_TO_ACCEPT, STATUS_BY_HOUR, TOP_TIMEOUTS,
                        TIME_IN_STATUS, AVERAGE_TIME_IN_STATUS)
}


def typed(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """The same dtypes whatever the driver returned: SQLite gives dates as text, MySQL sums and
    averages as ``Decimal``, PostgreSQL ``numeric`` too; text is pandas' ``string``."""
    out = frame.copy()
    for name, kind in columns.items():
        values = out[name]
        if kind == "date":
            out[name] = pd.Series([None if v is None else as_date(v) for v in values],
                                  index=out.index, dtype="object")
        elif kind == "count":
            out[name] = pd.Series([int(v) for v in values], index=out.index, dtype="int64")
        elif kind == "number":
            out[name] = pd.Series([float("nan") if v is None else float(v) for v in values],
                                  index=out.index, dtype="float64")
        else:
            out[name] = pd.Series([None if v is None else str(v) for v in values],
                                  index=out.index, dtype=pd.StringDtype())
    return out


def run_example(conn: Connection, name: str) -> pd.DataFrame:
    """Run one example query as pasted; its rows as a frame with ``DTYPES`` per column."""
    example = EXAMPLES[name]
    result = conn.execute(sa.text(example.sql))
    frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    return typed(frame, example.columns)


def example_dates(name: str) -> dict[str, date]:
    """An example's date variables as dates (for tests and callers that bind them)."""
    return {k: date.fromisoformat(v) for k, v in EXAMPLES[name].variables.items()}

