"""SQLite: a batch's rows go in as multi-row ``INSERT ... VALUES (...), (...), ... ON CONFLICT``.

Why: ``executemany`` runs one ``sqlite3_step`` per row, and Python's ``sqlite3`` hands the GIL
back around every step, each time waiting for the sync's reader threads; one statement of
2,048 rows is one step. The statement is the single-row upsert with more ``VALUES`` tuples, so
the conditional ``ON CONFLICT ... DO UPDATE ... WHERE newer`` guard is the same
(``tests/warehouse/test_upsert_semantics.py`` runs both paths and compares them row for row). Figures:
benchmarks/results/design-notes.md ("One module per database").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain
from typing import Any

from sqlalchemy.engine import Connection

# Every SQLite batch goes in as multi-row statements; False falls back to the plain
# executemany, which the tests compare it with.
MULTI_ROW_ON_SQLITE = True
# Bound parameters per statement, capped by the connection's own limit (SQLite allows 32,766
# since 3.32, 999 before). Chunk sizes are powers of two, so a connection's statement cache
# holds a dozen shapes per table, not one per remainder size (figures: design-notes.md).
MAX_PARAMETERS = 32_000


def execute_multi_row(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run the one-row ``INSERT`` ``sql`` (qmark placeholders, one ``VALUES (?, ..., ?)``) for
    every row of ``rows``, a power-of-two chunk of rows per statement."""
    if not rows:
        return
    width = len(rows[0])
    limit = conn.connection.dbapi_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[union-attr]
    start = 0
    for size in chunk_sizes(len(rows), width, min(MAX_PARAMETERS, limit)):
        chunk = rows[start : start + size]
        conn.exec_driver_sql(_with_rows(sql, width, size), tuple(chain.from_iterable(chunk)))
        start += size


def chunk_sizes(rows: int, columns: int, parameters: int = MAX_PARAMETERS) -> list[int]:
    """``rows`` as full chunks of the largest power of two that fits in ``parameters``, then the
    binary digits of the rest (5,000 rows of 14 columns: two of 2,048, then 512, 256, 128, 8)."""
    largest = 1 << max(0, (parameters // columns).bit_length() - 1)
    sizes = [largest] * (rows // largest)
    rest = rows % largest
    sizes += [1 << bit for bit in range(rest.bit_length() - 1, -1, -1) if rest >> bit & 1]
    return sizes


@lru_cache(maxsize=64)
def _with_rows(sql: str, width: int, rows: int) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    values = f"VALUES {one}"
    if sql.count(values) != 1 or sql.count("?") != width:
        raise ValueError(f"not a one-row INSERT of {width} placeholders: {sql[:120]}")
    return sql.replace(values, "VALUES " + ", ".join([one] * rows))
