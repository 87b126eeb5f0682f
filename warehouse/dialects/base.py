"""What a warehouse database must provide, with the portable defaults (``WarehouseDialect``).

A subclass per database (``sqlite.py``, ``postgresql.py``, ``mysql.py``) overrides the hooks
whose SQL or driver handling differs; shared modules call the hooks and never branch on the
database. Nothing here imports ``warehouse.schema``: its column types call these classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Dialect

# The writer locks' rows live in warehouse.schema.warehouse_state; only these columns are used.
STATE = sa.table("warehouse_state", sa.column("key"), sa.column("value"), sa.column("updated_at"))
WRITE_CHUNK = 5000  # rows per executemany call on the plain path

# ``value(incoming, column)``: what a conflicting row's column becomes (``incoming`` is
# ``excluded`` / ``inserted``); ``newer(incoming)``: whether the incoming row wins at all.
ValueFn = Callable[[Any, str], Any]
NewerFn = Callable[[Any], sa.ColumnElement[bool]]


def incoming_value(incoming: Any, column: str) -> Any:
    """The default ``ValueFn``: the incoming row's value as it is."""
    return incoming[column]


@dataclass(frozen=True)
class BulkWrite:
    """A batch write into ``table`` of rows holding ``columns``, keyed on ``keys``.

    With ``update`` empty it is insert-if-absent (a stored row is left alone); otherwise a
    conflicting row gets ``value(incoming, c)`` for every ``c`` of ``update``, only where
    ``newer(incoming)`` holds (always when ``newer`` is None). ``reads``: the columns ``newer``
    reads. ``order_by``: the column staged rows are written in (row-lock order).
    ``booleans``: columns bound as 0/1 where the database has no boolean parameter.
    """

    table: sa.Table
    columns: tuple[str, ...]
    keys: tuple[str, ...]
    update: tuple[str, ...] = ()
    value: ValueFn = incoming_value
    newer: NewerFn | None = None
    reads: tuple[str, ...] = ()
    order_by: str | None = None
    booleans: tuple[str, ...] = ()


class MigrationLockTimeout(RuntimeError):
    """Another process held the migration lock for longer than we wait."""


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


def padded_in_list(values: list[Any]) -> tuple[Any, ...]:
    """``values`` padded to the next power of two by repeating the last one (an IN list means
    the same with duplicates), so ``in_list_sql`` meets a dozen sizes, not every length.

    Drivers cache prepared statements per connection (Python's sqlite3 keeps 128, PostgreSQL
    plans per statement text), and an IN list of a thousand placeholders is a large one: with
    a new length for nearly every batch, those caches fill with near-duplicates.
    """
    if not values:
        return ()
    size = 1 << (len(values) - 1).bit_length()
    return (*values, *([values[-1]] * (size - len(values))))


