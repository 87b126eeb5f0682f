"""SQLite: a batch's rows go in as multi-row ``INSERT ... VALUES (...), (...), ... ON CONFLICT``.

Why: ``executemany`` runs one ``sqlite3_step`` per row, and Python's ``sqlite3`` gives the GIL
up and takes it back around every step; each take-back waits while another thread (the sync's
readers) holds the GIL. Against a table with a primary key, three covering indexes and a
history table that is 200k waits per 100k reservations (measured: the write thread lost 1.2 s
of 3.9 s to them). One statement of 2,048 rows is one step: the B-tree upkeep of all its rows
runs in C without the GIL, and a 10k-row batch takes about 10 GIL hand-backs instead of 10k.
The statement is the single-row upsert it replaces with more ``VALUES`` tuples, so the
conditional ``ON CONFLICT ... DO UPDATE ... WHERE newer`` guard is the same
(``tests/test_upsert_semantics.py`` runs both paths and compares them row for row).

An earlier version filled a TEMP table this way and moved it with one ``INSERT ... SELECT``;
writing straight into the table skips the temporary B-tree: 10-15% less write time on a
100k-row first load (serial: 1.50-1.87 s -> 1.29-1.51 s; whole sync 4.4 -> 4.1 s, medians of 3).
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
# holds a dozen shapes per table instead of one prepared statement for every remainder size a
# sync meets. Measured on a 100k-row first load, 5 runs each in one session: 32,000 (2,048
# reservations per statement) 3.99 s, 16,000 4.11 s, 4,000 4.44 s (medians), for 12 MB more
# resident memory than 4,000: every statement is a GIL hand-back the writer waits for.
MAX_PARAMETERS = 32_000


def use_multi_row(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite" and MULTI_ROW_ON_SQLITE


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
