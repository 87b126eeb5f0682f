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
from sqlalchemy.engine import Connection, Dialect

from warehouse.dialects import BulkWrite, for_connection, for_dialect
from warehouse.schema import reservation_status_history as history

KEY_CHUNK = 2048  # a power of two: chunks are padded to one (dialects.base.padded_in_list)
COLUMNS = ("sid", "reservation_status", "date_updated", "previous_status",
           "seconds_since_created", "observed_at")
# Insert-if-absent: a sync's rows are normally new (a status it has just seen), so the bulk
# path may insert them directly; a rerun meets them again and leaves them as they are.
HISTORY_WRITE = BulkWrite(history, COLUMNS, keys=("sid", "reservation_status", "date_updated"))


@lru_cache(maxsize=32)
def _keys_sql(dialect: Dialect, size: int) -> str:
    h = history.c
    query = sa.select(h.sid, h.reservation_status, sa.type_coerce(h.date_updated, sa.String))
    return for_dialect(dialect).in_list_sql(query, h.sid, size)


def history_keys(conn: Connection, sids: list[str]) -> pd.DataFrame:
    """The (sid, reservation_status, date_updated) the history holds for these sids."""
    parts: list[tuple[Any, ...]] = []
    dialect = for_connection(conn)
    for start in range(0, len(sids), KEY_CHUNK):
        size, params = dialect.in_list_params(sids[start:start + KEY_CHUNK])
        parts.extend(conn.exec_driver_sql(_keys_sql(conn.dialect, size), params).tuples())
    frame = pd.DataFrame(parts, columns=["sid", "reservation_status", "date_updated"])
    frame["date_updated"] = pd.to_datetime(frame["date_updated"].astype(object), utc=True,
                                           format="ISO8601")
    return frame


def history_rows(written: pd.DataFrame | None) -> pd.DataFrame:
    """The history rows for an upsert's written rows: inserts, and changes of status."""
    if written is None or written.empty:
        return pd.DataFrame(columns=list(COLUMNS[:-1]))
    previous = written["previous_status"].astype(object)
    previous = previous.where(previous.notna(), None)
    moved = previous.isna() | (previous != written["reservation_status"])
    rows = written[moved]
    updated = pd.to_datetime(rows["date_updated"], utc=True)
    seconds = (updated - pd.to_datetime(rows["date_created"], utc=True)).dt.total_seconds()
    return pd.DataFrame({
        "sid": rows["sid"].astype(object), "reservation_status": rows["reservation_status"],
        "date_updated": updated, "previous_status": previous[moved],
        "seconds_since_created": seconds.round().astype("int64"),
    }).reset_index(drop=True)


def record_status_changes(conn: Connection, written: pd.DataFrame | None, now: datetime) -> int:
    """Insert the history rows for what an upsert wrote, in ``conn``'s transaction; returns how many.

    Bound like the upsert (pre-formatted per dialect, the database's bulk path): per-row type
    processing through Core would double the cost of an initial load.
    """
    rows = history_rows(written)
    if rows.empty:
        return 0
    rows["observed_at"] = pd.Series(pd.Timestamp(now), index=rows.index).dt.tz_convert("UTC")
    for_connection(conn).write_rows(conn, HISTORY_WRITE, rows,
                                    pd.Series(True, index=rows.index))
    return len(rows)
