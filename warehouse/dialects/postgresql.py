"""PostgreSQL: ``timestamptz``, ``= ANY(array)`` lookups, binary ``COPY`` for big batches.

Contract of each hook: ``warehouse.dialects.base.WarehouseDialect``. Bulk writes: rows the
caller found absent are ``COPY``'d straight into the table; the rest of a big batch is
``COPY``'d into a staging table and written by one ``INSERT ... SELECT ... ON CONFLICT``
(``warehouse.dialects.pgcopy``); small insert-if-absent batches go as one ``unnest`` of array
parameters, small upserts through ``executemany``. Why, with figures:
benchmarks/results/design-notes.md ("Write pipeline").
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection

from warehouse.dialects import pgcopy
from warehouse.dialects.base import (
    BulkWrite,
    OnConflictDialect,
)

log = logging.getLogger(__name__)
# Session-local staging tables, one per target table (temp, emptied at every commit).
STAGES = {"reservations": "_reservations_stage", "reservation_status_history": "_history_stage"}


class PostgreSQLDialect(OnConflictDialect):
    name = "postgresql"
    insert_construct = postgresql.insert
    defers_indexes = True
    binds_aware_times = True
    binds_booleans = True

    @classmethod
    def engine_options(cls, url: URL) -> dict[str, object]:
        # fail in seconds, not minutes, when the server is unreachable; name us in pg_stat_activity
        return {"connect_args": {
            key: value for key, value in (("connect_timeout", 10),
                                          ("application_name", "taskrouter-warehouse"))
            if key not in url.query
        }}

    @contextmanager
    def migration_lock(self, conn: Connection, name: str, timeout_s: int,
                       where: str) -> Iterator[None]:
        """An advisory lock of the session (per database), waited for without a limit."""
        key = zlib.crc32(name.encode())
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({key})")
        conn.commit()  # the lock is the session's; the migration gets a transaction of its own
        try:
            yield
        finally:
            conn.rollback()
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
            conn.commit()

    def bind_times(self, series: pd.Series) -> list[Any]:
        missing = series.isna()
        values = pd.Series(series.dt.to_pydatetime(), index=series.index, dtype=object)
        return values.where(~missing, None).tolist()

    def in_list_sql(self, query: sa.Select, column: sa.Column[Any], size: int) -> str:
        """``<column> = ANY(<one array parameter>)`` (``size`` unused): PostgreSQL would parse
        and plan a long IN list on every execution."""
        target = f"{column.table.name}.{column.name}"
        return f"{query.compile(dialect=self.dialect)} WHERE {target} = ANY(%s)"

    def in_list_params(self, values: list[Any]) -> tuple[int, tuple[Any, ...]]:
        return 0, (list(values),)

    # -- bulk writes ----------------------------------------------------------------------
    def worth_staging(self, rows: int) -> bool:
        return pgcopy.COPY_MIN_ROWS is not None and rows >= pgcopy.COPY_MIN_ROWS

    def _table_rows(self, write: BulkWrite, frame: pd.DataFrame) -> list[Any]:
        return self.bind_rows(write, frame, write.columns)

    def insert_new(self, conn: Connection, write: BulkWrite, frame: pd.DataFrame) -> bool:
        """Binary ``COPY`` straight into the table, in a savepoint."""
        return pgcopy.copy_new_rows(conn, write.table.name, write.columns,
                                    self._table_rows(write, frame))

    def _merge_sql(self, write: BulkWrite, stage: str) -> str:
        """``write``'s statement taking its rows from ``stage`` (in ``order_by`` order, so
        concurrent writers lock rows in the same order and cannot deadlock)."""
        found = self._compiled.get((write, True))
        if found is None:
            table = sa.table(stage, *[sa.column(c) for c in write.columns])
            select = sa.select(*[table.c[c] for c in write.columns])
            if write.order_by is not None:
                select = select.order_by(table.c[write.order_by])
            found = (str(self.statement(write, select).compile(dialect=self.dialect)), None)
            self._compiled[(write, True)] = found
        return found[0]

    def _unnest_sql(self, write: BulkWrite) -> str:
        """Insert-if-absent of the batch given as one array parameter per column."""
        arrays = ", ".join(
            f"%s::{write.table.c[c].type.compile(dialect=self.dialect).split('(')[0]}[]"
            for c in write.columns)
        return (f"INSERT INTO {write.table.name} ({', '.join(write.columns)}) "
                f"SELECT * FROM unnest({arrays}) AS u "
                f"ON CONFLICT ({', '.join(write.keys)}) DO NOTHING")

    def write_rows(self, conn: Connection, write: BulkWrite, frame: pd.DataFrame,
                   new: pd.Series | None = None) -> None:
        if new is not None:
            fresh = frame[new]
            if self.worth_staging(len(fresh)):
                if self.insert_new(conn, write, fresh):
                    frame = frame[~new]
                elif write.update:  # an insert-if-absent meets its rows again on reruns
                    log.warning("a row this batch found absent was there when it was copied: "
                                "a writer bypasses the writer lock; the batch is upserted instead")
        if frame.empty:
            return
        if self.worth_staging(len(frame)):
            stage = STAGES.get(write.table.name, f"_{write.table.name}_stage")
            pgcopy.stage_rows(conn, stage, write.table.name, write.columns,
                              self._table_rows(write, frame))
            conn.exec_driver_sql(self._merge_sql(write, stage))
        elif write.update:
            self.execute_rows(conn, write, frame)
        else:
            data = self.bind_columns(write, frame)
            conn.exec_driver_sql(self._unnest_sql(write), tuple(data[c] for c in write.columns))