class WarehouseDialect:
    """One database's way of doing what the warehouse needs. Instances wrap a SQLAlchemy
    dialect (``for_dialect``); the class attributes answer without one."""

    name: ClassVar[str] = ""
    # First loads drop the secondary indexes and build them after the rows: only where DDL is
    # transactional, so the drop and its record commit together (warehouse.initial_load).
    defers_indexes: ClassVar[bool] = False
    # One writer at a time for the whole database (SQLite): parallel shards gain nothing.
    single_writer: ClassVar[bool] = False
    # The driver takes timezone-aware datetimes (else naive UTC, as text or DATETIME).
    binds_aware_times: ClassVar[bool] = False
    # The driver takes Python booleans for boolean columns (else 0/1).
    binds_booleans: ClassVar[bool] = False

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._compiled: dict[tuple[BulkWrite, bool], tuple[str, tuple[str, ...] | None]] = {}

    # -- engines --------------------------------------------------------------------------
    @classmethod
    def normalize_url(cls, url: URL, root: Path) -> URL:
        """``url`` with what this database's connections need (SQLite: relative paths
        resolved against ``root``)."""
        return url

    @classmethod
    def engine_options(cls, url: URL) -> dict[str, object]:
        """``create_engine`` options for this database (beyond the shared pool options)."""
        return {}

    @classmethod
    def on_connect(cls) -> Callable[..., None] | None:
        """A ``connect`` event listener for every new DBAPI connection, if any."""
        return None

    # -- locks ----------------------------------------------------------------------------
    def lock(self, conn: Connection, key: str) -> None:
        """Hold the lock ``key`` until ``conn``'s transaction ends; re-entrant within it.

        Default: ``SELECT ... FOR UPDATE`` of the ``warehouse_state`` row ``key``, created in
        a transaction of its own on first use (a race to create it is harmless).
        """
        query = sa.select(STATE.c.key).where(STATE.c.key == key).with_for_update()
        if conn.execute(query).first() is not None:
            return
        try:
            with conn.engine.begin() as other:
                other.execute(STATE.insert().values(
                    key=key, value=None, updated_at=self.bind_time(datetime.now(UTC))))
        except sa.exc.IntegrityError:
            pass
        conn.execute(query).first()

    @contextmanager
    def migration_lock(self, conn: Connection, name: str, timeout_s: int,
                       where: str) -> Iterator[None]:
        """Hold the migration lock ``name`` on ``conn`` (outside any transaction) meanwhile,
        waiting at most ``timeout_s`` where the database lets us choose (``where``: the
        warehouse, for the error). Default: none (SQLite locks in ``migration_transaction``)."""
        yield

    @contextmanager
    def migration_transaction(self, conn: Connection) -> Iterator[None]:
        """The transaction a migration runs in."""
        with conn.begin():
            yield

    # -- statements -----------------------------------------------------------------------
    def conditional_upsert(self, table: sa.Table, keys: Sequence[str], update: Sequence[str], *,
                           value: ValueFn = incoming_value, newer: NewerFn | None = None,
                           reads: Sequence[str] = (), source: sa.Select | None = None,
                           columns: Sequence[str] = ()) -> sa.Insert:
        """Insert; on a clash of ``keys`` set ``update`` to ``value(incoming, c)`` where
        ``newer(incoming)`` holds, so an older version never overwrites a newer one. ``source``
        with ``columns``: the rows come from a ``SELECT`` instead of parameters."""
        raise NotImplementedError

    def insert_if_absent(self, table: sa.Table, keys: Sequence[str],
                         source: sa.Select | None = None, columns: Sequence[str] = ()) -> sa.Insert:
        """Insert; a row whose ``keys`` are stored already is left as it is (no error)."""
        raise NotImplementedError

    def statement(self, write: BulkWrite, source: sa.Select | None = None) -> sa.Insert:
        """``write``'s statement: ``conditional_upsert`` or ``insert_if_absent``."""
        if not write.update:
            return self.insert_if_absent(write.table, write.keys, source, write.columns)
        return self.conditional_upsert(write.table, write.keys, write.update, value=write.value,
                                       newer=write.newer, reads=write.reads, source=source,
                                       columns=write.columns)

    def compiled(self, write: BulkWrite) -> tuple[str, tuple[str, ...] | None]:
        """The driver SQL of ``write``'s one-row statement, and the bind order when the
        paramstyle is positional (cached per write)."""
        found = self._compiled.get((write, False))
        if found is None:
            compiled = self.statement(write).compile(dialect=self.dialect,
                                                     column_keys=list(write.columns))
            found = str(compiled), (tuple(compiled.positiontup) if compiled.positional else None)
            self._compiled[(write, False)] = found
        return found

    # -- binding --------------------------------------------------------------------------
    def bind_times(self, series: pd.Series) -> list[Any]:
        """Timezone-aware timestamps as this driver takes them for a UTC column (what
        ``UTCDateTime`` binds), vectorized; None for missing values."""
        return naive_utc_text(series)

    def bind_time(self, value: datetime) -> Any:
        """One aware datetime as ``UTCDateTime`` binds it."""
        if value.tzinfo is None:
            raise ValueError("naive datetime bound to a UTC column; attach a timezone first")
        value = value.astimezone(UTC)
        return value if self.binds_aware_times else value.replace(tzinfo=None)

    def datetime_type(self) -> sa.types.TypeEngine[Any]:
        """The column type ``UTCDateTime`` stores through."""
        return sa.DateTime(timezone=True)

    def bind_column(self, series: pd.Series, boolean: bool = False) -> list[Any]:
        """One column as driver-ready Python values (None for missing, never NaN/NaT)."""
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            return self.bind_times(series)
        if boolean and not self.binds_booleans:
            series = series.map(lambda v: None if v is None or v != v else int(bool(v)))
        values = series.astype(object)
        missing = values.isna()
        return values.where(~missing, None).tolist() if missing.any() else values.tolist()

    def bind_columns(self, write: BulkWrite, frame: pd.DataFrame) -> dict[str, list[Any]]:
        return {c: self.bind_column(frame[c], c in write.booleans) for c in write.columns}

    def bind_rows(self, write: BulkWrite, frame: pd.DataFrame,
                  order: tuple[str, ...] | None) -> list[Any]:
        """The rows as tuples in ``order``, or as dicts by column name when ``order`` is None."""
        data = self.bind_columns(write, frame)
        if order is not None:
            return list(zip(*(data[c] for c in order), strict=True))
        return [dict(zip(write.columns, row, strict=True))
                for row in zip(*(data[c] for c in write.columns), strict=True)]

    # -- IN lists -------------------------------------------------------------------------
    def in_list_sql(self, query: sa.Select, column: sa.Column[Any], size: int) -> str:
        """``<query> WHERE <column> IN (<size> placeholders)`` as driver SQL, bound
        positionally with ``in_list_params``. For hot lookups run on the driver directly:
        SQLAlchemy's expanding IN costs a few microseconds per value."""
        target = f"{column.table.name}.{column.name}"
        mark = "?" if self.dialect.paramstyle == "qmark" else "%s"
        return (f"{query.compile(dialect=self.dialect)} "
                f"WHERE {target} IN ({', '.join([mark] * size)})")

    def in_list_params(self, values: list[Any]) -> tuple[int, tuple[Any, ...]]:
        """The ``size`` for ``in_list_sql`` and the driver parameters for ``values``."""
        padded = padded_in_list(values)
        return len(padded), padded

    # -- bulk writes ----------------------------------------------------------------------
    def worth_staging(self, rows: int) -> bool:
        """True when a batch of ``rows`` pays for the database's bulk-load path."""
        return False

    def insert_new(self, conn: Connection, write: BulkWrite, frame: pd.DataFrame) -> bool:
        """Insert every row of ``frame`` if none of their keys is stored, else nothing (in a
        savepoint); True when they went in."""
        compiled = sa.insert(write.table).compile(dialect=self.dialect,
                                                  column_keys=list(write.columns))
        sql, order = str(compiled), (tuple(compiled.positiontup) if compiled.positional else None)
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(sql, self.bind_rows(write, frame, order))
        except sa.exc.IntegrityError:
            savepoint.rollback()
            return False
        savepoint.commit()
        return True

    def execute_rows(self, conn: Connection, write: BulkWrite, frame: pd.DataFrame) -> None:
        """``write`` of every row of ``frame`` through the driver's ``executemany``."""
        sql, order = self.compiled(write)
        for start in range(0, len(frame), WRITE_CHUNK):
            conn.exec_driver_sql(sql, self.bind_rows(write, frame.iloc[start:start + WRITE_CHUNK],
                                                      order))

    def write_rows(self, conn: Connection, write: BulkWrite, frame: pd.DataFrame,
                   new: pd.Series | None = None) -> None:
        """``write`` of every row of ``frame`` (sorted by key), by this database's fastest
        path. ``new``: the rows the caller found absent under the writer lock (or expects
        to be, for insert-if-absent writes), which a bulk load may insert directly."""
        self.execute_rows(conn, write, frame)


