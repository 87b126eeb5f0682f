"""Bulk upserts with the semantics of docs/databases.md and honest counts on every database.

Each batch is classified against the stored ``(sid, date_updated, status_rank)`` read in the
same transaction: new sids are inserted, strictly newer versions (or equal ``date_updated`` with
a later lifecycle status) update, everything else is counted unchanged and not written at all.
The same read brings the stored ``date_created`` as text, looked at only for the rows that
update: an update that moves it records the day the reservation leaves for the next summary
refresh (``warehouse.summary.record_moved_days``, same transaction).

The write is still conditional (``WarehouseDialect.conditional_upsert``), so a concurrent
writer with a newer version can never be overwritten by an older one, and goes through the
database's bulk path (``WarehouseDialect.write_rows``) sorted by sid, so concurrent writers
take row locks in the same order. Writers first take the table's writer lock
(``warehouse.writers``): two loads running at once write batch after batch, counts stay exact
and they cannot deadlock each other. A first load's batches (``expect_new``) are tried as
all-new rows before anything is read, where the database has a bulk path that pays
(``WarehouseDialect.worth_staging``); only if that clashes does the batch go through the
lookup and the classification.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from warehouse.dialects import BulkWrite, for_connection, for_dialect
from warehouse.dialects.base import naive_utc_text
from warehouse.schema import (
    EVENT_ONLY_COLUMNS,
    EVENT_RESERVATION_COLUMNS,
    RESERVATION_COLUMNS,
    reservations,
)
from warehouse.sqlfuncs import utc_text
from warehouse.summary import record_moved_days
from warehouse.workers import upsert_workers
from warehouse.writers import (
    RESERVATIONS_WRITER,
    WORKERS_WRITER,
    UpsertCounts,
    lock_writers,
    next_change_stamp,
)

__all__ = ["RESERVATIONS_WRITER", "WORKERS_WRITER", "UpsertCounts", "lock_writers",
           "naive_utc_text", "next_change_stamp", "stored_versions", "upsert_reservations",
           "upsert_workers"]

LOOKUP_CHUNK = 2048  # a power of two: chunks are padded to one (dialects.base.padded_in_list)


# -- statements -----------------------------------------------------------------------------
def _newer(incoming: Any) -> sa.ColumnElement[bool]:
    """The incoming version is newer than the stored one (the upsert rule)."""
    stored = reservations.c
    return sa.or_(
        incoming.date_updated > stored.date_updated,
        sa.and_(incoming.date_updated == stored.date_updated,
                incoming.status_rank > stored.status_rank),
    )


# An event version may lack what an earlier one had (a worker name, the task's queue): its NULLs
# never erase a stored value. A list record carries all its fields, so it writes them as they are.
KEEP_STORED_IF_NULL = frozenset({"account_sid", "worker_name", "task_sid", "task_queue_sid",
                                 "task_queue_name", "task_channel_unique_name", "workflow_sid"})


def _list_value(incoming: Any, column: str) -> Any:
    return incoming[column]


def _event_value(incoming: Any, column: str) -> Any:
    if column in KEEP_STORED_IF_NULL:
        return sa.func.coalesce(incoming[column], reservations.c[column])
    return incoming[column]


def _reservation_write(columns: list[str], value: Any) -> BulkWrite:
    return BulkWrite(
        reservations, tuple(columns), keys=("sid",),
        update=tuple(c for c in columns if c not in ("sid", "first_loaded_at")),
        value=value, newer=_newer, reads=("status_rank", "date_updated"), order_by="sid",
    )


# The upsert's column sets: a list record's, and an event version's (warehouse.events).
UPSERT_COLUMNS = {"reservations": RESERVATION_COLUMNS,
                  "reservation_events": EVENT_RESERVATION_COLUMNS}
WRITES = {"reservations": _reservation_write(RESERVATION_COLUMNS, _list_value),
          "reservation_events": _reservation_write(EVENT_RESERVATION_COLUMNS, _event_value)}


# -- reading what is stored -----------------------------------------------------------------
_STORED_COLUMNS = ["sid", "stored_date", "stored_rank", "stored_status", "stored_deleted",
                   "stored_created", "stored_unlisted", "stored_no_event"]


@lru_cache(maxsize=64)
def _lookup_sql(dialect: Dialect, size: int) -> str:
    """``SELECT <stored version> ... WHERE sid IN (<size> driver placeholders)``.

    type_coerce skips the per-row UTCDateTime processing; the driver's value (text on SQLite,
    datetime elsewhere) is parsed vectorized by the caller. ``date_created`` comes as
    ``naive_utc_text``'s form, formatted by the database and kept raw: only the rows that
    update look at it (``_moved_from``).
    """
    c = reservations.c
    head = sa.select(c.sid, sa.type_coerce(c.date_updated, sa.String), c.status_rank,
                     c.reservation_status, c.deleted_upstream_at.is_not(None),
                     utc_text(c.date_created, "microseconds"), c.url.is_(None),
                     sa.and_(c.task_queue_sid.is_(None), c.workflow_sid.is_(None)))
    return for_dialect(dialect).in_list_sql(head, c.sid, size)


def stored_versions(conn: Connection, sids: list[str]) -> pd.DataFrame:
    """What is stored of these sids, one row each (``_STORED_COLUMNS``); missing sids absent."""
    return _stored_versions(conn, sids)


def _stored_versions(conn: Connection, sids: list[str]) -> pd.DataFrame:
    columns: list[list[Any]] = [[] for _ in _STORED_COLUMNS]
    dialect = for_connection(conn)
    for start in range(0, len(sids), LOOKUP_CHUNK):
        chunk = sids[start : start + LOOKUP_CHUNK]
        size, params = dialect.in_list_params(chunk)
        rows = conn.exec_driver_sql(_lookup_sql(conn.dialect, size), params).tuples()
        # columns straight from the tuples: DataFrame(rows) walks Row objects far more slowly
        for target, values in zip(columns, zip(*rows, strict=True), strict=False):
            target.extend(values)
    return pd.DataFrame({
        "sid": pd.Series(columns[0], dtype=object),
        "stored_date": pd.to_datetime(pd.Series(columns[1], dtype=object), utc=True,
                                      format="ISO8601"),
        "stored_rank": pd.Series(columns[2], dtype="float64"),
        "stored_status": pd.Series(columns[3], dtype=object),
        "stored_deleted": pd.Series(columns[4], dtype=object),
        "stored_created": pd.Series(columns[5], dtype=object),  # text, unparsed
        "stored_unlisted": pd.Series(columns[6], dtype=object),  # no list record seen yet
        "stored_no_event": pd.Series(columns[7], dtype=object),  # no event's fields yet
    })


def _moved_from(updated: pd.DataFrame) -> pd.Series:
    """The stored ``date_created`` of the rows in ``updated`` whose incoming one differs.

    Text against text first (numpy formats the incoming values); only rows whose texts differ,
    normally none, are parsed and compared as instants.
    """
    if updated.empty:
        return pd.Series(dtype="datetime64[us, UTC]")
    same_text = updated["stored_created"].to_numpy() == np.array(
        naive_utc_text(updated["date_created"]), dtype=object)
    if same_text.all():
        return pd.Series(dtype="datetime64[us, UTC]")
    differs = updated[~same_text]
    stored = pd.to_datetime(differs["stored_created"], utc=True, format="ISO8601")
    stored = stored.astype("datetime64[us, UTC]")
    return stored[stored != differs["date_created"].astype("datetime64[us, UTC]")]


# -- writing --------------------------------------------------------------------------------
def _stamped(conn: Connection, frame: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """The rows to write with this transaction's change stamp, sorted by sid (lock order)."""
    stamp = pd.Timestamp(next_change_stamp(conn, now))
    return frame.assign(first_loaded_at=stamp, last_changed_at=stamp).sort_values("sid", kind="stable")


