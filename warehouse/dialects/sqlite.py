"""SQLite: one writer at a time (``BEGIN IMMEDIATE``), naive UTC text, multi-row statements.

Contract of each hook: ``warehouse.dialects.base.WarehouseDialect``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Connection

from warehouse.dialects import multirow
from warehouse.dialects.base import (
    BulkWrite,
    OnConflictDialect,
)

SQLITE_PAGE_SIZE = 16384


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every new connection: 16 KiB pages, WAL, a 60 s busy timeout, a 16 MB page cache
    (figures: benchmarks/results/design-notes.md, "SQLite connection settings")."""
    cursor = dbapi_connection.cursor()
    # the page size must precede WAL mode; a no-op on an existing database
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    # temp_store stays the default (files): MEMORY put a full load's sorts on the heap
    cursor.execute("PRAGMA cache_size=-16384")
    cursor.close()


class SQLiteDialect(OnConflictDialect):
    name = "sqlite"
    insert_construct = sqlite.insert
    defers_indexes = True
    single_writer = True

    @classmethod
    def normalize_url(cls, url: URL, root: Path) -> URL:
        """A relative file path resolved against ``root``, its folder created."""
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database)
            if not path.is_absolute():
                path = root / path
            path.parent.mkdir(parents=True, exist_ok=True)
            url = url.set(database=str(path))
        return url

    @classmethod
    def engine_options(cls, url: URL) -> dict[str, object]:
        return {"connect_args": {"timeout": 60}}

    @classmethod
    def on_connect(cls) -> Callable[..., None] | None:
        return sqlite_pragmas

    def lock(self, conn: Connection, key: str) -> None:
        """``BEGIN IMMEDIATE`` (waits on the busy timeout): the whole database's write lock,
        so everything ``conn`` reads and writes until commit is one write transaction."""
        dbapi = conn.connection.dbapi_connection
        if dbapi is not None and not dbapi.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @contextmanager
    def migration_transaction(self, conn: Connection) -> Iterator[None]:
        """An exclusive transaction: SQLite's migration lock."""
        with conn.begin():
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
            yield

    def use_multi_row(self) -> bool:
        return multirow.MULTI_ROW_ON_SQLITE

    def write_rows(self, conn: Connection, write: BulkWrite, frame: pd.DataFrame,
                   new: pd.Series | None = None) -> None:
        """Multi-row statements (``warehouse.dialects.multirow``), or plain ``executemany``."""
        if not self.use_multi_row():
            self.execute_rows(conn, write, frame)
            return
        sql, order = self.compiled(write)
        multirow.execute_multi_row(conn, sql, self.bind_rows(write, frame, order))