class OnConflictDialect(WarehouseDialect):
    """A database whose upserts are ``INSERT ... ON CONFLICT`` (PostgreSQL, SQLite): the two
    statements are the same up to the dialect's ``insert`` construct."""

    insert_construct: ClassVar[Callable[[sa.Table], Any]]

    def conditional_upsert(self, table: sa.Table, keys: Sequence[str], update: Sequence[str], *,
                           value: ValueFn = incoming_value, newer: NewerFn | None = None,
                           reads: Sequence[str] = (), source: sa.Select | None = None,
                           columns: Sequence[str] = ()) -> sa.Insert:
        ins = insert_from(type(self).insert_construct(table), source, columns)
        return on_conflict_upsert(ins, keys, update, value, newer)

    def insert_if_absent(self, table: sa.Table, keys: Sequence[str],
                         source: sa.Select | None = None, columns: Sequence[str] = ()) -> sa.Insert:
        ins = insert_from(type(self).insert_construct(table), source, columns)
        return ins.on_conflict_do_nothing(index_elements=list(keys))


def on_conflict_upsert(ins: Any, keys: Sequence[str], update: Sequence[str], value: ValueFn,
                       newer: NewerFn | None) -> sa.Insert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET ... WHERE newer`` (PostgreSQL, SQLite)."""
    return ins.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: value(ins.excluded, c) for c in update},
        where=newer(ins.excluded) if newer is not None else None,
    )


def insert_from(ins: Any, source: sa.Select | None, columns: Sequence[str]) -> Any:
    """``ins`` taking its rows from ``source`` when there is one."""
    return ins if source is None else ins.from_select(list(columns), source)