def _copy_if_all_new(conn: Connection, rows: pd.DataFrame, now: datetime) -> UpsertCounts | None:
    """A batch expected to be all new, inserted without reading what is stored.

    The primary key is the check: ``insert_new`` either inserts every row (so every sid was
    new and the counts are exact) or none, and then None sends the batch through the
    classified path.
    """
    if not for_connection(conn).insert_new(conn, WRITES["reservations"], _stamped(conn, rows, now)):
        return None
    counts = UpsertCounts(inserted=len(rows))
    counts.written_rows = pd.DataFrame({
        "sid": rows["sid"], "reservation_status": rows["reservation_status"],
        "previous_status": pd.Series(None, index=rows.index, dtype=object),
        "date_created": rows["date_created"], "date_updated": rows["date_updated"],
    }).reset_index(drop=True)
    return counts


_FILL = (
    reservations.update()
    .where(reservations.c.sid == sa.bindparam("b_sid"), reservations.c.url.is_(None))
    .values(url=sa.bindparam("b_url"), links=sa.bindparam("b_links"),
            date_created=sa.bindparam("b_created", type_=reservations.c.date_created.type),
            last_changed_at=sa.bindparam("b_stamp", type_=reservations.c.last_changed_at.type))
)


def _fill_from_list(conn: Connection, merged: pd.DataFrame, now: datetime) -> int:
    """Complete rows that only events had shown (``url`` NULL) with a list record of the same
    version: its ``url``, ``links`` and ``date_created`` (exact; events may have estimated it)."""
    if merged.empty:
        return 0
    stamp = next_change_stamp(conn, now)
    moved = _moved_from(merged[["stored_created", "date_created"]])
    if not moved.empty:
        record_moved_days(conn, moved, stamp)
    created = merged["date_created"].astype("datetime64[us, UTC]").dt.to_pydatetime()
    conn.execute(_FILL, [
        {"b_sid": sid, "b_url": url, "b_links": links, "b_created": when, "b_stamp": stamp}
        for sid, url, links, when in zip(merged["sid"], merged["url"], merged["links"], created,
                                         strict=True)
    ])
    return len(merged)


