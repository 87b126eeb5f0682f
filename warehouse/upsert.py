"""Bulk upserts with the semantics of docs/databases.md and honest counts on SQLite, PostgreSQL and MySQL.

Each batch is classified against the stored ``(sid, date_updated, status_rank)`` read in the
same transaction: new sids are inserted, strictly newer versions (or equal ``date_updated`` with
a later lifecycle status) update, everything else is counted unchanged and not written at all.
The same read brings the stored ``date_created`` as text, looked at only for the rows that
update: an update that moves it records the day the reservation leaves for the next summary
refresh (``warehouse.summary.record_moved_days``, same transaction).
The write itself is still conditional (``ON CONFLICT ... DO UPDATE ... WHERE`` on
PostgreSQL/SQLite, per-column ``IF`` on MySQL with ``date_updated`` assigned last), so a
concurrent writer with a newer version can never be overwritten by an older one. Writers
first take a per-table writer lock (``lock_writers``), so two loads running at once write
batch after batch: counts stay exact and they cannot deadlock each other.

Rows go to the driver as plain tuples, pre-formatted per dialect with pandas, sorted by sid so
concurrent writers take row locks in the same order: on SQLite as multi-row statements
(``warehouse.multirow``), on MySQL through ``executemany``. On PostgreSQL, batches
with many rows to write are streamed with ``COPY`` into a temp staging table and written by one
``INSERT ... SELECT ... ORDER BY sid ON CONFLICT ... WHERE newer`` (measured faster at scale by
``benchmarks/upsert_scale.py``; the ``COPY`` is binary: ``warehouse.pgcopy``). The batch's new
sids, which under the writer lock nothing else can insert, are ``COPY``'d straight into
``reservations`` instead, and only the newer versions take the staging path (a sid found there
after all sends the whole batch down the conditional path). A first load's batches
(``expect_new``) are tried that way before anything is read: only if the ``COPY`` clashes does
the batch go through the lookup and the classification.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect

from warehouse.engine import in_list_params, in_list_sql
from warehouse.multirow import execute_multi_row, use_multi_row
from warehouse.mysqlbulk import execute_insert, use_column_escaping
from warehouse.pgcopy import copy_new_rows, stage_rows, worth_staging
from warehouse.schema import (
    EVENT_ONLY_COLUMNS,
    EVENT_RESERVATION_COLUMNS,
    RESERVATION_COLUMNS,
    WORKER_COLUMNS,
    reservations,
    warehouse_state,
    workers,
)
from warehouse.state import read_state, write_state
from warehouse.summary import record_moved_days

log = logging.getLogger(__name__)
LOOKUP_CHUNK = 2048  # a power of two: chunks are padded to one (engine.in_list_params)
WRITE_CHUNK = 5000


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


# -- statements -----------------------------------------------------------------------------
def _newer_than_stored(incoming_date: Any, incoming_rank: Any) -> sa.ColumnElement[bool]:
    stored = reservations.c
    return sa.or_(
        incoming_date > stored.date_updated,
        sa.and_(incoming_date == stored.date_updated, incoming_rank > stored.status_rank),
    )


def _dialect_name(dialect: Dialect) -> str:
    return "mysql" if dialect.name in ("mysql", "mariadb") else dialect.name


# The upsert's column sets: a list record's, and an event version's (warehouse.events).
UPSERT_COLUMNS = {"reservations": RESERVATION_COLUMNS,
                  "reservation_events": EVENT_RESERVATION_COLUMNS}
# An event version may lack what an earlier one had (a worker name, the task's queue): its NULLs
# never erase a stored value. A list record carries all its fields, so it writes them as they are.
KEEP_STORED_IF_NULL = frozenset({"account_sid", "worker_name", "task_sid", "task_queue_sid",
                                 "task_queue_name", "task_channel_unique_name", "workflow_sid"})


def _new_value(kind: str, incoming: Any, column: str) -> Any:
    if kind == "reservation_events" and column in KEEP_STORED_IF_NULL:
        return sa.func.coalesce(incoming, reservations.c[column])
    return incoming


def _reservation_upsert(dialect: Dialect, kind: str = "reservations") -> sa.Insert:
    columns = UPSERT_COLUMNS[kind]
    updatable = [c for c in columns if c not in ("sid", "first_loaded_at")]
    name = _dialect_name(dialect)
    if name in ("postgresql", "sqlite"):
        ins = (postgresql.insert if name == "postgresql" else sqlite.insert)(reservations)
        return ins.on_conflict_do_update(
            index_elements=["sid"],
            set_={c: _new_value(kind, ins.excluded[c], c) for c in updatable},
            where=_newer_than_stored(ins.excluded.date_updated, ins.excluded.status_rank),
        )
    if name == "mysql":
        ins = mysql.insert(reservations)
        newer = _newer_than_stored(ins.inserted.date_updated, ins.inserted.status_rank)
        # MySQL assigns left to right and later conditions see earlier assignments: the
        # columns the condition reads (status_rank, date_updated) go last, date_updated last of all.
        order = [c for c in updatable if c not in ("status_rank", "date_updated")]
        order += ["status_rank", "date_updated"]
        assignments = [
            (c, sa.case((newer, _new_value(kind, ins.inserted[c], c)), else_=reservations.c[c]))
            for c in order
        ]
        return ins.on_duplicate_key_update(assignments)
    raise NotImplementedError(f"no upsert for dialect {dialect.name}")


def _worker_upsert(dialect: Dialect) -> sa.Insert:
    updatable = [c for c in WORKER_COLUMNS if c not in ("sid", "first_loaded_at")]
    name = _dialect_name(dialect)
    if name in ("postgresql", "sqlite"):
        ins = (postgresql.insert if name == "postgresql" else sqlite.insert)(workers)
        return ins.on_conflict_do_update(
            index_elements=["sid"], set_={c: ins.excluded[c] for c in updatable}
        )
    ins = mysql.insert(workers)
    return ins.on_duplicate_key_update([(c, ins.inserted[c]) for c in updatable])


@lru_cache(maxsize=16)
def _compiled(kind: str, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
    """The statement's SQL for the driver, and the bind order when the paramstyle is positional."""
    if kind in UPSERT_COLUMNS:
        stmt, columns = _reservation_upsert(dialect, kind), UPSERT_COLUMNS[kind]
    else:
        stmt, columns = _worker_upsert(dialect), WORKER_COLUMNS
    compiled = stmt.compile(dialect=dialect, column_keys=columns)
    order = tuple(compiled.positiontup) if compiled.positional else None
    return str(compiled), order


