"""PostgreSQL bulk writes: rows streamed with binary ``COPY`` into a session's staging table.

``INSERT ... ON CONFLICT`` cannot take its rows from ``COPY`` directly, so big batches go to a
temporary table (``ON COMMIT DELETE ROWS``: empty again after every transaction, kept for the
pooled connection's next one) and from there into the real table in one statement. Binary
``COPY`` with the column types declared up front lets psycopg pick each column's dumper once
instead of per value and spares the server parsing text; measured on a 100k-row first load in
one run: the reservations' ``COPY`` 0.66 -> 0.19 s, the status history 0.95 -> 0.43 s against
the ``unnest`` of five array parameters it replaced for big batches.

Rows that cannot conflict (sids the upsert, under the writer lock, found absent) skip the
staging table: ``copy_new_rows`` streams them into the real table inside a savepoint, and
returns False, having written nothing, if one is there after all (a writer that bypassed the
lock), so the caller can take the staging path with its conflict rules. Measured on a 100k-row
first load (Xeon, ``benchmarks/results/pg-direct-copy-ab-xeon.md``, interleaved 3+3): the
writer busy 3.38 -> 2.56 s, the whole sync 4.90 -> 4.14 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

# Batches of at least this many rows go through a staging table (None: never). Measured per
# batch in one run: the reservations' upsert against executemany 17.7 vs 19.1 ms at 500 rows,
# 42 vs 56 at 2,000, 180 vs 258 at 10,000 (half new, half updated rows); the status history
# against the unnest 4.4 vs 4.3 ms at 200 rows, 8.7 vs 11.7 at 1,000, 47 vs 96 at 10,000.
# With text COPY the reservations' path only paid from about 5,000 rows.
COPY_MIN_ROWS: int | None = 1000


def worth_staging(conn: Connection, rows: int) -> bool:
    """True when a batch of ``rows`` should go through ``stage_rows`` on this connection."""
    return (conn.dialect.name == "postgresql" and COPY_MIN_ROWS is not None
            and rows >= COPY_MIN_ROWS)


def stage_rows(conn: Connection, stage: str, like: str, columns: Sequence[str],
               rows: Iterable[Sequence[Any]]) -> None:
    """Fill a session-local ``stage`` shaped like table ``like`` with exactly ``rows``
    (driver-ready tuples in ``columns`` order), in ``conn``'s transaction."""
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
                         f"(LIKE {like} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    conn.exec_driver_sql(f"TRUNCATE {stage}")  # a second batch in the same transaction
    copy_rows(conn, stage, columns, rows)


def copy_new_rows(conn: Connection, table: str, columns: Sequence[str],
                  rows: Iterable[Sequence[Any]]) -> bool:
    """``copy_rows`` straight into ``table`` in a savepoint of ``conn``'s transaction: True
    when every row went in, False when a key already existed (nothing of them written)."""
    savepoint = conn.begin_nested()
    try:
        copy_rows(conn, table, columns, rows)
    except conn.dialect.loaded_dbapi.IntegrityError:
        savepoint.rollback()
        return False
    savepoint.commit()
    return True


def column_type_oids(conn: Connection, table: str, columns: Sequence[str]) -> list[int]:
    """``table``'s column type OIDs in ``columns`` order, from the catalog, so a binary
    ``COPY`` follows whatever the schema's migrations made of each column."""
    found = dict(conn.exec_driver_sql(
        "SELECT attname, atttypid::int FROM pg_attribute "
        f"WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped").all())
    return [found[c] for c in columns]


def copy_rows(conn: Connection, table: str, columns: Sequence[str],
              rows: Iterable[Sequence[Any]]) -> None:
    """Stream ``rows`` (driver-ready tuples in ``columns`` order) into ``table`` with binary
    ``COPY``, in ``conn``'s transaction."""
    oids = column_type_oids(conn, table, columns)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(oids)
            for row in rows:
                copy.write_row(row)
    finally:
        cursor.close()
