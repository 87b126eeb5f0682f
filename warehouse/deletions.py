"""``reservations.deleted_upstream_at``: which reservations TaskRouter no longer returns.

TaskRouter deletes completed and canceled tasks (and their reservations) minutes after they end;
the warehouse keeps them and records when a sync first noticed. Only a *complete* read of a
worker's reservations can prove a sid is gone, so the loader calls ``reconcile_workers`` with the
workers it read completely and every sid those reads returned; partial or failed reads are never
passed; workers missing from a complete worker listing are handled by ``mark_missing_workers``.
The work is set-based: a grouped count per worker of the rows still live in the
warehouse (index-only on ``ix_reservations_worker_sid_deleted_upstream_at``), the live sids of
just the workers whose count exceeds what the read returned, and chunked ``UPDATE ... WHERE sid
IN``. Memory stays bounded by the batch.

Marking touches neither ``last_changed_at`` nor the upsert counts: the row's data did not change,
the daily summaries count deleted rows too, so nothing needs refreshing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


def record_sids(records: Iterable[Any]) -> set[str]:
    """The sids of raw API records, including ones normalization would reject."""
    return {sid for r in records
            if isinstance(r, dict) and isinstance(sid := r.get("sid"), str) and sid}


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


def live_counts(conn: Connection, worker_sids: Sequence[str]) -> dict[str, int]:
    """Per worker, how many rows the warehouse believes still exist upstream (index-only)."""
    found: dict[str, int] = {}
    for chunk in _chunks(worker_sids, WORKER_CHUNK):
        rows = conn.execute(
            sa.select(_c.worker_sid, sa.func.count())
            .where(_c.worker_sid.in_(chunk), _c.deleted_upstream_at.is_(None))
            .group_by(_c.worker_sid)
        ).all()
        found.update((worker, int(count)) for worker, count in rows)
    return found


def mark_missing_workers(conn: Connection, workspace_sid: str, listed_worker_sids: Collection[str],
                         now: datetime) -> int:
    """Mark the live reservations of known workers a complete worker listing no longer has.

    A worker deleted upstream before a sync lists workers is never read, so ``reconcile_workers``
    cannot see it; the ``workers`` table remembers it. Returns how many reservations were marked.
    """
    known = conn.execute(
        sa.select(workers.c.sid).where(workers.c.workspace_sid == workspace_sid)
    ).scalars().all()
    listed = set(listed_worker_sids)
    missing = sorted(sid for sid in known if sid not in listed)
    if not missing:
        return 0
    return mark_deleted(conn, live_sids(conn, missing), now)


def reconcile_workers(
    conn: Connection,
    worker_sids: Sequence[str],
    seen_sids: Collection[str],
    now: datetime,
    returned_sids: Collection[str] = (),
    known_live: Mapping[str, int] | None = None,
) -> DeletionCounts:
    """Mark what complete reads of ``worker_sids`` no longer returned; clear what came back.

    ``seen_sids``: every sid those reads returned (loaded or rejected). ``returned_sids``: seen
    sids known to be marked (``UpsertCounts.returned_sids`` reads it with the upsert's lookup).
    ``known_live``: per worker, how many distinct seen sids are certainly stored and live (the
    batch's upserted rows). A worker whose live count equals it has nothing to mark, so only
    the workers that lost reservations have their sids read: on a steady-state sync that is one
    grouped count per batch instead of every live sid.
    """
    counts = DeletionCounts()
    if returned_sids:
        counts.returned = clear_deleted(conn, returned_sids)
    suspects = list(worker_sids)
    if suspects and known_live is not None:
        stored = live_counts(conn, suspects)
        suspects = [w for w in suspects if stored.get(w, 0) != known_live.get(w, 0)]
    if suspects:
        seen = seen_sids if isinstance(seen_sids, set | frozenset) else set(seen_sids)
        gone = live_sids(conn, suspects) - seen
        if gone:
            counts.marked = mark_deleted(conn, gone, now)
    return counts
