"""Per workspace, how far TaskRouter's Events feed is applied (``event_cursors``) and where it
has holes (``event_gaps``).

``events_through`` moves only inside the transaction that applied the events up to it
(``warehouse.events.apply_event_window``), so a sync killed at any point resumes from the last
committed window and replays it harmlessly (every write is idempotent). All times are
TaskRouter's own clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from warehouse.schema import event_cursors, event_gaps

REASON_LENGTH = 255


@dataclass(frozen=True)
class Cursor:
    """One workspace's row of ``event_cursors`` (all None: the feed never ran there)."""

    workspace_sid: str
    events_through: datetime | None = None
    coverage_start: datetime | None = None
    last_sweep_at: datetime | None = None
    events_refused_at: datetime | None = None
    events_refused_reason: str | None = None


@dataclass(frozen=True)
class Gap:
    workspace_sid: str
    gap_start: datetime
    gap_end: datetime
    detected_at: datetime
    reason: str


def read_cursor(conn: Connection, workspace_sid: str) -> Cursor:
    row = conn.execute(
        sa.select(event_cursors).where(event_cursors.c.workspace_sid == workspace_sid)
    ).mappings().first()
    if row is None:
        return Cursor(workspace_sid)
    return Cursor(**{k: row[k] for k in Cursor.__dataclass_fields__})


def read_cursors(engine: Engine) -> dict[str, Cursor]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(event_cursors)).mappings().all()
    return {r["workspace_sid"]: Cursor(**{k: r[k] for k in Cursor.__dataclass_fields__})
            for r in rows}


def write_cursor(conn: Connection, workspace_sid: str, **values: datetime | str | None) -> None:
    """Set some fields of the workspace's cursor (creating its row), in ``conn``'s transaction."""
    unknown = set(values) - set(Cursor.__dataclass_fields__)
    if unknown:
        raise ValueError(f"not cursor fields: {sorted(unknown)}")
    if isinstance(values.get("events_refused_reason"), str):
        values["events_refused_reason"] = str(values["events_refused_reason"])[:REASON_LENGTH]
    now = datetime.now(UTC)
    updated = conn.execute(
        event_cursors.update().where(event_cursors.c.workspace_sid == workspace_sid)
        .values(**values, updated_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(event_cursors.insert().values(workspace_sid=workspace_sid, **values,
                                                   updated_at=now))


def record_gap(conn: Connection, workspace_sid: str, start: datetime, end: datetime,
               reason: str) -> None:
    """Remember events that can no longer be read (idempotent per workspace and start)."""
    exists = conn.execute(
        sa.select(sa.func.count()).select_from(event_gaps)
        .where(event_gaps.c.workspace_sid == workspace_sid, event_gaps.c.gap_start == start)
    ).scalar_one()
    if not exists:
        conn.execute(event_gaps.insert().values(
            workspace_sid=workspace_sid, gap_start=start, gap_end=end,
            detected_at=datetime.now(UTC), reason=reason[:REASON_LENGTH]))


def read_gaps(engine: Engine, since: datetime | None = None) -> list[Gap]:
    """Every recorded gap (those detected at or after ``since``), oldest first."""
    query = sa.select(event_gaps).order_by(event_gaps.c.detected_at, event_gaps.c.gap_start)
    if since is not None:
        query = query.where(event_gaps.c.detected_at >= since)
    with engine.connect() as conn:
        return [Gap(**dict(r)) for r in conn.execute(query).mappings()]
