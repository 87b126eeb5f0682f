"""One writer at a time per table, and the change stamps writers give their rows.

Concurrent loads write batch after batch instead of interleaving inside one: a load's read of
what is stored sees every committed row and nothing can change it before the write, so counts
(and the written rows the status history uses) stay exact, and row-lock deadlocks between two
loads cannot happen. The lock itself is the database's (``WarehouseDialect.lock``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy.engine import Connection

from warehouse.dialects import for_connection
from warehouse.state import read_state, write_state

RESERVATIONS_WRITER = "writer_lock:reservations"
WORKERS_WRITER = "writer_lock:workers"
LAST_CHANGE_STAMP = "last_change_stamp:reservations"


def lock_writers(conn: Connection, key: str = RESERVATIONS_WRITER) -> None:
    """Take the table's writer lock for the rest of ``conn``'s transaction."""
    for_connection(conn).lock(conn, key)


def next_change_stamp(conn: Connection, now: datetime) -> datetime:
    """The ``last_changed_at`` for this transaction's writes: ``now``, or just after the newest
    stamp ever committed when a clock is behind.

    Called under the writer lock, so stamps increase in commit order across processes and
    hosts: the summary refresh can trust "changed after the watermark" to catch every later
    load, with no look-back window for late commits or clock skew.
    """
    stamp = now.astimezone(UTC)
    raw = read_state(conn, LAST_CHANGE_STAMP)
    if raw:
        last = datetime.fromisoformat(raw)
        if stamp <= last:
            stamp = last + timedelta(microseconds=1)
    write_state(conn, LAST_CHANGE_STAMP, stamp.isoformat())
    return stamp


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    # rows known only from events that a list record completed (url, links, its date_created)
    filled: int = 0
    # The rows this call wrote (sid, reservation_status, previous_status (None when inserted),
    # date_created, date_updated): the status history is derived from it in the same transaction.
    written_rows: pd.DataFrame | None = field(default=None, compare=False, repr=False)
    # Incoming sids the warehouse had marked deleted upstream: they came back (warehouse.deletions).
    returned_sids: list[str] = field(default_factory=list, compare=False, repr=False)

    def __iadd__(self, other: UpsertCounts) -> UpsertCounts:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.filled += other.filled
        return self

    @property
    def written(self) -> int:
        return self.inserted + self.updated

    @property
    def seen(self) -> int:
        return self.inserted + self.updated + self.unchanged + self.filled