# -- binding --------------------------------------------------------------------------------
def naive_utc_text(series: pd.Series) -> list[str | None]:
    """UTC timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff`` text, formatted by numpy in C.

    The form SQLAlchemy stores on SQLite (so text comparison orders correctly), and one MySQL
    ``DATETIME(6)`` accepts. ``Series.dt.strftime`` does the same in a Python loop, 5x slower.
    """
    missing = series.isna().to_numpy()
    values = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    text = values.astype("S26")  # b'2026-10-29T14:58:23.000000'
    text.view(np.uint8).reshape(-1, 26)[:, 10] = ord(" ")
    out: list[str | None] = text.astype("U26").tolist()
    if missing.any():
        for position in np.flatnonzero(missing).tolist():
            out[position] = None
    return out


def _bind_column(series: pd.Series, dialect_name: str) -> list[Any]:
    """One column as driver-ready Python values (None for missing, never NaN/NaT)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        if dialect_name != "postgresql":
            return naive_utc_text(series)
        missing = series.isna()
        values = pd.Series(series.dt.to_pydatetime(), index=series.index, dtype=object)
        return values.where(~missing, None).tolist()
    values = series.astype(object)
    missing = values.isna()
    return values.where(~missing, None).tolist() if missing.any() else values.tolist()


def _bind_columns(frame: pd.DataFrame, columns: Sequence[str], dialect: Dialect) -> dict[str, list[Any]]:
    name = _dialect_name(dialect)
    if name != "postgresql" and "available" in frame.columns:
        frame = frame.assign(available=frame["available"].map(
            lambda v: None if v is None or v != v else int(bool(v))))
    return {c: _bind_column(frame[c], name) for c in columns}


def _bind_rows(frame: pd.DataFrame, columns: Sequence[str], dialect: Dialect,
               order: tuple[str, ...] | None) -> list[Any]:
    data = _bind_columns(frame, columns, dialect)
    if order is not None:
        return list(zip(*(data[c] for c in order), strict=True))
    return [dict(zip(columns, row, strict=True)) for row in zip(*(data[c] for c in columns), strict=True)]


def _execute_many(conn: Connection, kind: str, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    sql, order = _compiled(kind, conn.dialect)
    if use_column_escaping(conn):  # MySQL/MariaDB: the whole batch, statements cut by size
        execute_insert(conn, sql, _bind_columns(frame, columns, conn.dialect))
        return
    for start in range(0, len(frame), WRITE_CHUNK):
        chunk = frame.iloc[start : start + WRITE_CHUNK]
        conn.exec_driver_sql(sql, _bind_rows(chunk, columns, conn.dialect, order))


# -- PostgreSQL: COPY into a staging table, then one INSERT ... SELECT ... ON CONFLICT ---------
# For batches of at least warehouse.pgcopy.COPY_MIN_ROWS rows to write.
_STAGE = "_reservations_stage"


@lru_cache(maxsize=8)
def _merge_sql(dialect: Dialect, kind: str = "reservations") -> str:
    """``INSERT INTO reservations SELECT ... FROM <stage> ORDER BY sid ON CONFLICT ... WHERE
    newer`` (PostgreSQL: row locks in sid order, so concurrent writers cannot deadlock)."""
    columns = UPSERT_COLUMNS[kind]
    stage = sa.table(_STAGE, *[sa.column(c) for c in columns])
    updatable = [c for c in columns if c not in ("sid", "first_loaded_at")]
    select = sa.select(*[stage.c[c] for c in columns]).order_by(stage.c.sid)
    ins = postgresql.insert(reservations).from_select(columns, select)
    stmt = ins.on_conflict_do_update(
        index_elements=["sid"],
        set_={c: _new_value(kind, ins.excluded[c], c) for c in updatable},
        where=_newer_than_stored(ins.excluded.date_updated, ins.excluded.status_rank),
    )
    return str(stmt.compile(dialect=dialect))


def _pg_copy_upsert(conn: Connection, frame: pd.DataFrame, kind: str = "reservations") -> None:
    """The conditional upsert of ``frame`` (sorted by sid), its rows streamed with binary
    ``COPY`` into a staging table (``warehouse.pgcopy``)."""
    columns = UPSERT_COLUMNS[kind]
    rows = _bind_rows(frame, columns, conn.dialect, tuple(columns))
    stage_rows(conn, _STAGE, reservations.name, columns, rows)
    conn.exec_driver_sql(_merge_sql(conn.dialect, kind))


def _copy_new_reservations(conn: Connection, frame: pd.DataFrame,
                           kind: str = "reservations") -> bool:
    """``frame`` (stamped, sorted by sid) ``COPY``'d straight into ``reservations``; False, with
    nothing written, when one of its sids is there already (``warehouse.pgcopy.copy_new_rows``)."""
    columns = UPSERT_COLUMNS[kind]
    rows = _bind_rows(frame, columns, conn.dialect, tuple(columns))
    return copy_new_rows(conn, reservations.name, columns, rows)


def _stamped(conn: Connection, frame: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """The rows to write with this transaction's change stamp, sorted by sid (lock order)."""
    stamp = pd.Timestamp(next_change_stamp(conn, now))
    return frame.assign(first_loaded_at=stamp, last_changed_at=stamp).sort_values("sid", kind="stable")


