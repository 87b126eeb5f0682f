"""MySQL and MariaDB (one dialect): naive UTC ``DATETIME(6)``, per-column ``IF`` upserts,
``GET_LOCK`` for migrations, column-escaped multi-row inserts through PyMySQL.

Contract of each hook: ``warehouse.dialects.base.WarehouseDialect``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection

from warehouse.dialects import mysqlbulk
from warehouse.dialects.base import (
    BulkWrite,
    MigrationLockTimeout,
    NewerFn,
    ValueFn,
    WarehouseDialect,
    incoming_value,
)


class MySQLDialect(WarehouseDialect):
    name = "mysql"

    @classmethod
    def normalize_url(cls, url: URL, root: Path) -> URL:
        # utf8mb4 on the connection too: MySQL's "utf8" is 3-byte and cannot carry emoji
        if url.query.get("charset", "utf8") in ("utf8", "utf8mb3"):
            url = url.update_query_dict({"charset": "utf8mb4"})
        return url

    @classmethod
    def engine_options(cls, url: URL) -> dict[str, object]:
        # READ COMMITTED like PostgreSQL's default: the same visibility on both servers, and
        # InnoDB takes far fewer gap locks (the usual source of upsert deadlocks).
        return {"pool_recycle": 3600, "isolation_level": "READ COMMITTED"}

    @contextmanager
    def migration_lock(self, conn: Connection, name: str, timeout_s: int,
                       where: str) -> Iterator[None]:
        """``GET_LOCK``: server-wide, so the name carries the database."""
        lock = f"{name}:{conn.engine.url.database or ''}"[:64]
        got = conn.exec_driver_sql("SELECT GET_LOCK(%s, %s)", (lock, timeout_s)).scalar()
        conn.commit()
        if got != 1:
            raise MigrationLockTimeout(
                f"Another process has been migrating the warehouse at {where} for "
                f"over {timeout_s} s (lock {lock!r}); find it in SHOW PROCESSLIST")
        try:
            yield
        finally:
            conn.rollback()
            conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (lock,))
            conn.commit()

    def datetime_type(self) -> sa.types.TypeEngine[Any]:
        return mysql.DATETIME(fsp=6)  # never TIMESTAMP: it converts with the session zone

    def conditional_upsert(self, table: sa.Table, keys: Sequence[str], update: Sequence[str], *,
                           value: ValueFn = incoming_value, newer: NewerFn | None = None,
                           reads: Sequence[str] = (), source: sa.Select | None = None,
                           columns: Sequence[str] = ()) -> sa.Insert:
        """``ON DUPLICATE KEY UPDATE c = IF(newer, new value, c)``. MySQL assigns left to right
        and later conditions see earlier assignments: the columns the condition reads go
        last, in ``reads`` order."""
        if source is not None:
            raise NotImplementedError("MySQL upserts take parameters, not a SELECT")
        ins = mysql.insert(table)
        if newer is None:
            return ins.on_duplicate_key_update([(c, value(ins.inserted, c)) for c in update])
        condition = newer(ins.inserted)
        order = [c for c in update if c not in reads] + [c for c in reads if c in update]
        return ins.on_duplicate_key_update([
            (c, sa.case((condition, value(ins.inserted, c)), else_=table.c[c])) for c in order
        ])

    def insert_if_absent(self, table: sa.Table, keys: Sequence[str],
                         source: sa.Select | None = None, columns: Sequence[str] = ()) -> sa.Insert:
        """A no-op assignment on a duplicate, not ``INSERT IGNORE`` (which would also hide
        truncation and type errors)."""
        if source is not None:
            raise NotImplementedError("MySQL inserts take parameters, not a SELECT")
        return mysql.insert(table).on_duplicate_key_update({keys[0]: table.c[keys[0]]})

    def use_column_escaping(self, conn: Connection) -> bool:
        return mysqlbulk.COLUMN_ESCAPING and conn.dialect.driver == "pymysql"

    def execute_rows(self, conn: Connection, write: BulkWrite, frame: pd.DataFrame) -> None:
        """Through PyMySQL: the whole batch as multi-row statements cut by size
        (``warehouse.dialects.mysqlbulk``); else the driver's ``executemany``."""
        if not self.use_column_escaping(conn):
            super().execute_rows(conn, write, frame)
            return
        sql, _order = self.compiled(write)
        mysqlbulk.execute_insert(conn, sql, self.bind_columns(write, frame))
