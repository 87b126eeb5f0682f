"""Reconciling the warehouse with TaskRouter's own CumulativeStatistics, day by day.

Plain functions (no Dagster): ``pipelines.event_checks`` wraps them in a daily asset check. Days
are reporting-zone days; each compared day costs one request per workspace. A day is compared
only when the events feed covered it whole (``warehouse.reconcile.uncovered_reason``) and it is
inside TaskRouter's 30-day statistics window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy.engine import Engine

from pipelines.event_feed import RETENTION_MARGIN, taskrouter_now
from pipelines.taskrouter import TaskRouterClient
from pipelines.taskrouter.events import RETENTION, cumulative_statistics
from warehouse.feed import read_cursors, read_gaps
from warehouse.reconcile import Difference, compare_day, uncovered_reason
from warehouse.summary import day_bounds, reporting_zone


@dataclass
class Reconciliation:
    compared: list[tuple[str, date]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # day, workspace, why
    differences: list[Difference] = field(default_factory=list)


def reconcile_recent_days(client: TaskRouterClient, engine: Engine, workspace_sids: list[str],
                          zone_name: str, days: int) -> Reconciliation:
    """Compare the last ``days`` complete reporting days of each workspace with TaskRouter."""
    result = Reconciliation()
    if days <= 0:
        return result
    zone = reporting_zone(zone_name)
    now, _ = taskrouter_now(client, workspace_sids)
    oldest = now - RETENTION + RETENTION_MARGIN
    cursors = read_cursors(engine)
    gaps = read_gaps(engine)
    today = now.astimezone(zone).date()
    for ws in workspace_sids:
        cursor = cursors.get(ws)
        for back in range(days, 0, -1):
            day = today - timedelta(days=back)
            start, end = day_bounds(day, zone)
            why = ("outside TaskRouter's 30-day statistics window" if start < oldest
                   else "the events feed has not run for this workspace" if cursor is None
                   else uncovered_reason(cursor, gaps, start, end))
            if why is not None:
                result.skipped.append({"workspace_sid": ws, "day": day.isoformat(), "why": why})
                continue
            counts = cumulative_statistics(client, ws, start, end - timedelta(seconds=1))
            with engine.connect() as conn:
                result.differences.extend(compare_day(conn, ws, day, zone, counts))
            result.compared.append((ws, day))
    return result


