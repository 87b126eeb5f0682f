"""Setting aside the records the warehouse already holds, before any normalization.

TaskRouter has no "changed since" filter, so every sync reads every live reservation, and on a
steady-state sync almost all of them are exactly what the warehouse stores. Under the upsert
rule (docs/databases.md) a record is written only when its ``date_updated`` is newer, or equal with a
later status, so a record whose (sid, ``date_updated``, status) equals the stored row's changes
nothing, whatever its other fields say. Those records are counted as unchanged here, from one
read of the batch's workers' stored rows (an index range per worker, not a probe per sid), and
only the rest are validated, normalized and upserted. The same read tells which of those
workers' reservations TaskRouter no longer returns (``StoredVersions.gone``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress
from operator import itemgetter, not_
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from warehouse.dialects import for_connection, for_dialect
from warehouse.schema import reservations
from warehouse.sqlfuncs import utc_text

WORKER_CHUNK = 512  # a power of two: chunks are padded to one (dialects.base.padded_in_list)
_c = reservations.c


def stored_date_text() -> sa.ColumnElement[str]:
    """``date_updated`` in TaskRouter's own form, ``2026-11-03T12:00:00Z``, cut to the second.

    Computed by the database, so the screen compares API text to stored text with no parsing.
    Cutting is safe: a record equal to the cut value is at most as new as the stored row, so
    with an equal status it can change nothing.
    """
    return utc_text(_c.date_updated, "iso_seconds")


@dataclass
class StoredVersions:
    """Stored ``(sid, date text, status, deleted upstream, known only from events)`` rows of
    some workers' reservations."""

    rows: list[tuple[str, str, str, Any]] = field(default_factory=list)

    def gone(self, seen_sids: set[str]) -> list[str]:
        """Live sids that the reads did not return (meaningful when the reads were complete)."""
        return [row[0] for row in self.rows if not row[3] and row[0] not in seen_sids]


@lru_cache(maxsize=32)
def _stored_versions_sql(dialect: Dialect, workers: int) -> str:
    """The driver SQL reading the stored versions of ``workers`` workers (cached per size)."""
    query = sa.select(_c.sid, stored_date_text(), _c.reservation_status,
                      _c.deleted_upstream_at.is_not(None), _c.url.is_(None))
    return for_dialect(dialect).in_list_sql(query, _c.worker_sid, workers)


def read_stored_versions(conn: Connection, worker_sids: Sequence[str]) -> StoredVersions:
    """Every stored reservation of these workers (deleted upstream or not), in a few queries.

    Rows come straight from the driver's ``fetchall`` (tuples built in C): going through
    SQLAlchemy's result objects cost more than the query itself.
    """
    stored = StoredVersions()
    workers = sorted(set(worker_sids))
    for start in range(0, len(workers), WORKER_CHUNK):
        chunk = workers[start : start + WORKER_CHUNK]
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            size, params = for_connection(conn).in_list_params(chunk)
            cursor.execute(_stored_versions_sql(conn.dialect, size), params)
            stored.rows.extend(cursor.fetchall())
        finally:
            cursor.close()
    return stored


@dataclass
class Screened:
    pending: list[Any]  # records to validate, normalize and upsert
    unchanged: int = 0  # records equal to the stored row in (sid, date_updated, status)
    returned_sids: list[str] = field(default_factory=list)  # unchanged, but marked deleted upstream
    seen_sids: set[str] = field(default_factory=set)  # every sid the records carry


_VERSION = itemgetter("sid", "date_updated", "reservation_status")
_FIRST_THREE = itemgetter(0, 1, 2)
_FIFTH = itemgetter(4)
_FIRST = itemgetter(0)


def screen_records(records: Sequence[Any], stored: StoredVersions) -> Screened:
    """Split a batch into records that may change the warehouse and records that cannot.

    Set operations over (sid, date_updated, status) tuples, built by ``map`` in C: no Python
    statement runs per record on well-formed pages. Pages with a record that is not an object
    or lacks one of the three fields take a per-record loop with the same outcome.
    """
    # a row only events have shown (no url yet) is never set aside: its list record fills it
    listed = compress(stored.rows, map(not_, map(_FIFTH, stored.rows)))
    versions = set(map(_FIRST_THREE, listed))
    try:
        keys = list(map(_VERSION, records))
    except (KeyError, TypeError, AttributeError):
        return _screen_one_by_one(records, stored, versions)
    try:
        hits = list(map(versions.__contains__, keys))
    except TypeError:  # an unhashable value (a list where a string belongs)
        return _screen_one_by_one(records, stored, versions)
    unchanged = hits.count(True)
    pending = list(compress(records, map(not_, hits))) if unchanged else list(records)
    seen = {sid for sid in map(_FIRST, keys) if type(sid) is str}
    screened = Screened(pending, unchanged, seen_sids=seen)
    if unchanged:
        matched = set(compress(keys, hits))
        screened.returned_sids = [row[0] for row in stored.rows
                                  if row[3] and row[:3] in matched]
    return screened


def _screen_one_by_one(records: Sequence[Any], stored: StoredVersions,
                       versions: set[tuple[Any, ...]]) -> Screened:
    screened = Screened(pending=[])
    deleted = {row[0] for row in stored.rows if row[3]}
    for record in records:
        sid = record.get("sid") if type(record) is dict else None
        if type(sid) is not str:
            screened.pending.append(record)
            continue
        screened.seen_sids.add(sid)
        key = (sid, record.get("date_updated"), record.get("reservation_status"))
        try:
            hit = key in versions
        except TypeError:
            hit = False
        if not hit:
            screened.pending.append(record)
            continue
        screened.unchanged += 1
        if sid in deleted:
            screened.returned_sids.append(sid)
    return screened