def _pg_write(conn: Connection, frame: pd.DataFrame, new: pd.Series,
              kind: str = "reservations") -> None:
    """PostgreSQL: the ``new`` rows of ``frame`` (sids absent under the writer lock) ``COPY``'d
    straight into the table when there are enough of them; every other row upserted."""
    fresh = frame[new]
    if worth_staging(conn, len(fresh)):
        if _copy_new_reservations(conn, fresh, kind):
            frame = frame[~new]
        else:
            log.warning("a reservation this batch found absent was there when it was copied: "
                        "a writer bypasses the writer lock; the batch is upserted instead")
    if frame.empty:
        return
    if worth_staging(conn, len(frame)):
        _pg_copy_upsert(conn, frame, kind)
    else:
        _execute_many(conn, kind, frame, UPSERT_COLUMNS[kind])


def _sqlite_multi_row_upsert(conn: Connection, frame: pd.DataFrame,
                             kind: str = "reservations") -> None:
    """The conditional upsert of ``frame`` as multi-row statements (warehouse.multirow)."""
    sql, order = _compiled(kind, conn.dialect)
    execute_multi_row(conn, sql, _bind_rows(frame, UPSERT_COLUMNS[kind], conn.dialect, order))


# -- reading what is stored -----------------------------------------------------------------
_STORED_COLUMNS = ["sid", "stored_date", "stored_rank", "stored_status", "stored_deleted",
                   "stored_created", "stored_unlisted", "stored_no_event"]


