"""``reservation_status_history``: one row per status a sync saw a reservation take.

TaskRouter only shows a reservation's current status, so the warehouse keeps the transitions it
observed: a row when a sync inserts a reservation, and one whenever a sync changes its status.
Rows come from what ``upsert_reservations`` wrote and go in the same transaction, and the insert
is insert-if-absent on (sid, reservation_status, date_updated), so reruns add nothing.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect

from warehouse.schema import reservation_status_history as history

WRITE_CHUNK = 5000


@lru_cache(maxsize=8)
def _insert_if_absent(dialect: Dialect) -> sa.Insert:
    name = dialect.name
    keys = ["sid", "reservation_status", "date_updated"]
    if name == "postgresql":
        return postgresql.insert(history).on_conflict_do_nothing(index_elements=keys)
    if name == "sqlite":
        return sqlite.insert(history).on_conflict_do_nothing(index_elements=keys)
    if name in ("mysql", "mariadb"):
        # a no-op assignment, not INSERT IGNORE (which would also hide truncation and type errors)
        return mysql.insert(history).on_duplicate_key_update(sid=history.c.sid)
    raise NotImplementedError(f"no history insert for dialect {name}")


def history_rows(written: pd.DataFrame | None, now: datetime) -> list[dict[str, Any]]:
    """The history rows for an upsert's written rows: inserts, and changes of status."""
    if written is None or written.empty:
        return []
    previous = written["previous_status"].astype(object)
    previous = previous.where(previous.notna(), None)
    moved = previous.isna() | (previous != written["reservation_status"])
    rows = written[moved]
    if rows.empty:
        return []
    updated = pd.to_datetime(rows["date_updated"], utc=True)
    seconds = (updated - pd.to_datetime(rows["date_created"], utc=True)).dt.total_seconds()
    return [
        {"sid": sid, "reservation_status": status, "date_updated": when.to_pydatetime(),
         "previous_status": before, "seconds_since_created": int(round(secs)),
         "observed_at": now}
        for sid, status, when, before, secs in zip(
            rows["sid"].tolist(), rows["reservation_status"].tolist(), updated.tolist(),
            previous[moved].tolist(), seconds.tolist(), strict=True)
    ]


def record_status_changes(conn: Connection, written: pd.DataFrame | None, now: datetime) -> int:
    """Insert the history rows for what an upsert wrote, in ``conn``'s transaction; returns how many."""
    rows = history_rows(written, now)
    statement = _insert_if_absent(conn.dialect)
    for start in range(0, len(rows), WRITE_CHUNK):
        conn.execute(statement, rows[start : start + WRITE_CHUNK])
    return len(rows)
