"""PostgreSQL bulk writes: rows streamed with binary ``COPY`` into a table or a staging table.

``INSERT ... ON CONFLICT`` cannot take its rows from ``COPY`` directly, so big batches go to a
temporary table (``ON COMMIT DELETE ROWS``: empty again after every transaction, kept for the
pooled connection's next one) and from there into the real table in one statement. Rows that
cannot conflict skip it: ``copy_new_rows`` streams them into the real table inside a
savepoint, and returns False, having written nothing, if one is there after all. Binary
``COPY`` declares the column types up front (from the catalog). Figures:
benchmarks/results/design-notes.md ("One module per database").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

# Batches of at least this many rows take the COPY paths (None: never; the figures behind
# 1000: benchmarks/results/design-notes.md).
COPY_MIN_ROWS: int | None = 1000


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
