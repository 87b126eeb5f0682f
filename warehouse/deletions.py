"""``reservations.deleted_upstream_at``: which reservations TaskRouter no longer returns.

TaskRouter deletes completed and canceled tasks (and their reservations) minutes after they end;
the warehouse keeps them and records when a sync first noticed. Only a *complete* read of a
worker's reservations can prove a sid is gone: each sync batch already reads its workers' stored
versions (``warehouse.screen``), and the live ones its complete reads did not return are marked
here with chunked ``UPDATE ... WHERE sid IN``. Workers missing from a complete worker listing
are handled by ``mark_missing_workers``. Memory stays bounded by the batch.

Marking touches neither ``last_changed_at`` nor the upsert counts: the row's data did not change,
the daily summaries count deleted rows too, so nothing needs refreshing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warehouse.schema import reservations, workers

WORKER_CHUNK = 500
SID_CHUNK = 2000
_c = reservations.c


@dataclass
class DeletionCounts:
    marked: int = 0  # newly found deleted upstream
    returned: int = 0  # marked before, returned again by TaskRouter (mark cleared)

    def __iadd__(self, other: DeletionCounts) -> DeletionCounts:
        self.marked += other.marked
        self.returned += other.returned
        return self


def _chunks(values: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def live_sids(conn: Connection, worker_sids: Sequence[str]) -> set[str]:
    """Sids of these workers that the warehouse still believes exist upstream."""
    found: set[str] = set()
    for chunk in _chunks(worker_sids, WORKER_CHUNK):
        found.update(conn.execute(
            sa.select(_c.sid).where(_c.worker_sid.in_(chunk), _c.deleted_upstream_at.is_(None))
        ).scalars())
    return found


def _set_deleted_at(conn: Connection, sids: Collection[str], value: datetime | None) -> int:
    """Set ``deleted_upstream_at`` on the rows that don't already have that state (chunked)."""
    column = _c.deleted_upstream_at
    unlike = column.is_(None) if value is not None else column.is_not(None)
    changed = 0
    for chunk in _chunks(sorted(sids), SID_CHUNK):
        changed += conn.execute(
            reservations.update().where(_c.sid.in_(chunk), unlike)
            .values(deleted_upstream_at=value)
        ).rowcount
    return changed


def mark_deleted(conn: Connection, sids: Collection[str], now: datetime) -> int:
    return _set_deleted_at(conn, sids, now)


def clear_deleted(conn: Connection, sids: Collection[str]) -> int:
    return _set_deleted_at(conn, sids, None)


def mark_missing_workers(conn: Connection, workspace_sid: str, listed_worker_sids: Collection[str],
                         now: datetime) -> int:
    """Mark the live reservations of known workers a complete worker listing no longer has.

    A worker deleted upstream before a sync lists workers is never read, so no batch sees it; the ``workers`` table remembers it. Returns how many reservations were marked.
    """
    known = conn.execute(
        sa.select(workers.c.sid).where(workers.c.workspace_sid == workspace_sid)
    ).scalars().all()
    listed = set(listed_worker_sids)
    missing = sorted(sid for sid in known if sid not in listed)
    if not missing:
        return 0
    return mark_deleted(conn, live_sids(conn, missing), now)