def _created_text(dialect: Dialect) -> sa.ColumnElement[str]:
    """``date_created`` as ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text (SQLite's own storage form),
    formatted by the database: text costs the drivers less per row than a datetime, and the
    caller compares it to ``naive_utc_text`` of the incoming values without parsing. Constants
    are literal SQL (the statement goes to the driver as text)."""
    c = reservations.c
    if dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone(sa.literal_column("'UTC'"), c.date_created),
                               sa.literal_column("'YYYY-MM-DD HH24:MI:SS.US'"))
    if dialect.name in ("mysql", "mariadb"):
        return sa.func.date_format(c.date_created, sa.literal_column("'%Y-%m-%d %H:%i:%s.%f'"))
    return sa.type_coerce(c.date_created, sa.String)


@lru_cache(maxsize=64)
def _lookup_sql(dialect: Dialect, size: int) -> str:
    """``SELECT <stored version> ... WHERE sid IN (<size> driver placeholders)``.

    type_coerce skips the per-row UTCDateTime processing; the driver's value (text on SQLite,
    datetime elsewhere) is parsed vectorized by the caller. ``date_created`` comes as text
    (``_created_text``), kept raw: only the rows that update look at it (``_moved_from``).
    """
    c = reservations.c
    head = sa.select(c.sid, sa.type_coerce(c.date_updated, sa.String), c.status_rank,
                     c.reservation_status, c.deleted_upstream_at.is_not(None),
                     _created_text(dialect), c.url.is_(None),
                     sa.and_(c.task_queue_sid.is_(None), c.workflow_sid.is_(None)))
    return in_list_sql(head, c.sid, size, dialect)


def stored_versions(conn: Connection, sids: list[str]) -> pd.DataFrame:
    """What is stored of these sids, one row each (``_STORED_COLUMNS``); missing sids absent."""
    return _stored_versions(conn, sids)


def _stored_versions(conn: Connection, sids: list[str]) -> pd.DataFrame:
    columns: list[list[Any]] = [[] for _ in _STORED_COLUMNS]
    for start in range(0, len(sids), LOOKUP_CHUNK):
        chunk = sids[start : start + LOOKUP_CHUNK]
        size, params = in_list_params(chunk, conn.dialect)
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


# -- one writer at a time per table ----------------------------------------------------------
RESERVATIONS_WRITER = "writer_lock:reservations"
WORKERS_WRITER = "writer_lock:workers"


def lock_writers(conn: Connection, key: str = RESERVATIONS_WRITER) -> None:
    """Take the table's writer lock for the rest of ``conn``'s transaction.

    Concurrent loads then write batch after batch instead of interleaving inside one: the
    classification read below sees every committed row and nothing can change it before the
    write, so counts (and the written rows the status history uses) stay exact, and row-lock
    deadlocks between two loads cannot happen. PostgreSQL/MySQL: ``SELECT ... FOR UPDATE`` of a
    ``warehouse_state`` row (created on first use). SQLite: ``BEGIN IMMEDIATE`` (waits on the
    busy timeout), so the read and the write are one write transaction.
    """
    if conn.dialect.name == "sqlite":
        dbapi = conn.connection.dbapi_connection
        if dbapi is not None and not dbapi.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    query = (sa.select(warehouse_state.c.key).where(warehouse_state.c.key == key)
             .with_for_update())
    if conn.execute(query).first() is not None:
        return
    try:  # first load ever: create the lock row in its own transaction (racing is fine)
        with conn.engine.begin() as other:
            other.execute(warehouse_state.insert().values(
                key=key, value=None, updated_at=datetime.now(UTC)))
    except sa.exc.IntegrityError:
        pass
    conn.execute(query).first()


