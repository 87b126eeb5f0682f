"""The README's example analyst queries, as data: the same SQL text on SQLite, PostgreSQL, MySQL/MariaDB.

The README shows these strings verbatim (a test checks it), and the tests run each one on all
three databases against answers computed with pandas. Portability rules they follow: no
timestamp arithmetic or time-zone functions in the query (``reservation_times`` and
``reservation_status_history.seconds_since_created`` carry the per-database expressions), window
functions instead of ``PERCENTILE_CONT``, ``NULLIF`` against division by zero, dates compared
with bound parameters (``:name``, as SQLAlchemy's ``text()`` and most SQL clients accept them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class Example:
    name: str
    question: str
    sql: str
    date_params: tuple[str, ...] = ()

    def statement(self) -> sa.TextClause:
        clause = sa.text(self.sql)
        if self.date_params:
            clause = clause.bindparams(*(sa.bindparam(p, type_=sa.Date) for p in self.date_params))
        return clause


ACCEPTANCE_RATE = Example(
    "acceptance_rate_per_worker_per_day",
    "Acceptance rate per worker per day (day of date_created in REPORTING_TIMEZONE): accepted "
    "(accepted, wrapping or completed) over decided (every status but pending).",
    """\
SELECT day, workspace_sid, worker_sid,
       SUM(reservation_count) AS reservations,
       SUM(CASE WHEN reservation_status IN ('accepted', 'wrapping', 'completed')
                THEN reservation_count ELSE 0 END) AS accepted,
       ROUND(1.0 * SUM(CASE WHEN reservation_status IN ('accepted', 'wrapping', 'completed')
                            THEN reservation_count ELSE 0 END)
             / NULLIF(SUM(CASE WHEN reservation_status <> 'pending'
                               THEN reservation_count ELSE 0 END), 0), 4) AS acceptance_rate
FROM reservation_daily_status_counts
GROUP BY day, workspace_sid, worker_sid
ORDER BY day, workspace_sid, worker_sid""",
)

MEDIAN_TIME_TO_ACCEPT = Example(
    "median_seconds_created_to_accepted",
    "Median seconds from a reservation's creation to its acceptance, per workspace, from the "
    "status history (reservations the warehouse saw in status accepted).",
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
SELECT workspace_sid, AVG(seconds) AS median_seconds, MAX(row_total) AS accepted_reservations
FROM ranked
WHERE 2 * row_num BETWEEN row_total AND row_total + 2
GROUP BY workspace_sid
ORDER BY workspace_sid""",
)

STATUS_BY_HOUR = Example(
    "reservations_per_status_per_hour",
    "Reservations per current status per hour of day (UTC) of their creation.",
    """\
SELECT created_hour_utc, reservation_status, COUNT(*) AS reservations
FROM reservation_times
GROUP BY created_hour_utc, reservation_status
ORDER BY created_hour_utc, reservation_status""",
)

TOP_TIMEOUTS = Example(
    "workers_with_most_timeouts",
    "The ten workers with the most timed-out reservations created in [:week_start, :week_end) "
    "(days in REPORTING_TIMEZONE; bind last week's Monday and this Monday).",
    """\
SELECT c.workspace_sid, c.worker_sid, w.friendly_name, SUM(c.reservation_count) AS timeouts
FROM reservation_daily_status_counts c
LEFT JOIN workers w ON w.sid = c.worker_sid
WHERE c.reservation_status = 'timeout'
  AND c.day >= :week_start AND c.day < :week_end
GROUP BY c.workspace_sid, c.worker_sid, w.friendly_name
ORDER BY timeouts DESC, c.workspace_sid, c.worker_sid
LIMIT 10""",
    date_params=("week_start", "week_end"),
)

EXAMPLES: dict[str, Example] = {
    e.name: e for e in (ACCEPTANCE_RATE, MEDIAN_TIME_TO_ACCEPT, STATUS_BY_HOUR, TOP_TIMEOUTS)
}


def run_example(conn: Connection, name: str, **params: Any) -> pd.DataFrame:
    """Run one example query; returns its rows as a frame with the query's column names."""
    result = conn.execute(EXAMPLES[name].statement(), params)
    return pd.DataFrame(result.all(), columns=list(result.keys()))