_FILL_EVENT_FIELDS = (
    reservations.update()
    .where(reservations.c.sid == sa.bindparam("b_sid"))
    .values(**{c: sa.func.coalesce(reservations.c[c], sa.bindparam(f"b_{c}"))
               for c in EVENT_ONLY_COLUMNS})
)


def _fill_from_events(conn: Connection, merged: pd.DataFrame) -> int:
    """Give rows a list read stored the fields only events carry (the task's queue, channel
    and workflow), from an event version that is not newer: nothing else changes."""
    if merged.empty:
        return 0
    values = merged[["sid", *EVENT_ONLY_COLUMNS]].astype(object)
    values = values.where(values.notna(), None)
    conn.execute(_FILL_EVENT_FIELDS, [
        {"b_sid": row[0], **{f"b_{c}": v for c, v in zip(EVENT_ONLY_COLUMNS, row[1:], strict=True)}}
        for row in values.itertuples(index=False, name=None)
    ])
    return len(merged)


def upsert_reservations(conn: Connection, rows: pd.DataFrame, now: datetime, *,
                        expect_new: bool = False, kind: str = "reservations",
                        stored: pd.DataFrame | None = None) -> UpsertCounts:
    """Write the new and newer rows of a normalized batch; returns exact counts.

    ``rows`` comes from ``normalize_reservations`` (list records, ``kind="reservations"``) or
    ``warehouse.events`` (event versions, ``kind="reservation_events"``), one row per sid. Runs
    inside the caller's transaction, so a failure leaves nothing half-written. ``expect_new``
    (a first load) lets a database with a bulk path try the batch as all-new rows first
    (``_copy_if_all_new``); the outcome and the counts are the same either way. A list record
    of the version a row known only from events already holds fills that row's list fields
    (``_fill_from_list``). ``stored``: what ``stored_versions`` just read of these sids under
    the writer lock, if the caller has it (the lookup is not repeated).
    """
    if rows.empty:
        return UpsertCounts()
    dialect = for_connection(conn)
    lock_writers(conn, RESERVATIONS_WRITER)
    if expect_new and kind == "reservations" and dialect.worth_staging(len(rows)):
        copied = _copy_if_all_new(conn, rows, now)
        if copied is not None:
            return copied
    if stored is None:
        stored = _stored_versions(conn, rows["sid"].tolist())
    merged = rows.merge(stored, on="sid", how="left")
    is_new = merged["stored_date"].isna()
    incoming = merged["date_updated"].astype("datetime64[us, UTC]")
    known = merged["stored_date"].astype("datetime64[us, UTC]")
    is_newer = ~is_new & (
        (incoming > known)
        | ((incoming == known) & (merged["status_rank"] > merged["stored_rank"]))
    )
    written = merged[is_new | is_newer]
    to_write = written.drop(columns=_STORED_COLUMNS[1:])
    moved_from = _moved_from(merged.loc[is_newer, ["stored_created", "date_created"]])
    if kind == "reservations":
        fills = (~is_new & ~is_newer & merged["stored_unlisted"].fillna(False).astype(bool)
                 & merged["url"].notna())
    else:
        fills = (~is_new & ~is_newer & merged["stored_no_event"].fillna(False).astype(bool)
                 & merged[list(EVENT_ONLY_COLUMNS)].notna().any(axis=1))
    counts = UpsertCounts(int(is_new.sum()), int(is_newer.sum()),
                          int((~is_new & ~is_newer & ~fills).sum()))
    if fills.any():
        fill = _fill_from_list if kind == "reservations" else (lambda c, m, _n: _fill_from_events(c, m))
        counts.filled = fill(conn, merged[fills], now)
    counts.written_rows = written[
        ["sid", "reservation_status", "stored_status", "date_created", "date_updated"]
    ].rename(columns={"stored_status": "previous_status"}).reset_index(drop=True)
    counts.returned_sids = merged.loc[merged["stored_deleted"].fillna(False).astype(bool),
                                      "sid"].tolist()
    if not to_write.empty:
        to_write = _stamped(conn, to_write, now)
        if not moved_from.empty:  # rare: TaskRouter's date_created is effectively immutable
            record_moved_days(conn, moved_from, to_write["last_changed_at"].iloc[0])
        dialect.write_rows(conn, WRITES[kind], to_write, is_new.loc[to_write.index])
    return counts