LAST_CHANGE_STAMP = "last_change_stamp:reservations"


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


def _copy_if_all_new(conn: Connection, rows: pd.DataFrame, now: datetime) -> UpsertCounts | None:
    """PostgreSQL, a batch expected to be all new: ``COPY`` it without reading what is stored.

    The primary key is the check: the savepoint's ``COPY`` either inserts every row (so every
    sid was new and the counts are exact) or none, and then None sends the batch through the
    classified path. Spares a first load the lookup of every sid (0.35 s per 100k rows).
    """
    if not _copy_new_reservations(conn, _stamped(conn, rows, now)):
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
    (a first load) lets PostgreSQL try the batch as all-new rows first (``_copy_if_all_new``);
    the outcome and the counts are the same either way. A list record of the version a row
    known only from events already holds fills that row's list fields (``_fill_from_list``).
    ``stored``: what ``stored_versions`` just read of these sids under the writer lock, if the
    caller has it (the lookup is not repeated).
    """
    if rows.empty:
        return UpsertCounts()
    lock_writers(conn, RESERVATIONS_WRITER)
    if expect_new and kind == "reservations" and worth_staging(conn, len(rows)):
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
        if conn.dialect.name == "postgresql":
            _pg_write(conn, to_write, is_new.loc[to_write.index], kind)
        elif use_multi_row(conn):
            _sqlite_multi_row_upsert(conn, to_write, kind)
        else:
            _execute_many(conn, kind, to_write, UPSERT_COLUMNS[kind])
    return counts


_WORKER_COMPARED = [c for c in WORKER_COLUMNS if c not in ("sid", "first_loaded_at", "last_changed_at")]


def upsert_workers(conn: Connection, rows: pd.DataFrame, now: datetime) -> UpsertCounts:
    """Insert new workers and rewrite the ones whose fields changed; the rest are untouched."""
    if rows.empty:
        return UpsertCounts()
    lock_writers(conn, WORKERS_WRITER)
    sids = rows["sid"].tolist()
    stored_parts = []
    for start in range(0, len(sids), LOOKUP_CHUNK):
        chunk = sids[start : start + LOOKUP_CHUNK]
        result = conn.execute(
            sa.select(*[workers.c[c] for c in ["sid", *_WORKER_COMPARED]]).where(
                workers.c.sid.in_(chunk)
            )
        ).all()
        stored_parts.extend(result)
    stored = {r[0]: r[1:] for r in stored_parts}

    def signature(values: Sequence[Any]) -> tuple[Any, ...]:
        out = []
        for v in values:
            if v is None or (isinstance(v, float) and v != v) or v is pd.NaT:
                out.append(None)
            elif isinstance(v, datetime):
                out.append(pd.Timestamp(v).tz_convert("UTC").floor("us").isoformat())
            else:
                out.append(v)
        return tuple(out)

    incoming = rows[_WORKER_COMPARED].astype(object).itertuples(index=False, name=None)
    status = []
    for sid, values in zip(sids, incoming, strict=True):
        if sid not in stored:
            status.append("new")
        elif signature(values) != signature(stored[sid]):
            status.append("changed")
        else:
            status.append("same")
    flags = pd.Series(status, index=rows.index)
    counts = UpsertCounts(int((flags == "new").sum()), int((flags == "changed").sum()),
                          int((flags == "same").sum()))
    to_write = rows[flags != "same"]
    if not to_write.empty:
        stamp = pd.Timestamp(now).tz_convert("UTC")
        to_write = to_write.assign(first_loaded_at=stamp, last_changed_at=stamp)
        to_write = to_write.sort_values("sid", kind="stable")
        _execute_many(conn, "workers", to_write, WORKER_COLUMNS)
    return counts
