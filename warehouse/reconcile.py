"""The warehouse's side of a reconciliation with TaskRouter's CumulativeStatistics.

TaskRouter counts, per workspace and window, the reservations created, accepted, rejected,
timed out, canceled and rescinded. The warehouse holds the same facts: ``date_created`` for
creations, and ``reservation_status_history`` (one row per transition, at the event's own time)
for the rest. A day can only be compared when the events feed covered all of it: after the
workspace's ``coverage_start``, up to its cursor, and through no recorded gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warehouse.feed import Cursor, Gap
from warehouse.schema import reservation_status_history as history
from warehouse.schema import reservations
from warehouse.summary import day_bounds

# CumulativeStatistics field -> the status whose transitions it counts (None: creations)
STATISTIC_STATUS = {
    "reservations_created": None,
    "reservations_accepted": "accepted",
    "reservations_rejected": "rejected",
    "reservations_timed_out": "timeout",
    "reservations_canceled": "canceled",
    "reservations_rescinded": "rescinded",
}


@dataclass(frozen=True)
class Difference:
    workspace_sid: str
    day: date
    statistic: str
    taskrouter: int
    warehouse: int

    def as_dict(self) -> dict[str, object]:
        return {"workspace_sid": self.workspace_sid, "day": self.day.isoformat(),
                "statistic": self.statistic, "taskrouter": self.taskrouter,
                "warehouse": self.warehouse, "difference": self.warehouse - self.taskrouter}


def warehouse_counts(conn: Connection, workspace_sid: str, start: datetime,
                     end: datetime) -> dict[str, int]:
    """The warehouse's six counts for ``[start, end)``, named as CumulativeStatistics names them."""
    r, h = reservations.c, history.c
    created = conn.execute(
        sa.select(sa.func.count()).select_from(reservations)
        .where(r.workspace_sid == workspace_sid, r.date_created >= start, r.date_created < end)
    ).scalar_one()
    statuses = [s for s in STATISTIC_STATUS.values() if s is not None]
    moved = dict(conn.execute(
        sa.select(h.reservation_status, sa.func.count(sa.distinct(h.sid)))
        .select_from(history.join(reservations, r.sid == h.sid))
        .where(r.workspace_sid == workspace_sid, h.reservation_status.in_(statuses),
               h.date_updated >= start, h.date_updated < end)
        .group_by(h.reservation_status)
    ).tuples().all())
    return {name: int(created if status is None else moved.get(status, 0))
            for name, status in STATISTIC_STATUS.items()}


def uncovered_reason(cursor: Cursor, gaps: list[Gap], start: datetime, end: datetime) -> str | None:
    """Why ``[start, end)`` cannot be compared for the cursor's workspace, or None if it can."""
    if cursor.coverage_start is None or cursor.events_through is None:
        return "the events feed has not run for this workspace"
    if start < cursor.coverage_start:
        return f"before the events coverage began ({cursor.coverage_start:%Y-%m-%d %H:%M}Z)"
    if end > cursor.events_through:
        return "events not yet applied through the end of the day"
    for gap in gaps:
        if gap.workspace_sid == cursor.workspace_sid and gap.gap_start < end and gap.gap_end > start:
            return f"an events gap ({gap.gap_start:%Y-%m-%d %H:%M}Z to {gap.gap_end:%Y-%m-%d %H:%M}Z)"
    return None


def compare_day(conn: Connection, workspace_sid: str, day: date, zone: ZoneInfo,
                taskrouter: dict[str, int]) -> list[Difference]:
    start, end = day_bounds(day, zone)
    mine = warehouse_counts(conn, workspace_sid, start, end)
    return [Difference(workspace_sid, day, name, int(taskrouter.get(name, 0)), mine[name])
            for name in STATISTIC_STATUS if int(taskrouter.get(name, 0)) != mine[name]]
