"""A first load into an empty warehouse builds its secondary indexes once, after the rows.

Keeping an index up to date while rows arrive costs a random B-tree insert per row and index,
and on a full load every batch rewrites pages of every index; building the same index from the
finished table is one sort. Measured in one run (``benchmarks/run.py --loaders
project,project_eager_indexes``): a 1.5M-reservation first load into SQLite 150 s -> 74 s (the
writer busy 139 s -> 55 s, plus 9 s of ``CREATE INDEX``); 100k: 5.45 -> 4.91 s on SQLite,
9.67 -> 8.07 s on PostgreSQL. Only the indexes that no statement of the load itself needs are
deferred: the primary keys, which the upserts conflict on, always stay.

Safety: dropping the indexes and recording that in ``warehouse_state`` (``deferred_indexes``)
is one transaction under the reservations writer lock (SQLite and PostgreSQL roll DDL back
with the rest; MySQL/MariaDB commit DDL implicitly, so they keep the incremental path). The
load restores them when it ends, failed or not. A load that finds the record already there
(another process is loading, or one died before restoring) loads the same way and restores
them when it ends; ``restore_deferred_indexes`` is idempotent. While indexes are deferred the
rows are all there and correct; only queries that would use the missing indexes are slower.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from warehouse.dialects import for_dialect
from warehouse.engine import run_in_transaction
from warehouse.schema import reservation_status_history, reservations, warehouse_state
from warehouse.state import read_state, write_state
from warehouse.writers import RESERVATIONS_WRITER, lock_writers

log = logging.getLogger(__name__)

DEFERRED_INDEXES = "deferred_indexes"
# False: every load keeps the indexes up to date row by row (benchmarks compare the two).
DEFER_ON_FIRST_LOAD = True


def deferrable_indexes() -> list[sa.Index]:
    """The secondary indexes of the tables a load writes row by row (never a primary key)."""
    indexes = [*reservations.indexes, *reservation_status_history.indexes]
    return sorted(indexes, key=lambda index: str(index.name))


def _is_empty(conn: Connection) -> bool:
    return conn.execute(sa.select(sa.literal(1)).select_from(reservations).limit(1)).first() is None


def _defers(engine: Engine) -> bool:
    # only where DDL is transactional: the drop and its record commit together or not at all
    return for_dialect(engine.dialect).defers_indexes and DEFER_ON_FIRST_LOAD


def reservations_empty(engine: Engine) -> bool:
    """True before a first load, on every dialect (MySQL/MariaDB defer no indexes to tell)."""
    with engine.connect() as conn:
        return _is_empty(conn)


def defer_indexes_for_initial_load(engine: Engine) -> bool:
    """Drop the deferrable indexes if this is a first load; True when the load runs without them.

    True as well when another load already deferred them (the record is there): this load then
    restores them when it ends, whichever finishes first does the building.
    """
    if not _defers(engine):
        return False

    def work(conn: Connection) -> bool:
        lock_writers(conn, RESERVATIONS_WRITER)
        if read_state(conn, DEFERRED_INDEXES):
            return True
        if not _is_empty(conn):
            return False
        names = []
        for index in deferrable_indexes():
            index.drop(conn, checkfirst=True)
            names.append(str(index.name))
        write_state(conn, DEFERRED_INDEXES, json.dumps(names))
        return True

    deferred = run_in_transaction(engine, work, what="deferring indexes for a first load")
    if deferred:
        log.info("first load: secondary indexes are built after the rows (warehouse.initial_load)")
    return deferred


def restore_deferred_indexes(engine: Engine) -> list[str]:
    """Create the deferred indexes that are missing and clear the record; returns their names.

    A no-op when nothing is deferred, so it is safe to call at the end of every load.
    """
    if not for_dialect(engine.dialect).defers_indexes:
        return []

    def work(conn: Connection) -> list[str]:
        lock_writers(conn, RESERVATIONS_WRITER)
        if not read_state(conn, DEFERRED_INDEXES):
            return []
        inspector = sa.inspect(conn)
        built = []
        for index in deferrable_indexes():
            if not inspector.has_index(index.table.name, str(index.name)):  # type: ignore[union-attr]
                index.create(conn)
                built.append(str(index.name))
        conn.execute(warehouse_state.delete().where(warehouse_state.c.key == DEFERRED_INDEXES))
        return built

    return run_in_transaction(engine, work, what="building deferred indexes")


@dataclass
class FirstLoad:
    deferred: bool  # the load runs without the deferrable indexes
    # the table was empty when the load began: every row it reads will be written
    empty: bool = False
    built: list[str] = field(default_factory=list)  # the indexes its end built
    build_seconds: float = 0.0


@contextmanager
def indexes_deferred_if_first_load(engine: Engine) -> Iterator[FirstLoad]:
    """Around a whole load: defers the indexes on a first load and builds them when the block
    ends, raised or not (the rows loaded so far stay committed either way). When the load
    failed and the build fails too (the database went away), the load's own error is the one
    raised; the record stays, and the next load builds the indexes."""
    deferred = defer_indexes_for_initial_load(engine)
    # where loads defer, deferring already answered "empty?"; elsewhere ask the table
    first = FirstLoad(deferred, empty=deferred if _defers(engine) else reservations_empty(engine))
    try:
        yield first
    except BaseException:
        if first.deferred:
            try:
                _build(engine, first)
            except Exception:  # noqa: BLE001 - the load's error matters more
                log.exception("could not build the deferred indexes after a failed load; "
                              "the next load builds them")
        raise
    if first.deferred:
        _build(engine, first)


def _build(engine: Engine, first: FirstLoad) -> None:
    started = time.perf_counter()
    first.built = restore_deferred_indexes(engine)
    first.build_seconds = time.perf_counter() - started
    if first.built:
        log.info("built %d deferred indexes in %.1fs: %s", len(first.built),
                 first.build_seconds, ", ".join(first.built))
